//! What the events of a group commit must satisfy before they get sequences:
//! the rules that need the store's state, checked by the writer thread, job by
//! job in queue order, against the store and the jobs before it in the group.
//!
//! - An event id already stored (or staged) with equal content is a duplicate
//!   (the original sequence, `duplicate = true`); with other content the job
//!   fails with ALREADY_EXISTS.
//! - A status change needs a known agreement (FAILED_PRECONDITION), and status
//!   changes and amendments follow the agreement lifecycle
//!   (`domain::Lifecycle`, FAILED_PRECONDITION naming the rule).
//! - A retraction needs a current figure to retract (FAILED_PRECONDITION).
//!
//! A failed job is rolled back; the others of the group stay. Depends on the
//! store's shared state, the projection (for the current figures) and the
//! domain.

use super::{Author, Prepared, Projection, Shared};
use crate::domain::{EventId, IdentityName, Lifecycle, Payload, TradeFigureKey};
use crate::error::Error;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// The group's new event ids; xxh3 rather than SipHash: ids are hashed once
/// per event on the writer thread.
type IdMap = HashMap<EventId, usize, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

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

/// A group being staged.
pub(super) struct Group<'a> {
    shared: &'a Shared,
    projection: &'a dyn Projection,
    /// The lifecycle of every agreement committed before this group.
    committed: &'a HashMap<String, Lifecycle>,
    next_sequence: u64,
    pub staged: Vec<Staged>,
    ids: IdMap,
    /// Agreement id → the index in `staged` of its latest event.
    pub agreements: HashMap<String, usize>,
    /// The lifecycles this group changes, and how to undo each change.
    pub lives: HashMap<String, Lifecycle>,
    undo: Vec<(String, Option<Lifecycle>)>,
}

impl<'a> Group<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        projection: &'a dyn Projection,
        committed: &'a HashMap<String, Lifecycle>,
        next_sequence: u64,
        events: usize,
    ) -> Self {
        Group {
            shared,
            projection,
            committed,
            next_sequence,
            staged: Vec::with_capacity(events),
            ids: IdMap::with_capacity_and_hasher(events, Default::default()),
            agreements: HashMap::new(),
            lives: HashMap::new(),
            undo: Vec::new(),
        }
    }

    /// Stages one job's events, all or nothing.
    pub(super) fn stage(
        &mut self,
        events: Vec<Prepared>,
        author: &Author,
    ) -> Result<Vec<Outcome>, Error> {
        let (staged_mark, undo_mark) = (self.staged.len(), self.undo.len());
        let result = self.stage_all(events, author);
        if result.is_err() {
            // Roll this job back; earlier jobs of the group stay.
            for s in self.staged.drain(staged_mark..) {
                self.ids.remove(&s.prepared.event().id);
            }
            self.agreements.retain(|_, i| *i < staged_mark);
            while self.undo.len() > undo_mark {
                if let Some((id, before)) = self.undo.pop() {
                    match before {
                        Some(life) => self.lives.insert(id, life),
                        None => self.lives.remove(&id),
                    };
                }
            }
        }
        result
    }

    fn stage_all(&mut self, events: Vec<Prepared>, author: &Author) -> Result<Vec<Outcome>, Error> {
        let mut outcomes = Vec::with_capacity(events.len());
        for (index, prepared) in events.into_iter().enumerate() {
            let event = prepared.event();
            if let Some(&k) = self.ids.get(&event.id) {
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
            if let Some(stored) = self.shared.find_event(event.id.as_str())? {
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
            self.check(index, &event.payload)?;
            let sequence = self.next_sequence + self.staged.len() as u64;
            let fingerprint = super::layout::fingerprint(event.id.as_str());
            self.ids.insert(event.id.clone(), self.staged.len());
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

    /// The lifecycle of an agreement as the group leaves it so far.
    fn life(&self, id: &str) -> Option<Lifecycle> {
        self.lives
            .get(id)
            .or_else(|| self.committed.get(id))
            .copied()
    }

    fn set_life(&mut self, id: &str, life: Lifecycle) {
        let before = self.lives.insert(id.to_owned(), life);
        self.undo.push((id.to_owned(), before));
        self.agreements.insert(id.to_owned(), self.staged.len());
    }

    /// The rules of one new event that depend on the store's state.
    fn check(&mut self, index: usize, payload: &Payload) -> Result<(), Error> {
        match payload {
            Payload::AgreementStatusChanged(c) => {
                let id = c.agreement_id.as_str();
                let Some(life) = self.life(id) else {
                    return Err(Error::UnknownAgreement {
                        index,
                        agreement_id: id.to_owned(),
                    });
                };
                let next = life.change(c).map_err(|broken| Error::AgreementRule {
                    index,
                    agreement_id: id.to_owned(),
                    payload: "agreement_status_changed",
                    broken,
                })?;
                self.set_life(id, next);
            }
            Payload::Agreement(a) => {
                let id = a.id.as_str();
                let next = match self.life(id) {
                    None => Lifecycle::start(a),
                    Some(life) => life.amend(a).map_err(|broken| Error::AgreementRule {
                        index,
                        agreement_id: id.to_owned(),
                        payload: "agreement",
                        broken,
                    })?,
                };
                self.set_life(id, next);
            }
            Payload::TradeRecordRetracted(r) => {
                if !self.is_current(&r.key)? {
                    return Err(Error::NothingToRetract { index });
                }
            }
            Payload::TradeRecord(_) => {}
        }
        Ok(())
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
        // Else the views, once the publisher has applied every group
        // committed before this one (at most PUBLISH_QUEUE of them: a few
        // milliseconds). Retractions are rare; other events never wait.
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
        self.projection.figure_is_current(key)
    }
}
