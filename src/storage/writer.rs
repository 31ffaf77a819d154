//! The single writer thread and its group commit.
//!
//! Appenders queue [`Job`]s on a bounded channel. The writer takes the first
//! job, then whatever else is already queued (up to `max_group_events`), and
//! commits them as one group: it checks every job against the store and the
//! jobs before it (duplicates, id conflicts, unknown agreements), assigns
//! gapless sequences to the new events, writes the log chunks, fingerprint
//! chunks and agreement keys in one atomic sled batch, flushes, fsyncs, and
//! only then publishes the new durable sequence and answers every job. One
//! fsync is shared by every job in the group.
//!
//! A failed write or fsync poisons the writer: what reached the disk is
//! unknown, so it refuses every later job until the server restarts and
//! recovers from the log.

use super::layout;
use super::{storage_error, Prepared, Projection, Shared, Syncer};
use crate::domain::{EventId, Payload, StoredEvent, Timestamp};
use crate::error::Error;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the writer is asked to do.
pub(super) enum Msg {
    Append(Job),
    /// Commit what is queued before this message, then stop.
    Close(oneshot::Sender<()>),
}

/// One all-or-nothing append request.
pub(super) struct Job {
    pub events: Vec<Prepared>,
    pub reply: oneshot::Sender<Result<Vec<Outcome>, Error>>,
}

/// What happened to one event of an acknowledged request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub sequence: u64,
    /// The event was already stored with the same content.
    pub duplicate: bool,
}

/// An event of the current group that will be written.
struct Staged {
    sequence: u64,
    id: EventId,
    fingerprint: u64,
    prepared: Prepared,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    syncer: Box<dyn Syncer>,
    /// Gets each group after its fsync, before the acknowledgements.
    projection: Arc<dyn Projection>,
    /// Ids of every stored agreement.
    agreements: HashSet<String>,
    next_sequence: u64,
    max_group_events: usize,
    /// Set after a failed write or fsync.
    failed: Option<String>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        syncer: Box<dyn Syncer>,
        projection: Arc<dyn Projection>,
        agreements: HashSet<String>,
        next_sequence: u64,
        max_group_events: usize,
    ) -> Self {
        Writer {
            shared,
            syncer,
            projection,
            agreements,
            next_sequence,
            max_group_events,
            failed: None,
        }
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut close_ack = None;
        while close_ack.is_none() {
            let first = match rx.blocking_recv() {
                Some(Msg::Append(job)) => job,
                Some(Msg::Close(ack)) => {
                    close_ack = Some(ack);
                    break;
                }
                None => break,
            };
            let mut events = first.events.len();
            let mut group = vec![first];
            while events < self.max_group_events {
                match rx.try_recv() {
                    Ok(Msg::Append(job)) => {
                        events += job.events.len();
                        group.push(job);
                    }
                    Ok(Msg::Close(ack)) => {
                        close_ack = Some(ack);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        // Refuse whatever raced in after the close request.
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Append(job) = msg {
                let _ = job.reply.send(Err(Error::Unavailable(
                    "the store is closed: the server is shutting down".into(),
                )));
            }
        }
        if let Err(e) = self.shared.db.flush() {
            tracing::error!(error = %e, "final flush failed");
        } else if let Err(e) = self.syncer.sync() {
            tracing::error!(error = %e, "final fsync failed");
        }
        if let Some(ack) = close_ack {
            let _ = ack.send(());
        }
    }

    fn commit(&mut self, group: Vec<Job>) {
        if let Some(cause) = &self.failed {
            let err =
                format!("the store stopped writing after a failure ({cause}); restart the server");
            for job in group {
                let _ = job.reply.send(Err(Error::Unavailable(err.clone())));
            }
            return;
        }
        let mut staged: Vec<Staged> = Vec::new();
        let mut staged_ids: HashMap<EventId, usize> = HashMap::new();
        let mut staged_agreements: HashMap<String, usize> = HashMap::new();
        let mut answers: Vec<(oneshot::Sender<_>, Result<Vec<Outcome>, Error>)> =
            Vec::with_capacity(group.len());

        for job in group {
            let mark = staged.len();
            let result = self.stage(
                job.events,
                &mut staged,
                &mut staged_ids,
                &mut staged_agreements,
            );
            if result.is_err() {
                // Roll this job back; earlier jobs of the group stay.
                for s in staged.drain(mark..) {
                    staged_ids.remove(&s.id);
                }
                staged_agreements.retain(|_, i| *i < mark);
            }
            answers.push((job.reply, result));
        }

        if !staged.is_empty() {
            match self.write(&staged, &staged_agreements) {
                Ok(now) => self.publish(staged, staged_agreements, now),
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed; refusing further writes");
                    self.failed = Some(e.to_string());
                    for (reply, _) in answers {
                        let _ = reply.send(Err(Error::Unavailable(format!(
                            "the store failed to write ({e}); nothing of this request was acknowledged"
                        ))));
                    }
                    return;
                }
            }
        }
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }

    /// Checks one job against the store and the group so far, staging its
    /// new events. On error the caller rolls the job's staged events back.
    fn stage(
        &self,
        events: Vec<Prepared>,
        staged: &mut Vec<Staged>,
        staged_ids: &mut HashMap<EventId, usize>,
        staged_agreements: &mut HashMap<String, usize>,
    ) -> Result<Vec<Outcome>, Error> {
        let mut outcomes = Vec::with_capacity(events.len());
        for (index, prepared) in events.into_iter().enumerate() {
            let event = prepared.event();
            if let Some(&k) = staged_ids.get(&event.id) {
                if staged[k].prepared.event() != event {
                    return Err(Error::EventIdConflict {
                        index,
                        event_id: event.id.to_string(),
                        existing_sequence: None,
                    });
                }
                outcomes.push(Outcome {
                    sequence: staged[k].sequence,
                    duplicate: true,
                });
                continue;
            }
            if let Some(seq) = self.shared.find_id(event.id.as_str())? {
                let stored = self
                    .shared
                    .read_event(seq)?
                    .ok_or_else(|| storage_error("id index", format!("missing event {seq}")))?;
                if &stored.event != event {
                    return Err(Error::EventIdConflict {
                        index,
                        event_id: event.id.to_string(),
                        existing_sequence: Some(seq),
                    });
                }
                outcomes.push(Outcome {
                    sequence: seq,
                    duplicate: true,
                });
                continue;
            }
            match &event.payload {
                Payload::AgreementStatusChanged(c) => {
                    let id = c.agreement_id.as_str();
                    if !self.agreements.contains(id) && !staged_agreements.contains_key(id) {
                        return Err(Error::UnknownAgreement {
                            index,
                            agreement_id: id.to_owned(),
                        });
                    }
                    staged_agreements.insert(id.to_owned(), staged.len());
                }
                Payload::Agreement(a) => {
                    staged_agreements.insert(a.id.as_str().to_owned(), staged.len());
                }
                Payload::TradeRecord(_) | Payload::TradeRecordRetracted(_) => {}
            }
            let sequence = self.next_sequence + staged.len() as u64;
            let id = event.id.clone();
            let fingerprint = layout::fingerprint(id.as_str());
            staged_ids.insert(id.clone(), staged.len());
            staged.push(Staged {
                sequence,
                id,
                fingerprint,
                prepared,
            });
            outcomes.push(Outcome {
                sequence,
                duplicate: false,
            });
        }
        Ok(outcomes)
    }

    /// Writes the staged events in one atomic batch, then flush and fsync.
    fn write(
        &mut self,
        staged: &[Staged],
        agreements: &HashMap<String, usize>,
    ) -> Result<Timestamp, Error> {
        let now = Timestamp::now();
        let mut batch = sled::Batch::default();

        let first = staged[0].sequence;
        let events: Vec<&[u8]> = staged.iter().map(|s| s.prepared.bytes.as_slice()).collect();
        let fingerprints: Vec<u64> = staged.iter().map(|s| s.fingerprint).collect();
        super::add_log_entries(&mut batch, first, &events, &now)?;
        super::add_fingerprints(&mut batch, first, &fingerprints);
        for (id, &i) in agreements {
            batch.insert(layout::agreement_key(id), &staged[i].sequence.to_be_bytes());
        }

        self.shared
            .tree
            .apply_batch(batch)
            .map_err(|e| storage_error("write", e))?;
        self.shared
            .db
            .flush()
            .map_err(|e| storage_error("flush", e))?;
        self.syncer.sync().map_err(|e| storage_error("fsync", e))?;
        Ok(now)
    }

    /// After the fsync: index the new events, hand them to the projection and
    /// make them visible.
    fn publish(&mut self, staged: Vec<Staged>, agreements: HashMap<String, usize>, now: Timestamp) {
        {
            // A poisoned lock only means a reader panicked; the map is intact.
            let mut ids = self
                .shared
                .ids
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for s in &staged {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    ids.by_fingerprint.entry(s.fingerprint)
                {
                    e.insert(s.sequence);
                } else {
                    ids.collided.insert(s.id.as_str().to_owned(), s.sequence);
                }
            }
        }
        self.agreements.extend(agreements.into_keys());
        let last = staged[staged.len() - 1].sequence;
        let stored: Vec<StoredEvent> = staged
            .into_iter()
            .map(|s| StoredEvent {
                sequence: s.sequence,
                ingested_at: now,
                event: s.prepared.event,
            })
            .collect();
        self.projection.apply(stored);
        self.next_sequence = last + 1;
        self.shared.durable.store(last, Ordering::Release);
        self.shared.durable_tx.send_replace(last);
    }
}
