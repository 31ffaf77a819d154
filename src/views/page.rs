//! The byte form of the views' data kept in sled: **figure pages** (every
//! revision of a pair's figures, in (figure key, sequence) order, cut into
//! pages of at most [`PAGE_BUDGET`] bytes) and **rollup groups** (one pair's
//! sums of one commodity level and period); and [`PageStore`], what the
//! views need from the store to keep them. The keys and integers they are
//! written with are `codec.rs`.
//!
//! Depends only on the domain and the views' key types; knows nothing of
//! sled (the store adds and checks a checksum on every value).

use super::codec::{
    bad, pair_prefix, put_figure_key, put_period, put_varint, read_figure_key, read_period,
    sector_byte, sector_of, Reader, FIGURE_KEY_BYTES, PAIR_BYTES,
};
use super::filter::CommodityLevel;
use super::index::{Details, FigureKey, Revision};
use super::rollup::{RollupKey, Sums};
use crate::domain::{Country, Period, Quantity, Sector, Text};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Key prefix of figure pages.
pub(crate) const PAGE_PREFIX: u8 = b'P';
/// Key prefix of rollup groups.
pub(crate) const ROLLUP_PREFIX: u8 = b'R';
/// Key prefix of runs: the revisions one checkpoint added to one pair,
/// kept apart from its pages until [`RUNS_MAX`] runs or [`RUNS_BUDGET`]
/// bytes have gathered, then merged into them.
pub(crate) const RUN_PREFIX: u8 = b'D';
/// Runs (run pages) a pair keeps, on average, before a checkpoint merges
/// them into its pages (each pair's own limit is spread around it, and a
/// checkpoint merges at most `MERGE_BUDGET` bytes; twice this is a hard
/// limit). A checkpoint that touches a few figures of a pair writes those
/// figures, not the pair's pages again: merging every 8th time divides the
/// bytes rewritten by about 8 when checkpoints touch most pairs a little
/// (the shape of a world HS6 file loaded product by product). Every read of
/// the pair also reads its runs, so they are kept few and small.
pub(crate) const RUNS_MAX: usize = 8;
/// Bytes of runs a pair keeps before they are merged into its pages.
pub(crate) const RUNS_BUDGET: usize = 4 * PAGE_BUDGET;
/// Bytes of a page's content, above which it is cut; a page of one revision
/// may exceed it (an event encodes to at most 3,900 bytes, so every page
/// stays within sled's 4 KiB inline values with the store's checksum).
pub(crate) const PAGE_BUDGET: usize = 3_600;

/// A page or rollup that cannot be read back: a checksum or format failure,
/// or the store's error. Queries answer INTERNAL with it; nothing is served
/// from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the end of one checkpoint writes at once: its rollup groups, keys
/// to delete, the sequence it covers and the agreement events it covers
/// (its runs and pages are written ahead with [`PageStore::put`]).
#[derive(Default, Debug)]
pub(crate) struct CheckpointBatch {
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub deletes: Vec<Vec<u8>>,
    pub covers: u64,
    /// Sequences of the agreement events at or below `covers` that earlier
    /// checkpoints did not cover: the store keeps them, so that a restart
    /// finds the agreements without reading the whole log.
    pub agreement_events: Vec<u64>,
}

/// A key and its value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// One rollup group as stored: the pair's last folded change and each
/// sector's sums.
pub(crate) type RollupGroup = (u64, Vec<(Option<Sector>, Sums)>);

/// The views' keys in the store. Values are handed over without a checksum
/// and come back checked.
pub(crate) trait PageStore: Send + Sync {
    /// Calls `each` with every (key, value) of `from..to`, in key order,
    /// until it returns false.
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Unreadable>;
    /// The greatest key in `lowest..=key`, with its value.
    fn floor(&self, lowest: &[u8], key: &[u8]) -> Result<Option<KeyValue>, Unreadable>;
    /// Writes runs and pages of a checkpoint ahead of it, in a batch of
    /// their own, not yet durable: what they hold beyond the checkpoint
    /// the store covers is also in the overlays (readers take each
    /// revision once) or, after a crash, in the log after that checkpoint.
    fn put(&self, puts: Vec<KeyValue>) -> Result<(), Unreadable>;
    /// Applies the end of a checkpoint at once (readers see all of it or
    /// none of it: the caller holds the views' write lock), not yet durable.
    fn apply(&self, batch: CheckpointBatch) -> Result<(), Unreadable>;
    /// Makes what was applied durable.
    fn sync(&self) -> Result<(), Unreadable>;
    /// Whether a checkpoint may be written now (`Err`: why not, e.g. the
    /// disk is nearly full); a refused checkpoint is tried again later.
    fn room(&self) -> Result<(), String> {
        Ok(())
    }
}

// ---- pages ------------------------------------------------------------------

/// One revision of one figure, as a page holds it.
pub(crate) type Entry = (FigureKey, Revision);

const PAGE_VERSION: u8 = 1;

fn details_bytes(d: &Details) -> Vec<u8> {
    let mut out = Vec::new();
    match &d.quantity {
        None => out.push(0),
        Some(q) => {
            out.push(1);
            put_varint(&mut out, q.whole() as u128);
            put_varint(&mut out, u128::from(q.sub_nanos()));
            put_varint(&mut out, q.unit().len() as u128);
            out.extend_from_slice(q.unit().as_bytes());
        }
    }
    for t in [d.source.as_str(), d.note.as_str()] {
        put_varint(&mut out, t.len() as u128);
        out.extend_from_slice(t.as_bytes());
    }
    out
}

fn read_details(r: &mut Reader<'_>) -> Result<Details, Unreadable> {
    let quantity = match r.byte()? {
        0 => None,
        1 => {
            let whole = i64::try_from(r.varint()?).map_err(|_| bad("quantity"))?;
            let nanos = i32::try_from(r.varint()?).map_err(|_| bad("quantity"))?;
            let unit = r.text()?;
            Some(Quantity::new(whole, nanos, unit).map_err(|_| bad("quantity"))?)
        }
        _ => return Err(bad("quantity flag")),
    };
    let source = Text::parse(r.text()?).map_err(|_| bad("source"))?;
    let note = Text::parse(r.text()?).map_err(|_| bad("note"))?;
    Ok(Details {
        quantity,
        source,
        note,
    })
}

/// Encodes consecutive entries as one page: its distinct details once, then
/// each revision (figure key only when it changes, sequence, value, details).
pub(crate) fn encode_page(entries: &[Entry]) -> Vec<u8> {
    let mut dictionary: Vec<Vec<u8>> = Vec::new();
    let mut index: HashMap<*const Details, usize> = HashMap::new();
    let mut body = Vec::with_capacity(entries.len() * 24);
    put_varint(&mut body, entries.len() as u128);
    let mut previous: Option<&FigureKey> = None;
    for (key, revision) in entries {
        if previous == Some(key) {
            body.push(1);
        } else {
            body.push(0);
            put_figure_key(&mut body, key);
        }
        previous = Some(key);
        put_varint(&mut body, u128::from(revision.sequence));
        put_varint(&mut body, revision.value);
        let d = match &revision.details {
            None => 0,
            Some(d) => {
                let next = dictionary.len();
                let i = *index.entry(Arc::as_ptr(d)).or_insert_with(|| {
                    dictionary.push(details_bytes(d));
                    next
                });
                i + 1
            }
        };
        put_varint(&mut body, d as u128);
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(PAGE_VERSION);
    put_varint(&mut out, dictionary.len() as u128);
    for d in &dictionary {
        out.extend_from_slice(d);
    }
    out.extend_from_slice(&body);
    out
}

/// Reads a page's version and the number of its distinct details, which
/// follow.
fn open_page(bytes: &[u8]) -> Result<(Reader<'_>, usize), Unreadable> {
    let mut r = Reader(bytes);
    if r.byte()? != PAGE_VERSION {
        return Err(bad("page version"));
    }
    let n = r.usize()?;
    if n > bytes.len() {
        return Err(bad("details count"));
    }
    Ok((r, n))
}

/// Calls `each` with the key, sequence, value and details index (0: a
/// retraction; at most `details`) of every revision after a page's details,
/// until it returns false; a page read to its end must end there.
fn page_revisions(
    mut r: Reader<'_>,
    details: usize,
    each: &mut dyn FnMut(&FigureKey, u64, u128, usize) -> bool,
) -> Result<(), Unreadable> {
    let count = r.usize()?;
    if count > r.0.len() {
        return Err(bad("entry count"));
    }
    let mut key: Option<FigureKey> = None;
    for _ in 0..count {
        let k = match r.byte()? {
            0 => read_figure_key(r.bytes(FIGURE_KEY_BYTES)?)?,
            1 => key.ok_or_else(|| bad("first key"))?,
            _ => return Err(bad("key flag")),
        };
        key = Some(k);
        let sequence = r.u64()?;
        let value = r.varint()?;
        let index = r.usize()?;
        if index > details {
            return Err(bad("details index"));
        }
        if !each(&k, sequence, value, index) {
            return Ok(());
        }
    }
    if !r.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(())
}

/// Decodes a page's entries, in order.
pub(crate) fn decode_page(bytes: &[u8]) -> Result<Vec<Entry>, Unreadable> {
    let (mut r, n) = open_page(bytes)?;
    let mut dictionary = Vec::with_capacity(n);
    for _ in 0..n {
        dictionary.push(Arc::new(read_details(&mut r)?));
    }
    let mut out: Vec<Entry> = Vec::new();
    page_revisions(r, n, &mut |key, sequence, value, index| {
        // `page_revisions` checked that the index is at most `n`.
        let details = index.checked_sub(1).map(|i| Arc::clone(&dictionary[i]));
        out.push((
            *key,
            Revision {
                sequence,
                value,
                details,
            },
        ));
        true
    })?;
    Ok(out)
}

/// Steps over one encoded [`Details`] (for [`decode_page_values`], which
/// does not need them).
fn skip_details(r: &mut Reader<'_>) -> Result<(), Unreadable> {
    match r.byte()? {
        0 => {}
        1 => {
            r.varint()?;
            r.varint()?;
            let n = r.usize()?;
            r.bytes(n)?;
        }
        _ => return Err(bad("quantity flag")),
    }
    for _ in 0..2 {
        let n = r.usize()?;
        r.bytes(n)?;
    }
    Ok(())
}

/// Calls `each` with the key, sequence and value (`None`: a retraction) of
/// every revision of a page, in order, without decoding their details: what
/// a fold of values needs, at a fraction of [`decode_page`]'s cost. Stops
/// when `each` returns false.
pub(crate) fn decode_page_values(
    bytes: &[u8],
    each: &mut dyn FnMut(&FigureKey, u64, Option<u128>) -> bool,
) -> Result<(), Unreadable> {
    let (mut r, n) = open_page(bytes)?;
    for _ in 0..n {
        skip_details(&mut r)?;
    }
    page_revisions(r, n, &mut |key, sequence, value, index| {
        each(key, sequence, (index > 0).then_some(value))
    })
}

/// Cuts entries (in order) into pages of at most [`PAGE_BUDGET`] bytes:
/// (first key, first sequence, bytes) each.
pub(crate) fn cut_pages(entries: &[Entry]) -> Vec<(FigureKey, u64, Vec<u8>)> {
    /// The most a revision takes besides its details: the key flag and key,
    /// the sequence and value varints, the details index.
    const REVISION_BYTES: usize = 1 + FIGURE_KEY_BYTES + 10 + 19 + 3;
    /// The version and the two counts.
    const HEADER_BYTES: usize = 8;
    let mut pages = Vec::new();
    let (mut start, mut size) = (0, HEADER_BYTES);
    let mut seen: HashSet<*const Details> = HashSet::new();
    for (i, (_, revision)) in entries.iter().enumerate() {
        // Its details count only on the page's first revision that has them.
        let cost = |seen: &HashSet<*const Details>| {
            REVISION_BYTES
                + revision
                    .details
                    .as_ref()
                    .filter(|d| !seen.contains(&Arc::as_ptr(d)))
                    .map_or(0, |d| details_bytes(d).len())
        };
        let mut this = cost(&seen);
        if i > start && size + this > PAGE_BUDGET {
            pages.push(&entries[start..i]);
            (start, size) = (i, HEADER_BYTES);
            seen.clear();
            this = cost(&seen);
        }
        if let Some(d) = &revision.details {
            seen.insert(Arc::as_ptr(d));
        }
        size += this;
    }
    if start < entries.len() {
        pages.push(&entries[start..]);
    }
    pages
        .into_iter()
        .map(|p| (p[0].0, p[0].1.sequence, encode_page(p)))
        .collect()
}

// ---- rollups ----------------------------------------------------------------

fn level_byte(l: CommodityLevel) -> u8 {
    match l {
        CommodityLevel::All => 0,
        CommodityLevel::Hs2 => 1,
        CommodityLevel::Hs4 => 2,
        CommodityLevel::Hs6 => 3,
        CommodityLevel::Sector => 4,
    }
}

const LEVELS: [CommodityLevel; 5] = [
    CommodityLevel::All,
    CommodityLevel::Hs2,
    CommodityLevel::Hs4,
    CommodityLevel::Hs6,
    CommodityLevel::Sector,
];

/// The key of one pair's rollups of one level and period.
pub(crate) fn rollup_key(
    reporter: Country,
    partner: Country,
    level: CommodityLevel,
    period: &Period,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAIR_BYTES + 5);
    out.extend_from_slice(&pair_prefix(ROLLUP_PREFIX, reporter, partner));
    out.push(level_byte(level));
    put_period(&mut out, period);
    out
}

/// The level and period of a rollup key.
pub(crate) fn read_rollup_key(key: &[u8]) -> Result<(CommodityLevel, Period), Unreadable> {
    let b = key
        .get(PAIR_BYTES..PAIR_BYTES + 5)
        .ok_or_else(|| bad("rollup key"))?;
    let level = *LEVELS.get(usize::from(b[0])).ok_or_else(|| bad("level"))?;
    Ok((level, read_period(&b[1..])?))
}

/// One rollup group's value: the pair's last folded change, then each
/// sector's (or the no-sector group's) sums.
pub(crate) fn encode_rollups(folded: u64, groups: &[(Option<Sector>, Sums)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + groups.len() * 40);
    put_varint(&mut out, u128::from(folded));
    put_varint(&mut out, groups.len() as u128);
    for (sector, sums) in groups {
        out.push(sector.map_or(0xff, sector_byte));
        sums.encode(&mut |v| put_varint(&mut out, v));
    }
    out
}

pub(crate) fn decode_rollups(bytes: &[u8]) -> Result<RollupGroup, Unreadable> {
    let mut r = Reader(bytes);
    let folded = r.u64()?;
    let n = r.usize()?;
    if n > Sector::ALL.len() + 1 {
        return Err(bad("rollup count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sector = match r.byte()? {
            0xff => None,
            b => Some(sector_of(b)?),
        };
        let sums = Sums::decode(&mut || r.varint(), || bad("rollup count"))?;
        out.push((sector, sums));
    }
    if !r.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok((folded, out))
}

impl RollupKey {
    pub(crate) fn bytes(&self, reporter: Country, partner: Country) -> Vec<u8> {
        rollup_key(reporter, partner, self.level, &self.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Payload;
    use crate::views::codec::{page_key, pair_of};
    use crate::views::testing::random_events;

    fn entries(n: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = random_events(n, 7)
            .into_iter()
            .map(|e| match e.event.payload {
                Payload::TradeRecord(r) => (
                    FigureKey::of(&r.key),
                    Revision {
                        sequence: e.sequence,
                        value: r.value.total_nanos(),
                        details: Some(Arc::new(Details {
                            quantity: r.quantity,
                            source: r.source,
                            note: r.note,
                        })),
                    },
                ),
                Payload::TradeRecordRetracted(r) => (
                    FigureKey::of(&r.key),
                    Revision {
                        sequence: e.sequence,
                        value: 0,
                        details: None,
                    },
                ),
                _ => unreachable!(),
            })
            .collect();
        out.sort_by_key(|(k, r)| (*k, r.sequence));
        out
    }

    fn same(a: &[Entry], b: &[Entry]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|((ka, ra), (kb, rb))| {
                ka == kb
                    && ra.sequence == rb.sequence
                    && ra.value == rb.value
                    && ra.details.as_deref() == rb.details.as_deref()
            })
    }

    #[test]
    fn pages_round_trip_and_keep_within_the_budget() {
        let all = entries(3000);
        let pages = cut_pages(&all);
        assert!(pages.len() > 1);
        let mut back = Vec::new();
        for (key, seq, bytes) in &pages {
            assert!(bytes.len() <= PAGE_BUDGET, "{}", bytes.len());
            let e = decode_page(bytes).unwrap();
            assert_eq!((e[0].0, e[0].1.sequence), (*key, *seq));
            back.extend(e);
        }
        assert!(same(&all, &back));
    }

    #[test]
    fn keys_sort_as_what_they_stand_for() {
        let all = entries(2000);
        let cn = Country::parse("CN").unwrap();
        let kz = Country::parse("KZ").unwrap();
        let keys: Vec<Vec<u8>> = all
            .iter()
            .map(|(k, r)| page_key(cn, kz, k, r.sequence))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        for ((k, _), bytes) in all.iter().zip(&keys) {
            assert_eq!(read_figure_key(&bytes[PAIR_BYTES..]).unwrap(), *k);
            assert_eq!(pair_of(bytes).unwrap(), (cn, kz));
        }
    }

    #[test]
    fn a_damaged_page_is_an_error_never_a_panic() {
        let page = encode_page(&entries(200));
        let values = |p: &[u8]| decode_page_values(p, &mut |_, _, _| true);
        for cut in 0..page.len() {
            let _ = decode_page(&page[..cut]);
            assert!(values(&page[..cut]).is_err());
        }
        for i in 0..page.len() {
            let mut p = page.clone();
            p[i] ^= 0x5a;
            let _ = decode_page(&p);
            let _ = values(&p);
        }
    }

    #[test]
    fn a_page_read_for_its_values_gives_what_it_holds_in_order() {
        let all = entries(300);
        let page = encode_page(&all);
        let mut got = Vec::new();
        decode_page_values(&page, &mut |k, s, v| {
            got.push((*k, s, v));
            true
        })
        .unwrap();
        let wanted: Vec<_> = all
            .iter()
            .map(|(k, r)| (*k, r.sequence, r.current_value()))
            .collect();
        assert_eq!(got, wanted);
        assert!(wanted.iter().any(|(_, _, v)| v.is_none()));
        // Stopping early stops.
        let mut seen = 0;
        decode_page_values(&page, &mut |_, _, _| {
            seen += 1;
            seen < 10
        })
        .unwrap();
        assert_eq!(seen, 10);
    }
}
