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

use super::codec::{page_key, pair_prefix, run_covers, run_key};
use super::filter::CommodityLevel;
use super::index::{scope_sector, FigureKey, Index, Overlay};
use super::page::{
    cut_pages, decode_page, encode_rollups, CheckpointBatch, Entry, KeyValue, PageStore,
    Unreadable, PAGE_PREFIX, RUNS_BUDGET, RUNS_MAX,
};
use super::rollup::{RollupKey, Rollups, Sums};
use super::stored::{read_runs, Run};
use super::totals::Cell;
use crate::domain::{CommodityScope, Country, Flow, Period, Sector};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// What the folds of one checkpoint share.
struct Fold<'a> {
    pages: &'a dyn PageStore,
    frozen: &'a Overlay,
    /// The sequence the store's checkpoint covers: stored revisions beyond
    /// it are not trusted (see `Index::checkpointed`).
    stored: u64,
    /// Runs and pages to write ahead of the checkpoint.
    ahead: Vec<KeyValue>,
    /// What the checkpoint writes at its end, at once.
    batch: CheckpointBatch,
    /// What is left of `MERGE_BUDGET`.
    merge_budget: usize,
}

/// Keys of runs and pages written ahead in one sled batch. sled copies a
/// leaf for every key a batch inserts and frees the copies only after the
/// batch: one batch of a whole checkpoint (about 56,000 keys at 100,000
/// revisions of world data) took hundreds of MiB for a moment.
const AHEAD_KEYS: usize = 1024;

/// Bytes of pages one checkpoint rewrites by merging runs before it leaves
/// the remaining merges that are due to the next checkpoints (a pair whose
/// runs reach twice `RUNS_MAX` or `RUNS_BUDGET` is merged regardless): the
/// batch of a checkpoint, and the memory it takes, stays bounded however
/// many pairs are due at once.
const MERGE_BUDGET: usize = 16 << 20;

/// What a fold produced for one pair.
struct Folded {
    pair: (Country, Country),
    /// The new sums of the rollup groups it changed, whole (every sector of
    /// each level and period it touched).
    rollups: Rollups,
    /// The last change folded.
    last: u64,
}

/// Runs one checkpoint; false when there was nothing to fold.
pub(super) fn checkpoint(index: &RwLock<Index>) -> Result<bool, Unreadable> {
    let write = || index.write().unwrap_or_else(|p| p.into_inner());
    // Freeze (or take up again a checkpoint whose write failed).
    let (covers, frozen, pages, stored) = {
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
        (covers, frozen, Arc::clone(&ix.pages), ix.checkpointed)
    };
    let mut fold = Fold {
        pages: &*pages,
        frozen: &frozen,
        stored,
        ahead: Vec::new(),
        batch: CheckpointBatch {
            covers,
            agreement_events: frozen.agreement_events.clone(),
            ..CheckpointBatch::default()
        },
        merge_budget: MERGE_BUDGET,
    };
    let mut folded = Vec::with_capacity(frozen.pairs.len());
    for (&(r, p), changes) in &frozen.pairs {
        // A copy of the groups the changes fall in, so that memory follows
        // the size of the checkpoint, not of the store. Only checkpoints
        // change rollups, so it stays current.
        let mut rollups = {
            let touched: BTreeSet<(CommodityLevel, Period)> = changes
                .figures
                .keys()
                .map(|k| (CommodityLevel::of(&k.scope), k.period))
                .collect();
            let ix = index.read().unwrap_or_else(|p| p.into_inner());
            let mut copy = Rollups::default();
            if let Some(pair) = ix.pair(r, p) {
                for (level, period) in touched {
                    for (k, s) in pair.rollups.range(group(level, period)) {
                        copy.insert(*k, s.clone());
                    }
                }
            }
            copy
        };
        let last = fold_pair(&mut fold, r, p, &mut rollups)?;
        folded.push(Folded {
            pair: (r, p),
            rollups,
            last,
        });
        if fold.ahead.len() >= AHEAD_KEYS {
            pages.put(std::mem::take(&mut fold.ahead))?;
        }
    }
    pages.put(std::mem::take(&mut fold.ahead))?;
    let batch = fold.batch;
    {
        let mut ix = write();
        pages.apply(batch)?;
        ix.checkpointed = covers;
        for f in folded {
            let unfolded = ix.active.pairs.get(&f.pair).map(|o| o.first);
            let pair = ix
                .pairs
                .entry(f.pair.0)
                .or_default()
                .entry(f.pair.1)
                .or_default();
            for (k, s) in f.rollups.iter() {
                pair.rollups.insert(*k, s.clone());
            }
            pair.rollups.shrink();
            pair.folded = pair.folded.max(f.last);
            pair.unfolded = unfolded;
        }
        ix.frozen = None;
    }
    pages.sync()?;
    Ok(true)
}

/// The keys of one rollup group: every sector of one level and period.
fn group(level: CommodityLevel, period: Period) -> std::ops::RangeInclusive<RollupKey> {
    RollupKey {
        level,
        period,
        sector: None,
    }..=RollupKey {
        level,
        period,
        sector: Some(Sector::Other),
    }
}

/// The first and last keys of one summing cell (its flows are adjacent).
fn cell_keys(period: Period, scope: CommodityScope) -> (FigureKey, FigureKey) {
    let first = FigureKey {
        period,
        scope,
        flow: Flow::Export,
    };
    let last = FigureKey {
        flow: Flow::Turnover,
        ..first
    };
    (first, last)
}

fn cell_of(
    current: &BTreeMap<FigureKey, Option<u128>>,
    period: Period,
    scope: CommodityScope,
) -> Cell {
    let (first, last) = cell_keys(period, scope);
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
    fold: &mut Fold<'_>,
    reporter: Country,
    partner: Country,
    rollups: &mut Rollups,
) -> Result<u64, Unreadable> {
    let (pages, stored, covers) = (fold.pages, fold.stored, fold.batch.covers);
    let Some(new) = fold.frozen.pairs.get(&(reporter, partner)) else {
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
    // Runs written ahead of a checkpoint that did not end are not the
    // pair's: deleted (unless this checkpoint writes the same key again).
    let (runs, stale): (Vec<Run>, Vec<Run>) = read_runs(pages, reporter, partner)?
        .into_iter()
        .partition(|(key, _, _)| run_covers(key).is_ok_and(|c| c <= stored));
    let new_run = cut_pages(&fresh);
    let run_bytes: usize = runs
        .iter()
        .map(|(_, bytes, _)| *bytes)
        .chain(new_run.iter().map(|(_, _, b)| b.len()))
        .sum();
    let (count, limit) = (runs.len() + new_run.len(), runs_limit(reporter, partner));
    let due = count > limit || run_bytes > RUNS_BUDGET;
    let forced = count > 2 * RUNS_MAX || run_bytes > 2 * RUNS_BUDGET;
    let merge = forced || (due && fold.merge_budget > 0);
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
    let mut base = pages_of_cells(pages, reporter, partner, &needed)?;
    for entries in base.values_mut() {
        entries.retain(|(_, r)| r.sequence <= stored);
    }
    let mut rewritten: BTreeSet<Vec<u8>> = BTreeSet::new();
    let batch = &mut fold.batch;
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
        let sums = rollups.entry(RollupKey {
            level,
            period,
            sector: scope_sector(&scope),
        });
        if b.figures > 0 {
            sums.remove(&b);
        }
        if a.figures > 0 {
            sums.add(&a);
        }
        groups.insert((level, period));
    }
    for (level, period) in groups {
        let of_group: Vec<(Option<Sector>, Sums)> = rollups
            .range(group(level, period))
            .map(|(k, s)| (k.sector, s.clone()))
            .collect();
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
            let key = run_key(reporter, partner, covers, index);
            rewritten.insert(key.clone());
            fold.ahead.push((key, bytes));
        }
        fold.batch.deletes.extend(
            stale
                .into_iter()
                .map(|(key, _, _)| key)
                .filter(|k| !rewritten.contains(k)),
        );
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
        // A merge that a crash cut short may have put a run's revisions in
        // a page already.
        all.dedup_by_key(|(k, r)| (*k, r.sequence));
        let mut rewrote_owner = false;
        for (key, seq, bytes) in cut_pages(&all) {
            fold.merge_budget = fold.merge_budget.saturating_sub(bytes.len());
            let k = page_key(reporter, partner, &key, seq);
            rewrote_owner |= owner.as_ref() == Some(&k);
            fold.ahead.push((k, bytes));
        }
        if let (Some(old), false) = (owner, rewrote_owner) {
            fold.batch.deletes.push(old);
        }
    }
    fold.batch.deletes.extend(run_keys);
    fold.batch
        .deletes
        .extend(stale.into_iter().map(|(key, _, _)| key));
    Ok(last_seq)
}

/// The number of run pages after which one pair's runs are merged: from
/// `RUNS_MAX` / 2 to 3 × `RUNS_MAX` / 2 by the pair, so that pairs that a
/// load touches in step (a world file loaded product by product touches
/// nearly all of them at every checkpoint) do not all merge at the same
/// checkpoint.
fn runs_limit(reporter: Country, partner: Country) -> usize {
    let pair = pair_prefix(PAGE_PREFIX, reporter, partner);
    let spread = xxhash_rust::xxh3::xxh3_64(&pair) % RUNS_MAX as u64;
    RUNS_MAX / 2 + spread as usize
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
    // Every page from `read.0` up to `read.1` (excluded; `None`: the pair's
    // last page) is in `out`: most cells fall in the pages the cell before
    // them read, and need no lookup in the store.
    let mut read: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    for &(period, scope) in cells {
        let (lo, hi) = cell_keys(period, scope);
        let at = page_key(reporter, partner, &lo, 0);
        let hi_key = page_key(reporter, partner, &hi, u64::MAX);
        if let Some((from, stop)) = &read {
            if *from <= at && stop.as_ref().is_none_or(|s| hi_key < *s) {
                continue;
            }
        }
        // The page `lo` falls in may begin before it.
        let start = pages.floor(&prefix, &at)?.map_or(at, |(k, _)| k);
        let mut failed = None;
        let mut stop = None;
        pages.scan(&start, &end, &mut |key, value| {
            if key > hi_key.as_slice() {
                stop = Some(key.to_vec());
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
        read = Some((start, stop));
    }
    Ok(out)
}
