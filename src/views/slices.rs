//! Cooperation slices: for one ordered (reporter, partner) pair and period,
//! its totals, growth on the year before, sector breakdown, the partner's
//! mirror figures and the agreements signed in the period, from the pair's
//! rollups when they describe the snapshot, else summed from its figures.
//! Also the pairs a country or sector view visits.
//!
//! Depends only on the domain and the index.

use super::agreements::{pair_agreements, AgreementState};
use super::filter::{key_bounds, period_dates, previous_year, CommodityLevel, PeriodRange};
#[cfg(test)]
use super::index::Revision;
use super::index::{scope_sector, FigureKey, Index, Pair};
use super::page::Unreadable;
use super::rollup::RollupKey;
#[cfg(test)]
use super::totals::for_each_cell;
use super::totals::{Cell, Cells, FlowTotals};
use crate::domain::{Country, Period, Sector, SectorSet};
use std::collections::BTreeMap;

/// Per-period totals of the figures that pass `keep` (the reference that
/// [`summed`] and the rollups are tested against).
#[cfg(test)]
fn period_totals<'a>(
    figures: impl Iterator<Item = (&'a FigureKey, &'a Vec<Revision>)>,
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

/// Per-(period, sector) totals of one pair's figures at `level` (a test's
/// reference, as [`period_totals`]).
#[cfg(test)]
fn sector_totals(
    figures: &[(FigureKey, Vec<Revision>)],
    snapshot: u64,
    range: &PeriodRange,
    level: CommodityLevel,
    sectors: SectorSet,
) -> BTreeMap<(Period, Sector), FlowTotals> {
    let mut out: BTreeMap<(Period, Sector), FlowTotals> = BTreeMap::new();
    let keep = |k: &FigureKey| {
        range.contains(&k.period)
            && level.matches(&k.scope)
            && scope_sector(&k.scope).is_some_and(|s| sectors.admits(s))
    };
    for_each_cell(
        figures.iter().map(|(k, r)| (k, r)),
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

/// Per-period and, at a breakdown level, per-(period, sector) totals.
type Summed = (
    BTreeMap<Period, FlowTotals>,
    BTreeMap<(Period, Sector), FlowTotals>,
);

/// Per-period totals over `wide` of one pair's figures that pass `keep`,
/// and with `breakdown` (level, range, sectors) its per-(period, sector)
/// totals: summed from its figures as of `snapshot`, in one read of them.
fn summed(
    index: &Index,
    snapshot: u64,
    (reporter, partner): (Country, Country),
    wide: &PeriodRange,
    keep: &dyn Fn(&FigureKey) -> bool,
    breakdown: Option<(CommodityLevel, &PeriodRange, SectorSet)>,
) -> Result<Summed, Unreadable> {
    let (mut totals, mut sectors) = (BTreeMap::new(), BTreeMap::new());
    let mut by_period = Cells::new(|period, _, cell: &Cell| {
        totals
            .entry(period)
            .or_insert_with(FlowTotals::default)
            .add_cell(cell)
    });
    let mut by_sector = Cells::new(|period, scope, cell: &Cell| {
        if let Some(sector) = scope_sector(&scope) {
            sectors
                .entry((period, sector))
                .or_insert_with(FlowTotals::default)
                .add_cell(cell);
        }
    });
    index.pair_values_at(
        reporter,
        partner,
        key_bounds(wide),
        snapshot,
        &mut |key, value| {
            if wide.contains(&key.period) && keep(key) {
                by_period.push(key, value);
            }
            if let Some((level, range, admitted)) = breakdown {
                let sector = scope_sector(&key.scope);
                if range.contains(&key.period)
                    && level.matches(&key.scope)
                    && sector.is_some_and(|s| admitted.admits(s))
                {
                    by_sector.push(key, value);
                }
            }
        },
    )?;
    by_period.finish();
    by_sector.finish();
    Ok((totals, sectors))
}

/// Per-period totals of one pair at `level` (of `sectors` only, when not
/// empty) from its rollups: the same sums as [`period_totals`] over its
/// current figures.
fn rolled_up_totals(
    pair: Option<&Pair>,
    range: &PeriodRange,
    level: CommodityLevel,
    sectors: SectorSet,
) -> BTreeMap<Period, FlowTotals> {
    let mut out: BTreeMap<Period, FlowTotals> = BTreeMap::new();
    let Some(pair) = pair else { return out };
    for (key, sums) in pair.rollups.range(rollup_bounds(level, range)) {
        let wanted = sectors.is_empty() || key.sector.is_some_and(|s| sectors.contains(s));
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
    sectors: SectorSet,
) -> BTreeMap<(Period, Sector), FlowTotals> {
    let mut out = BTreeMap::new();
    let Some(pair) = pair else { return out };
    for (key, sums) in pair.rollups.range(rollup_bounds(level, range)) {
        let Some(sector) = key.sector else { continue };
        if !range.contains(&key.period) || !sectors.admits(sector) {
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
pub(crate) struct SliceData {
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
pub(crate) struct SliceSpec {
    pub range: PeriodRange,
    pub level: CommodityLevel,
    /// Sector breakdown level, if any.
    pub breakdown: Option<CommodityLevel>,
    /// Only figures in these sectors; all when empty.
    pub sectors: SectorSet,
    /// Only agreements covering this sector.
    pub agreement_sector: Option<Sector>,
    /// Emit slices for periods where only the partner reported.
    pub mirror_only: bool,
}

/// The slices of one ordered pair, in period order, after `after` (if any).
pub(crate) fn pair_slices(
    index: &Index,
    snapshot: u64,
    reporter: Country,
    partner: Country,
    spec: &SliceSpec,
    after: Option<Period>,
) -> Result<Vec<SliceData>, Unreadable> {
    let wide = spec.range.with_previous_year();
    let pair = index.pair(reporter, partner);
    let mirror_pair = index.pair(partner, reporter);
    // The rollups describe the snapshot when every change up to it, and
    // none after it, is folded in; otherwise the figures are summed.
    let current = |p: Option<&Pair>| p.is_none_or(|p| p.rollups_describe(snapshot));
    let fast = current(pair) && current(mirror_pair);
    let keep = |k: &FigureKey| {
        spec.level.matches(&k.scope)
            && (spec.sectors.is_empty()
                || scope_sector(&k.scope).is_some_and(|s| spec.sectors.contains(s)))
    };
    let (own, breakdown) = if fast {
        let sectors = spec
            .breakdown
            .map(|level| rolled_up_sectors(pair, &spec.range, level, spec.sectors));
        (
            rolled_up_totals(pair, &wide, spec.level, spec.sectors),
            sectors,
        )
    } else {
        let breakdown = spec.breakdown.map(|l| (l, &spec.range, spec.sectors));
        let (totals, sectors) = summed(
            index,
            snapshot,
            (reporter, partner),
            &wide,
            &keep,
            breakdown,
        )?;
        (totals, spec.breakdown.map(|_| sectors))
    };
    let in_range = |m: &BTreeMap<Period, FlowTotals>| {
        m.keys()
            .any(|p| spec.range.contains(p) && after.is_none_or(|a| *p > a))
    };
    if !spec.mirror_only && !in_range(&own) {
        return Ok(Vec::new());
    }
    let mirror = if fast {
        rolled_up_totals(mirror_pair, &wide, spec.level, spec.sectors)
    } else {
        summed(index, snapshot, (partner, reporter), &wide, &keep, None)?.0
    };
    if !in_range(&own) && !in_range(&mirror) {
        return Ok(Vec::new());
    }
    let mut periods: Vec<Period> = own.keys().copied().collect();
    if spec.mirror_only {
        periods.extend(mirror.keys().copied());
        periods.sort_unstable();
        periods.dedup();
    }
    let agreements = pair_agreements(index, snapshot, reporter, partner, spec.agreement_sector);
    Ok(periods
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
        .collect())
}

/// The partners of `country` in either direction, in order.
pub(crate) fn partners_of(index: &Index, country: Country) -> Vec<Country> {
    let mut out: Vec<Country> = index
        .pairs
        .get(&country)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    for (reporter, partners) in &index.pairs {
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
pub(crate) fn sector_pairs(
    index: &Index,
    sector: Sector,
    range: &PeriodRange,
) -> Vec<(Country, Country)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Country;

    /// Every revision of one pair's figures whose period may lie in `range`.
    fn pair_in_range(
        index: &Index,
        reporter: Country,
        partner: Country,
        range: &PeriodRange,
    ) -> Result<Vec<(FigureKey, Vec<Revision>)>, Unreadable> {
        index.pair_figures(reporter, partner, key_bounds(range))
    }

    /// Random records, revisions and retractions over three countries; after
    /// every few events the rollups must give exactly the sums computed from
    /// the figures at the same snapshot, for every pair, level and sector.
    #[test]
    fn rollups_equal_the_sums_of_the_current_figures() {
        use crate::domain::Frequency;
        let countries = super::super::testing::countries();
        let views = std::sync::RwLock::new(Index::default());
        for event in super::super::testing::random_events(3_000, 42) {
            let sequence = event.sequence;
            views.write().unwrap().apply(event);
            if sequence % 100 != 0 {
                continue;
            }
            // A checkpoint folds the figures into the pages and rollups.
            assert!(super::super::checkpoint::checkpoint(&views).unwrap());
            let index = views.read().unwrap();
            for frequency in [Frequency::Annual, Frequency::Monthly] {
                let range = PeriodRange {
                    frequency,
                    from: None,
                    to: None,
                };
                for &a in &countries {
                    for &b in &countries {
                        let pair = index.pair(a, b);
                        assert!(pair.is_none_or(|p| p.rollups_describe(sequence)));
                        let figures = pair_in_range(&index, a, b, &range).unwrap();
                        for level in CommodityLevel::ALL {
                            for sectors in
                                [SectorSet::default(), [Sector::Energy].into_iter().collect()]
                            {
                                let keep = |k: &FigureKey| {
                                    level.matches(&k.scope)
                                        && (sectors.is_empty()
                                            || scope_sector(&k.scope)
                                                .is_some_and(|s| sectors.contains(s)))
                                };
                                assert_eq!(
                                    rolled_up_totals(pair, &range, level, sectors),
                                    period_totals(
                                        figures.iter().map(|(k, r)| (k, r)),
                                        sequence,
                                        &range,
                                        keep
                                    ),
                                    "{a:?}->{b:?} {level:?} {sectors:?} after {sequence}"
                                );
                                assert_eq!(
                                    rolled_up_sectors(pair, &range, level, sectors),
                                    sector_totals(&figures, sequence, &range, level, sectors),
                                );
                                // The fold an as-of view uses, now and at
                                // older snapshots, against the reference.
                                for at in [sequence, sequence / 2, sequence - 37] {
                                    let breakdown = Some((level, &range, sectors));
                                    let (totals, by_sector) =
                                        summed(&index, at, (a, b), &range, &keep, breakdown)
                                            .unwrap();
                                    let reference = period_totals(
                                        figures.iter().map(|(k, r)| (k, r)),
                                        at,
                                        &range,
                                        keep,
                                    );
                                    assert_eq!(totals, reference, "{a:?}->{b:?} as of {at}");
                                    assert_eq!(
                                        by_sector,
                                        sector_totals(&figures, at, &range, level, sectors)
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
