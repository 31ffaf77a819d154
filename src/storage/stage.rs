//! What the events of a group commit must satisfy before they get sequences:
//! the rules that need the store's state, checked by the writer thread, job by
//! job in queue order, against the store and the jobs before it in the group.
//!
//! - Event ids are unique per feed. An id its feed already stored (or
//!   staged) with equal content is a duplicate (the original sequence,
//!   `duplicate = true`); with other content the job fails with
//!   ALREADY_EXISTS. The same id under another feed is another event.
//! - A status change needs a known agreement (FAILED_PRECONDITION), and status
//!   changes and amendments follow the agreement lifecycle
//!   (`domain::Lifecycle`, FAILED_PRECONDITION naming the rule).
//! - A retraction needs a current figure to retract (FAILED_PRECONDITION).
//! - What a feed owns (`owners`: an agreement it stored first, a figure it
//!   recorded first) is changed by another feed only if the author curates
//!   (PERMISSION_DENIED).
//!
//! A failed job is rolled back; the others of the group stay. Depends on the
//! store's shared state, `owners`, the projection (current figures, first
//! records) and the domain.

use super::owners::{NewPairFeeds, Pair, PairFeeds, Standing, Unpublished};
use super::{layout, log, Author, Prepared, Projection, Shared};
use crate::domain::{Event, FeedName, IdentityName, Lifecycle, Payload, TradeFigureKey};
use crate::error::Error;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// xxh3 rather than SipHash: keys are hashed once per event on the writer
/// thread.
type Hasher = xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// How long a retraction waits for the publisher to apply the groups before
/// it; far longer than a publish takes, so only a stuck publisher hits it.
const PUBLISHER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// What happened to one event of an acknowledged request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub sequence: u64,
    /// The event was already stored with the same content.
    pub duplicate: bool,
}

/// An event of the group that will be written.
pub(super) struct Staged {
    pub sequence: u64,
    pub fingerprint: u64,
    pub prepared: Prepared,
    /// The identity that sent it, recorded with it.
    pub written_by: Option<IdentityName>,
}

/// The group's new events by fingerprint of (feed, id); the rare event
/// whose fingerprint an earlier one of the group holds is kept apart.
#[derive(Default)]
struct GroupIds {
    by_fingerprint: HashMap<u64, usize, Hasher>,
    collided: Vec<usize>,
}

/// A group being staged.
pub(super) struct Group<'a> {
    shared: &'a Shared,
    projection: &'a dyn Projection,
    /// Every agreement committed before this group.
    committed: &'a HashMap<String, Standing>,
    /// The feeds that recorded figures of each pair before this group.
    pair_feeds: &'a PairFeeds,
    /// The trade records of groups written but perhaps not applied yet.
    unpublished: &'a mut Unpublished,
    next_sequence: u64,
    pub staged: Vec<Staged>,
    ids: GroupIds,
    /// Agreement id → the index in `staged` of its latest event.
    pub agreements: HashMap<String, usize>,
    /// The agreements this group changes, and how to undo each change.
    pub lives: HashMap<String, Standing>,
    undo: Vec<(String, Option<Standing>)>,
    /// The (pair and level, feed) this group records figures of for the
    /// first time.
    pub new_pair_feeds: NewPairFeeds,
    /// Figure key → index in `staged` of its first record in this group;
    /// built the first time a feed's record must be checked against a
    /// shared pair, kept up to date from then on.
    first_records: Option<HashMap<TradeFigureKey, usize, Hasher>>,
}

impl<'a> Group<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        projection: &'a dyn Projection,
        committed: &'a HashMap<String, Standing>,
        pair_feeds: &'a PairFeeds,
        unpublished: &'a mut Unpublished,
        next_sequence: u64,
        events: usize,
    ) -> Self {
        Group {
            shared,
            projection,
            committed,
            pair_feeds,
            unpublished,
            next_sequence,
            staged: Vec::with_capacity(events),
            ids: GroupIds {
                by_fingerprint: HashMap::with_capacity_and_hasher(events, Default::default()),
                collided: Vec::new(),
            },
            agreements: HashMap::new(),
            lives: HashMap::new(),
            undo: Vec::new(),
            new_pair_feeds: NewPairFeeds::default(),
            first_records: None,
        }
    }

    /// Stages one job's events, all or nothing.
    pub(super) fn stage(
        &mut self,
        events: Vec<Prepared>,
        author: &Author,
    ) -> Result<Vec<Outcome>, Error> {
        let staged_mark = self.staged.len();
        let (undo_mark, pairs_mark) = (self.undo.len(), self.new_pair_feeds.order.len());
        let result = self.stage_all(events, author);
        if result.is_err() {
            // Roll this job back; earlier jobs of the group stay.
            for (i, s) in self.staged.drain(staged_mark..).enumerate() {
                // Only the entries of this job's events (an earlier event
                // of the group may hold the same fingerprint).
                if self.ids.by_fingerprint.get(&s.fingerprint) == Some(&(staged_mark + i)) {
                    self.ids.by_fingerprint.remove(&s.fingerprint);
                }
            }
            self.ids.collided.retain(|i| *i < staged_mark);
            self.agreements.retain(|_, i| *i < staged_mark);
            if let Some(first) = self.first_records.as_mut() {
                first.retain(|_, i| *i < staged_mark);
            }
            while self.undo.len() > undo_mark {
                if let Some((id, before)) = self.undo.pop() {
                    match before {
                        Some(standing) => self.lives.insert(id, standing),
                        None => self.lives.remove(&id),
                    };
                }
            }
            self.new_pair_feeds.truncate(pairs_mark);
        }
        result
    }

    /// The index in `staged` of this group's event with `event`'s feed and
    /// id, if any.
    fn staged_same_id(&self, fingerprint: u64, event: &Event) -> Option<usize> {
        let same = |i: &usize| {
            let e = self.staged[*i].prepared.event();
            e.id == event.id && e.feed == event.feed
        };
        self.ids
            .by_fingerprint
            .get(&fingerprint)
            .copied()
            .filter(same)
            .or_else(|| self.ids.collided.iter().copied().find(same))
    }

    fn stage_all(&mut self, events: Vec<Prepared>, author: &Author) -> Result<Vec<Outcome>, Error> {
        let mut outcomes = Vec::with_capacity(events.len());
        for (index, prepared) in events.into_iter().enumerate() {
            let event = prepared.event();
            let fingerprint = layout::fingerprint(event.feed.as_str(), event.id.as_str());
            if let Some(k) = self.staged_same_id(fingerprint, event) {
                if self.staged[k].prepared.event() != event {
                    return Err(Error::EventIdConflict {
                        index,
                        event_id: event.id.to_string(),
                        existing_sequence: None,
                    });
                }
                outcomes.push(Outcome {
                    sequence: self.staged[k].sequence,
                    duplicate: true,
                });
                continue;
            }
            if let Some(stored) = self.shared.find_event(&event.feed, event.id.as_str())? {
                if &stored.event != event {
                    return Err(Error::EventIdConflict {
                        index,
                        event_id: event.id.to_string(),
                        existing_sequence: Some(stored.sequence),
                    });
                }
                outcomes.push(Outcome {
                    sequence: stored.sequence,
                    duplicate: true,
                });
                continue;
            }
            let sequence = self.next_sequence + self.staged.len() as u64;
            self.check(index, sequence, &prepared, author)?;
            let at = self.staged.len();
            match self.ids.by_fingerprint.entry(fingerprint) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(at);
                }
                std::collections::hash_map::Entry::Occupied(_) => self.ids.collided.push(at),
            }
            if let (Payload::TradeRecord(r), Some(first)) =
                (&prepared.event().payload, self.first_records.as_mut())
            {
                first.entry(r.key).or_insert(at);
            }
            self.staged.push(Staged {
                sequence,
                fingerprint,
                prepared,
                written_by: author.name.clone(),
            });
            outcomes.push(Outcome {
                sequence,
                duplicate: false,
            });
        }
        Ok(outcomes)
    }

    /// An agreement as the group leaves it so far.
    fn standing(&self, id: &str) -> Option<&Standing> {
        self.lives.get(id).or_else(|| self.committed.get(id))
    }

    fn set_standing(&mut self, id: &str, standing: Standing) {
        let before = self.lives.insert(id.to_owned(), standing);
        self.undo.push((id.to_owned(), before));
        self.agreements.insert(id.to_owned(), self.staged.len());
    }

    /// The rules of one new event (to be stored at `sequence`) that depend
    /// on the store's state.
    fn check(
        &mut self,
        index: usize,
        sequence: u64,
        prepared: &Prepared,
        author: &Author,
    ) -> Result<(), Error> {
        let event = prepared.event();
        let feed = &event.feed;
        match &event.payload {
            Payload::AgreementStatusChanged(c) => {
                let id = c.agreement_id.as_str();
                let Some(standing) = self.standing(id) else {
                    return Err(Error::UnknownAgreement {
                        index,
                        agreement_id: id.to_owned(),
                    });
                };
                let payload = "agreement_status_changed";
                owned_by(&standing.owner, feed, author, index, payload, || {
                    format!("agreement {id:?}")
                })?;
                let life = standing
                    .life
                    .change(c)
                    .map_err(|broken| Error::AgreementRule {
                        index,
                        agreement_id: id.to_owned(),
                        payload,
                        broken,
                    })?;
                let owner = standing.owner.clone();
                self.set_standing(id, Standing { life, owner });
            }
            Payload::Agreement(a) => {
                let id = a.id.as_str();
                let next = match self.standing(id) {
                    None => Standing {
                        life: Lifecycle::start(a),
                        owner: feed.clone(),
                    },
                    Some(standing) => {
                        owned_by(&standing.owner, feed, author, index, "agreement", || {
                            format!("agreement {id:?}")
                        })?;
                        let life =
                            standing
                                .life
                                .amend(a)
                                .map_err(|broken| Error::AgreementRule {
                                    index,
                                    agreement_id: id.to_owned(),
                                    payload: "agreement",
                                    broken,
                                })?;
                        Standing {
                            life,
                            owner: standing.owner.clone(),
                        }
                    }
                };
                self.set_standing(id, next);
            }
            Payload::TradeRecordRetracted(r) => {
                if !self.is_current(&r.key)? {
                    return Err(Error::NothingToRetract { index });
                }
                if !self.alone(&r.key, feed) {
                    self.check_figure_owner(index, "trade_record_retracted", &r.key, feed, author)?;
                }
            }
            Payload::TradeRecord(r) => {
                let pair = Pair::of(&r.key);
                // One look at the pair's feeds serves both: whether this feed
                // is known there, and whether another is.
                let (known, alone) = {
                    let mut feeds = self.writers(&pair);
                    (feeds.clone().any(|f| f == feed), feeds.all(|f| f == feed))
                };
                if !alone {
                    self.check_figure_owner(index, "trade_record", &r.key, feed, author)?;
                }
                if !known {
                    self.new_pair_feeds.push(pair, feed.clone(), sequence);
                }
            }
        }
        Ok(())
    }

    /// The feeds that have recorded figures of `pair` (and level), before
    /// this group and in it.
    fn writers(&self, pair: &Pair) -> impl Iterator<Item = &FeedName> + Clone {
        self.pair_feeds
            .feeds(pair)
            .iter()
            .chain(self.new_pair_feeds.feeds(pair))
    }

    /// Whether no feed but `feed` has recorded figures where `key` is (its
    /// pair and level): then the figure, if any, is `feed`'s own.
    fn alone(&self, key: &TradeFigureKey, feed: &FeedName) -> bool {
        self.writers(&Pair::of(key)).all(|f| f == feed)
    }

    /// Refuses an event of `feed` that records or retracts a figure that
    /// another feed recorded first, unless its author curates. Asked only
    /// where another feed writes the figure's pair and level.
    fn check_figure_owner(
        &mut self,
        index: usize,
        payload: &'static str,
        key: &TradeFigureKey,
        feed: &FeedName,
        author: &Author,
    ) -> Result<(), Error> {
        if author.curates {
            return Ok(());
        }
        match self.figure_owner(key)? {
            Some(owner) => owned_by(&owner, feed, author, index, payload, || {
                format!("the figure {}", describe(key))
            }),
            None => Ok(()),
        }
    }

    /// The feed of the first record of `key`: in the views (and the log),
    /// else in the groups written but not yet applied, else in this group;
    /// `None` for a figure never recorded. Nothing here waits for the
    /// publisher: a group it has not applied yet is in `unpublished` until
    /// the durable sequence (advanced after the views) passes it, and the
    /// views take each group whole, oldest first, so the first record found
    /// in this order is the first there is.
    fn figure_owner(&mut self, key: &TradeFigureKey) -> Result<Option<FeedName>, Error> {
        if let Some(seq) = self.projection.figure_first_record(key)? {
            let first = log::event(&self.shared.tree, seq)?.ok_or_else(|| {
                Error::Internal(format!(
                    "storage: the views name event {seq} as a figure's first record, but the log has none"
                ))
            })?;
            return Ok(Some(first.event.feed));
        }
        if let Some(feed) = self.unpublished.first_feed(key) {
            return Ok(Some(feed.clone()));
        }
        let staged = &self.staged;
        let first = self.first_records.get_or_insert_with(|| {
            let mut first = HashMap::with_hasher(Hasher::default());
            for (i, s) in staged.iter().enumerate() {
                if let Payload::TradeRecord(r) = &s.prepared.event().payload {
                    first.entry(r.key).or_insert(i);
                }
            }
            first
        });
        Ok(first
            .get(key)
            .map(|&i| self.staged[i].prepared.event().feed.clone()))
    }

    /// Whether the figure `key` is current (stored and not retracted) as of
    /// the events staged so far.
    fn is_current(&self, key: &TradeFigureKey) -> Result<bool, Error> {
        // The group's own latest event about the key decides, if there is one.
        for s in self.staged.iter().rev() {
            match &s.prepared.event().payload {
                Payload::TradeRecord(r) if r.key == *key => return Ok(true),
                Payload::TradeRecordRetracted(r) if r.key == *key => return Ok(false),
                _ => {}
            }
        }
        self.wait_for_publisher()?;
        self.projection.figure_is_current(key)
    }

    /// Waits until the publisher has applied every group committed before
    /// this one (at most PUBLISH_QUEUE of them: a few milliseconds), so that
    /// the views answer for the whole store. Only retractions wait; other
    /// events never do.
    fn wait_for_publisher(&self) -> Result<(), Error> {
        let committed = self.next_sequence - 1;
        let started = std::time::Instant::now();
        while self.shared.durable.load(Ordering::Acquire) < committed {
            if started.elapsed() > PUBLISHER_PATIENCE {
                return Err(Error::Internal(format!(
                    "the publisher has not applied sequence {committed} within {PUBLISHER_PATIENCE:?}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        Ok(())
    }
}

/// Refuses an event of `feed` that changes what `owner` owns, unless its
/// author curates.
fn owned_by(
    owner: &FeedName,
    feed: &FeedName,
    author: &Author,
    index: usize,
    payload: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    if owner == feed || author.curates {
        return Ok(());
    }
    Err(Error::NotOwner {
        index,
        payload,
        what: what(),
        owner: owner.to_string(),
        feed: feed.to_string(),
    })
}

/// A figure's key for messages: "CN→KZ Export 2022 HS 2711".
fn describe(key: &TradeFigureKey) -> String {
    use crate::domain::CommodityScope;
    let commodity = match &key.commodity {
        CommodityScope::All => "all commodities".to_owned(),
        CommodityScope::Hs(h) => format!("HS {}", h.as_str()),
        CommodityScope::Sector(s) => format!("sector {s}"),
    };
    format!(
        "{}→{} {:?} {} {commodity}",
        key.reporter().alpha2(),
        key.partner().alpha2(),
        key.flow,
        key.period,
    )
}
