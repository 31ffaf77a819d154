//! The current figures in natural-key order, for StreamTradeRecords: a page
//! at a time after a position.
//!
//! Depends only on the domain and the index.

use super::filter::{key_bounds, FigureFilter};
use super::index::{figure_at, FigureAt, FigureKey, Index};
use super::page::Unreadable;
use crate::domain::Country;
use std::ops::Bound;

/// A position in natural-key order: (reporter, partner, figure key).
pub(crate) type RecordPosition = (Country, Country, FigureKey);

/// Keys read from one pair at a time, so that a chunk of the answer reads
/// about what it sends, however many figures the pair has.
const WINDOW_KEYS: usize = 2048;
/// The smallest window read.
const MIN_WINDOW_KEYS: usize = 64;

/// Up to `max` current figures after `after`, in natural-key order.
pub(crate) fn next_records(
    index: &Index,
    snapshot: u64,
    filter: &FigureFilter,
    after: Option<RecordPosition>,
    max: usize,
) -> Result<Vec<(RecordPosition, FigureAt)>, Unreadable> {
    let mut out = Vec::new();
    let start = match after {
        Some((r, _, _)) => Bound::Included(r),
        None => Bound::Unbounded,
    };
    for (reporter, partners) in index.pairs.range((start, Bound::Unbounded)) {
        if !filter.reporters.admits(*reporter) {
            continue;
        }
        let pstart = match after {
            Some((r, p, _)) if r == *reporter => Bound::Included(p),
            _ => Bound::Unbounded,
        };
        for partner in partners.range((pstart, Bound::Unbounded)).map(|(p, _)| *p) {
            if !filter.partners.admits(partner) {
                continue;
            }
            let (mut from, to) = key_bounds(&filter.periods);
            if let Some((r, p, k)) = after {
                if r == *reporter && p == partner {
                    from = Bound::Excluded(k);
                }
            }
            loop {
                // No more keys than the answer can still take (most keys
                // are current), so that a chunk does not read what the
                // next one reads again.
                let window = (max - out.len()).clamp(MIN_WINDOW_KEYS, WINDOW_KEYS);
                let (figures, more) =
                    index.pair_figures_window(*reporter, partner, (from, to), window)?;
                for (key, revisions) in &figures {
                    if !filter.matches(key) {
                        continue;
                    }
                    if let Some(f) = figure_at(revisions, snapshot) {
                        out.push(((*reporter, partner, *key), f));
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                }
                match (more, figures.last()) {
                    (true, Some((last, _))) => from = Bound::Excluded(*last),
                    _ => break,
                }
            }
        }
    }
    Ok(out)
}
