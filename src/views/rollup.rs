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
/// (a pair has a few to a few dozen groups of 80 bytes, and a B-tree's
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
/// Narrow (amounts in u64, counts in u16: 64 bytes) while they fit, which is
/// nearly every group, else wide on the heap: a group and its key take 80
/// bytes instead of the 144 they took when every sum was wide.
#[derive(Clone, Debug)]
pub(crate) enum Sums {
    Narrow(Narrow),
    Wide(Box<Wide>),
}

impl Default for Sums {
    fn default() -> Self {
        Sums::Narrow(Narrow::default())
    }
}

/// [`Wide`] sums whose every amount fits a u64 and every count a u16.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Narrow {
    flows: [u64; 5],
    total: u64,
    with_flow: [u16; 5],
    with_total: u16,
    without_total: u16,
    figures: u16,
}

/// The sums at full width.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Wide {
    flows: [u128; 5],
    /// Cells that have a figure of each flow.
    with_flow: [u32; 5],
    total: u128,
    with_total: u32,
    without_total: u32,
    /// Figures in those cells (at most five per cell).
    figures: u32,
}

impl Narrow {
    fn widen(&self) -> Wide {
        Wide {
            flows: self.flows.map(u128::from),
            with_flow: self.with_flow.map(u32::from),
            total: u128::from(self.total),
            with_total: u32::from(self.with_total),
            without_total: u32::from(self.without_total),
            figures: u32::from(self.figures),
        }
    }
}

impl Wide {
    /// The same sums narrow, if they fit.
    fn narrow(&self) -> Option<Narrow> {
        let amount = |v: u128| u64::try_from(v).ok();
        let count = |c: u32| u16::try_from(c).ok();
        let mut flows = [0u64; 5];
        let mut with_flow = [0u16; 5];
        for i in 0..5 {
            flows[i] = amount(self.flows[i])?;
            with_flow[i] = count(self.with_flow[i])?;
        }
        Some(Narrow {
            flows,
            total: amount(self.total)?,
            with_flow,
            with_total: count(self.with_total)?,
            without_total: count(self.without_total)?,
            figures: count(self.figures)?,
        })
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
}

impl Sums {
    /// The sums at full width.
    pub(crate) fn wide(&self) -> Wide {
        match self {
            Sums::Narrow(n) => n.widen(),
            Sums::Wide(w) => **w,
        }
    }

    /// Sums of exactly `w`, narrow if they fit.
    fn of(w: Wide) -> Sums {
        match w.narrow() {
            Some(n) => Sums::Narrow(n),
            None => Sums::Wide(Box::new(w)),
        }
    }

    pub(super) fn add(&mut self, c: &Cell) {
        let mut w = self.wide();
        w.change(c, |a, b| a + b, |a, b| a + b);
        *self = Sums::of(w);
    }

    /// Takes out a cell added before.
    pub(super) fn remove(&mut self, c: &Cell) {
        let mut w = self.wide();
        w.change(c, |a, b| a - b, |a, b| a - b);
        *self = Sums::of(w);
    }

    /// The totals, or `None` when no cell is left.
    pub(crate) fn totals(&self) -> Option<FlowTotals> {
        let w = self.wide();
        if w.with_total + w.without_total == 0 {
            return None;
        }
        let flow = |i: usize| (w.with_flow[i] > 0).then_some(w.flows[i]);
        Some(FlowTotals {
            exports: flow(0),
            imports: flow(1),
            re_exports: flow(2),
            re_imports: flow(3),
            turnover: flow(4),
            total: (w.with_total > 0).then_some(w.total),
            figures: u64::from(w.figures),
            cells_without_total: u64::from(w.without_total),
        })
    }

    /// Writes every field through `put` (see `page::encode_rollups`).
    pub(super) fn encode(&self, put: &mut dyn FnMut(u128)) {
        let w = self.wide();
        for v in w.flows {
            put(v);
        }
        for c in w.with_flow {
            put(u128::from(c));
        }
        put(w.total);
        for c in [w.with_total, w.without_total, w.figures] {
            put(u128::from(c));
        }
    }

    /// Reads what [`Sums::encode`] wrote; a count that does not fit a u32
    /// is `too_wide`.
    pub(super) fn decode<E>(
        next: &mut dyn FnMut() -> Result<u128, E>,
        too_wide: impl Fn() -> E,
    ) -> Result<Sums, E> {
        let mut w = Wide::default();
        for v in &mut w.flows {
            *v = next()?;
        }
        for c in &mut w.with_flow {
            *c = u32::try_from(next()?).map_err(|_| too_wide())?;
        }
        w.total = next()?;
        w.with_total = u32::try_from(next()?).map_err(|_| too_wide())?;
        w.without_total = u32::try_from(next()?).map_err(|_| too_wide())?;
        w.figures = u32::try_from(next()?).map_err(|_| too_wide())?;
        Ok(Sums::of(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Flow;

    #[test]
    fn a_group_and_its_key_take_80_bytes() {
        assert!(std::mem::size_of::<(RollupKey, Sums)>() <= 80);
    }

    #[test]
    fn sums_widen_when_they_outgrow_u64_and_narrow_again_exactly() {
        let cell = |flow, v| {
            let mut c = Cell::default();
            c.add(flow, v);
            c
        };
        let big = cell(Flow::Export, u128::from(u64::MAX));
        let small = cell(Flow::Import, 7);
        let mut s = Sums::default();
        s.add(&small);
        assert!(matches!(s, Sums::Narrow(_)));
        s.add(&big);
        s.add(&big);
        assert!(matches!(s, Sums::Wide(_)));
        let t = s.totals().unwrap();
        assert_eq!(t.exports, Some(2 * u128::from(u64::MAX)));
        assert_eq!(
            (t.imports, t.figures, t.cells_without_total),
            (Some(7), 3, 3)
        );
        s.remove(&big);
        assert!(matches!(s, Sums::Narrow(_)));
        assert_eq!(s.totals().unwrap().exports, Some(u128::from(u64::MAX)));
        // A count beyond a u16 is wide too, and exact.
        let mut many = Sums::default();
        for _ in 0..70_000 {
            many.add(&small);
        }
        assert!(matches!(many, Sums::Wide(_)));
        assert_eq!(many.totals().unwrap().imports, Some(7 * 70_000));
        // Encoded and decoded, the same sums.
        let mut bytes = Vec::new();
        s.encode(&mut |v| bytes.push(v));
        let mut it = bytes.into_iter();
        let back = Sums::decode(&mut || it.next().ok_or(()), || ()).unwrap();
        assert_eq!(back.wide(), s.wide());
    }
}
