//! Checkpoints: the changes applied since the last one are folded into the
//! figure pages and the pairs' rollups, written to the store in one batch
//! stamped with the sequence they cover, then dropped from memory.
//!
//! A checkpoint **freezes** the active overlay (new changes go to a fresh
//! one, and readers see both), **folds** it without any lock (only the
//! checkpoint writes pages and rollups, so what it reads cannot change
//! under it), then **installs** it under the write lock (the batch is applied
//! to the store and the new rollups replace the old ones at once, so a
//! reader sees all of the checkpoint or none of it), and finally makes it
//! durable. A crash at any point leaves the previous checkpoint, and the log
//! beyond it is replayed at startup.
//!
//! Depends only on the domain and the views.

use super::filter::CommodityLevel;
use super::index::{read_runs, scope_sector, FigureKey, Index, Overlay};
use super::page::{
    cut_pages, decode_page, encode_rollups, page_key, pair_prefix, run_key, CheckpointBatch, Entry,
    PageStore, Unreadable, PAGE_PREFIX, RUNS_BUDGET, RUNS_MAX,
};
use super::rollup::{RollupKey, Sums};
use super::totals::Cell;
use crate::domain::{CommodityScope, Country, Flow, Period, Sector};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// What a fold produced for one pair.
struct Folded {
    pair: (Country, Country),
    rollups: BTreeMap<RollupKey, Sums>,
    /// The last change folded.
    last: u64,
}

/// Runs one checkpoint; false when there was nothing to fold.
pub(super) fn checkpoint(index: &RwLock<Index>) -> Result<bool, Unreadable> {
    let write = || index.write().unwrap_or_else(|p| p.into_inner());
    // Freeze (or take up again a checkpoint whose write failed).
    let (covers, frozen, pages) = {
        let mut ix = write();
        if ix.frozen.is_none() {
            if ix.active.is_empty() {
                return Ok(false);
            }
            let overlay = Arc::new(std::mem::take(&mut ix.active));
            ix.frozen = Some((ix.applied, overlay));
        }
        let Some((covers, frozen)) = ix.frozen.clone() else {
            return Ok(false);
        };
        (covers, frozen, Arc::clone(&ix.pages))
    };
    // Only checkpoints change rollups, so this copy, taken under the read
    // lock, stays current.
    let mut work: Vec<((Country, Country), BTreeMap<RollupKey, Sums>)> = {
        let ix = index.read().unwrap_or_else(|p| p.into_inner());
        frozen
            .pairs
            .keys()
            .map(|&(r, p)| {
                let rollups = ix.pair(r, p).map(|x| x.rollups.clone()).unwrap_or_default();
                ((r, p), rollups)
            })
            .collect()
    };
    let mut batch = CheckpointBatch {
        covers,
        agreement_events: frozen.agreement_events.clone(),
        ..CheckpointBatch::default()
    };
    let mut folded = Vec::with_capacity(work.len());
    for ((r, p), rollups) in work.iter_mut() {
        let last = fold_pair(&*pages, &frozen, *r, *p, rollups, &mut batch)?;
        folded.push(Folded {
            pair: (*r, *p),
            rollups: std::mem::take(rollups),
            last,
        });
    }
    {
        let mut ix = write();
        pages.apply(batch)?;
        for f in folded {
            let unfolded = ix.active.pairs.get(&f.pair).map(|o| o.first);
            let pair = ix
                .pairs
                .entry(f.pair.0)
                .or_default()
                .entry(f.pair.1)
                .or_default();
            pair.rollups = f.rollups;
            pair.folded = pair.folded.max(f.last);
            pair.unfolded = unfolded;
        }
        ix.frozen = None;
    }
    pages.sync()?;
    Ok(true)
}

fn cell_of(
    current: &BTreeMap<FigureKey, Option<u128>>,
    period: Period,
    scope: CommodityScope,
) -> Cell {
    let first = FigureKey {
        period,
        scope,
        flow: Flow::Export,
    };
    let last = FigureKey {
        flow: Flow::Turnover,
        ..first
    };
    let mut cell = Cell::default();
    for (k, v) in current.range(first..=last) {
        if let Some(v) = v {
            cell.add(k.flow, *v);
        }
    }
    cell
}

/// Folds one pair's frozen changes into its rollups (each touched cell out
/// as it was, in as it is) and into the store: as a new run, or, once the
/// pair's runs would pass [`RUNS_MAX`] or [`RUNS_BUDGET`], merged with its
/// runs into the pages that hold their keys (only those pages are
/// rewritten). Returns the last change's sequence.
fn fold_pair(
    pages: &dyn PageStore,
    frozen: &Overlay,
    reporter: Country,
    partner: Country,
    rollups: &mut BTreeMap<RollupKey, Sums>,
    batch: &mut CheckpointBatch,
) -> Result<u64, Unreadable> {
    let Some(new) = frozen.pairs.get(&(reporter, partner)) else {
        return Ok(0);
    };
    let fresh: Vec<Entry> = new
        .figures
        .iter()
        .flat_map(|(k, rs)| rs.iter().map(move |r| (*k, r.clone())))
        .collect();
    let Some(last_seq) = fresh.iter().map(|(_, r)| r.sequence).max() else {
        return Ok(0);
    };
    let runs = read_runs(pages, reporter, partner)?;
    let new_run = cut_pages(&fresh);
    let run_bytes: usize = runs
        .iter()
        .map(|(_, bytes, _)| *bytes)
        .chain(new_run.iter().map(|(_, _, b)| b.len()))
        .sum();
    let merge = runs.len() + new_run.len() > RUNS_MAX || run_bytes > RUNS_BUDGET;
    let cells_of = |es: &[Entry]| -> BTreeSet<(Period, CommodityScope)> {
        es.iter().map(|(k, _)| (k.period, k.scope)).collect()
    };
    let touched = cells_of(&fresh);
    let mut needed = touched.clone();
    if merge {
        for (_, _, run) in &runs {
            needed.extend(cells_of(run));
        }
    }
    let base = pages_of_cells(pages, reporter, partner, &needed)?;
    // The current values: pages, then runs, then the new revisions (each
    // newer than everything before it).
    let mut values: BTreeMap<FigureKey, Option<u128>> = BTreeMap::new();
    let stored = base
        .values()
        .flatten()
        .chain(runs.iter().flat_map(|(_, _, r)| r));
    for (k, r) in stored {
        values.insert(*k, r.current_value());
    }
    let before: Vec<Cell> = touched
        .iter()
        .map(|&(period, scope)| cell_of(&values, period, scope))
        .collect();
    for (k, r) in &fresh {
        values.insert(*k, r.current_value());
    }
    let mut groups: BTreeSet<(CommodityLevel, Period)> = BTreeSet::new();
    for (&(period, scope), b) in touched.iter().zip(before) {
        let a = cell_of(&values, period, scope);
        let level = CommodityLevel::of(&scope);
        let sums = rollups
            .entry(RollupKey {
                level,
                period,
                sector: scope_sector(&scope),
            })
            .or_default();
        if b.figures > 0 {
            sums.remove(&b);
        }
        if a.figures > 0 {
            sums.add(&a);
        }
        groups.insert((level, period));
    }
    for (level, period) in groups {
        let range = RollupKey {
            level,
            period,
            sector: None,
        }..=RollupKey {
            level,
            period,
            sector: Some(Sector::Other),
        };
        let of_group: Vec<(Option<Sector>, Sums)> =
            rollups.range(range).map(|(k, s)| (k.sector, *s)).collect();
        let key = RollupKey {
            level,
            period,
            sector: None,
        }
        .bytes(reporter, partner);
        batch.puts.push((key, encode_rollups(last_seq, &of_group)));
    }
    if !merge {
        for (i, (_, _, bytes)) in new_run.into_iter().enumerate() {
            let index =
                u16::try_from(i).map_err(|_| Unreadable("a run of too many pages".into()))?;
            batch
                .puts
                .push((run_key(reporter, partner, batch.covers, index), bytes));
        }
        return Ok(last_seq);
    }
    // Merge: each revision of the runs and of this checkpoint goes to the
    // page its key falls in (every such page was read, see
    // `pages_of_cells`), or before the pair's first page.
    let mut added: BTreeMap<Option<Vec<u8>>, Vec<Entry>> = BTreeMap::new();
    let mut run_keys = Vec::with_capacity(runs.len());
    let unmerged = runs.into_iter().flat_map(|(key, _, run)| {
        run_keys.push(key);
        run
    });
    for (k, r) in unmerged.chain(fresh) {
        let at = page_key(reporter, partner, &k, r.sequence);
        let owner = base.range(..=at).next_back().map(|(key, _)| key.clone());
        added.entry(owner).or_default().push((k, r));
    }
    for (owner, mut entries) in added {
        let mut all = owner
            .as_ref()
            .and_then(|k| base.get(k))
            .cloned()
            .unwrap_or_default();
        all.append(&mut entries);
        all.sort_by_key(|(k, r)| (*k, r.sequence));
        let mut rewrote_owner = false;
        for (key, seq, bytes) in cut_pages(&all) {
            let k = page_key(reporter, partner, &key, seq);
            rewrote_owner |= owner.as_ref() == Some(&k);
            batch.puts.push((k, bytes));
        }
        if let (Some(old), false) = (owner, rewrote_owner) {
            batch.deletes.push(old);
        }
    }
    batch.deletes.extend(run_keys);
    Ok(last_seq)
}

/// Every page of one pair that holds a revision of one of `cells` (a cell's
/// flows are adjacent keys, possibly in two pages), by page key, decoded.
/// For any key of those cells, the page it falls in is among them.
fn pages_of_cells(
    pages: &dyn PageStore,
    reporter: Country,
    partner: Country,
    cells: &BTreeSet<(Period, CommodityScope)>,
) -> Result<BTreeMap<Vec<u8>, Vec<Entry>>, Unreadable> {
    let prefix = pair_prefix(PAGE_PREFIX, reporter, partner);
    let mut end = prefix.to_vec();
    end.push(0xff);
    let mut out: BTreeMap<Vec<u8>, Vec<Entry>> = BTreeMap::new();
    for &(period, scope) in cells {
        let lo = FigureKey {
            period,
            scope,
            flow: Flow::Export,
        };
        let hi = FigureKey {
            flow: Flow::Turnover,
            ..lo
        };
        let at = page_key(reporter, partner, &lo, 0);
        let hi_key = page_key(reporter, partner, &hi, u64::MAX);
        // The page `lo` falls in may begin before it.
        let start = pages.floor(&prefix, &at)?.map_or(at, |(k, _)| k);
        let mut failed = None;
        pages.scan(&start, &end, &mut |key, value| {
            if key > hi_key.as_slice() {
                return false;
            }
            if !out.contains_key(key) {
                match decode_page(value) {
                    Ok(entries) => {
                        out.insert(key.to_vec(), entries);
                    }
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(out)
}
