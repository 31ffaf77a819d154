//! Query cursors: the opaque bytes every streamed message carries, which let
//! the same request resume after that message at the same snapshot.
//!
//! `[version 2][call kind u8][snapshot u64 BE][request fingerprint u64 BE]`
//! `[position …][checksum u32 BE]`, where the checksum is the low half of xxh3
//! over everything before it: a cursor is client input, so every cursor that
//! was altered, truncated or extended is refused, and every byte of a
//! position is checked again when it is read back.
//!
//! Depends on the domain and the views' position types; not on the wire.

use crate::domain::{
    AgreementId, CommodityScope, Country, Flow, Frequency, HsCode, Period, Sector,
};
use crate::views::{FigureKey, GroupKey, RecordPosition};

const VERSION: u8 = 2;
/// Version, kind, snapshot and fingerprint.
const HEADER: usize = 18;
const CHECKSUM: usize = 4;

/// Which call a cursor belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum CallKind {
    Records = 1,
    Country = 2,
    Sector = 3,
    Agreements = 4,
    Aggregate = 5,
}

/// A position inside one call's answer, as a cursor holds it.
pub(super) trait Position: Sized {
    /// The call whose answer these positions are in.
    const KIND: CallKind;
    fn put(&self, out: &mut Vec<u8>);
    /// Reads a position; `None` for anything but exactly one valid position.
    fn read(r: &mut Reader<'_>) -> Option<Self>;
}

/// A decoded cursor.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Cursor<P> {
    pub snapshot: u64,
    pub fingerprint: u64,
    pub position: P,
}

/// Why a cursor was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not a cursor of this kind of call, or altered.
    NotACursor,
    /// A cursor of this kind whose position does not decode.
    BadPosition,
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM] {
    (xxhash_rust::xxh3::xxh3_64(bytes) as u32).to_be_bytes()
}

/// Encodes the cursor of `position` in a call at `snapshot` whose request
/// has `fingerprint`.
pub(super) fn encode<P: Position>(snapshot: u64, fingerprint: u64, position: &P) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 24 + CHECKSUM);
    out.push(VERSION);
    out.push(P::KIND as u8);
    out.extend_from_slice(&snapshot.to_be_bytes());
    out.extend_from_slice(&fingerprint.to_be_bytes());
    position.put(&mut out);
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    out
}

/// Decodes a cursor of a `P::KIND` call.
pub(super) fn decode<P: Position>(bytes: &[u8]) -> Result<Cursor<P>, Refused> {
    let body_len = bytes
        .len()
        .checked_sub(CHECKSUM)
        .ok_or(Refused::NotACursor)?;
    let (body, sum) = bytes.split_at(body_len);
    if body.len() < HEADER || body[0] != VERSION || body[1] != P::KIND as u8 {
        return Err(Refused::NotACursor);
    }
    if sum != checksum(body) {
        return Err(Refused::NotACursor);
    }
    let mut r = Reader(&body[2..]);
    let snapshot = r.u64().ok_or(Refused::NotACursor)?;
    let fingerprint = r.u64().ok_or(Refused::NotACursor)?;
    let position = P::read(&mut r)
        .filter(|_| r.0.is_empty())
        .ok_or(Refused::BadPosition)?;
    Ok(Cursor {
        snapshot,
        fingerprint,
        position,
    })
}

/// Reads a position back; every read checks its bytes.
pub(super) struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn country(&mut self) -> Option<Country> {
        let b = self.take(2)?;
        Country::parse(std::str::from_utf8(b).ok()?).ok()
    }
    /// A country, or `--` for none.
    fn maybe_country(&mut self) -> Option<Option<Country>> {
        if self.0.starts_with(b"--") {
            self.take(2)?;
            Some(None)
        } else {
            self.country().map(Some)
        }
    }
    fn period(&mut self) -> Option<Period> {
        let b = self.take(4)?;
        Period::new(
            i32::from(u16::from_be_bytes([b[0], b[1]])),
            byte_frequency(b[2])?,
            i32::from(b[3]),
        )
        .ok()
    }
    /// A period, or four zero bytes for none.
    fn maybe_period(&mut self) -> Option<Option<Period>> {
        if self.0.starts_with(&[0, 0, 0, 0]) {
            self.take(4)?;
            Some(None)
        } else {
            self.period().map(Some)
        }
    }
    fn scope(&mut self) -> Option<CommodityScope> {
        match self.byte()? {
            0 => Some(CommodityScope::All),
            1 => {
                let len = usize::from(self.byte()?);
                let digits = self.take(len)?;
                HsCode::parse(std::str::from_utf8(digits).ok()?)
                    .ok()
                    .map(CommodityScope::Hs)
            }
            2 => byte_sector(self.byte()?).map(CommodityScope::Sector),
            _ => None,
        }
    }
}

fn flow_byte(f: Flow) -> u8 {
    match f {
        Flow::Export => 1,
        Flow::Import => 2,
        Flow::ReExport => 3,
        Flow::ReImport => 4,
        Flow::Turnover => 5,
    }
}

fn byte_flow(b: u8) -> Option<Flow> {
    Some(match b {
        1 => Flow::Export,
        2 => Flow::Import,
        3 => Flow::ReExport,
        4 => Flow::ReImport,
        5 => Flow::Turnover,
        _ => return None,
    })
}

fn frequency_byte(f: Frequency) -> u8 {
    match f {
        Frequency::Annual => 1,
        Frequency::Quarterly => 2,
        Frequency::Monthly => 3,
        Frequency::YearToDate => 4,
    }
}

fn byte_frequency(b: u8) -> Option<Frequency> {
    Some(match b {
        1 => Frequency::Annual,
        2 => Frequency::Quarterly,
        3 => Frequency::Monthly,
        4 => Frequency::YearToDate,
        _ => return None,
    })
}

fn sector_byte(s: Sector) -> u8 {
    Sector::ALL
        .iter()
        .position(|x| *x == s)
        .map_or(0, |i| i as u8 + 1)
}

fn byte_sector(b: u8) -> Option<Sector> {
    Sector::ALL.get(usize::from(b).checked_sub(1)?).copied()
}

fn put_country(out: &mut Vec<u8>, c: Country) {
    out.extend_from_slice(c.alpha2().as_bytes());
}

fn put_period(out: &mut Vec<u8>, p: &Period) {
    out.extend_from_slice(&p.year().to_be_bytes());
    out.push(frequency_byte(p.frequency()));
    out.push(p.number());
}

/// StreamTradeRecords: reporter, partner, flow, period, commodity scope.
impl Position for RecordPosition {
    const KIND: CallKind = CallKind::Records;
    fn put(&self, out: &mut Vec<u8>) {
        let (reporter, partner, key) = self;
        put_country(out, *reporter);
        put_country(out, *partner);
        out.push(flow_byte(key.flow));
        put_period(out, &key.period);
        match &key.scope {
            CommodityScope::All => out.push(0),
            CommodityScope::Hs(h) => {
                out.push(1);
                out.push(h.as_str().len() as u8);
                out.extend_from_slice(h.as_str().as_bytes());
            }
            CommodityScope::Sector(s) => {
                out.push(2);
                out.push(sector_byte(*s));
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let (reporter, partner) = (r.country()?, r.country()?);
        let flow = byte_flow(r.byte()?)?;
        let period = r.period()?;
        let scope = r.scope()?;
        Some((
            reporter,
            partner,
            FigureKey {
                period,
                scope,
                flow,
            },
        ))
    }
}

/// The country view: partner, period.
impl Position for (Country, Period) {
    const KIND: CallKind = CallKind::Country;
    fn put(&self, out: &mut Vec<u8>) {
        put_country(out, self.0);
        put_period(out, &self.1);
    }
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some((r.country()?, r.period()?))
    }
}

/// The sector view: reporter, partner, period.
impl Position for (Country, Country, Period) {
    const KIND: CallKind = CallKind::Sector;
    fn put(&self, out: &mut Vec<u8>) {
        put_country(out, self.0);
        put_country(out, self.1);
        put_period(out, &self.2);
    }
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some((r.country()?, r.country()?, r.period()?))
    }
}

/// StreamAgreements: the agreement id (the rest of the position).
impl Position for AgreementId {
    const KIND: CallKind = CallKind::Agreements;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_str().as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let rest = r.take(r.0.len())?;
        AgreementId::parse(std::str::from_utf8(rest).ok()?).ok()
    }
}

/// Aggregate: the group key, with markers for the parts not grouped by.
impl Position for GroupKey {
    const KIND: CallKind = CallKind::Aggregate;
    fn put(&self, out: &mut Vec<u8>) {
        for c in [self.reporter, self.partner] {
            match c {
                Some(c) => put_country(out, c),
                None => out.extend_from_slice(b"--"),
            }
        }
        out.push(self.flow.map_or(0, flow_byte));
        out.push(self.sector.map_or(0, sector_byte));
        match &self.period {
            Some(p) => put_period(out, p),
            None => out.extend_from_slice(&[0, 0, 0, 0]),
        }
    }
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let reporter = r.maybe_country()?;
        let partner = r.maybe_country()?;
        let flow = match r.byte()? {
            0 => None,
            b => Some(byte_flow(b)?),
        };
        let sector = match r.byte()? {
            0 => None,
            b => Some(byte_sector(b)?),
        };
        let period = r.maybe_period()?;
        Some(GroupKey {
            reporter,
            partner,
            flow,
            sector,
            period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Debug;

    fn country(c: &str) -> Country {
        Country::parse(c).unwrap()
    }

    fn month(y: i32, m: i32) -> Period {
        Period::new(y, Frequency::Monthly, m).unwrap()
    }

    /// Encodes, decodes, and refuses every one-byte alteration, every
    /// truncation and an extension of the cursor of `p`.
    fn round_trips_and_refuses_alterations<P: Position + PartialEq + Debug>(p: P) {
        let bytes = encode(77, 0xfeed, &p);
        let back = decode::<P>(&bytes).unwrap();
        assert_eq!(
            back,
            Cursor {
                snapshot: 77,
                fingerprint: 0xfeed,
                position: p
            }
        );
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut altered = bytes.clone();
                altered[i] ^= flip;
                assert!(decode::<P>(&altered).is_err(), "byte {i} ^ {flip:#x}");
            }
        }
        for len in 0..bytes.len() {
            assert!(decode::<P>(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<P>(&longer).is_err());
    }

    #[test]
    fn every_cursor_kind_round_trips_and_refuses_altered_bytes() {
        for scope in [
            CommodityScope::All,
            CommodityScope::Hs(HsCode::parse("271111").unwrap()),
            CommodityScope::Sector(Sector::Other),
        ] {
            round_trips_and_refuses_alterations::<RecordPosition>((
                country("CN"),
                country("KZ"),
                FigureKey {
                    period: month(2023, 11),
                    scope,
                    flow: Flow::ReImport,
                },
            ));
        }
        round_trips_and_refuses_alterations((country("UZ"), month(2022, 1)));
        round_trips_and_refuses_alterations((country("CN"), country("TM"), month(1999, 12)));
        round_trips_and_refuses_alterations(AgreementId::parse("xian-2023-declaration").unwrap());
        round_trips_and_refuses_alterations(GroupKey::default());
        round_trips_and_refuses_alterations(GroupKey {
            reporter: Some(country("KG")),
            partner: None,
            flow: Some(Flow::Export),
            sector: Some(Sector::Energy),
            period: Some(Period::new(2022, Frequency::Annual, 0).unwrap()),
        });
    }

    #[test]
    fn a_cursor_of_another_call_is_not_a_cursor_of_this_one() {
        let bytes = encode(5, 1, &(country("UZ"), month(2022, 1)));
        assert_eq!(
            decode::<(Country, Country, Period)>(&bytes),
            Err(Refused::NotACursor)
        );
        assert_eq!(decode::<GroupKey>(b""), Err(Refused::NotACursor));
    }

    #[test]
    fn a_well_formed_cursor_with_an_invalid_position_is_refused() {
        // A checksummed cursor whose country bytes name no country.
        let mut body = vec![VERSION, CallKind::Country as u8];
        body.extend_from_slice(&5u64.to_be_bytes());
        body.extend_from_slice(&1u64.to_be_bytes());
        body.extend_from_slice(b"ZZ");
        put_period(&mut body, &month(2022, 1));
        let sum = checksum(&body);
        body.extend_from_slice(&sum);
        assert_eq!(
            decode::<(Country, Period)>(&body),
            Err(Refused::BadPosition)
        );
    }
}
