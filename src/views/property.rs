//! The property test of the views kept in sled: after random records,
//! revisions and retractions, with checkpoints at random moments (so that
//! pairs gather runs, merge them into pages, and split pages), every figure,
//! revision history and cooperation slice read from the index equals a
//! brute-force computation over the events themselves, at random snapshots;
//! also after checkpoints cut short between their writes ahead and their end
//! and a restart from the store.
//!
//! Test-only; depends on the views and the domain.

use super::checkpoint::checkpoint;
use super::filter::{previous_year, CommodityLevel, PeriodRange};
use super::index::MemoryPages;
use super::index::{figure_at, scope_sector, FigureKey, Index};
use super::page::{CheckpointBatch, KeyValue, PageStore, Unreadable, PAGE_PREFIX, RUN_PREFIX};
use super::slices::{pair_slices, SliceSpec};
use super::testing::{countries, random_events};
use super::totals::{Cell, FlowTotals};
use crate::domain::{
    CommodityScope, Country, Frequency, Payload, Period, Sector, SectorSet, StoredEvent,
};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// A deterministic draw below `n`.
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: u64) -> u64 {
        self.0 += 1;
        xxhash_rust::xxh3::xxh3_64(&self.0.to_le_bytes()) % n
    }
}

/// One pair's figures as of `snapshot`, straight from the events: each key's
/// revision sequences and its current value (`None`: retracted).
type Brute = BTreeMap<FigureKey, (Vec<u64>, Option<u128>)>;

fn brute_force(events: &[StoredEvent], snapshot: u64, r: Country, p: Country) -> Brute {
    let mut out = Brute::new();
    for e in events.iter().take_while(|e| e.sequence <= snapshot) {
        let (key, value) = match &e.event.payload {
            Payload::TradeRecord(t) => (&t.key, Some(t.value.total_nanos())),
            Payload::TradeRecordRetracted(t) => (&t.key, None),
            _ => continue,
        };
        if key.reporter() != r || key.partner() != p {
            continue;
        }
        let entry = out.entry(FigureKey::of(key)).or_default();
        entry.0.push(e.sequence);
        entry.1 = value;
    }
    out
}

/// Per-period totals of the current figures that pass `keep`, cell by cell.
fn brute_totals(
    figures: &Brute,
    keep: impl Fn(&FigureKey) -> bool,
) -> BTreeMap<(Period, Option<Sector>), FlowTotals> {
    let mut cells: BTreeMap<(Period, CommodityScope), Cell> = BTreeMap::new();
    for (k, (_, v)) in figures {
        if let (Some(v), true) = (v, keep(k)) {
            cells
                .entry((k.period, k.scope))
                .or_default()
                .add(k.flow, *v);
        }
    }
    let mut out: BTreeMap<(Period, Option<Sector>), FlowTotals> = BTreeMap::new();
    for ((period, scope), cell) in cells {
        out.entry((period, None)).or_default().add_cell(&cell);
        if let Some(s) = scope_sector(&scope) {
            out.entry((period, Some(s))).or_default().add_cell(&cell);
        }
    }
    out
}

/// Checks every pair's figures and slices at `snapshot` against the events.
fn check(index: &Index, events: &[StoredEvent], snapshot: u64, draws: &mut Draws) {
    let countries = countries();
    let mut brute: BTreeMap<(Country, Country), Brute> = BTreeMap::new();
    for &r in &countries {
        for &p in &countries {
            brute.insert((r, p), brute_force(events, snapshot, r, p));
        }
    }
    for (&(r, p), expected) in &brute {
        // Figures and their revision histories, read whole...
        let all = index
            .pair_figures(r, p, (Bound::Unbounded, Bound::Unbounded))
            .unwrap();
        let mut got = Brute::new();
        for (k, revisions) in &all {
            let seqs: Vec<u64> = revisions
                .iter()
                .map(|r| r.sequence)
                .filter(|s| *s <= snapshot)
                .collect();
            if !seqs.is_empty() {
                let value = figure_at(revisions, snapshot).map(|f| f.value);
                got.insert(*k, (seqs, value));
            }
        }
        assert_eq!(&got, expected, "{r:?}->{p:?} at {snapshot}");
        // The values alone, as the as-of folds read them, whole and from a
        // key on.
        let values: Vec<(FigureKey, u128)> = expected
            .iter()
            .filter_map(|(k, (_, v))| v.map(|v| (*k, v)))
            .collect();
        let from = values
            .get(draws.below(values.len() as u64 + 1) as usize)
            .map_or(Bound::Unbounded, |(k, _)| Bound::Included(*k));
        for bounds in [
            (Bound::Unbounded, Bound::Unbounded),
            (from, Bound::Unbounded),
        ] {
            let mut folded = Vec::new();
            index
                .pair_values_at(r, p, bounds, snapshot, &mut |k, v| folded.push((*k, v)))
                .unwrap();
            let wanted: Vec<_> = values
                .iter()
                .filter(|(k, _)| bounds.contains(k))
                .copied()
                .collect();
            assert_eq!(folded, wanted, "{r:?}->{p:?} values at {snapshot}");
        }
        // ...and in windows, as StreamTradeRecords reads them.
        let window = 1 + draws.below(40) as usize;
        let mut from = Bound::Unbounded;
        let mut windowed = Vec::new();
        loop {
            let (part, more) = index
                .pair_figures_window(r, p, (from, Bound::Unbounded), window)
                .unwrap();
            assert!(part.len() <= window);
            if let Some((k, _)) = part.last() {
                from = Bound::Excluded(*k);
            }
            windowed.extend(part);
            if !more {
                break;
            }
        }
        assert_eq!(windowed.len(), all.len(), "{r:?}->{p:?} window {window}");
        for ((a, ra), (b, rb)) in windowed.iter().zip(&all) {
            assert_eq!(a, b);
            let seqs =
                |rs: &[super::index::Revision]| rs.iter().map(|r| r.sequence).collect::<Vec<_>>();
            assert_eq!(seqs(ra), seqs(rb));
        }
    }
    // Each figure's first record (its owner's), for all that was applied.
    if snapshot == index.applied {
        let mut first: BTreeMap<crate::domain::TradeFigureKey, u64> = BTreeMap::new();
        for e in events.iter().filter(|e| e.sequence <= snapshot) {
            if let Payload::TradeRecord(r) = &e.event.payload {
                first.entry(r.key).or_insert(e.sequence);
            }
        }
        for e in events.iter().filter(|e| e.sequence <= snapshot) {
            let key = match &e.event.payload {
                Payload::TradeRecord(r) => r.key,
                Payload::TradeRecordRetracted(r) => r.key,
                _ => continue,
            };
            assert_eq!(
                index.figure_first_record(&key).unwrap(),
                first.get(&key).copied(),
                "first record of {key:?} at {snapshot}"
            );
        }
    }
    // Cooperation slices: totals, growth base, mirror and sector breakdown.
    for frequency in [Frequency::Annual, Frequency::Monthly] {
        for level in CommodityLevel::ALL {
            for sectors in [SectorSet::default(), [Sector::Energy].into_iter().collect()] {
                let spec = SliceSpec {
                    range: PeriodRange {
                        frequency,
                        from: None,
                        to: None,
                    },
                    level,
                    breakdown: Some(level),
                    sectors,
                    agreement_sector: None,
                    mirror_only: false,
                };
                let keep = |k: &FigureKey| {
                    k.period.frequency() == frequency
                        && level.matches(&k.scope)
                        && (sectors.is_empty()
                            || scope_sector(&k.scope).is_some_and(|s| sectors.contains(s)))
                };
                for (&(r, p), figures) in &brute {
                    let own = brute_totals(figures, keep);
                    let mirror = brute_totals(&brute[&(p, r)], keep);
                    let slices = pair_slices(index, snapshot, r, p, &spec, None).unwrap();
                    let periods: Vec<Period> = own
                        .keys()
                        .filter(|(_, s)| s.is_none())
                        .map(|(period, _)| *period)
                        .collect();
                    let got: Vec<Period> = slices.iter().map(|s| s.period).collect();
                    assert_eq!(got, periods, "{r:?}->{p:?} {level:?} at {snapshot}");
                    for s in &slices {
                        let what = format!("{r:?}->{p:?} {:?} {level:?} at {snapshot}", s.period);
                        assert_eq!(Some(s.own), own.get(&(s.period, None)).copied(), "{what}");
                        assert_eq!(
                            s.previous,
                            previous_year(&s.period).and_then(|y| own.get(&(y, None)).copied()),
                            "{what}"
                        );
                        assert_eq!(s.mirror, mirror.get(&(s.period, None)).copied(), "{what}");
                        let sectors: Vec<(Sector, FlowTotals)> = own
                            .range(
                                (s.period, Some(Sector::ALL[0]))..=(s.period, Some(Sector::Other)),
                            )
                            .filter_map(|((_, sector), t)| sector.map(|x| (x, *t)))
                            .collect();
                        assert_eq!(s.sectors, sectors, "{what}");
                    }
                }
            }
        }
    }
}

/// The number of keys with each of the views' page prefixes: pages, runs.
fn stored_keys(index: &Index) -> (usize, usize) {
    let count = |prefix: u8| {
        let mut n = 0;
        index
            .pages
            .scan(&[prefix], &[prefix + 1], &mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
        n
    };
    (count(PAGE_PREFIX), count(RUN_PREFIX))
}

#[test]
fn every_view_equals_a_brute_force_over_the_log_at_random_snapshots() {
    for seed in 1..=4u64 {
        let events = random_events(2_500, seed);
        let mut draws = Draws(seed << 40);
        let index = RwLock::new(Index::default());
        let mut next_checkpoint = 1 + draws.below(120);
        let (mut most_pages, mut last_runs, mut merged) = (0, 0, false);
        for (i, event) in events.iter().enumerate() {
            index.write().unwrap().apply(event.clone());
            let applied = i as u64 + 1;
            if applied == next_checkpoint {
                checkpoint(&index).unwrap();
                let (pages, runs) = stored_keys(&index.read().unwrap());
                most_pages = most_pages.max(pages);
                merged |= runs < last_runs;
                last_runs = runs;
                next_checkpoint = applied + 1 + draws.below(120);
                let ix = index.read().unwrap();
                // Right after a checkpoint the rollups describe the newest
                // snapshot; older snapshots are summed from the figures.
                if draws.below(6) == 0 {
                    check(&ix, &events, applied, &mut draws);
                    let older = 1 + draws.below(applied);
                    check(&ix, &events, older, &mut draws);
                }
            } else if draws.below(400) == 0 {
                // Between checkpoints: pages, runs and the overlay merged.
                let ix = index.read().unwrap();
                let snapshot = 1 + draws.below(applied);
                check(&ix, &events, applied, &mut draws);
                check(&ix, &events, snapshot, &mut draws);
            }
        }
        let ix = index.read().unwrap();
        check(&ix, &events, events.len() as u64, &mut draws);
        // The test covers what it is for: pairs of several pages, and runs
        // merged into them.
        assert!(most_pages > 2 * 6, "{most_pages} pages");
        assert!(merged, "no runs were merged");
    }
}

/// Pages whose end-of-checkpoint write fails when told to: the store a crash
/// leaves between a checkpoint's writes ahead and its end.
#[derive(Default)]
struct CutShort {
    pages: MemoryPages,
    fail: AtomicBool,
}

impl PageStore for CutShort {
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Unreadable> {
        self.pages.scan(from, to, each)
    }
    fn floor(&self, lowest: &[u8], key: &[u8]) -> Result<Option<KeyValue>, Unreadable> {
        self.pages.floor(lowest, key)
    }
    fn put(&self, puts: Vec<KeyValue>) -> Result<(), Unreadable> {
        self.pages.put(puts)
    }
    fn apply(&self, batch: CheckpointBatch) -> Result<(), Unreadable> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err(Unreadable("cut short".into()));
        }
        self.pages.apply(batch)
    }
    fn sync(&self) -> Result<(), Unreadable> {
        Ok(())
    }
}

#[test]
fn checkpoints_cut_short_after_their_writes_ahead_leave_views_equal_to_the_log() {
    for seed in 5..=7u64 {
        let events = random_events(2_500, seed);
        let mut draws = Draws(seed << 40);
        let store = Arc::new(CutShort::default());
        let fresh = |covers: u64| {
            let mut ix = Index::default();
            ix.restore(Arc::clone(&store) as Arc<dyn PageStore>, covers)
                .unwrap();
            RwLock::new(ix)
        };
        let mut index = fresh(0);
        let mut cut = 0;
        let mut next_checkpoint = 1 + draws.below(120);
        let mut i = 0;
        while i < events.len() {
            index.write().unwrap().apply(events[i].clone());
            i += 1;
            if i as u64 != next_checkpoint {
                continue;
            }
            next_checkpoint = i as u64 + 1 + draws.below(120);
            if draws.below(3) != 0 {
                checkpoint(&index).unwrap();
                continue;
            }
            // The runs and pages are written, the end is not: the process
            // "dies", and a new one starts from the store's checkpoint and
            // replays the log after it.
            store.fail.store(true, Ordering::SeqCst);
            assert!(checkpoint(&index).is_err());
            cut += 1;
            let covers = index.read().unwrap().checkpointed;
            index = fresh(covers);
            for e in &events[covers as usize..i] {
                index.write().unwrap().apply(e.clone());
            }
        }
        checkpoint(&index).unwrap();
        assert!(cut > 3, "{cut} checkpoints cut short");
        let ix = index.read().unwrap();
        for snapshot in [events.len() as u64, 1 + draws.below(events.len() as u64)] {
            check(&ix, &events, snapshot, &mut draws);
        }
    }
}
