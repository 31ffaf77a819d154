//! Aggregate: exact totals of every figure passing a filter, grouped by any
//! of reporter, partner, flow, sector and period.
//!
//! Depends only on the domain and the index.

use super::filter::{key_bounds, FigureFilter};
use super::index::{scope_sector, Index};
use super::page::Unreadable;
use super::totals::{Cell, Cells, FlowTotals};
use crate::domain::{CommodityScope, Country, Flow, Period, Sector};
use std::collections::BTreeMap;

/// What Aggregate groups by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum GroupDim {
    Reporter,
    Partner,
    Flow,
    Sector,
    Period,
}

/// A group: only the grouped-by parts are set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub(crate) struct GroupKey {
    pub reporter: Option<Country>,
    pub partner: Option<Country>,
    pub flow: Option<Flow>,
    pub sector: Option<Sector>,
    pub period: Option<Period>,
}

/// Exact totals of every figure passing `filter`, grouped by `dims`; `Err`
/// when more than `max_groups` groups would be needed.
pub(crate) fn aggregate(
    index: &Index,
    snapshot: u64,
    filter: &FigureFilter,
    dims: &[GroupDim],
    max_groups: usize,
) -> Result<Result<BTreeMap<GroupKey, FlowTotals>, usize>, Unreadable> {
    let has = |d| dims.contains(&d);
    let mut groups: BTreeMap<GroupKey, FlowTotals> = BTreeMap::new();
    for (reporter, partners) in &index.pairs {
        if !filter.reporters.admits(*reporter) {
            continue;
        }
        for partner in partners.keys() {
            if !filter.partners.admits(*partner) {
                continue;
            }
            let mut too_many = false;
            let mut cells = Cells::new(|period: Period, scope: CommodityScope, cell: &Cell| {
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
            });
            index.pair_values_at(
                *reporter,
                *partner,
                key_bounds(&filter.periods),
                snapshot,
                &mut |key, value| {
                    if filter.matches(key) {
                        cells.push(key, value);
                    }
                },
            )?;
            cells.finish();
            if too_many {
                return Ok(Err(max_groups));
            }
        }
    }
    Ok(Ok(groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CommodityScope, Frequency, Payload, SectorSet};
    use crate::views::filter::{CommodityLevel, PeriodRange};
    use std::collections::HashMap;

    /// Per (reporter, partner, period): exports, pair total, cells without one.
    type Sums = BTreeMap<(Country, Country, Period), (Option<u128>, Option<u128>, u64)>;

    /// The reference: each key's latest value (a retraction removes it), then
    /// per (reporter, partner, period) the cells' pair totals at one level,
    /// summed in u128 with overflow checked — nothing shared with the index.
    fn reference(
        events: &[crate::domain::StoredEvent],
        level: CommodityLevel,
        frequency: Frequency,
    ) -> Sums {
        type Key = (Country, Country, Period, CommodityScope, Flow);
        let mut latest: HashMap<Key, u128> = HashMap::new();
        for e in events {
            match &e.event.payload {
                Payload::TradeRecord(r) => {
                    let k = &r.key;
                    let key = (k.reporter(), k.partner(), k.period, k.commodity, k.flow);
                    latest.insert(key, r.value.total_nanos());
                }
                Payload::TradeRecordRetracted(r) => {
                    let k = &r.key;
                    latest.remove(&(k.reporter(), k.partner(), k.period, k.commodity, k.flow));
                }
                _ => {}
            }
        }
        let mut cells: HashMap<(Country, Country, Period, CommodityScope), [Option<u128>; 5]> =
            HashMap::new();
        for ((r, p, period, scope, flow), v) in latest {
            if period.frequency() == frequency && level.matches(&scope) {
                cells.entry((r, p, period, scope)).or_default()[flow as usize] = Some(v);
            }
        }
        let mut out = BTreeMap::new();
        for ((r, p, period, _), flows) in cells {
            let total = match (flows[0], flows[1]) {
                (Some(e), Some(i)) => Some(e.checked_add(i).unwrap()),
                _ => flows[4],
            };
            let entry: &mut (Option<u128>, Option<u128>, u64) =
                out.entry((r, p, period)).or_default();
            if let Some(e) = flows[0] {
                entry.0 = Some(entry.0.unwrap_or(0).checked_add(e).unwrap());
            }
            if let Some(t) = total {
                entry.1 = Some(entry.1.unwrap_or(0).checked_add(t).unwrap());
            } else {
                entry.2 += 1;
            }
        }
        out
    }

    #[test]
    fn aggregate_sums_equal_a_wide_reference_at_every_level() {
        for seed in 1..=4 {
            let events = crate::views::testing::random_events(2_000, seed);
            // Half of the events folded into pages by a checkpoint, half in
            // the overlay: both are read.
            let views = std::sync::RwLock::new(Index::default());
            for e in events.clone() {
                let checkpoint = e.sequence == 1_000 + seed * 100;
                views.write().unwrap().apply(e);
                if checkpoint {
                    assert!(crate::views::checkpoint::checkpoint(&views).unwrap());
                }
            }
            let index = views.read().unwrap();
            for frequency in [Frequency::Annual, Frequency::Monthly] {
                for level in CommodityLevel::ALL {
                    let filter = FigureFilter {
                        reporters: Default::default(),
                        partners: Default::default(),
                        flows: Default::default(),
                        level,
                        hs_prefix: None,
                        sectors: SectorSet::default(),
                        periods: PeriodRange {
                            frequency,
                            from: None,
                            to: None,
                        },
                    };
                    let dims = [GroupDim::Reporter, GroupDim::Partner, GroupDim::Period];
                    let got = aggregate(&index, 2_000, &filter, &dims, 100_000)
                        .unwrap()
                        .unwrap();
                    let want = reference(&events, level, frequency);
                    let got: BTreeMap<_, _> = got
                        .into_iter()
                        .map(|(k, t)| {
                            let key = (k.reporter.unwrap(), k.partner.unwrap(), k.period.unwrap());
                            (key, (t.exports, t.total, t.cells_without_total))
                        })
                        .collect();
                    assert_eq!(got, want, "seed {seed} {level:?} {frequency:?}");
                }
            }
        }
    }
}
