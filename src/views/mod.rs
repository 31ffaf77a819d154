//! In-memory, multi-version views of the stored events for queries: every
//! revision of every trade figure and every version of every agreement, each
//! tagged with its sequence, so that any query can be answered as of any
//! sequence ("as-of reads") without touching the log.
//!
//! Built by replaying the log at startup and kept current by the store's
//! writer after each fsync (through `storage::Projection`). Readers take a
//! read lock for one bounded chunk of work at a time and filter by their
//! snapshot sequence, so writes never change an answer in progress.
//!
//! Depends only on the domain; must not depend on the generated code, tonic
//! or sled.

mod compute;

pub use compute::{
    aggregate, agreement_state, growth_hundredths, next_records, pair_slices, partners_of,
    percent_of_hundredths, period_dates, AgreementState, Cell, CommodityLevel, FigureFilter,
    FlowTotals, GroupDim, GroupKey, PeriodRange, RecordPosition, SliceData, SliceSpec, StatusEntry,
};

use crate::domain::{
    Agreement, AgreementId, AgreementStatus, CommodityScope, Country, Date, Flow, Payload, Period,
    Sector, StoredEvent, Text, TradeFigureKey, TradeRecord,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The figure part of a natural key below the (reporter, partner) pair,
/// ordered period first so that a period range is one range scan, then by
/// commodity, then flow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FigureKey {
    // Field order is the sort order: a period's figures are contiguous, and
    // within it the flows of one commodity (one summing cell) are adjacent.
    pub period: Period,
    pub scope: CommodityScope,
    pub flow: Flow,
}

impl FigureKey {
    /// The smallest key of a period.
    pub fn first_of(period: Period) -> Self {
        FigureKey {
            period,
            scope: CommodityScope::All,
            flow: Flow::Export,
        }
    }

    /// The largest key of a period.
    pub fn last_of(period: Period) -> Self {
        FigureKey {
            period,
            scope: CommodityScope::Sector(Sector::Other),
            flow: Flow::Turnover,
        }
    }
}

/// One revision of a figure: the record, or `None` for a retraction.
#[derive(Clone, Debug)]
pub struct Revision {
    pub sequence: u64,
    pub record: Option<Arc<TradeRecord>>,
}

/// A figure as of a snapshot.
#[derive(Clone, Debug)]
pub struct FigureAt {
    pub record: Arc<TradeRecord>,
    /// 1 for the first record of the key.
    pub revision: u32,
    pub sequence: u64,
}

/// The latest revision at or before `snapshot`, if it is not a retraction.
pub fn figure_at(revisions: &[Revision], snapshot: u64) -> Option<FigureAt> {
    let upto = revisions.partition_point(|r| r.sequence <= snapshot);
    let last = revisions[..upto].last()?;
    let record = last.record.clone()?;
    let revision = revisions[..upto]
        .iter()
        .filter(|r| r.record.is_some())
        .count() as u32;
    Some(FigureAt {
        record,
        revision,
        sequence: last.sequence,
    })
}

/// Every figure between one reporter and one partner.
pub type PairFigures = BTreeMap<FigureKey, Vec<Revision>>;

/// One version of an agreement, or a status change of it.
#[derive(Clone, Debug)]
pub enum AgreementEntry {
    Version(Arc<Agreement>),
    Status {
        status: AgreementStatus,
        effective_on: Date,
        note: Text<2048>,
    },
}

/// The whole in-memory index.
#[derive(Default)]
pub struct Index {
    /// reporter → partner → figure key → revisions (ascending sequence).
    pub figures: BTreeMap<Country, BTreeMap<Country, PairFigures>>,
    /// sector → (reporter, partner) → the keys of the pair's figures in it.
    pub by_sector: BTreeMap<Sector, BTreeMap<(Country, Country), BTreeSet<FigureKey>>>,
    /// agreement id → its entries (ascending sequence).
    pub agreements: BTreeMap<AgreementId, Vec<(u64, AgreementEntry)>>,
    /// party → agreements that named it in any version.
    pub agreements_by_party: BTreeMap<Country, BTreeSet<AgreementId>>,
    /// Highest sequence applied.
    pub applied: u64,
}

/// The sector of a commodity scope, if it has one.
pub fn scope_sector(scope: &CommodityScope) -> Option<Sector> {
    match scope {
        CommodityScope::All => None,
        CommodityScope::Hs(h) => Some(h.sector()),
        CommodityScope::Sector(s) => Some(*s),
    }
}

impl Index {
    fn apply(&mut self, e: StoredEvent) {
        if e.sequence <= self.applied {
            return; // replayed twice: already applied
        }
        self.applied = e.sequence;
        match e.event.payload {
            Payload::TradeRecord(r) => {
                let key = r.key;
                self.push_revision(&key, e.sequence, Some(Arc::new(r)));
            }
            Payload::TradeRecordRetracted(r) => self.push_revision(&r.key, e.sequence, None),
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

    fn push_revision(
        &mut self,
        natural: &TradeFigureKey,
        sequence: u64,
        record: Option<Arc<TradeRecord>>,
    ) {
        let (reporter, partner) = (natural.reporter(), natural.partner());
        let key = FigureKey {
            period: natural.period,
            flow: natural.flow,
            scope: natural.commodity,
        };
        let r = Revision { sequence, record };
        if let Some(sector) = scope_sector(&key.scope) {
            self.by_sector
                .entry(sector)
                .or_default()
                .entry((reporter, partner))
                .or_default()
                .insert(key);
        }
        self.figures
            .entry(reporter)
            .or_default()
            .entry(partner)
            .or_default()
            .entry(key)
            // Most figures are never revised: no spare capacity.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(r);
    }

    /// The latest version of an agreement at or before `sequence`.
    pub fn agreement_at(&self, id: &AgreementId, sequence: u64) -> Option<Arc<Agreement>> {
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
    pub fn pair(&self, reporter: Country, partner: Country) -> Option<&PairFigures> {
        self.figures.get(&reporter).and_then(|m| m.get(&partner))
    }
}

/// The shared views: one index behind a read-write lock.
#[derive(Default)]
pub struct Views {
    index: RwLock<Index>,
}

impl Views {
    pub fn new() -> Arc<Views> {
        Arc::new(Views::default())
    }

    /// Applies durable events in sequence order.
    pub fn apply(&self, events: Vec<StoredEvent>) {
        // A poisoned lock means a reader panicked; the index itself is intact.
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for e in events {
            index.apply(e);
        }
    }

    /// Read access for one bounded piece of work.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
}
