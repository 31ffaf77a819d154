//! The index: per (reporter, partner) pair its rollups, the sector index,
//! the agreements by party, and the overlays of figure revisions not yet
//! checkpointed, over the figure pages in the store. `Index::apply` folds one
//! durable event into it (reading a pair's figures is `figures.rs`).
//!
//! Depends only on the domain.

use super::codec::{pair_of, run_covers};
use super::page::{
    decode_rollups, read_rollup_key, CheckpointBatch, PageStore, Unreadable, ROLLUP_PREFIX,
    RUN_PREFIX,
};
use super::rollup::{RollupKey, Rollups};
use crate::domain::{
    Agreement, AgreementId, AgreementStatus, CommodityScope, Country, Date, Flow, Frequency,
    Payload, Period, Quantity, Sector, StoredEvent, Text, TradeFigureKey,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

pub(crate) use super::stored::MemoryPages;

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
    /// The part of a natural key below its (reporter, partner) pair.
    pub(crate) fn of(natural: &TradeFigureKey) -> Self {
        FigureKey {
            period: natural.period,
            scope: natural.commodity,
            flow: natural.flow,
        }
    }

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

/// Figures with every revision, in key order.
pub(crate) type Figures = Vec<(FigureKey, Vec<Revision>)>;

/// What the views keep in memory of one (reporter, partner) pair: its
/// rollups as of the last checkpoint. Its figures are in the pages (sled)
/// and, for changes since, in the overlays.
#[derive(Default)]
pub(crate) struct Pair {
    pub rollups: Rollups,
    /// Sequence of the last change folded into the rollups (0: none).
    pub folded: u64,
    /// Sequence of the first change not yet folded into them, if any.
    pub unfolded: Option<u64>,
}

impl Pair {
    /// Whether the rollups are the pair's sums as of `snapshot`: every
    /// change up to it, and none after it, is folded in.
    pub(crate) fn rollups_describe(&self, snapshot: u64) -> bool {
        self.folded <= snapshot && self.unfolded.is_none_or(|u| u > snapshot)
    }
}

/// The figures of one pair changed since the last checkpoint.
#[derive(Default)]
pub(crate) struct OverlayPair {
    /// Sequence of the pair's first change here.
    pub first: u64,
    pub figures: BTreeMap<FigureKey, Vec<Revision>>,
}

/// The revisions applied since the last checkpoint, kept in memory until a
/// checkpoint folds them into the pages and rollups.
#[derive(Default)]
pub(crate) struct Overlay {
    pub pairs: BTreeMap<(Country, Country), OverlayPair>,
    /// Distinct details of these revisions, shared (xxh3: one lookup per
    /// record applied).
    details: HashSet<Arc<Details>, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
    pub revisions: usize,
    /// Sequences of the agreement events applied here.
    pub agreement_events: Vec<u64>,
}

impl Overlay {
    pub(crate) fn is_empty(&self) -> bool {
        self.revisions == 0 && self.agreement_events.is_empty()
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

/// The views: what stays in memory (pair rollups, the sector index, the
/// agreements, the overlays of changes since the last checkpoint) and the
/// pages kept in the store.
pub(crate) struct Index {
    /// reporter → partner → the pair's rollups.
    pub pairs: BTreeMap<Country, BTreeMap<Country, Pair>>,
    /// (sector, frequency, year) → the (reporter, partner) pairs with
    /// figures of it, in any version.
    pub by_sector: BTreeMap<(Sector, Frequency, u16), BTreeSet<(Country, Country)>>,
    /// agreement id → its entries (ascending sequence).
    pub agreements: BTreeMap<AgreementId, Vec<(u64, AgreementEntry)>>,
    /// party → agreements that named it in any version.
    pub agreements_by_party: BTreeMap<Country, BTreeSet<AgreementId>>,
    /// Changes applied since the checkpoint in progress (or the last one).
    pub(super) active: Overlay,
    /// The changes a checkpoint in progress is folding into the pages; read
    /// as part of the views until it is installed.
    pub(super) frozen: Option<(u64, Arc<Overlay>)>,
    pub(super) pages: Arc<dyn PageStore>,
    /// The sequence the store's checkpoint covers: revisions in runs and
    /// pages beyond it were written ahead of a checkpoint not installed yet
    /// (or cut short by a crash), and are in the overlays or the log too.
    pub(super) checkpointed: u64,
    /// Highest sequence applied.
    pub applied: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            pairs: BTreeMap::new(),
            by_sector: BTreeMap::new(),
            agreements: BTreeMap::new(),
            agreements_by_party: BTreeMap::new(),
            active: Overlay::default(),
            frozen: None,
            pages: Arc::new(MemoryPages::default()),
            checkpointed: 0,
            applied: 0,
        }
    }
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
        if matches!(
            e.event.payload,
            Payload::Agreement(_) | Payload::AgreementStatusChanged(_)
        ) {
            self.active.agreement_events.push(e.sequence);
        }
        self.apply_payload(e.sequence, e.event.payload);
    }

    /// Folds one event in, whatever was applied before (restoring the
    /// agreements of a checkpoint).
    pub(super) fn apply_payload(&mut self, sequence: u64, payload: Payload) {
        let e = (sequence, payload);
        match e.1 {
            Payload::TradeRecord(r) => {
                let details = self.intern(Details {
                    quantity: r.quantity,
                    source: r.source,
                    note: r.note,
                });
                let revision = Revision {
                    sequence: e.0,
                    value: r.value.total_nanos(),
                    details: Some(details),
                };
                self.push_revision(&r.key, revision);
            }
            Payload::TradeRecordRetracted(r) => {
                let revision = Revision {
                    sequence: e.0,
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
                    .push((e.0, AgreementEntry::Version(Arc::new(a))));
            }
            Payload::AgreementStatusChanged(c) => {
                self.agreements
                    .entry(c.agreement_id.clone())
                    .or_default()
                    .push((
                        e.0,
                        AgreementEntry::Status {
                            status: c.status,
                            effective_on: c.effective_on,
                            note: c.note,
                        },
                    ));
            }
        }
    }

    /// Attaches the store's pages and loads every pair's rollups from it:
    /// the state of the checkpoint that covers `covers`.
    pub(super) fn restore(
        &mut self,
        pages: Arc<dyn PageStore>,
        covers: u64,
    ) -> Result<(), Unreadable> {
        let mut failed = None;
        let mut end = vec![ROLLUP_PREFIX];
        end.push(0xff);
        let (pairs, by_sector) = (&mut self.pairs, &mut self.by_sector);
        pages.scan(&[ROLLUP_PREFIX], &end, &mut |key, value| {
            let mut read = || -> Result<(), Unreadable> {
                let (reporter, partner) = pair_of(key)?;
                let (level, period) = read_rollup_key(key)?;
                let (folded, groups) = decode_rollups(value)?;
                let pair = pairs
                    .entry(reporter)
                    .or_default()
                    .entry(partner)
                    .or_default();
                pair.folded = pair.folded.max(folded);
                for (sector, sums) in groups {
                    if let Some(s) = sector {
                        by_sector
                            .entry((s, period.frequency(), period.year()))
                            .or_default()
                            .insert((reporter, partner));
                    }
                    pair.rollups.insert(
                        RollupKey {
                            level,
                            period,
                            sector,
                        },
                        sums,
                    );
                }
                Ok(())
            };
            match read() {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // Runs of a checkpoint that a crash cut short would otherwise count
        // once a later checkpoint covers their sequence.
        let mut stale = Vec::new();
        let mut end = vec![RUN_PREFIX];
        end.push(0xff);
        pages.scan(&[RUN_PREFIX], &end, &mut |key, _| {
            if run_covers(key).map_or(true, |c| c > covers) {
                stale.push(key.to_vec());
            }
            true
        })?;
        if !stale.is_empty() {
            pages.apply(CheckpointBatch {
                deletes: stale,
                covers,
                ..CheckpointBatch::default()
            })?;
            pages.sync()?;
        }
        self.pages = pages;
        self.checkpointed = covers;
        self.applied = covers;
        Ok(())
    }

    /// The shared copy of `details`.
    fn intern(&mut self, details: Details) -> Arc<Details> {
        if let Some(shared) = self.active.details.get(&details) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(details);
        self.active.details.insert(Arc::clone(&shared));
        shared
    }

    fn push_revision(&mut self, natural: &TradeFigureKey, r: Revision) {
        let sequence = r.sequence;
        let (reporter, partner) = (natural.reporter(), natural.partner());
        let key = FigureKey::of(natural);
        if let Some(sector) = scope_sector(&key.scope) {
            let pairs = self
                .by_sector
                .entry((sector, key.period.frequency(), key.period.year()))
                .or_default();
            if !pairs.contains(&(reporter, partner)) {
                pairs.insert((reporter, partner));
            }
        }
        let pair = self
            .pairs
            .entry(reporter)
            .or_default()
            .entry(partner)
            .or_default();
        pair.unfolded.get_or_insert(sequence);
        let overlay = self
            .active
            .pairs
            .entry((reporter, partner))
            .or_insert_with(|| OverlayPair {
                first: sequence,
                figures: BTreeMap::new(),
            });
        overlay
            .figures
            .entry(key)
            // Most figures are never revised: no spare capacity.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(r);
        self.active.revisions += 1;
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

    /// The rollups of one (reporter, partner) pair.
    pub(crate) fn pair(&self, reporter: Country, partner: Country) -> Option<&Pair> {
        self.pairs.get(&reporter).and_then(|m| m.get(&partner))
    }
}
