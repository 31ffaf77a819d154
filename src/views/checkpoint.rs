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
use super::index::{scan_pages, scope_sector, FigureKey, Index, Overlay};
use super::page::{
    cut_pages, encode_rollups, page_key, CheckpointBatch, Entry, PageStore, Unreadable,
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

/// The current value of each key among `entries` (sorted by key, then
/// sequence): its last revision's, or none if that is a retraction.
fn current(entries: &[Entry]) -> BTreeMap<FigureKey, Option<u128>> {
    let mut out = BTreeMap::new();
    for (k, r) in entries {
        out.insert(*k, r.current_value());
    }
    out
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

/// Folds one pair's frozen changes into its pages (rewriting the pages that
/// hold the cells they touch) and its rollups; returns the last change's
/// sequence.
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
    let (Some(first), Some(last)) = (new.figures.keys().next(), new.figures.keys().next_back())
    else {
        return Ok(0);
    };
    // Whole cells: a cell's flows are adjacent keys, possibly in two pages.
    let lo = FigureKey {
        flow: Flow::Export,
        ..*first
    };
    let hi = FigureKey {
        flow: Flow::Turnover,
        ..*last
    };
    let hi_key = page_key(reporter, partner, &hi, u64::MAX);
    // The pages that hold anything from `lo` to `hi`: the one `lo` falls in,
    // and every page that starts up to `hi`.
    let mut old_keys: Vec<Vec<u8>> = Vec::new();
    let mut old: Vec<Entry> = Vec::new();
    scan_pages(pages, reporter, partner, Some(lo), &mut |k, entries| {
        if k > hi_key.as_slice() {
            return false;
        }
        old_keys.push(k.to_vec());
        old.extend(entries);
        true
    })?;
    let before = current(&old);
    // Merge: the new revisions of a key come after its stored ones.
    let mut merged: Vec<Entry> = Vec::with_capacity(old.len() + frozen.revisions.min(1 << 20));
    let mut fresh = new
        .figures
        .iter()
        .flat_map(|(k, rs)| rs.iter().map(move |r| (*k, r.clone())))
        .peekable();
    let mut last_seq = 0;
    for entry in old {
        while let Some((k, r)) =
            fresh.next_if(|(k, r)| (*k, r.sequence) < (entry.0, entry.1.sequence))
        {
            last_seq = last_seq.max(r.sequence);
            merged.push((k, r));
        }
        merged.push(entry);
    }
    for (k, r) in fresh {
        last_seq = last_seq.max(r.sequence);
        merged.push((k, r));
    }
    let after = current(&merged);
    // Rollups: each touched cell out as it was, in as it is.
    let cells: BTreeSet<(Period, CommodityScope)> =
        new.figures.keys().map(|k| (k.period, k.scope)).collect();
    let mut groups: BTreeSet<(CommodityLevel, Period)> = BTreeSet::new();
    for (period, scope) in cells {
        let (b, a) = (
            cell_of(&before, period, scope),
            cell_of(&after, period, scope),
        );
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
    // Pages: the merged entries cut again; old keys not reused are deleted.
    let mut written = BTreeSet::new();
    for (key, seq, bytes) in cut_pages(&merged) {
        let k = page_key(reporter, partner, &key, seq);
        written.insert(k.clone());
        batch.puts.push((k, bytes));
    }
    batch
        .deletes
        .extend(old_keys.into_iter().filter(|k| !written.contains(k)));
    Ok(last_seq)
}
