//! Pure computations over the index at a snapshot: filters, the summing rules
//! (one frequency, one commodity level, the pair-total rule), growth, mirror
//! figures, agreement state and aggregation. No locking, no I/O.

use super::{figure_at, scope_sector, AgreementEntry, FigureAt, FigureKey, Index, Pair, RollupKey};
use crate::domain::{
    Agreement, AgreementStatus, CommodityScope, Country, Date, Flow, Frequency, Period, Sector,
};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Which commodity level is summed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum CommodityLevel {
    All,
    Hs2,
    Hs4,
    Hs6,
    Sector,
}

impl CommodityLevel {
    /// The level of a commodity scope.
    pub fn of(scope: &CommodityScope) -> Self {
        match scope {
            CommodityScope::All => CommodityLevel::All,
            CommodityScope::Sector(_) => CommodityLevel::Sector,
            // HS codes have 2, 4 or 6 digits.
            CommodityScope::Hs(h) => match h.as_str().len() {
                2 => CommodityLevel::Hs2,
                4 => CommodityLevel::Hs4,
                _ => CommodityLevel::Hs6,
            },
        }
    }

    pub fn matches(self, scope: &CommodityScope) -> bool {
        CommodityLevel::of(scope) == self
    }

    pub fn is_hs(self) -> bool {
        matches!(
            self,
            CommodityLevel::Hs2 | CommodityLevel::Hs4 | CommodityLevel::Hs6
        )
    }
}

/// Periods of one frequency between optional bounds (both included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodRange {
    pub frequency: Frequency,
    pub from: Option<Period>,
    pub to: Option<Period>,
}

impl PeriodRange {
    pub fn contains(&self, p: &Period) -> bool {
        p.frequency() == self.frequency
            && self.from.is_none_or(|f| *p >= f)
            && self.to.is_none_or(|t| *p <= t)
    }

    /// The same range starting one year earlier (to find growth bases).
    fn with_previous_year(&self) -> PeriodRange {
        PeriodRange {
            from: self.from.map(|f| previous_year(&f).unwrap_or(f)),
            ..*self
        }
    }
}

/// The same period one year earlier.
pub fn previous_year(p: &Period) -> Option<Period> {
    Period::new(
        i32::from(p.year()) - 1,
        p.frequency(),
        i32::from(p.number()),
    )
    .ok()
}

/// Which figures count.
#[derive(Clone, Debug)]
pub struct FigureFilter {
    pub reporters: Vec<Country>,
    pub partners: Vec<Country>,
    pub flows: Vec<Flow>,
    pub level: CommodityLevel,
    pub hs_prefix: Option<String>,
    pub sectors: Vec<Sector>,
    pub periods: PeriodRange,
}

impl FigureFilter {
    /// Whether a figure key (below its pair) passes the filter.
    pub fn matches(&self, key: &FigureKey) -> bool {
        let FigureKey {
            period,
            flow,
            scope,
        } = key;
        (self.flows.is_empty() || self.flows.contains(flow))
            && self.periods.contains(period)
            && self.level.matches(scope)
            && self.hs_prefix.as_deref().is_none_or(|prefix| match scope {
                CommodityScope::Hs(h) => h.as_str().starts_with(prefix),
                _ => false,
            })
            && (self.sectors.is_empty()
                || scope_sector(scope).is_some_and(|s| self.sectors.contains(&s)))
    }

    fn country_ok(list: &[Country], c: &Country) -> bool {
        list.is_empty() || list.contains(c)
    }
}

/// One (reporter, partner, period, commodity) cell: at most one figure per flow.
#[derive(Clone, Copy, Default, Debug)]
pub struct Cell {
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

    pub fn add(&mut self, flow: Flow, nanos: u128) {
        let slot = self.slot(flow);
        *slot = Some(slot.unwrap_or(0) + nanos);
        self.figures += 1;
    }

    /// Replaces the figure of `flow` (`old`, as added before) by `new`.
    pub fn replace(&mut self, flow: Flow, old: Option<u128>, new: Option<u128>) {
        *self.slot(flow) = new;
        self.figures = self.figures - u64::from(old.is_some()) + u64::from(new.is_some());
    }

    /// The value of each flow, in `Flow` order.
    pub fn flows(&self) -> [Option<u128>; 5] {
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
    pub fn total(&self) -> Option<u128> {
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
pub struct FlowTotals {
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
    pub fn add_cell(&mut self, c: &Cell) {
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
    pub fn merge(&mut self, o: &FlowTotals) {
        self.exports = add_opt(self.exports, o.exports);
        self.imports = add_opt(self.imports, o.imports);
        self.re_exports = add_opt(self.re_exports, o.re_exports);
        self.re_imports = add_opt(self.re_imports, o.re_imports);
        self.turnover = add_opt(self.turnover, o.turnover);
        self.total = add_opt(self.total, o.total);
        self.figures += o.figures;
        self.cells_without_total += o.cells_without_total;
    }

    fn add_flow_only(&mut self, flow: Flow, c: &Cell) {
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

/// Growth from `prev` to `cur` in hundredths of a percent, rounded half away
/// from zero; `None` when the base is zero.
pub fn growth_hundredths(cur: u128, prev: u128) -> Option<i64> {
    if prev == 0 {
        return None;
    }
    percent_of_hundredths(cur as i128 - prev as i128, prev)
}

/// `part` in hundredths of a percent of `base`, rounded half away from zero.
pub fn percent_of_hundredths(part: i128, base: u128) -> Option<i64> {
    if base == 0 {
        return None;
    }
    let base = base as i128;
    let scaled = part.checked_mul(10_000)?;
    let q = scaled / base;
    let r = scaled % base;
    let rounded = if 2 * r.abs() >= base {
        q + scaled.signum()
    } else {
        q
    };
    i64::try_from(rounded).ok()
}

/// First and last day of a period.
pub fn period_dates(p: &Period) -> (Date, Date) {
    let y = i32::from(p.year());
    let n = i32::from(p.number());
    let (first_month, last_month) = match p.frequency() {
        Frequency::Annual => (1, 12),
        Frequency::Quarterly => (3 * n - 2, 3 * n),
        Frequency::Monthly => (n, n),
        Frequency::YearToDate => (1, n),
    };
    let first = Date::new(y, first_month, 1).unwrap_or_else(|_| fallback_date());
    let last = (28..=31)
        .rev()
        .find_map(|d| Date::new(y, last_month, d).ok())
        .unwrap_or(first);
    (first, last)
}

fn fallback_date() -> Date {
    // Periods are validated (1900-2100, months 1-12): never reached.
    Date::new(1900, 1, 1).unwrap_or_else(|_| unreachable!("1900-01-01 is a date"))
}

/// A status an agreement had.
#[derive(Clone, Debug)]
pub struct StatusEntry {
    pub status: AgreementStatus,
    pub effective_on: Date,
    pub sequence: u64,
    pub note: String,
}

/// An agreement as of a snapshot.
#[derive(Clone, Debug)]
pub struct AgreementState {
    /// The latest version (its `status` field is the version's own).
    pub agreement: Arc<Agreement>,
    pub status: AgreementStatus,
    pub history: Vec<StatusEntry>,
    pub sequence: u64,
}

/// The state of an agreement from its entries up to `snapshot`; `None` if no
/// version of it existed then.
pub fn agreement_state(entries: &[(u64, AgreementEntry)], snapshot: u64) -> Option<AgreementState> {
    let mut latest: Option<Arc<Agreement>> = None;
    let mut history: Vec<StatusEntry> = Vec::new();
    let mut sequence = 0;
    for (seq, entry) in entries.iter().take_while(|(s, _)| *s <= snapshot) {
        sequence = *seq;
        match entry {
            AgreementEntry::Version(a) => {
                if history.last().is_none_or(|h| h.status != a.status) {
                    history.push(StatusEntry {
                        status: a.status,
                        effective_on: a.signed_on,
                        sequence: *seq,
                        note: if history.is_empty() {
                            String::new()
                        } else {
                            "status set by an amendment".into()
                        },
                    });
                }
                latest = Some(Arc::clone(a));
            }
            AgreementEntry::Status {
                status,
                effective_on,
                note,
            } => history.push(StatusEntry {
                status: *status,
                effective_on: *effective_on,
                sequence: *seq,
                note: note.as_str().to_owned(),
            }),
        }
    }
    let agreement = latest?;
    let status = history.last().map_or(agreement.status, |h| h.status);
    Some(AgreementState {
        agreement,
        status,
        history,
        sequence,
    })
}

/// The figures of one pair whose period may lie in `range` (one range scan;
/// other frequencies inside the bounds are filtered by the caller).
pub fn pair_in_range<'a>(
    pair: Option<&'a Pair>,
    range: &PeriodRange,
) -> impl Iterator<Item = (&'a FigureKey, &'a Vec<super::Revision>)> + 'a {
    let bounds = key_bounds(range);
    pair.into_iter().flat_map(move |m| m.figures.range(bounds))
}

/// The figure keys that can hold a period of `range`.
fn key_bounds(range: &PeriodRange) -> (Bound<FigureKey>, Bound<FigureKey>) {
    (
        range.from.map_or(Bound::Unbounded, |p| {
            Bound::Included(FigureKey::first_of(p))
        }),
        range
            .to
            .map_or(Bound::Unbounded, |p| Bound::Included(FigureKey::last_of(p))),
    )
}

/// Calls `each` once per summing cell (period, commodity) of the figures
/// that pass `keep`, as of `snapshot`. Figures arrive in `FigureKey` order, so
/// a cell's flows are adjacent and no map is needed.
fn for_each_cell<'a>(
    figures: impl Iterator<Item = (&'a FigureKey, &'a Vec<super::Revision>)>,
    snapshot: u64,
    keep: impl Fn(&FigureKey) -> bool,
    mut each: impl FnMut(Period, CommodityScope, &Cell),
) {
    let mut current: Option<(Period, CommodityScope, Cell)> = None;
    for (key, revisions) in figures {
        if !keep(key) {
            continue;
        }
        let Some(f) = figure_at(revisions, snapshot) else {
            continue;
        };
        match &mut current {
            Some((p, s, cell)) if *p == key.period && *s == key.scope => {
                cell.add(key.flow, f.value)
            }
            _ => {
                if let Some((p, s, cell)) = current.take() {
                    each(p, s, &cell);
                }
                let mut cell = Cell::default();
                cell.add(key.flow, f.value);
                current = Some((key.period, key.scope, cell));
            }
        }
    }
    if let Some((p, s, cell)) = current {
        each(p, s, &cell);
    }
}

/// Per-period totals of the figures that pass `keep`.
fn period_totals<'a>(
    figures: impl Iterator<Item = (&'a FigureKey, &'a Vec<super::Revision>)>,
    snapshot: u64,
    range: &PeriodRange,
    keep: impl Fn(&FigureKey) -> bool,
) -> BTreeMap<Period, FlowTotals> {
    let mut out: BTreeMap<Period, FlowTotals> = BTreeMap::new();
    for_each_cell(
        figures,
        snapshot,
        |k| range.contains(&k.period) && keep(k),
        |period, _, cell| out.entry(period).or_default().add_cell(cell),
    );
    out
}

/// Per-(period, sector) totals of one pair's figures at `level`.
fn sector_totals(
    pair: Option<&Pair>,
    snapshot: u64,
    range: &PeriodRange,
    level: CommodityLevel,
    sectors: &[Sector],
) -> BTreeMap<(Period, Sector), FlowTotals> {
    let mut out: BTreeMap<(Period, Sector), FlowTotals> = BTreeMap::new();
    let keep = |k: &FigureKey| {
        range.contains(&k.period)
            && level.matches(&k.scope)
            && scope_sector(&k.scope).is_some_and(|s| sectors.is_empty() || sectors.contains(&s))
    };
    for_each_cell(
        pair_in_range(pair, range),
        snapshot,
        keep,
        |period, scope, cell| {
            if let Some(sector) = scope_sector(&scope) {
                out.entry((period, sector)).or_default().add_cell(cell);
            }
        },
    );
    out
}

/// Per-period totals of one pair at `level` (of `sectors` only, when not
/// empty) from its rollups: the same sums as [`period_totals`] over its
/// current figures.
fn rolled_up_totals(
    pair: Option<&Pair>,
    range: &PeriodRange,
    level: CommodityLevel,
    sectors: &[Sector],
) -> BTreeMap<Period, FlowTotals> {
    let mut out: BTreeMap<Period, FlowTotals> = BTreeMap::new();
    let Some(pair) = pair else { return out };
    for (key, sums) in pair.rollups.range(rollup_bounds(level, range)) {
        let wanted = sectors.is_empty() || key.sector.is_some_and(|s| sectors.contains(&s));
        if !wanted || !range.contains(&key.period) {
            continue;
        }
        if let Some(t) = sums.totals() {
            out.entry(key.period).or_default().merge(&t);
        }
    }
    out
}

/// Per-(period, sector) totals of one pair at `level` from its rollups: the
/// same sums as [`sector_totals`].
fn rolled_up_sectors(
    pair: Option<&Pair>,
    range: &PeriodRange,
    level: CommodityLevel,
    sectors: &[Sector],
) -> BTreeMap<(Period, Sector), FlowTotals> {
    let mut out = BTreeMap::new();
    let Some(pair) = pair else { return out };
    for (key, sums) in pair.rollups.range(rollup_bounds(level, range)) {
        let Some(sector) = key.sector else { continue };
        if !range.contains(&key.period) || !(sectors.is_empty() || sectors.contains(&sector)) {
            continue;
        }
        if let Some(t) = sums.totals() {
            out.insert((key.period, sector), t);
        }
    }
    out
}

/// The rollup keys at `level` that can hold a period of `range`.
fn rollup_bounds(
    level: CommodityLevel,
    range: &PeriodRange,
) -> std::ops::RangeInclusive<RollupKey> {
    let (first, last) = Period::bounds(range.frequency);
    let key = |period, sector| RollupKey {
        level,
        period,
        sector,
    };
    key(range.from.unwrap_or(first), None)..=key(range.to.unwrap_or(last), Some(Sector::Other))
}

/// Everything a cooperation slice shows, before rendering.
#[derive(Clone, Debug)]
pub struct SliceData {
    pub reporter: Country,
    pub partner: Country,
    pub period: Period,
    pub own: FlowTotals,
    pub previous: Option<FlowTotals>,
    pub sectors: Vec<(Sector, FlowTotals)>,
    pub mirror: Option<FlowTotals>,
    pub agreements: Vec<AgreementState>,
}

/// What to compute for the slices of one pair.
pub struct SliceSpec<'a> {
    pub range: PeriodRange,
    pub level: CommodityLevel,
    /// Sector breakdown level, if any.
    pub breakdown: Option<CommodityLevel>,
    /// Only figures in these sectors; all when empty.
    pub sectors: &'a [Sector],
    /// Only agreements covering this sector.
    pub agreement_sector: Option<Sector>,
    /// Emit slices for periods where only the partner reported.
    pub mirror_only: bool,
}

/// The slices of one ordered pair, in period order, after `after` (if any).
pub fn pair_slices(
    index: &Index,
    snapshot: u64,
    reporter: Country,
    partner: Country,
    spec: &SliceSpec<'_>,
    after: Option<Period>,
) -> Vec<SliceData> {
    let wide = spec.range.with_previous_year();
    let pair = index.pair(reporter, partner);
    let mirror_pair = index.pair(partner, reporter);
    // The rollups describe every snapshot since the pair's last change.
    let current = |p: Option<&Pair>| p.is_none_or(|p| p.changed <= snapshot);
    let fast = current(pair) && current(mirror_pair);
    let keep = |k: &FigureKey| {
        spec.level.matches(&k.scope)
            && (spec.sectors.is_empty()
                || scope_sector(&k.scope).is_some_and(|s| spec.sectors.contains(&s)))
    };
    let totals = |p: Option<&Pair>| {
        if fast {
            rolled_up_totals(p, &wide, spec.level, spec.sectors)
        } else {
            period_totals(pair_in_range(p, &wide), snapshot, &wide, keep)
        }
    };
    let own = totals(pair);
    let in_range = |m: &BTreeMap<Period, FlowTotals>| {
        m.keys()
            .any(|p| spec.range.contains(p) && after.is_none_or(|a| *p > a))
    };
    if !spec.mirror_only && !in_range(&own) {
        return Vec::new();
    }
    let mirror = totals(mirror_pair);
    if !in_range(&own) && !in_range(&mirror) {
        return Vec::new();
    }
    let breakdown = spec.breakdown.map(|level| {
        if fast {
            rolled_up_sectors(pair, &spec.range, level, spec.sectors)
        } else {
            sector_totals(pair, snapshot, &spec.range, level, spec.sectors)
        }
    });
    let mut periods: Vec<Period> = own.keys().copied().collect();
    if spec.mirror_only {
        periods.extend(mirror.keys().copied());
        periods.sort_unstable();
        periods.dedup();
    }
    let agreements = pair_agreements(index, snapshot, reporter, partner, spec.agreement_sector);
    periods
        .into_iter()
        .filter(|p| spec.range.contains(p) && after.is_none_or(|a| *p > a))
        .map(|period| {
            let (first, last) = period_dates(&period);
            SliceData {
                reporter,
                partner,
                period,
                own: own.get(&period).copied().unwrap_or_default(),
                previous: previous_year(&period).and_then(|p| own.get(&p).copied()),
                sectors: breakdown
                    .as_ref()
                    .map(|b| {
                        b.range((period, Sector::ALL[0])..=(period, Sector::Other))
                            .map(|((_, s), t)| (*s, *t))
                            .collect()
                    })
                    .unwrap_or_default(),
                mirror: mirror.get(&period).copied(),
                agreements: agreements
                    .iter()
                    .filter(|a| a.agreement.signed_on >= first && a.agreement.signed_on <= last)
                    .cloned()
                    .collect(),
            }
        })
        .collect()
}

/// Agreements (as of `snapshot`) with both countries as parties.
fn pair_agreements(
    index: &Index,
    snapshot: u64,
    a: Country,
    b: Country,
    sector: Option<Sector>,
) -> Vec<AgreementState> {
    let (Some(of_a), Some(of_b)) = (
        index.agreements_by_party.get(&a),
        index.agreements_by_party.get(&b),
    ) else {
        return Vec::new();
    };
    of_a.intersection(of_b)
        .filter_map(|id| index.agreements.get(id))
        .filter_map(|entries| agreement_state(entries, snapshot))
        .filter(|s| {
            let parties = s.agreement.parties();
            parties.contains(&a)
                && parties.contains(&b)
                && sector.is_none_or(|sec| s.agreement.sectors().contains(&sec))
        })
        .collect()
}

/// The partners of `country` in either direction, in order.
pub fn partners_of(index: &Index, country: Country) -> Vec<Country> {
    let mut out: Vec<Country> = index
        .figures
        .get(&country)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    for (reporter, partners) in &index.figures {
        if partners.contains_key(&country) {
            out.push(*reporter);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The (reporter, partner) pairs that may have figures of `sector` in
/// `range`, in order.
pub fn sector_pairs(index: &Index, sector: Sector, range: &PeriodRange) -> Vec<(Country, Country)> {
    let (first, last) = Period::bounds(range.frequency);
    let year = |p: Option<Period>, or: Period| p.unwrap_or(or).year();
    let years = (sector, range.frequency, year(range.from, first))
        ..=(sector, range.frequency, year(range.to, last));
    // A set, not a vector to sort: its size is bounded by the number of
    // distinct pairs however many years the range spans.
    let pairs: std::collections::BTreeSet<(Country, Country)> = index
        .by_sector
        .range(years)
        .flat_map(|(_, pairs)| pairs.iter().copied())
        .collect();
    pairs.into_iter().collect()
}

/// A position in natural-key order: (reporter, partner, figure key).
pub type RecordPosition = (Country, Country, FigureKey);

/// Up to `max` current figures after `after`, in natural-key order.
pub fn next_records(
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
        if !FigureFilter::country_ok(&filter.reporters, reporter) {
            continue;
        }
        let pstart = match after {
            Some((r, p, _)) if r == *reporter => Bound::Included(p),
            _ => Bound::Unbounded,
        };
        for (partner, figures) in partners.range((pstart, Bound::Unbounded)) {
            if !FigureFilter::country_ok(&filter.partners, partner) {
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

/// What Aggregate groups by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GroupDim {
    Reporter,
    Partner,
    Flow,
    Sector,
    Period,
}

/// A group: only the grouped-by parts are set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct GroupKey {
    pub reporter: Option<Country>,
    pub partner: Option<Country>,
    pub flow: Option<Flow>,
    pub sector: Option<Sector>,
    pub period: Option<Period>,
}

/// Exact totals of every figure passing `filter`, grouped by `dims`; `Err`
/// when more than `max_groups` groups would be needed.
pub fn aggregate(
    index: &Index,
    snapshot: u64,
    filter: &FigureFilter,
    dims: &[GroupDim],
    max_groups: usize,
) -> Result<BTreeMap<GroupKey, FlowTotals>, usize> {
    let has = |d| dims.contains(&d);
    let mut groups: BTreeMap<GroupKey, FlowTotals> = BTreeMap::new();
    for (reporter, partners) in &index.figures {
        if !FigureFilter::country_ok(&filter.reporters, reporter) {
            continue;
        }
        for (partner, figures) in partners {
            if !FigureFilter::country_ok(&filter.partners, partner) {
                continue;
            }
            let mut too_many = false;
            for_each_cell(
                pair_in_range(Some(figures), &filter.periods),
                snapshot,
                |k| filter.matches(k),
                |period, scope, cell| {
                    let (period, scope) = (&period, &scope);
                    let base = GroupKey {
                        reporter: has(GroupDim::Reporter).then_some(*reporter),
                        partner: has(GroupDim::Partner).then_some(*partner),
                        flow: None,
                        sector: if has(GroupDim::Sector) {
                            scope_sector(scope)
                        } else {
                            None
                        },
                        period: has(GroupDim::Period).then_some(*period),
                    };
                    if has(GroupDim::Flow) {
                        for (flow, v) in [
                            (Flow::Export, cell.exports),
                            (Flow::Import, cell.imports),
                            (Flow::ReExport, cell.re_exports),
                            (Flow::ReImport, cell.re_imports),
                            (Flow::Turnover, cell.turnover),
                        ] {
                            if v.is_some() {
                                let key = GroupKey {
                                    flow: Some(flow),
                                    ..base
                                };
                                groups.entry(key).or_default().add_flow_only(flow, cell);
                            }
                        }
                    } else {
                        groups.entry(base).or_default().add_cell(cell);
                    }
                    if groups.len() > max_groups {
                        too_many = true;
                    }
                },
            );
            if too_many {
                return Err(max_groups);
            }
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_rounds_half_away_from_zero_and_needs_a_base() {
        // Kazakhstan 2021 → 2022 from China's figures: 25.25 bn → 31.2 bn.
        assert_eq!(growth_hundredths(31_200, 25_250), Some(2356));
        assert_eq!(growth_hundredths(95, 100), Some(-500));
        assert_eq!(growth_hundredths(1, 3), Some(-6667));
        assert_eq!(growth_hundredths(5, 0), None);
        assert_eq!(percent_of_hundredths(1, 8), Some(1250));
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

    /// Random records, revisions and retractions over three countries; after
    /// every few events the rollups must give exactly the sums computed from
    /// the figures at the same snapshot, for every pair, level and sector.
    #[test]
    fn rollups_equal_the_sums_of_the_current_figures() {
        use crate::domain::{
            Event, EventId, FeedName, HsCode, Payload, Text, Timestamp, TradeFigureKey,
            TradeRecord, TradeRecordRetracted, UsdAmount,
        };
        let mut rng = crate::client::gen::Rng::new(42);
        let countries: Vec<Country> = ["CN", "KZ", "UZ"]
            .iter()
            .map(|c| Country::parse(c).unwrap())
            .collect();
        let scopes: Vec<CommodityScope> = vec![
            CommodityScope::All,
            CommodityScope::Hs(HsCode::parse("27").unwrap()),
            CommodityScope::Hs(HsCode::parse("2711").unwrap()),
            CommodityScope::Hs(HsCode::parse("8471").unwrap()),
            CommodityScope::Hs(HsCode::parse("271111").unwrap()),
            CommodityScope::Sector(Sector::Energy),
            CommodityScope::Sector(Sector::DigitalEconomy),
        ];
        let flows = [
            Flow::Export,
            Flow::Import,
            Flow::ReExport,
            Flow::ReImport,
            Flow::Turnover,
        ];
        let periods: Vec<Period> = [
            (2021, Frequency::Annual, 0),
            (2022, Frequency::Annual, 0),
            (2022, Frequency::Monthly, 3),
        ]
        .iter()
        .map(|(y, f, n)| Period::new(*y, *f, *n).unwrap())
        .collect();
        let mut index = Index::default();
        let pick = |rng: &mut crate::client::gen::Rng, n: usize| rng.below(n as u64) as usize;
        for sequence in 1..=3000u64 {
            let r = pick(&mut rng, 3);
            let p = (r + 1 + pick(&mut rng, 2)) % 3;
            let key = TradeFigureKey::new(
                countries[r],
                countries[p],
                flows[pick(&mut rng, 5)],
                periods[pick(&mut rng, 3)],
                scopes[pick(&mut rng, scopes.len())],
            )
            .unwrap();
            let payload = if rng.below(5) == 0 {
                Payload::TradeRecordRetracted(TradeRecordRetracted {
                    key,
                    reason: Text::parse("test").unwrap(),
                })
            } else {
                Payload::TradeRecord(TradeRecord {
                    key,
                    value: UsdAmount::new("USD", rng.below(1_000) as i64, 0).unwrap(),
                    quantity: None,
                    source: Text::parse("test").unwrap(),
                    note: Text::parse("").unwrap(),
                })
            };
            index.apply(crate::domain::StoredEvent {
                sequence,
                ingested_at: Timestamp::new(0, 0).unwrap(),
                event: Event {
                    id: EventId::parse(&format!("e{sequence}")).unwrap(),
                    feed: FeedName::parse("test").unwrap(),
                    occurred_at: None,
                    payload,
                },
            });
            if sequence % 100 != 0 {
                continue;
            }
            for frequency in [Frequency::Annual, Frequency::Monthly] {
                let range = PeriodRange {
                    frequency,
                    from: None,
                    to: None,
                };
                for &a in &countries {
                    for &b in &countries {
                        let pair = index.pair(a, b);
                        for level in [
                            CommodityLevel::All,
                            CommodityLevel::Hs2,
                            CommodityLevel::Hs4,
                            CommodityLevel::Hs6,
                            CommodityLevel::Sector,
                        ] {
                            for sectors in [&[][..], &[Sector::Energy][..]] {
                                let keep = |k: &FigureKey| {
                                    level.matches(&k.scope)
                                        && (sectors.is_empty()
                                            || scope_sector(&k.scope)
                                                .is_some_and(|s| sectors.contains(&s)))
                                };
                                assert_eq!(
                                    rolled_up_totals(pair, &range, level, sectors),
                                    period_totals(
                                        pair_in_range(pair, &range),
                                        sequence,
                                        &range,
                                        keep
                                    ),
                                    "{a:?}->{b:?} {level:?} {sectors:?} after {sequence}"
                                );
                                assert_eq!(
                                    rolled_up_sectors(pair, &range, level, sectors),
                                    sector_totals(pair, sequence, &range, level, sectors),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn periods_have_their_calendar_dates() {
        let q = Period::new(2023, Frequency::Quarterly, 2).unwrap();
        let (a, b) = period_dates(&q);
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2023-04-01".into(), "2023-06-30".into())
        );
        let ytd = Period::new(2024, Frequency::YearToDate, 2).unwrap();
        assert_eq!(period_dates(&ytd).1.to_string(), "2024-02-29");
    }
}
