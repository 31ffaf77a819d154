//! The store: an append-only event log in an embedded sled database, with a
//! permanent event-id index and the set of known agreements derived from it.
//!
//! This module is the facade ([`Store`], [`StoreHandle`], [`StoreConfig`],
//! [`Projection`], [`Prepared`], [`Syncer`]); nothing it exposes is a sled
//! type, and no other module of the crate uses sled. Inside:
//!
//! - `layout`: the tree, key prefixes and the byte format of chunks;
//! - `event_codec`: the on-disk form of one event (`StoredEvent` protobuf);
//! - `log`: reading events out of chunks, adding a group's chunks to a batch;
//! - `ids`: the in-memory event-id index (ids are unique per feed);
//! - `owners`: which feed owns an agreement or a figure, and the feeds that
//!   record figures of each pair;
//! - `derived`: the views' checkpoint keys (pages, rollups, the sequence a
//!   checkpoint covers), checksummed, for the projection;
//! - `directory`: repairs of what a power cut leaves torn, directory fsyncs;
//! - `mark`: the acknowledgement mark, the newest acknowledged sequence kept
//!   outside sled, which a damaged or truncated log is checked against;
//! - `opening`: sled's lock and its panics on damaged files;
//! - `recovery`: what opening a store checks, loads and replays;
//! - `rewrite`: the upgrades of older formats and the rebuild of the
//!   derived keys from the log;
//! - `stage`: the rules a group's events must meet against the store's state;
//! - `writer`: the writer and publisher threads (group commit, fsync, acks);
//! - `ceiling`: sled alone, for `caravan bench`;
//! - `import`: a new store from a backup's events (`caravan restore`);
//! - `check`: the store checked against its log (`caravan verify`);
//! - `space`: free disk space, checked before each write;
//! - `hooks`: the traits the store calls out to (projection, syncer,
//!   observer);
//! - `config`: the store's settings and their defaults.
//!
//! Writes go through one writer thread that commits groups of requests
//! together and acknowledges them only after an fsync. Reads never show an
//! event that is not yet durable.
//!
//! Depends on the domain, `convert` (through `event_codec`) and `error`; must
//! not depend on the gRPC edge or the generated service code.

mod ceiling;
mod check;
mod config;
mod derived;
mod directory;
mod event_codec;
mod hooks;
mod ids;
mod import;
mod layout;
mod log;
mod mark;
mod opening;
mod owners;
mod recovery;
mod rewrite;
mod space;
mod stage;
mod writer;

use crate::domain::{Event, EventId, FeedName, IdentityName, StoredEvent};
use crate::error::{Error, Retry};
use ids::IdIndex;
use opening::{open_sled, sled_failures_as_errors};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use ceiling::ceiling_write;
pub use check::{check_offline, Finding, Report};
pub use config::{
    StoreConfig, DEFAULT_CACHE_BYTES, DEFAULT_MAX_GROUP_EVENTS, DEFAULT_MIN_FREE_DISK_BYTES,
    DEFAULT_WRITER_QUEUE,
};
pub use derived::{Derived, NO_ROOM};
pub use import::import;
/// The store format this build writes.
pub const FORMAT_VERSION: u32 = layout::FORMAT_VERSION;
use hooks::{fsync_data_file, FsyncDataFile};
pub use hooks::{NoProjection, Observer, Projection, StoreObserver, Syncer};
pub use space::WriteState;
pub use stage::Outcome;
pub use writer::sequenced::{NotAppended, Sequencer, SEQUENCER_PATIENCE};

/// Batches of replicated events waiting for the writer (cluster mode), at
/// most: the follower stops fetching from the log while they wait.
pub const REPLICA_QUEUE: usize = 8;

/// Decodes an event as the log (and the replicated log) holds it.
pub fn decode_stored(bytes: &[u8]) -> Result<StoredEvent, Error> {
    event_codec::decode_stored(bytes).map_err(|e| storage_error("undecodable stored event", e))
}

/// Who appends a request's events: the identity recorded in each stored
/// event (`written_by`, the audit trail), and whether it may overrule the
/// feed that owns what its events change.
#[derive(Clone, Debug)]
pub struct Author {
    /// Recorded as the events' `written_by`; none on a server without
    /// identities.
    pub name: Option<IdentityName>,
    /// May revise or retract a figure, and amend or change the status of an
    /// agreement, that another feed stored first (the `curate` scope; the
    /// anonymous caller of a server without identities may, as before
    /// identities existed).
    pub curates: bool,
}

impl Author {
    /// The caller of a server without identities: nothing to record, and
    /// no feed's data is closed to it.
    pub fn anonymous() -> Self {
        Author {
            name: None,
            curates: true,
        }
    }
}

/// An event ready for the writer: parsed, and encoded once by the caller's
/// thread so the single writer thread does as little as possible.
#[derive(Clone)]
pub struct Prepared {
    event: Event,
    bytes: Vec<u8>,
}

impl Prepared {
    pub fn new(event: Event) -> Self {
        let bytes = event_codec::encode_event(&event);
        Prepared { event, bytes }
    }

    pub(crate) fn event(&self) -> &Event {
        &self.event
    }
}

/// State shared by the writer thread, the publisher thread and readers.
struct Shared {
    db: sled::Db,
    tree: sled::Tree,
    /// Newest durable (fsynced) sequence; reads never go past it.
    durable: AtomicU64,
    ids: RwLock<IdIndex>,
    /// The log chunk the last duplicate check read, decoded.
    last_chunk: log::LastChunk,
    /// Publishes `durable` as it grows, to readers that wait for new events
    /// (subscriptions). A watch holds only the latest value: a slow reader
    /// never holds the publisher up, it just sees a later sequence.
    durable_tx: watch::Sender<u64>,
    /// Set once `close` has begun: new appends are refused.
    closed: AtomicBool,
    /// Advanced by the publisher before it acknowledges a group. A mutex
    /// only because the writer publishes itself when the publisher thread is
    /// gone; never contended otherwise.
    mark: Mutex<mark::Mark>,
    /// Why the store stopped writing, once a write, fsync or the
    /// acknowledgement mark failed (the writer checks it before each group).
    poisoned: Mutex<Option<String>>,
    /// The store's directory.
    dir: std::path::PathBuf,
    /// Its free space, checked before each group.
    space: space::Space,
    /// The writer queue's capacity (`--writer-queue`).
    queue_capacity: usize,
    observer: Option<Observer>,
}

fn storage_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("storage: {context}: {e}"))
}

impl Shared {
    /// Records that events up to `sequence` are acknowledged; on failure the
    /// store stops writing.
    fn advance_mark(&self, sequence: u64) -> Result<(), String> {
        let result = self
            .mark
            .lock()
            .map_err(|_| "the mark's lock is poisoned".to_owned())
            .and_then(|mut m| m.advance(sequence).map_err(|e| e.to_string()));
        if let Err(e) = &result {
            self.poison(
                "mark",
                format!("writing the acknowledgement mark failed: {e}"),
            );
        }
        result
    }

    /// Stops the store writing for good (until a restart), for `cause`.
    fn poison(&self, reason: &'static str, cause: String) {
        let mut p = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none() {
            tracing::error!(%cause, "the store stopped writing; appends are refused until a restart (acknowledged events are safe)");
            if let Some(o) = &self.observer {
                o.0.write_failed(reason);
            }
            *p = Some(cause);
        }
    }

    /// Why the store stopped writing, if it did.
    fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().map_or_else(
            |_| Some("the store's state lock is poisoned".into()),
            |p| p.clone(),
        )
    }

    /// The stored event of `feed` with this id, read and decoded once:
    /// durable, or being committed by the writer (the only caller before
    /// durability).
    fn find_event(&self, feed: &FeedName, id: &str) -> Result<Option<StoredEvent>, Error> {
        let fingerprint = layout::fingerprint(feed.as_str(), id);
        let candidate = self
            .ids
            .read()
            .map_err(|_| Error::Internal("id index poisoned".into()))?
            .candidate(|| layout::id_key(feed.as_str(), id), fingerprint);
        let Some(seq) = candidate else {
            return Ok(None);
        };
        let stored = self
            .last_chunk
            .event(&self.tree, seq)?
            .ok_or_else(|| storage_error("id index", format!("points at missing event {seq}")))?;
        Ok((stored.event.id.as_str() == id && stored.event.feed == *feed).then_some(stored))
    }
}

/// Owns the store: the writer thread and the database. Dropping it without
/// [`Store::close`] leaves the writer to finish when every handle is gone.
pub struct Store {
    handle: StoreHandle,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// A cheap, cloneable handle for appending and reading.
#[derive(Clone)]
pub struct StoreHandle {
    shared: Arc<Shared>,
    /// The writer's queue of append requests, bounded by `--writer-queue`:
    /// when the writer falls behind, appenders wait in `submit` (and an
    /// AppendStream stops reading its client) instead of queueing without
    /// end.
    jobs: mpsc::Sender<writer::Msg>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, fsyncing with the real data file,
    /// and replays the log into `projection`.
    pub fn open(
        dir: &Path,
        config: StoreConfig,
        projection: Arc<dyn Projection>,
    ) -> Result<Store, Error> {
        Self::open_inner(dir, config, projection, fsync_data_file, None)
    }

    /// Opens the store as a replica of a replicated log (cluster mode): its
    /// appends go through `sequencer`, and the events of the log reach it
    /// through the returned sender, in order and in whole atomic batches.
    pub fn open_replica(
        dir: &Path,
        config: StoreConfig,
        projection: Arc<dyn Projection>,
        sequencer: Box<dyn Sequencer>,
    ) -> Result<(Store, mpsc::Sender<Vec<StoredEvent>>), Error> {
        let (tx, rx) = mpsc::channel(REPLICA_QUEUE);
        let sequenced = writer::Sequenced::new(sequencer, rx)?;
        let store = Self::open_inner(dir, config, projection, fsync_data_file, Some(sequenced))?;
        Ok((store, tx))
    }

    /// Opens the store with a custom [`Syncer`] (tests use this to observe
    /// the order of fsync and acknowledgement). `make_syncer` gets the path
    /// of sled's data file.
    pub fn open_with(
        dir: &Path,
        config: StoreConfig,
        projection: Arc<dyn Projection>,
        make_syncer: impl FnOnce(&Path) -> Result<Box<dyn Syncer>, Error>,
    ) -> Result<Store, Error> {
        Self::open_inner(dir, config, projection, make_syncer, None)
    }

    fn open_inner(
        dir: &Path,
        config: StoreConfig,
        projection: Arc<dyn Projection>,
        make_syncer: impl FnOnce(&Path) -> Result<Box<dyn Syncer>, Error>,
        sequenced: Option<writer::Sequenced>,
    ) -> Result<Store, Error> {
        let repairs = directory::prepare(dir)?;
        for repair in &repairs {
            tracing::warn!(dir = %dir.display(), %repair, "repaired before opening");
        }
        // Read before sled opens the directory: an emptied data file opens
        // as an empty store, and the mark is how that is told apart.
        let acknowledged = mark::read(dir)?;
        let (db, tree) = sled_failures_as_errors(dir, || {
            let db = open_sled(dir, config.cache_capacity_bytes)
                .map_err(|e| opening::refused(dir, &e))?;
            let tree = db
                .open_tree(layout::TREE)
                .map_err(|e| storage_error("open tree", e))?;
            Ok((db, tree))
        })?;
        directory::opened(dir)?;
        let format = recovery::check_format(&db, &tree, dir, &acknowledged)?;
        let mut syncer = make_syncer(&dir.join("db"))?;
        db.flush().map_err(|e| storage_error("flush", e))?;
        syncer.sync().map_err(|e| storage_error("fsync", e))?;

        let (replayed, recovered) = sled_failures_as_errors(dir, || {
            if format != recovery::Format::Current {
                rewrite::upgrade(&db, &tree, format, syncer.as_mut())?;
            }
            if config.rebuild_views {
                derived::drop_checkpoint(&tree, "--rebuild-views")?;
            } else if derived::orphaned(&tree)? {
                // A drop that a crash interrupted: what is left of the views
                // without their checkpoint key is not theirs any more.
                derived::drop_checkpoint(&tree, "view keys without a checkpoint")?;
            }
            let derived = Derived::new(
                tree.clone(),
                dir,
                config.min_free_disk_bytes.saturating_mul(2),
            )?;
            // The event-id index is loaded on a second thread while the log
            // is replayed: each reads its own keys, and the index is checked
            // against the log's end once both are done.
            let began = std::time::Instant::now();
            let (replayed, loaded) = std::thread::scope(|s| {
                let loading = s.spawn(|| {
                    let loaded = sled_failures_as_errors(dir, || recovery::load_ids(&tree));
                    (loaded, began.elapsed())
                });
                let replayed = recovery::replay(&tree, dir, projection.as_ref(), &derived);
                let replay_time = began.elapsed();
                let (loaded, ids_time) = loading.join().unwrap_or_else(|_| {
                    let e = Error::Internal("the event-id index could not be loaded".into());
                    (Err(e), began.elapsed())
                });
                tracing::info!(
                    replay_ms = replay_time.as_millis(),
                    ids_ms = ids_time.as_millis(),
                    "log replayed and event-id index loaded side by side"
                );
                (replayed, loaded)
            });
            let replayed = replayed?;
            recovery::check_acknowledged(dir, &acknowledged, replayed.last_sequence)?;
            let recovered =
                recovery::recover(&db, &tree, replayed.last_sequence, loaded, syncer.as_mut())?;
            Ok((replayed, recovered))
        })?;
        let last = replayed.last_sequence;
        let checkpoint = replayed.checkpoint;
        let agreements = replayed.agreements;
        let recovered_pairs = recovered.pair_feeds.len();
        let mark = mark::Mark::open(dir, last)?;
        tracing::info!(
            dir = %dir.display(),
            events = last,
            checkpoint,
            replayed = last - checkpoint,
            acknowledged = ?acknowledged,
            upgraded = format != recovery::Format::Current,
            pair_feeds = recovered_pairs,
            repairs = repairs.len(),
            agreements = agreements.len(),
            "store opened"
        );
        let (durable_tx, _) = watch::channel(last);
        let shared = Arc::new(Shared {
            db,
            tree,
            durable: AtomicU64::new(last),
            ids: RwLock::new(recovered.ids),
            last_chunk: log::LastChunk::default(),
            durable_tx,
            closed: AtomicBool::new(false),
            mark: Mutex::new(mark),
            poisoned: Mutex::new(None),
            dir: dir.to_path_buf(),
            space: space::Space::new(dir, config.min_free_disk_bytes, config.observer.clone()),
            queue_capacity: config.writer_queue.max(1),
            observer: config.observer.clone(),
        });

        let (jobs, rx) = mpsc::channel(config.writer_queue.max(1));
        let w = writer::Writer::new(
            Arc::clone(&shared),
            syncer,
            projection,
            agreements,
            recovered.pair_feeds,
            last + 1,
            config.max_group_events.max(1),
        );
        let w = match sequenced {
            Some(s) => w.sequenced(s),
            None => w,
        };
        let thread = std::thread::Builder::new()
            .name("caravan-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| storage_error("spawn writer", e))?;
        Ok(Store {
            handle: StoreHandle { shared, jobs },
            writer: Some(thread),
        })
    }

    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Refuses new appends, lets the writer commit (and fsync) everything
    /// already queued, and waits for it to stop.
    pub async fn close(mut self) -> Result<(), Error> {
        self.handle.shared.closed.store(true, Ordering::Release);
        // Answered by the writer once everything queued before it is
        // committed; dropped unanswered if the writer is already gone.
        let (done_tx, done_rx) = oneshot::channel();
        let mut flushed = Ok(());
        if self
            .handle
            .jobs
            .send(writer::Msg::Close(done_tx))
            .await
            .is_ok()
        {
            flushed = done_rx.await.unwrap_or(Ok(()));
        }
        if let Some(thread) = self.writer.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| storage_error("join writer", e))?
                .map_err(|_| Error::Internal("the writer thread panicked".into()))?;
        }
        flushed.map_err(|e| {
            Error::Internal(format!(
                "storage: the final flush failed ({e}); what was acknowledged is durable, \
                 what was not may be lost"
            ))
        })?;
        match self.handle.shared.poisoned() {
            Some(cause) => Err(Error::Internal(format!(
                "storage: the store stopped writing while serving ({cause}); acknowledged \
                 events are durable. Free space or fix the disk, then start again"
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.handle.shared.closed.store(true, Ordering::Release);
    }
}

/// The answer to one append request, once its group is durable and
/// published (or refused).
pub(crate) type Answer = oneshot::Receiver<Result<Vec<Outcome>, Error>>;

impl StoreHandle {
    /// Queues events for the writer as one all-or-nothing request by
    /// `author` and returns a receiver for its outcome. Waits while the
    /// writer queue is full.
    pub async fn submit(&self, events: Vec<Prepared>, author: Author) -> Result<Answer, Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        // One answer per request, sent by the publisher thread (or by the
        // writer when it refuses the request); never waits.
        let (reply, rx) = oneshot::channel();
        let job = writer::Job {
            events,
            author,
            reply,
            // The request's span (its RPC's, when there is one), so that the
            // writer's account of the request appears under it.
            span: tracing::Span::current(),
        };
        self.jobs
            .send(writer::Msg::Append(job))
            .await
            .map_err(|_| closed())?;
        Ok(rx)
    }

    /// Appends events all-or-nothing by `author` and waits until they are
    /// durable.
    pub async fn append(
        &self,
        events: Vec<Prepared>,
        author: Author,
    ) -> Result<Vec<Outcome>, Error> {
        self.submit(events, author)
            .await?
            .await
            .map_err(|_| closed())?
    }

    /// The newest durable sequence (0 for an empty store).
    pub fn last_sequence(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Whether the store takes appends now.
    pub fn write_state(&self) -> WriteState {
        if let Some(cause) = self.shared.poisoned() {
            return WriteState::Stopped(cause);
        }
        match self.shared.space.low() {
            Some(why) => WriteState::DiskLow(why),
            None => WriteState::Writable,
        }
    }

    /// (Requests waiting, capacity) of the writer's queue.
    pub fn writer_queue(&self) -> (usize, usize) {
        let capacity = self.shared.queue_capacity;
        (capacity.saturating_sub(self.jobs.capacity()), capacity)
    }

    /// Bytes of the store's files on disk.
    pub fn size_on_disk(&self) -> u64 {
        directory::size(&self.shared.dir)
    }

    /// Free bytes on the store's file system.
    pub fn disk_free(&self) -> Option<u64> {
        space::free_bytes(&self.shared.dir).ok()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Follows the newest durable sequence as it grows.
    pub(crate) fn watch_durable(&self) -> watch::Receiver<u64> {
        self.shared.durable_tx.subscribe()
    }

    /// The durable event with this sequence.
    pub fn event_at(&self, seq: u64) -> Result<Option<StoredEvent>, Error> {
        if seq > self.last_sequence() {
            return Ok(None);
        }
        log::event(&self.shared.tree, seq)
    }

    /// The durable events at these sequences (those that exist), by
    /// sequence; each log chunk is read once.
    pub(crate) fn events_at(
        &self,
        sequences: impl IntoIterator<Item = u64>,
    ) -> Result<std::collections::HashMap<u64, StoredEvent>, Error> {
        let last = self.last_sequence();
        log::events_at(
            &self.shared.tree,
            sequences.into_iter().filter(|s| *s <= last),
        )
    }

    /// Up to `max` durable events after sequence `after`, in order, read from
    /// the log (one range scan over its chunks).
    pub(crate) fn events_after(&self, after: u64, max: usize) -> Result<Vec<StoredEvent>, Error> {
        log::events_after(&self.shared.tree, after, self.last_sequence(), max)
    }

    /// Up to `max` durable events after `after`, encoded exactly as the log
    /// holds them (for backups), with the sequence of the first.
    pub fn raw_events_after(
        &self,
        after: u64,
        upto: u64,
        max: usize,
    ) -> Result<Vec<Vec<u8>>, Error> {
        log::entries_after(
            &self.shared.tree,
            after,
            upto.min(self.last_sequence()),
            max,
        )
    }

    /// Checks the store against its log up to the durable sequence
    /// ([`check`](Report)), while it serves.
    pub fn check(&self) -> Result<Report, Error> {
        check::check(
            &self.shared.tree,
            &self.shared.dir,
            Some(self.last_sequence()),
        )
    }

    /// The durable event of `feed` with this id (ids are unique per feed).
    pub fn event_by_id(&self, feed: &FeedName, id: &EventId) -> Result<Option<StoredEvent>, Error> {
        Ok(self
            .shared
            .find_event(feed, id.as_str())?
            .filter(|e| e.sequence <= self.last_sequence()))
    }
}

/// Why an append is refused once the store is closing (only the server's
/// shutdown closes it).
fn closed() -> Error {
    Error::ShuttingDown(Retry::Later)
}
