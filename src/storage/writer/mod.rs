//! The single writer thread and its group commit.
//!
//! Appenders queue [`Job`]s on a bounded channel. The writer takes the first
//! job, then whatever else is already queued (up to `max_group_events`), and
//! commits them as one group: it checks every job against the store and the
//! jobs before it (`stage`: duplicates, id conflicts, agreements, retractions),
//! assigns gapless sequences to the new events, writes the log chunks, fingerprint
//! chunks, agreement keys and pair-feed keys in one atomic sled batch, flushes
//! and fsyncs.
//! One fsync is shared by every job in the group.
//!
//! Only then does the group go to the publisher thread, which hands it to the
//! projection (the query views), publishes the new durable sequence and
//! answers every job, in group order. The writer meanwhile goes on with the
//! next group, so keeping the views current overlaps the next group's checks,
//! write and fsync. At most [`PUBLISH_QUEUE`] groups wait for the publisher.
//!
//! Before it acknowledges a group, the publisher records the group's last
//! sequence in the acknowledgement mark (`mark`, one small fsynced write),
//! which the log is checked against at the next start.
//!
//! A failed write or fsync, or a failed write of the mark, poisons the
//! writer: what reached the disk is unknown, so it refuses every later job
//! until the server restarts and recovers from the log.
//!
//! In cluster mode (`sequenced`) a staged group is first appended to the
//! replicated log, and the events other nodes appended arrive on a second
//! queue and are applied like groups of their own.
//!
//! Depends on sled, the store's `layout`, `log` and shared state, the domain
//! and `error`; what it does with a committed group beyond the store is the
//! projection's business, and what the replicated log is, the `Sequencer`'s.

pub(super) mod sequenced;

use super::log;
use super::owners::{self, NewPairFeeds, PairFeeds, Standing, Unpublished};
use super::stage::{Group, Outcome, Staged};
use super::{layout, storage_error, Author, Prepared, Projection, Shared, Syncer};
use crate::domain::{StoredEvent, Timestamp};
use crate::error::{Error, Retry};
pub(super) use sequenced::Sequenced;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the writer is asked to do.
pub(super) enum Msg {
    Append(Job),
    /// Commit what is queued before this message, then stop; the sender is
    /// answered once everything before it is committed and fsynced.
    Close(oneshot::Sender<Result<(), String>>),
}

/// One all-or-nothing append request.
pub(super) struct Job {
    pub events: Vec<Prepared>,
    /// Who sends them: recorded in each stored event, and checked against
    /// the feeds that own what they change.
    pub author: super::Author,
    /// Answered once: by the publisher after the group is durable and
    /// visible, or by the writer when it refuses the request.
    pub reply: Reply,
    /// The span of the request that sent it: what the writer and the
    /// publisher log about this request is logged inside it.
    pub span: tracing::Span,
}

/// Groups written and fsynced but not yet published, at most. The writer
/// waits when the publisher is this far behind.
pub const PUBLISH_QUEUE: usize = 2;

pub(super) type Reply = oneshot::Sender<Result<Vec<Outcome>, Error>>;

/// A request's answer, waiting for its group to be published.
struct Answer {
    reply: Reply,
    result: Result<Vec<Outcome>, Error>,
    span: tracing::Span,
}

/// What staging a group leaves to write.
pub(super) struct StagedGroup {
    staged: Vec<Staged>,
    /// Agreement id → the index in `staged` of its latest event.
    agreements: HashMap<String, usize>,
    lives: HashMap<String, Standing>,
    new_pair_feeds: NewPairFeeds,
}

/// What the writer takes next.
pub(super) enum Incoming {
    Msg(Msg),
    /// Events of the replicated log, in order, whole atomic batches.
    Replicated(Vec<StoredEvent>),
}

/// A committed group on its way to the readers and the appenders.
struct Committed {
    /// The group's number, counted from 1 since the store opened (in logs).
    group: u64,
    /// The group's new events (none when every event was a duplicate).
    stored: Vec<StoredEvent>,
    answers: Vec<Answer>,
}

/// Publishes committed groups in order: the acknowledgement mark first
/// (fsynced), then the projection, then the durable sequence, then the
/// answers, so that an acknowledged event is readable and recorded as
/// acknowledged. Once the mark cannot be written, nothing more is
/// acknowledged: what is in the log is recovered at the next start.
fn publish(shared: &Shared, projection: &dyn Projection, group: Committed) {
    if let Some(last) = group.stored.last().map(|e| e.sequence) {
        let marked = match shared.poisoned() {
            Some(cause) => Err(cause),
            None => shared.advance_mark(last),
        };
        if let Err(e) = marked {
            tracing::error!(group = group.group, error = %e, "not acknowledged; refusing further writes");
            for answer in group.answers {
                let _ = answer.reply.send(Err(Error::Unavailable(format!(
                    "the store stopped writing ({e}); this request may be in the log \
                     but was not acknowledged: restart the server and send it again"
                ))));
            }
            return;
        }
        projection.apply(group.stored);
        shared.durable.store(last, Ordering::Release);
        shared.durable_tx.send_replace(last);
    }
    let traced = tracing::enabled!(tracing::Level::DEBUG);
    for answer in group.answers {
        if traced {
            answer.span.in_scope(|| match &answer.result {
                Ok(outcomes) => tracing::debug!(
                    group = group.group,
                    events = outcomes.len(),
                    duplicates = outcomes.iter().filter(|o| o.duplicate).count(),
                    first_sequence = outcomes.iter().map(|o| o.sequence).min(),
                    "durable and visible; acknowledging"
                ),
                Err(e) => tracing::debug!(group = group.group, error = %e, "refused by the writer"),
            });
        }
        let _ = answer.reply.send(answer.result);
    }
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    syncer: Box<dyn Syncer>,
    /// Gets each group after its fsync, before the acknowledgements.
    projection: Arc<dyn Projection>,
    /// Where every stored agreement stands, and its owner.
    agreements: HashMap<String, Standing>,
    /// The feeds that have recorded figures of each pair.
    pair_feeds: PairFeeds,
    /// The trade records of the groups written and perhaps not yet applied
    /// by the publisher (at most PUBLISH_QUEUE and the one it applies).
    unpublished: Unpublished,
    next_sequence: u64,
    max_group_events: usize,
    /// Set after a failed write or fsync.
    failed: Option<String>,
    /// Groups committed since the store opened (names each group in logs).
    groups: u64,
    /// The publisher thread's queue, while it runs: bounded by
    /// [`PUBLISH_QUEUE`] so that the writer, not memory, absorbs a publisher
    /// that falls behind (the writer waits in `send`, its own queue fills and
    /// appenders wait).
    publisher: Option<std::sync::mpsc::SyncSender<Committed>>,
    /// The replicated log, in cluster mode.
    sequenced: Option<Sequenced>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        syncer: Box<dyn Syncer>,
        projection: Arc<dyn Projection>,
        agreements: HashMap<String, Standing>,
        pair_feeds: PairFeeds,
        next_sequence: u64,
        max_group_events: usize,
    ) -> Self {
        Writer {
            shared,
            syncer,
            projection,
            agreements,
            pair_feeds,
            unpublished: Unpublished::default(),
            next_sequence,
            max_group_events,
            failed: None,
            groups: 0,
            publisher: None,
            sequenced: None,
        }
    }

    /// Appends through the replicated log (cluster mode).
    pub fn sequenced(mut self, sequenced: Sequenced) -> Self {
        self.sequenced = Some(sequenced);
        self
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let (publish_tx, publish_rx) = std::sync::mpsc::sync_channel::<Committed>(PUBLISH_QUEUE);
        let shared = Arc::clone(&self.shared);
        let projection = Arc::clone(&self.projection);
        let publisher = std::thread::Builder::new()
            .name("caravan-publish".into())
            .spawn(move || {
                for group in publish_rx {
                    publish(&shared, projection.as_ref(), group);
                }
            });
        match publisher {
            Ok(thread) => {
                self.publisher = Some(publish_tx);
                self.run_groups(&mut rx);
                // Everything committed is published before the store closes.
                self.publisher = None;
                if thread.join().is_err() {
                    tracing::error!("the publisher thread panicked");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no publisher thread; publishing on the writer thread");
                self.run_groups(&mut rx);
            }
        }
    }

    fn run_groups(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        let mut close_ack = None;
        while close_ack.is_none() {
            let next = match self.sequenced.as_mut() {
                Some(s) => s.receive(rx),
                None => rx.blocking_recv().map(Incoming::Msg),
            };
            let first = match next {
                Some(Incoming::Msg(Msg::Append(job))) => job,
                Some(Incoming::Msg(Msg::Close(ack))) => {
                    close_ack = Some(ack);
                    break;
                }
                Some(Incoming::Replicated(events)) => {
                    self.apply_replicated(events);
                    continue;
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
                let _ = job.reply.send(Err(Error::ShuttingDown(Retry::Later)));
            }
        }
        let flushed = match self.shared.db.flush() {
            Err(e) => Err(format!("flush: {e}")),
            Ok(_) => self.syncer.sync().map_err(|e| format!("fsync: {e}")),
        };
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "the final flush failed");
        }
        if let Some(ack) = close_ack {
            let _ = ack.send(flushed);
        }
    }

    fn commit(&mut self, mut group: Vec<Job>) {
        if !self.writable(&mut group) {
            return;
        }
        if self.sequenced.is_some() {
            return self.commit_sequenced(group);
        }
        self.groups += 1;
        let events: usize = group.iter().map(|job| job.events.len()).sum();
        let span = tracing::debug_span!(
            "group_commit",
            group = self.groups,
            requests = group.len(),
            events,
        );
        let _entered = span.enter();
        let mut replies = Vec::with_capacity(group.len());
        let mut requests = Vec::with_capacity(group.len());
        for job in group {
            replies.push((job.reply, job.span));
            requests.push((job.events, job.author));
        }
        let (results, staged) = self.stage(requests, events);
        let answers = replies
            .into_iter()
            .zip(results)
            .map(|((reply, span), result)| Answer {
                reply,
                result,
                span,
            })
            .collect();
        self.write_and_publish(staged, Timestamp::now(), answers);
    }

    /// Whether the store takes a group now; if not, its jobs are answered.
    fn writable(&mut self, group: &mut Vec<Job>) -> bool {
        if self.failed.is_none() {
            self.failed = self.shared.poisoned();
        }
        if let Some(cause) = &self.failed {
            let err =
                format!("the store stopped writing after a failure ({cause}); restart the server");
            for job in group.drain(..) {
                let _ = job.reply.send(Err(Error::Unavailable(err.clone())));
            }
            return false;
        }
        let bytes: usize = group
            .iter()
            .flat_map(|job| job.events.iter().map(|p| p.bytes.len() + 64))
            .sum();
        if let Err(why) = self.shared.space.check(bytes as u64) {
            for job in group.drain(..) {
                let _ = job.reply.send(Err(Error::Unavailable(why.clone())));
            }
            return false;
        }
        true
    }

    /// Stages requests (events and author) in order against the store: each
    /// request's outcome, and what the group would write.
    fn stage(
        &mut self,
        requests: Vec<(Vec<Prepared>, Author)>,
        events: usize,
    ) -> (Vec<Result<Vec<super::Outcome>, Error>>, StagedGroup) {
        self.unpublished
            .prune(self.shared.durable.load(Ordering::Acquire));
        let mut staging = Group::new(
            &self.shared,
            self.projection.as_ref(),
            &self.agreements,
            &self.pair_feeds,
            &mut self.unpublished,
            self.next_sequence,
            events,
        );
        let results = requests
            .into_iter()
            .map(|(events, author)| staging.stage(events, &author))
            .collect();
        let Group {
            staged,
            agreements,
            lives,
            new_pair_feeds,
            ..
        } = staging;
        (
            results,
            StagedGroup {
                staged,
                agreements,
                lives,
                new_pair_feeds,
            },
        )
    }

    /// Writes a staged group (its events ingested `at`), then hands it and
    /// the answers to the publisher.
    fn write_and_publish(&mut self, group: StagedGroup, at: Timestamp, answers: Vec<Answer>) {
        let StagedGroup {
            staged,
            agreements: staged_agreements,
            lives,
            new_pair_feeds,
        } = group;
        let mut stored = Vec::new();
        if !staged.is_empty() {
            match self.write(&staged, &staged_agreements, &new_pair_feeds, at) {
                Ok(()) => stored = self.committed(staged, lives, new_pair_feeds, at),
                Err((reason, e)) => {
                    tracing::error!(error = %e, "group commit failed; refusing further writes");
                    self.failed = Some(e.to_string());
                    self.shared.poison(reason, e.to_string());
                    for answer in answers {
                        let _ = answer.reply.send(Err(Error::Unavailable(format!(
                            "the store failed to write ({e}); nothing of this request was acknowledged"
                        ))));
                    }
                    return;
                }
            }
        }
        // Even a group of duplicates goes through the publisher: a duplicate's
        // sequence may belong to a group still being published.
        let group = Committed {
            group: self.groups,
            stored,
            answers,
        };
        match &self.publisher {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(group)) = tx.send(group) {
                    tracing::error!("the publisher thread is gone; publishing here");
                    self.publisher = None;
                    publish(&self.shared, self.projection.as_ref(), group);
                }
            }
            None => publish(&self.shared, self.projection.as_ref(), group),
        }
    }

    /// Writes the staged events (ingested `now`) in one atomic batch, then
    /// flush and fsync.
    fn write(
        &mut self,
        staged: &[Staged],
        agreements: &HashMap<String, usize>,
        pair_feeds: &NewPairFeeds,
        now: Timestamp,
    ) -> Result<(), (&'static str, Error)> {
        let mut batch = sled::Batch::default();

        let first = staged[0].sequence;
        let events: Vec<log::Entry<'_>> = staged
            .iter()
            .map(|s| (s.prepared.bytes.as_slice(), s.written_by.as_ref()))
            .collect();
        let fingerprints: Vec<u64> = staged.iter().map(|s| s.fingerprint).collect();
        log::add_entries(&mut batch, first, &events, &now).map_err(|e| ("write", e))?;
        log::add_fingerprints(&mut batch, first, &fingerprints);
        for (id, &i) in agreements {
            batch.insert(layout::agreement_key(id), &staged[i].sequence.to_be_bytes());
        }
        for (pair, feed, sequence) in &pair_feeds.order {
            let (k, v) = owners::pair_feed_entry(pair, feed, *sequence);
            batch.insert(k, v);
        }

        let started = std::time::Instant::now();
        self.shared
            .tree
            .apply_batch(batch)
            .map_err(|e| ("write", storage_error("write", e)))?;
        self.shared
            .db
            .flush()
            .map_err(|e| ("write", storage_error("flush", e)))?;
        let flushed = std::time::Instant::now();
        self.syncer
            .sync()
            .map_err(|e| ("fsync", storage_error("fsync", e)))?;
        if let Some(o) = &self.shared.observer {
            o.0.group_committed(staged.len(), flushed - started, flushed.elapsed());
        }
        tracing::debug!(
            first_sequence = first,
            new_events = staged.len(),
            bytes = events.iter().map(|e| e.0.len()).sum::<usize>(),
            write_us = (flushed - started).as_micros() as u64,
            fsync_us = flushed.elapsed().as_micros() as u64,
            "written and fsynced"
        );
        Ok(())
    }

    /// After the fsync: index the new events for the checks of later groups
    /// and return them for publishing.
    fn committed(
        &mut self,
        staged: Vec<Staged>,
        lives: HashMap<String, Standing>,
        pair_feeds: NewPairFeeds,
        now: Timestamp,
    ) -> Vec<StoredEvent> {
        {
            // A poisoned lock only means a reader panicked; the map is intact.
            let mut ids = self
                .shared
                .ids
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for s in &staged {
                if ids.insert(s.fingerprint, s.sequence).is_err() {
                    let e = s.prepared.event();
                    ids.insert_collided(layout::id_key(e.feed.as_str(), e.id.as_str()), s.sequence);
                }
            }
        }
        self.agreements.extend(lives);
        for (pair, feed, _) in pair_feeds.order {
            self.pair_feeds.insert(pair, feed);
        }
        if let Some(last) = staged.last().map(|s| s.sequence) {
            self.unpublished.push(
                last,
                staged
                    .iter()
                    .map(|s| (&s.prepared.event().payload, &s.prepared.event().feed)),
            );
        }
        self.next_sequence += staged.len() as u64;
        staged
            .into_iter()
            .map(|s| StoredEvent {
                sequence: s.sequence,
                ingested_at: now,
                event: s.prepared.event,
                written_by: s.written_by,
            })
            .collect()
    }
}
