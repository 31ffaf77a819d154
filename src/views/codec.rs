//! The byte form of the views' keys and integers: varints and a checked
//! reader over a stored value, and the keys of pages, runs and rollups,
//! which sort as the values they stand for (integers big-endian, enums by
//! their declaration order), so that a pair's period range is one range of
//! keys.
//!
//! Depends only on the domain and the views' key types.

use super::index::FigureKey;
use super::page::{Unreadable, PAGE_PREFIX, RUN_PREFIX};
use crate::domain::{CommodityScope, Country, Flow, Frequency, HsCode, Period, Sector};

/// An encoded figure key.
pub(crate) const FIGURE_KEY_BYTES: usize = 13;
/// prefix, reporter, partner.
pub(super) const PAIR_BYTES: usize = 5;
/// A page key: pair, figure key, sequence.
pub(crate) const PAGE_KEY_BYTES: usize = PAIR_BYTES + FIGURE_KEY_BYTES + 8;

/// What a value that cannot be read back is called.
pub(super) fn bad(what: &str) -> Unreadable {
    Unreadable(format!("a stored view page is unreadable ({what})"))
}

// ---- integers -------------------------------------------------------------

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A reader over a value's bytes; every read is checked.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn varint(&mut self) -> Result<u128, Unreadable> {
        let mut v = 0u128;
        for shift in (0..128).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or_else(|| bad("short varint"))?;
            self.0 = rest;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }
    pub(super) fn u64(&mut self) -> Result<u64, Unreadable> {
        u64::try_from(self.varint()?).map_err(|_| bad("u64 too large"))
    }
    pub(super) fn usize(&mut self) -> Result<usize, Unreadable> {
        usize::try_from(self.varint()?).map_err(|_| bad("length too large"))
    }
    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        if self.0.len() < n {
            return Err(bad("short value"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(super) fn byte(&mut self) -> Result<u8, Unreadable> {
        Ok(self.bytes(1)?[0])
    }
    pub(super) fn text(&mut self) -> Result<&'a str, Unreadable> {
        let n = self.usize()?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| bad("text is not UTF-8"))
    }
}

// ---- keys -----------------------------------------------------------------

pub(super) fn frequency_byte(f: Frequency) -> u8 {
    match f {
        Frequency::Annual => 0,
        Frequency::Quarterly => 1,
        Frequency::Monthly => 2,
        Frequency::YearToDate => 3,
    }
}

pub(super) fn flow_byte(f: Flow) -> u8 {
    match f {
        Flow::Export => 0,
        Flow::Import => 1,
        Flow::ReExport => 2,
        Flow::ReImport => 3,
        Flow::Turnover => 4,
    }
}

pub(super) const FLOWS: [Flow; 5] = [
    Flow::Export,
    Flow::Import,
    Flow::ReExport,
    Flow::ReImport,
    Flow::Turnover,
];
pub(super) const FREQUENCIES: [Frequency; 4] = [
    Frequency::Annual,
    Frequency::Quarterly,
    Frequency::Monthly,
    Frequency::YearToDate,
];

pub(super) fn sector_byte(s: Sector) -> u8 {
    Sector::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

pub(super) fn sector_of(b: u8) -> Result<Sector, Unreadable> {
    Sector::ALL
        .get(usize::from(b))
        .copied()
        .ok_or_else(|| bad("sector"))
}

pub(super) fn put_period(out: &mut Vec<u8>, p: &Period) {
    out.push(frequency_byte(p.frequency()));
    out.extend_from_slice(&p.year().to_be_bytes());
    out.push(p.number());
}

pub(super) fn read_period(b: &[u8]) -> Result<Period, Unreadable> {
    let frequency = *FREQUENCIES
        .get(usize::from(b[0]))
        .ok_or_else(|| bad("frequency"))?;
    let year = u16::from_be_bytes([b[1], b[2]]);
    Period::new(i32::from(year), frequency, i32::from(b[3])).map_err(|_| bad("period"))
}

/// 13 bytes that sort as the key: period (4), scope (8: tag, then the HS
/// digits and length or the sector), flow (1).
pub(crate) fn put_figure_key(out: &mut Vec<u8>, k: &FigureKey) {
    put_period(out, &k.period);
    match k.scope {
        CommodityScope::All => out.extend_from_slice(&[0; 8]),
        CommodityScope::Hs(h) => {
            out.push(1);
            let s = h.as_str().as_bytes();
            let mut digits = [0u8; 6];
            digits[..s.len()].copy_from_slice(s);
            out.extend_from_slice(&digits);
            out.push(s.len() as u8);
        }
        CommodityScope::Sector(s) => {
            out.push(2);
            out.push(sector_byte(s));
            out.extend_from_slice(&[0; 6]);
        }
    }
    out.push(flow_byte(k.flow));
}

pub(crate) fn read_figure_key(b: &[u8]) -> Result<FigureKey, Unreadable> {
    if b.len() < FIGURE_KEY_BYTES {
        return Err(bad("short figure key"));
    }
    let period = read_period(&b[..4])?;
    let scope = match b[4] {
        0 => CommodityScope::All,
        1 => {
            let len = usize::from(b[11]).min(6);
            CommodityScope::Hs(HsCode::from_digits(&b[5..5 + len]).ok_or_else(|| bad("HS code"))?)
        }
        2 => CommodityScope::Sector(sector_of(b[5])?),
        _ => return Err(bad("commodity scope")),
    };
    let flow = *FLOWS.get(usize::from(b[12])).ok_or_else(|| bad("flow"))?;
    Ok(FigureKey {
        period,
        scope,
        flow,
    })
}

/// The key prefix of one pair's pages (or rollups, with that prefix).
pub(crate) fn pair_prefix(prefix: u8, reporter: Country, partner: Country) -> [u8; PAIR_BYTES] {
    let (r, p) = (reporter.alpha2().as_bytes(), partner.alpha2().as_bytes());
    [prefix, r[0], r[1], p[0], p[1]]
}

/// The reporter and partner of a page or rollup key.
pub(crate) fn pair_of(key: &[u8]) -> Result<(Country, Country), Unreadable> {
    let s = key.get(1..PAIR_BYTES).ok_or_else(|| bad("short key"))?;
    let c = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| Country::parse(s).ok())
            .ok_or_else(|| bad("country"))
    };
    Ok((c(&s[..2])?, c(&s[2..])?))
}

/// The key of the page whose first revision is `(key, sequence)`.
pub(crate) fn page_key(
    reporter: Country,
    partner: Country,
    key: &FigureKey,
    sequence: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAGE_KEY_BYTES);
    out.extend_from_slice(&pair_prefix(PAGE_PREFIX, reporter, partner));
    put_figure_key(&mut out, key);
    out.extend_from_slice(&sequence.to_be_bytes());
    out
}

/// The key of the `index`th page of the run that the checkpoint covering
/// `covers` added to one pair.
/// The sequence covered by the checkpoint that wrote a run.
pub(crate) fn run_covers(key: &[u8]) -> Result<u64, Unreadable> {
    key.get(PAIR_BYTES..PAIR_BYTES + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| bad("short run key"))
}

pub(crate) fn run_key(reporter: Country, partner: Country, covers: u64, index: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAIR_BYTES + 10);
    out.extend_from_slice(&pair_prefix(RUN_PREFIX, reporter, partner));
    out.extend_from_slice(&covers.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}
