//! What counts in a query: the commodity level summed, a range of periods of
//! one frequency, the filter of figures, and the figure keys a range covers.
//!
//! Depends only on the domain and the index's key types.

use super::index::{scope_sector, FigureKey};
use crate::domain::{BitSet, CommodityScope, CountrySet, Date, Flow, Frequency, Period, SectorSet};
use std::ops::Bound;

/// Which commodity level is summed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) enum CommodityLevel {
    All,
    Hs2,
    Hs4,
    Hs6,
    Sector,
}

impl CommodityLevel {
    /// Every level, in order.
    #[cfg(test)]
    pub(crate) const ALL: [CommodityLevel; 5] = [
        CommodityLevel::All,
        CommodityLevel::Hs2,
        CommodityLevel::Hs4,
        CommodityLevel::Hs6,
        CommodityLevel::Sector,
    ];

    /// The level of a commodity scope.
    pub(crate) fn of(scope: &CommodityScope) -> Self {
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

    pub(crate) fn matches(self, scope: &CommodityScope) -> bool {
        CommodityLevel::of(scope) == self
    }

    pub(crate) fn is_hs(self) -> bool {
        matches!(
            self,
            CommodityLevel::Hs2 | CommodityLevel::Hs4 | CommodityLevel::Hs6
        )
    }
}

/// Periods of one frequency between optional bounds (both included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeriodRange {
    pub frequency: Frequency,
    pub from: Option<Period>,
    pub to: Option<Period>,
}

impl PeriodRange {
    pub(crate) fn contains(&self, p: &Period) -> bool {
        p.frequency() == self.frequency
            && self.from.is_none_or(|f| *p >= f)
            && self.to.is_none_or(|t| *p <= t)
    }

    /// The same range starting one year earlier (to find growth bases).
    pub(super) fn with_previous_year(&self) -> PeriodRange {
        PeriodRange {
            from: self.from.map(|f| previous_year(&f).unwrap_or(f)),
            ..*self
        }
    }
}

/// The same period one year earlier.
pub(crate) fn previous_year(p: &Period) -> Option<Period> {
    Period::new(
        i32::from(p.year()) - 1,
        p.frequency(),
        i32::from(p.number()),
    )
    .ok()
}

/// Which figures count.
#[derive(Clone, Debug)]
pub(crate) struct FigureFilter {
    pub reporters: CountrySet,
    pub partners: CountrySet,
    pub flows: BitSet<Flow>,
    pub level: CommodityLevel,
    pub hs_prefix: Option<String>,
    pub sectors: SectorSet,
    pub periods: PeriodRange,
}

impl FigureFilter {
    /// Whether a figure key (below its pair) passes the filter.
    pub(crate) fn matches(&self, key: &FigureKey) -> bool {
        let FigureKey {
            period,
            flow,
            scope,
        } = key;
        self.flows.admits(*flow)
            && self.periods.contains(period)
            && self.level.matches(scope)
            && self.hs_prefix.as_deref().is_none_or(|prefix| match scope {
                CommodityScope::Hs(h) => h.as_str().starts_with(prefix),
                _ => false,
            })
            && (self.sectors.is_empty()
                || scope_sector(scope).is_some_and(|s| self.sectors.contains(s)))
    }
}

/// First and last day of a period.
pub(crate) fn period_dates(p: &Period) -> (Date, Date) {
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

/// The figure keys that can hold a period of `range`.
pub(super) fn key_bounds(range: &PeriodRange) -> (Bound<FigureKey>, Bound<FigureKey>) {
    (
        range.from.map_or(Bound::Unbounded, |p| {
            Bound::Included(FigureKey::first_of(p))
        }),
        range
            .to
            .map_or(Bound::Unbounded, |p| Bound::Included(FigureKey::last_of(p))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
