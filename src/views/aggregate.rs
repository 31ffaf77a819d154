//! Aggregate: exact totals of every figure passing a filter, grouped by any
//! of reporter, partner, flow, sector and period.
//!
//! Depends only on the domain and the index.

use super::filter::{pair_in_range, FigureFilter};
use super::index::{scope_sector, Index};
use super::totals::{for_each_cell, FlowTotals};
use crate::domain::{Country, Flow, Period, Sector};
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
) -> Result<BTreeMap<GroupKey, FlowTotals>, usize> {
    let has = |d| dims.contains(&d);
    let mut groups: BTreeMap<GroupKey, FlowTotals> = BTreeMap::new();
    for (reporter, partners) in &index.figures {
        if !filter.reporters.admits(*reporter) {
            continue;
        }
        for (partner, figures) in partners {
            if !filter.partners.admits(*partner) {
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
