//! The summing rules: a cell (one pair, period and commodity item, at most
//! one figure per flow), its total (exports + imports, else the published
//! turnover, never both), totals of cells, and growth and gap percentages in
//! exact integer arithmetic. Also the fold of a pair's figures into cells as
//! of a snapshot.
//!
//! Depends only on the domain and the index.

use super::index::FigureKey;
#[cfg(test)]
use super::index::{figure_at, Revision};
use crate::domain::{CommodityScope, Flow, Period};

/// One (reporter, partner, period, commodity) cell: at most one figure per flow.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Cell {
    pub exports: Option<u128>,
    pub imports: Option<u128>,
    pub re_exports: Option<u128>,
    pub re_imports: Option<u128>,
    pub turnover: Option<u128>,
    pub figures: u64,
}

impl Cell {
    fn slot(&mut self, flow: Flow) -> &mut Option<u128> {
        match flow {
            Flow::Export => &mut self.exports,
            Flow::Import => &mut self.imports,
            Flow::ReExport => &mut self.re_exports,
            Flow::ReImport => &mut self.re_imports,
            Flow::Turnover => &mut self.turnover,
        }
    }

    pub(crate) fn add(&mut self, flow: Flow, nanos: u128) {
        let slot = self.slot(flow);
        *slot = Some(slot.unwrap_or(0) + nanos);
        self.figures += 1;
    }

    /// The value of each flow, in `Flow` order.
    pub(crate) fn flows(&self) -> [Option<u128>; 5] {
        [
            self.exports,
            self.imports,
            self.re_exports,
            self.re_imports,
            self.turnover,
        ]
    }

    /// The pair-total rule: exports + imports when both are reported, else
    /// the published turnover, never both.
    pub(crate) fn total(&self) -> Option<u128> {
        match (self.exports, self.imports) {
            (Some(e), Some(i)) => Some(e + i),
            _ => self.turnover,
        }
    }
}

fn add_opt(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    match (a, b) {
        (None, None) => None,
        _ => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// Sums of cells, in billionths of a US dollar.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct FlowTotals {
    pub exports: Option<u128>,
    pub imports: Option<u128>,
    pub re_exports: Option<u128>,
    pub re_imports: Option<u128>,
    pub turnover: Option<u128>,
    pub total: Option<u128>,
    pub figures: u64,
    pub cells_without_total: u64,
}

impl FlowTotals {
    pub(crate) fn add_cell(&mut self, c: &Cell) {
        self.exports = add_opt(self.exports, c.exports);
        self.imports = add_opt(self.imports, c.imports);
        self.re_exports = add_opt(self.re_exports, c.re_exports);
        self.re_imports = add_opt(self.re_imports, c.re_imports);
        self.turnover = add_opt(self.turnover, c.turnover);
        match c.total() {
            Some(t) => self.total = Some(self.total.unwrap_or(0) + t),
            None => self.cells_without_total += 1,
        }
        self.figures += c.figures;
    }

    /// Adds the totals of other cells.
    pub(crate) fn merge(&mut self, o: &FlowTotals) {
        self.exports = add_opt(self.exports, o.exports);
        self.imports = add_opt(self.imports, o.imports);
        self.re_exports = add_opt(self.re_exports, o.re_exports);
        self.re_imports = add_opt(self.re_imports, o.re_imports);
        self.turnover = add_opt(self.turnover, o.turnover);
        self.total = add_opt(self.total, o.total);
        self.figures += o.figures;
        self.cells_without_total += o.cells_without_total;
    }

    pub(super) fn add_flow_only(&mut self, flow: Flow, c: &Cell) {
        let (mine, theirs) = match flow {
            Flow::Export => (&mut self.exports, c.exports),
            Flow::Import => (&mut self.imports, c.imports),
            Flow::ReExport => (&mut self.re_exports, c.re_exports),
            Flow::ReImport => (&mut self.re_imports, c.re_imports),
            Flow::Turnover => (&mut self.turnover, c.turnover),
        };
        if theirs.is_some() {
            *mine = add_opt(*mine, theirs);
            self.figures += 1;
        }
    }
}

/// A result that exists but does not fit the integers it is answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooWide;

/// `own - other`, exactly.
pub(crate) fn difference(own: u128, other: u128) -> Result<i128, TooWide> {
    let (own, other) = (
        i128::try_from(own).map_err(|_| TooWide)?,
        i128::try_from(other).map_err(|_| TooWide)?,
    );
    own.checked_sub(other).ok_or(TooWide)
}

/// Growth from `prev` to `cur` in hundredths of a percent, rounded half away
/// from zero; `None` when the base is zero.
pub(crate) fn growth_hundredths(cur: u128, prev: u128) -> Result<Option<i64>, TooWide> {
    if prev == 0 {
        return Ok(None);
    }
    percent_of_hundredths(difference(cur, prev)?, prev)
}

/// `part` in hundredths of a percent of `base`, rounded half away from zero;
/// `None` when the base is zero.
pub(crate) fn percent_of_hundredths(part: i128, base: u128) -> Result<Option<i64>, TooWide> {
    if base == 0 {
        return Ok(None);
    }
    let wide_base = i128::try_from(base).map_err(|_| TooWide)?;
    let scaled = part.checked_mul(10_000).ok_or(TooWide)?;
    let q = scaled / wide_base;
    let r = scaled % wide_base;
    // |r| < base ≤ i128::MAX, so twice it fits a u128.
    let rounded = if 2 * r.unsigned_abs() >= base {
        q + scaled.signum()
    } else {
        q
    };
    i64::try_from(rounded).map(Some).map_err(|_| TooWide)
}

/// Calls `each` once per summing cell (period, commodity) of the figures
/// that pass `keep`, as of `snapshot`. Figures arrive in `FigureKey` order, so
/// a cell's flows are adjacent and no map is needed.
#[cfg(test)]
pub(super) fn for_each_cell<'a>(
    figures: impl Iterator<Item = (&'a FigureKey, &'a Vec<Revision>)>,
    snapshot: u64,
    keep: impl Fn(&FigureKey) -> bool,
    each: impl FnMut(Period, CommodityScope, &Cell),
) {
    let mut cells = Cells::new(each);
    for (key, revisions) in figures {
        if !keep(key) {
            continue;
        }
        if let Some(f) = figure_at(revisions, snapshot) {
            cells.push(key, f.value);
        }
    }
    cells.finish();
}

/// Gathers figure values, pushed in `FigureKey` order, into summing cells:
/// a cell's flows are adjacent, so each cell is handed to `each` as soon as
/// the next one begins, and no map is needed.
pub(super) struct Cells<F: FnMut(Period, CommodityScope, &Cell)> {
    current: Option<(Period, CommodityScope, Cell)>,
    each: F,
}

impl<F: FnMut(Period, CommodityScope, &Cell)> Cells<F> {
    pub(super) fn new(each: F) -> Self {
        Cells {
            current: None,
            each,
        }
    }

    /// Adds the value of the figure of `key`.
    pub(super) fn push(&mut self, key: &FigureKey, value: u128) {
        match &mut self.current {
            Some((p, s, cell)) if *p == key.period && *s == key.scope => cell.add(key.flow, value),
            _ => {
                if let Some((p, s, cell)) = self.current.take() {
                    (self.each)(p, s, &cell);
                }
                let mut cell = Cell::default();
                cell.add(key.flow, value);
                self.current = Some((key.period, key.scope, cell));
            }
        }
    }

    /// Hands over the last cell.
    pub(super) fn finish(mut self) {
        if let Some((p, s, cell)) = self.current.take() {
            (self.each)(p, s, &cell);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_rounds_half_away_from_zero_and_needs_a_base() {
        // Kazakhstan 2021 → 2022 from China's figures: 25.25 bn → 31.2 bn.
        assert_eq!(growth_hundredths(31_200, 25_250), Ok(Some(2356)));
        assert_eq!(growth_hundredths(95, 100), Ok(Some(-500)));
        assert_eq!(growth_hundredths(1, 3), Ok(Some(-6667)));
        assert_eq!(growth_hundredths(5, 0), Ok(None));
        assert_eq!(percent_of_hundredths(1, 8), Ok(Some(1250)));
    }

    #[test]
    fn what_does_not_fit_is_too_wide_never_clamped() {
        // Growth from a billionth of a dollar to 10^15 dollars: 10^26 %.
        assert_eq!(growth_hundredths(10u128.pow(24), 1), Err(TooWide));
        assert_eq!(difference(u128::MAX, 0), Err(TooWide));
        assert_eq!(difference(5, 7), Ok(-2));
        let max = i128::MAX as u128;
        assert_eq!(percent_of_hundredths(-1, max), Ok(Some(0)));
    }

    #[test]
    fn the_pair_total_is_exports_plus_imports_else_turnover_never_both() {
        let mut c = Cell::default();
        c.add(Flow::Export, 22);
        c.add(Flow::Turnover, 25);
        assert_eq!(c.total(), Some(25));
        c.add(Flow::Import, 4);
        assert_eq!(c.total(), Some(26));
        let mut only_exports = Cell::default();
        only_exports.add(Flow::Export, 5);
        assert_eq!(only_exports.total(), None);
    }
}
