//! Rollups: per pair, the current sums of its summing cells per (commodity
//! level, period, sector), kept as sums and counts so that a cell can be taken
//! out again when one of its figures is revised or retracted.
//!
//! Depends only on the domain and the summing rules.

use super::filter::CommodityLevel;
use super::totals::{Cell, FlowTotals};
use crate::domain::{Period, Sector};

/// A rollup group of one pair: the cells of one commodity level in one
/// period and one sector; all-commodity cells (which have no sector) under
/// `None`. A level's period range is one range scan, and the totals of every
/// sector are the merge of the period's groups.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct RollupKey {
    // Field order is the sort order.
    pub level: CommodityLevel,
    pub period: Period,
    pub sector: Option<Sector>,
}

/// One pair's rollup groups in key order: a sorted vector rather than a map
/// (a pair has a few to a few dozen groups of 144 bytes, and a B-tree's
/// nodes took about 3 KB per pair: 83 MB for the 28,000 pairs of 1 M world
/// figures). Only checkpoints insert, under the views' write lock.
#[derive(Clone, Default, Debug)]
pub(crate) struct Rollups(Vec<(RollupKey, Sums)>);

impl Rollups {
    /// The groups with keys in `range`, in key order.
    pub(crate) fn range(
        &self,
        range: std::ops::RangeInclusive<RollupKey>,
    ) -> impl Iterator<Item = (&RollupKey, &Sums)> {
        let start = self.0.partition_point(|(k, _)| k < range.start());
        let end = self.0.partition_point(|(k, _)| k <= range.end());
        self.0[start..end.max(start)].iter().map(|(k, s)| (k, s))
    }

    /// The sums of `key`, added (empty) if it has none.
    pub(crate) fn entry(&mut self, key: RollupKey) -> &mut Sums {
        let i = match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (key, Sums::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Sets the sums of `key`.
    pub(crate) fn insert(&mut self, key: RollupKey, sums: Sums) {
        // Restores insert in key order.
        match self.0.last() {
            Some((last, _)) if *last < key => self.0.push((key, sums)),
            None => self.0.push((key, sums)),
            _ => *self.entry(key) = sums,
        }
    }

    /// Every group, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(RollupKey, Sums)> {
        self.0.iter()
    }

    /// Gives back the vector's spare room.
    pub(crate) fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// Exact sums of a set of summing cells, kept as counts so that a cell can
/// be taken out again when one of its figures is revised or retracted.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Sums {
    flows: [u128; 5],
    /// Cells that have a figure of each flow.
    with_flow: [u32; 5],
    total: u128,
    with_total: u32,
    without_total: u32,
    /// Figures in those cells (at most five per cell): a u32 keeps `Sums`
    /// at 128 bytes.
    figures: u32,
}

impl Sums {
    pub(super) fn add(&mut self, c: &Cell) {
        self.change(c, |a, b| a + b, |a, b| a + b);
    }

    /// Takes out a cell added before.
    pub(super) fn remove(&mut self, c: &Cell) {
        self.change(c, |a, b| a - b, |a, b| a - b);
    }

    /// Adds or takes out `c`: `sum` on amounts, `count` on counts.
    fn change(&mut self, c: &Cell, sum: fn(u128, u128) -> u128, count: fn(u32, u32) -> u32) {
        let mut figures = 0;
        for (i, v) in c.flows().into_iter().enumerate() {
            if let Some(v) = v {
                self.flows[i] = sum(self.flows[i], v);
                self.with_flow[i] = count(self.with_flow[i], 1);
                figures += 1;
            }
        }
        match c.total() {
            Some(t) => {
                self.total = sum(self.total, t);
                self.with_total = count(self.with_total, 1);
            }
            None => self.without_total = count(self.without_total, 1),
        }
        self.figures = count(self.figures, figures);
    }

    /// The totals, or `None` when no cell is left.
    pub(crate) fn totals(&self) -> Option<FlowTotals> {
        if self.with_total + self.without_total == 0 {
            return None;
        }
        let flow = |i: usize| (self.with_flow[i] > 0).then_some(self.flows[i]);
        Some(FlowTotals {
            exports: flow(0),
            imports: flow(1),
            re_exports: flow(2),
            re_imports: flow(3),
            turnover: flow(4),
            total: (self.with_total > 0).then_some(self.total),
            figures: u64::from(self.figures),
            cells_without_total: u64::from(self.without_total),
        })
    }
}

impl Sums {
    /// Writes every field through `put` (see `page::encode_rollups`).
    pub(super) fn encode(&self, put: &mut dyn FnMut(u128)) {
        for v in self.flows {
            put(v);
        }
        for c in self.with_flow {
            put(u128::from(c));
        }
        put(self.total);
        for c in [self.with_total, self.without_total, self.figures] {
            put(u128::from(c));
        }
    }

    /// Reads what [`Sums::encode`] wrote; a count that does not fit a u32
    /// is `too_wide`.
    pub(super) fn decode<E>(
        next: &mut dyn FnMut() -> Result<u128, E>,
        too_wide: impl Fn() -> E,
    ) -> Result<Sums, E> {
        let mut s = Sums::default();
        let mut flows = [0u128; 5];
        let mut with_flow = [0u32; 5];
        for v in &mut flows {
            *v = next()?;
        }
        for c in &mut with_flow {
            *c = u32::try_from(next()?).map_err(|_| too_wide())?;
        }
        s.flows = flows;
        s.with_flow = with_flow;
        s.total = next()?;
        s.with_total = u32::try_from(next()?).map_err(|_| too_wide())?;
        s.without_total = u32::try_from(next()?).map_err(|_| too_wide())?;
        s.figures = u32::try_from(next()?).map_err(|_| too_wide())?;
        Ok(s)
    }
}
