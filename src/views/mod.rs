//! In-memory, multi-version views of the stored events for queries: every
//! revision of every trade figure and every version of every agreement, each
//! tagged with its sequence, so that any query can be answered as of any
//! sequence ("as-of reads") without touching the log.
//!
//! Built by replaying the log at startup and kept current by the store's
//! publisher thread after each fsync (through `storage::Projection`). Readers
//! take a read lock for one bounded chunk of work at a time and filter by
//! their snapshot sequence, so writes never change an answer in progress.
//!
//! Each (reporter, partner) pair also keeps rollups: the current sums of its
//! summing cells per (commodity level, period, sector), updated as each
//! figure changes. A view at a snapshot no older than the pair's last change
//! reads them instead of the figures.
//!
//! One file per job: `index` (the data and how an event is folded in),
//! `rollup`, `totals` (the summing rules), `filter` (levels, period ranges,
//! figure filters), `slices` (country and sector views), `records`
//! (StreamTradeRecords), `agreements`, `aggregate`.
//!
//! Depends only on the domain; must not depend on the generated code, tonic
//! or sled.

mod aggregate;
mod agreements;
mod filter;
mod index;
mod records;
mod rollup;
mod slices;
#[cfg(test)]
mod testing;
mod totals;

pub(crate) use aggregate::{aggregate, GroupDim, GroupKey};
pub(crate) use agreements::{agreement_state, AgreementState};
pub(crate) use filter::{CommodityLevel, FigureFilter, PeriodRange};
pub(crate) use index::{scope_sector, FigureAt, FigureKey, Index};
pub(crate) use records::{next_records, RecordPosition};
pub(crate) use slices::{pair_slices, partners_of, sector_pairs, SliceData, SliceSpec};
pub(crate) use totals::{
    difference, growth_hundredths, percent_of_hundredths, FlowTotals, TooWide,
};

use crate::domain::StoredEvent;
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The shared views: one index behind a read-write lock. The publisher
/// thread takes the write lock once per committed group; each query takes
/// the read lock for one bounded chunk of its answer, so neither waits long.
#[derive(Default)]
pub(crate) struct Views {
    index: RwLock<Index>,
}

impl Views {
    pub(crate) fn new() -> Arc<Views> {
        Arc::new(Views::default())
    }

    /// Applies durable events in sequence order.
    pub(crate) fn apply(&self, events: Vec<StoredEvent>) {
        // A poisoned lock means a reader panicked; the index itself is intact.
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for e in events {
            index.apply(e);
        }
    }

    /// Whether a figure is current in what was applied.
    pub(crate) fn figure_is_current(&self, key: &crate::domain::TradeFigureKey) -> bool {
        self.read().figure_is_current(key)
    }

    /// Read access for one bounded piece of work.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
}
