//! The writer in cluster mode: the replicated log decides each event's
//! sequence, and the store is one replica of it.
//!
//! A group is staged against this replica exactly as in embedded mode, then
//! appended to the replicated log through the [`Sequencer`] on the condition
//! that the log's last sequence is still the one this replica has applied.
//! Only once the log confirms does the writer write the group locally (the
//! same sequences) and acknowledge it, so an acknowledged event is in the
//! replicated log and readable on this node. When the log has moved on
//! (another node appended, or an earlier try of ours landed after all), the
//! writer applies what it is missing from the replica queue, then stages the
//! same requests again: an event that landed in an earlier try is then found
//! at the sequence that try proposed, and answered as new.
//!
//! Events other nodes appended arrive on the replica queue in whole atomic
//! batches and are staged by the same rules (their authors may curate:
//! ownership was checked where they were appended). An event this replica
//! refuses means the replicas have diverged: the store stops writing rather
//! than skip it.
//!
//! Depends on the writer and the store's staging; nothing here knows what
//! the replicated log is.

use super::{Answer, Incoming, Job, Msg, Writer};
use crate::domain::{StoredEvent, Timestamp};
use crate::error::Error;
use crate::storage::{event_codec, Author, Outcome, Prepared};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the writer keeps trying to append a group (the log electing a
/// leader, other nodes winning the race) before it answers UNAVAILABLE.
pub const SEQUENCER_PATIENCE: Duration = Duration::from_secs(20);

/// How long the writer waits for the replica queue to bring this node up to
/// the log's head before a retry.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(20);

/// Why the replicated log did not take a group.
#[derive(Debug)]
pub enum NotAppended {
    /// Nothing was stored: the log's last sequence was not the one given.
    Behind,
    /// The log did not confirm: the group may be stored (whole).
    Unconfirmed(String),
    /// Nothing was stored, and trying again will not help (an event larger
    /// than the log's messages may be).
    Refused(String),
}

/// The replicated log as the writer sees it (cluster mode). Called on the
/// writer thread: it may block, for as long as the log takes.
pub trait Sequencer: Send + 'static {
    /// Appends `events` (stored events, sequences `after + 1` …) to the
    /// log, all or nothing, if and only if its last event is `after`.
    fn append(&mut self, after: u64, events: Vec<Vec<u8>>) -> Result<(), NotAppended>;

    /// The sequence of the log's last event.
    fn head(&mut self) -> Result<u64, String>;

    /// Whether the log takes appends now (a quorum answers); checked before
    /// a group is staged, so that requests fail at once while it does not.
    fn ready(&self) -> Result<(), String>;
}

/// The writer's link to the replicated log.
pub struct Sequenced {
    sequencer: Box<dyn Sequencer>,
    /// Events of the log from the node's follower, in order, in whole atomic
    /// batches. Bounded by its sender's capacity: a writer that falls behind
    /// makes the follower stop fetching, it does not queue the log in memory.
    replicas: mpsc::Receiver<Vec<StoredEvent>>,
    /// Waits on both queues at once (the writer is a plain thread).
    runtime: tokio::runtime::Runtime,
}

impl Sequenced {
    pub fn new(
        sequencer: Box<dyn Sequencer>,
        replicas: mpsc::Receiver<Vec<StoredEvent>>,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Internal(format!("the writer's runtime: {e}")))?;
        Ok(Sequenced {
            sequencer,
            replicas,
            runtime,
        })
    }

    /// The next replicated events or message, the log's first: a replica
    /// that is behind cannot append anyway.
    pub(super) fn receive(&mut self, jobs: &mut mpsc::Receiver<Msg>) -> Option<Incoming> {
        let replicas = &mut self.replicas;
        self.runtime.block_on(async {
            tokio::select! {
                biased;
                Some(events) = replicas.recv() => Some(Incoming::Replicated(events)),
                msg = jobs.recv() => msg.map(Incoming::Msg),
            }
        })
    }

    /// The next replicated events, waiting at most `patience`.
    fn replicated(&mut self, patience: Duration) -> Option<Vec<StoredEvent>> {
        let replicas = &mut self.replicas;
        self.runtime.block_on(async {
            tokio::time::timeout(patience, replicas.recv())
                .await
                .ok()
                .flatten()
        })
    }
}

impl Writer {
    /// Stages `group`, appends its new events to the replicated log, then
    /// writes them here and answers; retries after catching up while the log
    /// has moved on, for at most [`SEQUENCER_PATIENCE`].
    pub(super) fn commit_sequenced(&mut self, group: Vec<Job>) {
        let jobs = group;
        if let Some(Err(why)) = self.sequenced.as_ref().map(|s| s.sequencer.ready()) {
            for job in jobs {
                let _ = job.reply.send(Err(Error::Unavailable(format!(
                    "the replicated log takes no appends now ({why}); nothing was stored"
                ))));
            }
            return;
        }
        let started = Instant::now();
        // The sequences earlier tries proposed for each request's new events.
        let mut proposed: Vec<Vec<Vec<u64>>> = vec![Vec::new(); jobs.len()];
        loop {
            self.groups += 1;
            let events: usize = jobs.iter().map(|job| job.events.len()).sum();
            let requests = jobs
                .iter()
                .map(|job| (job.events.clone(), job.author.clone()))
                .collect();
            let (mut results, staged) = self.stage(requests, events);
            // An event found stored at the very sequence an earlier try of
            // this request proposed for it is this request's own.
            for (result, earlier) in results.iter_mut().zip(&proposed) {
                if let Ok(outcomes) = result {
                    for (i, o) in outcomes.iter_mut().enumerate() {
                        if o.duplicate && earlier.iter().any(|p| p.get(i) == Some(&o.sequence)) {
                            o.duplicate = false;
                        }
                    }
                }
            }
            if staged.staged.is_empty() {
                return self.write_and_publish(staged, Timestamp::now(), answers(jobs, results));
            }
            let at = Timestamp::now();
            let after = self.next_sequence - 1;
            let outgoing = outgoing(&staged, &at);
            let sequencer = match self.sequenced.as_mut() {
                Some(s) => &mut s.sequencer,
                None => return,
            };
            let why = match sequencer.append(after, outgoing) {
                Ok(()) => return self.write_and_publish(staged, at, answers(jobs, results)),
                Err(NotAppended::Behind) => "another node appended first".to_owned(),
                Err(NotAppended::Unconfirmed(why)) => why,
                Err(NotAppended::Refused(why)) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(Error::ResourceExhausted(why.clone())));
                    }
                    return;
                }
            };
            for (p, result) in proposed.iter_mut().zip(&results) {
                if let Ok(outcomes) = result {
                    p.push(outcomes.iter().map(|o| o.sequence).collect());
                }
            }
            tracing::debug!(after, reason = %why, "the replicated log did not take the group; catching up");
            if let Err(e) = self.catch_up(started) {
                let e = format!(
                    "the replicated log did not confirm these events ({why}; {e}); they may \
                     be stored: send them again (a stored event is answered as a duplicate)"
                );
                for job in jobs {
                    let _ = job.reply.send(Err(Error::Unavailable(e.clone())));
                }
                return;
            }
        }
    }

    /// Applies replicated events until this node holds the log's head.
    fn catch_up(&mut self, started: Instant) -> Result<(), String> {
        loop {
            let remaining = SEQUENCER_PATIENCE.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(format!("gave up after {SEQUENCER_PATIENCE:?}"));
            }
            let Some(sequenced) = self.sequenced.as_mut() else {
                return Err("not in cluster mode".into());
            };
            let head = match sequenced.sequencer.head() {
                Ok(head) => head,
                Err(e) => {
                    std::thread::sleep(Duration::from_millis(200).min(remaining));
                    tracing::debug!(error = %e, "the replicated log's head is unknown; retrying");
                    continue;
                }
            };
            while self.next_sequence <= head {
                let patience =
                    CATCH_UP_PATIENCE.min(SEQUENCER_PATIENCE.saturating_sub(started.elapsed()));
                let Some(sequenced) = self.sequenced.as_mut() else {
                    return Err("not in cluster mode".into());
                };
                match sequenced.replicated(patience) {
                    Some(events) => self.apply_replicated(events),
                    None => {
                        return Err(format!(
                            "this node applied up to {} but the log holds {head}",
                            self.next_sequence - 1
                        ))
                    }
                }
                if self.failed.is_some() {
                    return Err("this node stopped writing".into());
                }
            }
            return Ok(());
        }
    }

    /// Writes events of the replicated log that this node does not hold yet;
    /// those it holds (its own appends) are passed over.
    pub(super) fn apply_replicated(&mut self, mut events: Vec<StoredEvent>) {
        if self.failed.is_none() {
            self.failed = self.shared.poisoned();
        }
        if self.failed.is_some() {
            return;
        }
        events.retain(|e| e.sequence >= self.next_sequence);
        let Some(first) = events.first().map(|e| e.sequence) else {
            return;
        };
        if first != self.next_sequence {
            return self.diverged(format!(
                "the replicated log's events skip from {} to {first}",
                self.next_sequence - 1
            ));
        }
        // One local group per run of events appended together.
        while !events.is_empty() {
            let at = events[0].ingested_at;
            let run = events.iter().take_while(|e| e.ingested_at == at).count();
            let rest = events.split_off(run);
            if let Err(e) = self.apply_run(std::mem::replace(&mut events, rest), at) {
                return self.diverged(e);
            }
        }
    }

    /// Stages and writes events appended together elsewhere, at exactly
    /// their sequences.
    fn apply_run(&mut self, run: Vec<StoredEvent>, at: Timestamp) -> Result<(), String> {
        let sequences: Vec<u64> = run.iter().map(|e| e.sequence).collect();
        let count = run.len();
        // Consecutive events of one author form one request.
        let mut requests: Vec<(Vec<Prepared>, Author)> = Vec::new();
        for stored in run {
            let author = Author {
                name: stored.written_by,
                curates: true,
            };
            match requests.last_mut() {
                Some((events, a)) if a.name == author.name => {
                    events.push(Prepared::new(stored.event))
                }
                _ => requests.push((vec![Prepared::new(stored.event)], author)),
            }
        }
        self.groups += 1;
        let (results, staged) = self.stage(requests, count);
        let mut i = 0;
        for result in results {
            let outcomes =
                result.map_err(|e| format!("event {} is refused here: {e}", sequences[i]))?;
            for o in outcomes {
                if o.duplicate || o.sequence != sequences[i] {
                    return Err(format!(
                        "event {} would be {} here",
                        sequences[i],
                        if o.duplicate {
                            "a duplicate"
                        } else {
                            "at another sequence"
                        }
                    ));
                }
                i += 1;
            }
        }
        self.write_and_publish(staged, at, Vec::new());
        Ok(())
    }

    /// This replica cannot follow the log: it stops writing, never skips.
    fn diverged(&mut self, why: String) {
        let cause = format!(
            "this replica cannot apply the replicated log ({why}); it serves what it holds \
             and takes no more: restore it from a backup of a healthy node"
        );
        self.failed = Some(cause.clone());
        self.shared.poison("replica", cause);
    }
}

/// The answers of a group's jobs.
fn answers(jobs: Vec<Job>, results: Vec<Result<Vec<Outcome>, Error>>) -> Vec<Answer> {
    jobs.into_iter()
        .zip(results)
        .map(|(job, result)| Answer {
            reply: job.reply,
            result,
            span: job.span,
        })
        .collect()
}

/// The staged events as the log will hold them.
fn outgoing(staged: &super::StagedGroup, at: &Timestamp) -> Vec<Vec<u8>> {
    staged
        .staged
        .iter()
        .map(|s| {
            let mut bytes = Vec::with_capacity(s.prepared.bytes.len() + 48);
            event_codec::encode_stored_parts(
                s.sequence,
                at,
                &s.prepared.bytes,
                s.written_by.as_ref(),
                &mut bytes,
            );
            bytes
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The writer against a replicated log kept in memory, whose answers
    //! the test chooses: a lost confirmation, another node first, no quorum.

    use super::*;
    use crate::storage::{decode_stored, NoProjection, Store, StoreConfig};
    use std::sync::{Arc, Mutex};

    /// What the fake log does with the next append.
    #[derive(Clone, Copy, PartialEq)]
    enum Next {
        Store,
        /// Stores the group, but the confirmation is lost.
        StoreUnconfirmed,
        /// Another node's group of 2 events lands first.
        AnotherFirst,
    }

    #[derive(Default)]
    struct Log {
        events: Vec<Vec<u8>>,
        plan: Vec<Next>,
        ready: bool,
        replicas: Option<mpsc::Sender<Vec<StoredEvent>>>,
    }

    struct Fake(Arc<Mutex<Log>>);

    impl Log {
        /// Stores events and hands them to the node's follower queue.
        fn land(&mut self, events: Vec<Vec<u8>>) {
            let decoded = events.iter().map(|b| decode_stored(b).unwrap()).collect();
            self.events.extend(events);
            if let Some(tx) = &self.replicas {
                tx.try_send(decoded).unwrap();
            }
        }
    }

    impl Sequencer for Fake {
        fn append(&mut self, after: u64, events: Vec<Vec<u8>>) -> Result<(), NotAppended> {
            let mut log = self.0.lock().unwrap();
            if log.events.len() as u64 != after {
                return Err(NotAppended::Behind);
            }
            let next = if log.plan.is_empty() {
                Next::Store
            } else {
                log.plan.remove(0)
            };
            match next {
                Next::Store => {
                    let decoded: Vec<_> =
                        events.iter().map(|b| decode_stored(b).unwrap()).collect();
                    log.events.extend(events);
                    // The follower's copy of this node's own group.
                    if let Some(tx) = &log.replicas {
                        tx.try_send(decoded).unwrap();
                    }
                    Ok(())
                }
                Next::StoreUnconfirmed => {
                    log.land(events);
                    Err(NotAppended::Unconfirmed("the confirmation was lost".into()))
                }
                Next::AnotherFirst => {
                    let theirs = (1..=2)
                        .map(|i| {
                            let mut e = event(&format!("theirs-{after}-{i}"));
                            e.feed = crate::domain::FeedName::parse("other").unwrap();
                            let mut bytes = Vec::new();
                            event_codec::encode_stored_parts(
                                after + i,
                                &Timestamp::now(),
                                &event_codec::encode_event(&e),
                                None,
                                &mut bytes,
                            );
                            bytes
                        })
                        .collect();
                    log.land(theirs);
                    Err(NotAppended::Behind)
                }
            }
        }

        fn head(&mut self) -> Result<u64, String> {
            Ok(self.0.lock().unwrap().events.len() as u64)
        }

        fn ready(&self) -> Result<(), String> {
            if self.0.lock().unwrap().ready {
                Ok(())
            } else {
                Err("no quorum".into())
            }
        }
    }

    fn event(id: &str) -> crate::domain::Event {
        let mut wire = crate::tools::bench::synthetic_events("t", 1, 3).remove(0);
        wire.event_id = id.into();
        crate::convert::parse_event(&wire).unwrap()
    }

    fn replica(log: &Arc<Mutex<Log>>) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            min_free_disk_bytes: 0,
            ..StoreConfig::default()
        };
        let (store, tx) = Store::open_replica(
            dir.path(),
            config,
            Arc::new(NoProjection),
            Box::new(Fake(Arc::clone(log))),
        )
        .unwrap();
        log.lock().unwrap().replicas = Some(tx);
        (dir, store)
    }

    async fn append(store: &Store, ids: &[&str]) -> Result<Vec<Outcome>, Error> {
        let events = ids.iter().map(|id| Prepared::new(event(id))).collect();
        store.handle().append(events, Author::anonymous()).await
    }

    #[tokio::test]
    async fn a_group_whose_confirmation_was_lost_is_answered_as_new_once_found_in_the_log() {
        let log = Arc::new(Mutex::new(Log {
            ready: true,
            plan: vec![Next::StoreUnconfirmed],
            ..Log::default()
        }));
        let (_dir, store) = replica(&log);
        let outcomes = append(&store, &["a", "b", "c"]).await.unwrap();
        assert_eq!(
            outcomes,
            (1..=3)
                .map(|sequence| Outcome {
                    sequence,
                    duplicate: false
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(log.lock().unwrap().events.len(), 3, "stored once");
        // Sent again: now a duplicate.
        let again = append(&store, &["a"]).await.unwrap();
        assert!(again[0].duplicate);
        assert_eq!(store.handle().last_sequence(), 3);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn another_node_first_means_catching_up_and_staging_again() {
        let log = Arc::new(Mutex::new(Log {
            ready: true,
            plan: vec![Next::AnotherFirst, Next::AnotherFirst],
            ..Log::default()
        }));
        let (_dir, store) = replica(&log);
        let outcomes = append(&store, &["x", "y"]).await.unwrap();
        assert_eq!(
            outcomes.iter().map(|o| o.sequence).collect::<Vec<_>>(),
            vec![5, 6],
            "after two other groups of two"
        );
        let handle = store.handle();
        assert_eq!(handle.last_sequence(), 6);
        for seq in 1..=6 {
            let stored = handle.event_at(seq).unwrap().unwrap();
            let theirs = decode_stored(&log.lock().unwrap().events[seq as usize - 1]).unwrap();
            assert_eq!(stored, theirs, "the replica holds the log's event {seq}");
        }
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn without_a_quorum_appends_are_refused_at_once() {
        let log = Arc::new(Mutex::new(Log::default()));
        let (_dir, store) = replica(&log);
        let refused = append(&store, &["a"]).await.unwrap_err();
        assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
        assert_eq!(store.handle().last_sequence(), 0);
        assert!(log.lock().unwrap().events.is_empty());
        store.close().await.unwrap();
    }
}
