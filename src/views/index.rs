//! The in-memory index: every revision of every trade figure and every
//! version of every agreement, each tagged with its sequence, per (reporter,
//! partner) pair with the pair's rollups; the sector index; the agreements by
//! party; the shared figure details. `Index::apply` folds one durable event
//! into it.
//!
//! Depends only on the domain.

use super::filter::CommodityLevel;
use super::rollup::{RollupKey, Sums};
use super::totals::Cell;
use crate::domain::{
    Agreement, AgreementId, AgreementStatus, CommodityScope, Country, Date, Flow, Frequency,
    Payload, Period, Quantity, Sector, StoredEvent, Text, TradeFigureKey,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// The figure part of a natural key below the (reporter, partner) pair,
/// ordered period first so that a period range is one range scan, then by
/// commodity, then flow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct FigureKey {
    // Field order is the sort order: a period's figures are contiguous, and
    // within it the flows of one commodity (one summing cell) are adjacent.
    pub period: Period,
    pub scope: CommodityScope,
    pub flow: Flow,
}

impl FigureKey {
    /// The smallest key of a period.
    pub(crate) fn first_of(period: Period) -> Self {
        FigureKey {
            period,
            scope: CommodityScope::All,
            flow: Flow::Export,
        }
    }

    /// The largest key of a period.
    pub(crate) fn last_of(period: Period) -> Self {
        FigureKey {
            period,
            scope: CommodityScope::Sector(Sector::Other),
            flow: Flow::Turnover,
        }
    }
}

/// What a figure says besides its key and value. Kept once and shared by
/// every revision that says the same: most figures of a feed share their
/// source and have no quantity or note.
#[derive(PartialEq, Eq, Hash, Debug)]
pub(crate) struct Details {
    pub quantity: Option<Quantity>,
    pub source: Text<512>,
    pub note: Text<2048>,
}

/// One revision of a figure: its value and details, or (`details` is
/// `None`) a retraction.
#[derive(Clone, Debug)]
pub(crate) struct Revision {
    pub sequence: u64,
    /// Billionths of a US dollar; 0 for a retraction.
    pub value: u128,
    pub details: Option<Arc<Details>>,
}

impl Revision {
    /// The value, unless this is a retraction.
    pub(crate) fn current_value(&self) -> Option<u128> {
        self.details.as_ref().map(|_| self.value)
    }
}

/// A figure as of a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct FigureAt {
    pub value: u128,
    pub details: Arc<Details>,
    /// 1 for the first record of the key.
    pub revision: u32,
    pub sequence: u64,
}

/// The latest revision at or before `snapshot`, if it is not a retraction.
pub(crate) fn figure_at(revisions: &[Revision], snapshot: u64) -> Option<FigureAt> {
    let upto = revisions.partition_point(|r| r.sequence <= snapshot);
    let last = revisions[..upto].last()?;
    let details = last.details.clone()?;
    let revision = revisions[..upto]
        .iter()
        .filter(|r| r.details.is_some())
        .count() as u32;
    Some(FigureAt {
        value: last.value,
        details,
        revision,
        sequence: last.sequence,
    })
}

/// Every figure between one reporter and one partner, with the rollups of
/// their current values.
#[derive(Default)]
pub(crate) struct Pair {
    pub figures: BTreeMap<FigureKey, Vec<Revision>>,
    pub rollups: BTreeMap<RollupKey, Sums>,
    /// Sequence of the last change to this pair's figures: rollups describe
    /// every snapshot from here on.
    pub changed: u64,
}

impl Pair {
    /// The current cell of (period, scope); no figures when it has none.
    fn cell(&self, period: Period, scope: CommodityScope) -> Cell {
        let mut cell = Cell::default();
        let first = FigureKey {
            period,
            scope,
            flow: Flow::Export,
        };
        let last = FigureKey {
            flow: Flow::Turnover,
            ..first
        };
        for (key, revisions) in self.figures.range(first..=last) {
            if let Some(value) = revisions.last().and_then(Revision::current_value) {
                cell.add(key.flow, value);
            }
        }
        cell
    }
}

/// One version of an agreement, or a status change of it.
#[derive(Clone, Debug)]
pub(crate) enum AgreementEntry {
    Version(Arc<Agreement>),
    Status {
        status: AgreementStatus,
        effective_on: Date,
        note: Text<2048>,
    },
}

/// The whole in-memory index.
#[derive(Default)]
pub(crate) struct Index {
    /// reporter → partner → the pair's figures (revisions in ascending
    /// sequence) and rollups.
    pub figures: BTreeMap<Country, BTreeMap<Country, Pair>>,
    /// (sector, frequency, year) → the (reporter, partner) pairs with
    /// figures of it, in any version.
    pub by_sector: BTreeMap<(Sector, Frequency, u16), BTreeSet<(Country, Country)>>,
    /// agreement id → its entries (ascending sequence).
    pub agreements: BTreeMap<AgreementId, Vec<(u64, AgreementEntry)>>,
    /// party → agreements that named it in any version.
    pub agreements_by_party: BTreeMap<Country, BTreeSet<AgreementId>>,
    /// Every distinct figure details, shared by the revisions (xxh3: one
    /// lookup per record applied).
    details: HashSet<Arc<Details>, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
    /// Highest sequence applied.
    pub applied: u64,
}

/// The sector of a commodity scope, if it has one.
pub(crate) fn scope_sector(scope: &CommodityScope) -> Option<Sector> {
    match scope {
        CommodityScope::All => None,
        CommodityScope::Hs(h) => Some(h.sector()),
        CommodityScope::Sector(s) => Some(*s),
    }
}

impl Index {
    pub(super) fn apply(&mut self, e: StoredEvent) {
        if e.sequence <= self.applied {
            return; // replayed twice: already applied
        }
        self.applied = e.sequence;
        match e.event.payload {
            Payload::TradeRecord(r) => {
                let details = self.intern(Details {
                    quantity: r.quantity,
                    source: r.source,
                    note: r.note,
                });
                let revision = Revision {
                    sequence: e.sequence,
                    value: r.value.total_nanos(),
                    details: Some(details),
                };
                self.push_revision(&r.key, revision);
            }
            Payload::TradeRecordRetracted(r) => {
                let revision = Revision {
                    sequence: e.sequence,
                    value: 0,
                    details: None,
                };
                self.push_revision(&r.key, revision);
            }
            Payload::Agreement(a) => {
                for p in a.parties() {
                    self.agreements_by_party
                        .entry(*p)
                        .or_default()
                        .insert(a.id.clone());
                }
                self.agreements
                    .entry(a.id.clone())
                    .or_default()
                    .push((e.sequence, AgreementEntry::Version(Arc::new(a))));
            }
            Payload::AgreementStatusChanged(c) => {
                self.agreements
                    .entry(c.agreement_id.clone())
                    .or_default()
                    .push((
                        e.sequence,
                        AgreementEntry::Status {
                            status: c.status,
                            effective_on: c.effective_on,
                            note: c.note,
                        },
                    ));
            }
        }
    }

    /// The shared copy of `details`.
    fn intern(&mut self, details: Details) -> Arc<Details> {
        if let Some(shared) = self.details.get(&details) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(details);
        self.details.insert(Arc::clone(&shared));
        shared
    }

    fn push_revision(&mut self, natural: &TradeFigureKey, r: Revision) {
        let sequence = r.sequence;
        let (reporter, partner) = (natural.reporter(), natural.partner());
        let key = FigureKey {
            period: natural.period,
            flow: natural.flow,
            scope: natural.commodity,
        };
        let sector = scope_sector(&key.scope);
        if let Some(sector) = sector {
            let pairs = self
                .by_sector
                .entry((sector, key.period.frequency(), key.period.year()))
                .or_default();
            if !pairs.contains(&(reporter, partner)) {
                pairs.insert((reporter, partner));
            }
        }
        let pair = self
            .figures
            .entry(reporter)
            .or_default()
            .entry(partner)
            .or_default();
        let before = pair.cell(key.period, key.scope);
        let revisions = pair
            .figures
            .entry(key)
            // Most figures are never revised: no spare capacity.
            .or_insert_with(|| Vec::with_capacity(1));
        let value = |r: Option<&Revision>| r.and_then(Revision::current_value);
        let mut after = before;
        after.replace(key.flow, value(revisions.last()), value(Some(&r)));
        revisions.push(r);
        pair.changed = sequence;
        let level = CommodityLevel::of(&key.scope);
        let sums = pair
            .rollups
            .entry(RollupKey {
                level,
                period: key.period,
                sector,
            })
            .or_default();
        if before.figures > 0 {
            sums.remove(&before);
        }
        if after.figures > 0 {
            sums.add(&after);
        }
    }

    /// The latest version of an agreement at or before `sequence`.
    pub(crate) fn agreement_at(&self, id: &AgreementId, sequence: u64) -> Option<Arc<Agreement>> {
        self.agreements
            .get(id)?
            .iter()
            .take_while(|(s, _)| *s <= sequence)
            .filter_map(|(_, e)| match e {
                AgreementEntry::Version(a) => Some(Arc::clone(a)),
                AgreementEntry::Status { .. } => None,
            })
            .last()
    }

    /// The figures of one (reporter, partner) pair.
    pub(crate) fn pair(&self, reporter: Country, partner: Country) -> Option<&Pair> {
        self.figures.get(&reporter).and_then(|m| m.get(&partner))
    }

    /// Whether the figure of `natural` is current: stored, and its latest
    /// revision not a retraction.
    pub(crate) fn figure_is_current(&self, natural: &TradeFigureKey) -> bool {
        let key = FigureKey {
            period: natural.period,
            flow: natural.flow,
            scope: natural.commodity,
        };
        self.pair(natural.reporter(), natural.partner())
            .and_then(|p| p.figures.get(&key))
            .and_then(|revisions| revisions.last())
            .is_some_and(|r| r.current_value().is_some())
    }
}
