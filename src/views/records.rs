//! The current figures in natural-key order, for StreamTradeRecords: a page
//! at a time after a position.
//!
//! Depends only on the domain and the index.

use super::filter::{key_bounds, FigureFilter};
use super::index::{figure_at, FigureAt, FigureKey, Index};
use crate::domain::Country;
use std::ops::Bound;

/// A position in natural-key order: (reporter, partner, figure key).
pub(crate) type RecordPosition = (Country, Country, FigureKey);

/// Up to `max` current figures after `after`, in natural-key order.
pub(crate) fn next_records(
    index: &Index,
    snapshot: u64,
    filter: &FigureFilter,
    after: Option<RecordPosition>,
    max: usize,
) -> Vec<(RecordPosition, FigureAt)> {
    let mut out = Vec::new();
    let start = match after {
        Some((r, _, _)) => Bound::Included(r),
        None => Bound::Unbounded,
    };
    for (reporter, partners) in index.figures.range((start, Bound::Unbounded)) {
        if !filter.reporters.admits(*reporter) {
            continue;
        }
        let pstart = match after {
            Some((r, p, _)) if r == *reporter => Bound::Included(p),
            _ => Bound::Unbounded,
        };
        for (partner, figures) in partners.range((pstart, Bound::Unbounded)) {
            if !filter.partners.admits(*partner) {
                continue;
            }
            let (mut fstart, fend) = key_bounds(&filter.periods);
            if let Some((r, p, k)) = after {
                if r == *reporter && p == *partner {
                    fstart = Bound::Excluded(k);
                }
            }
            for (key, revisions) in figures.figures.range((fstart, fend)) {
                if !filter.matches(key) {
                    continue;
                }
                if let Some(f) = figure_at(revisions, snapshot) {
                    out.push(((*reporter, *partner, *key), f));
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
    }
    out
}
