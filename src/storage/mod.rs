//! The store: an append-only event log in an embedded sled database, with a
//! permanent event-id index and the set of known agreements derived from it.
//!
//! This is the only module that touches sled; nothing it exposes is a sled
//! type. Writes go through one writer thread that commits groups of requests
//! together and acknowledges them only after an fsync (see `writer`). Reads
//! never show an event that is not yet durable.
//!
//! Depends on the domain, `convert` (the on-disk encoding of one event) and
//! `error`; must not depend on tonic services or the generated service code.

mod layout;
mod writer;

use crate::convert;
use crate::domain::{Event, EventId, StoredEvent};
use crate::error::Error;
use layout::{fingerprint, parse_seq_key, seq_key, IDS_PREFIX, LOG_PREFIX};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

pub use writer::Outcome;

/// Settings of the store. Every queue here is bounded.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// Append requests waiting for the writer; senders wait when it is full.
    pub writer_queue: usize,
    /// The most events one group commit takes before it writes and fsyncs.
    pub max_group_events: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_bytes: DEFAULT_CACHE_BYTES,
            writer_queue: DEFAULT_WRITER_QUEUE,
            max_group_events: DEFAULT_MAX_GROUP_EVENTS,
        }
    }
}

/// Default sled cache: 64 MiB. Queries read the in-memory views, not sled;
/// sled serves appends, duplicate checks and lookups.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Default writer queue: 1,024 requests.
pub const DEFAULT_WRITER_QUEUE: usize = 1024;
/// Default group-commit size: 16,384 events.
pub const DEFAULT_MAX_GROUP_EVENTS: usize = 16_384;

/// Makes written data durable. The store calls it after sled's own flush and
/// before it acknowledges anything; a failure fails the whole group.
pub trait Syncer: Send + 'static {
    fn sync(&mut self) -> io::Result<()>;
}

/// The production syncer: fsync of sled's data file `<dir>/db`. sled 0.34.7's
/// flush ends in `sync_file_range`, which does not make data durable.
struct FsyncDataFile(std::fs::File);

impl Syncer for FsyncDataFile {
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// Receives every durable event, in sequence order: the whole log when the
/// store opens, then each group right after its fsync and before any of it is
/// acknowledged. Query views are built this way.
pub trait Projection: Send + Sync + 'static {
    fn apply(&self, events: Vec<StoredEvent>);
}

/// A projection that keeps nothing.
pub struct NoProjection;

impl Projection for NoProjection {
    fn apply(&self, _: Vec<StoredEvent>) {}
}

/// An event ready for the writer: parsed, and encoded once by the caller's
/// thread so the single writer thread does as little as possible.
pub struct Prepared {
    event: Event,
    bytes: Vec<u8>,
}

impl Prepared {
    pub fn new(event: Event) -> Self {
        let bytes = convert::encode_event(&event);
        Prepared { event, bytes }
    }

    pub fn event(&self) -> &Event {
        &self.event
    }
}

/// Identity hasher for fingerprints that are already uniformly distributed.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// event id → sequence, for every stored event, in memory: 64-bit
/// fingerprints map to sequences; the rare ids whose fingerprint is taken by
/// another id are kept in full in `collided`. A fingerprint hit is confirmed
/// by reading the stored event's id.
#[derive(Default)]
struct IdIndex {
    by_fingerprint: HashMap<u64, u64, BuildHasherDefault<FingerprintHasher>>,
    collided: HashMap<String, u64>,
}

/// State shared by the writer thread and readers.
struct Shared {
    db: sled::Db,
    tree: sled::Tree,
    /// Newest durable (fsynced) sequence; reads never go past it.
    durable: AtomicU64,
    ids: RwLock<IdIndex>,
    /// Publishes `durable` as it grows (for readers that wait for new events).
    durable_tx: watch::Sender<u64>,
    /// Set once `close` has begun: new appends are refused.
    closed: AtomicBool,
}

fn storage_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("storage: {context}: {e}"))
}

impl Shared {
    /// The stored event at `seq`, durable or not (writer and recovery only).
    fn read_event(&self, seq: u64) -> Result<Option<StoredEvent>, Error> {
        let Some(bytes) = self.read_event_bytes(seq)? else {
            return Ok(None);
        };
        let stored =
            convert::decode_stored(&bytes).map_err(|e| storage_error("corrupt event", e))?;
        if stored.sequence != seq {
            return Err(storage_error(
                "corrupt log",
                format!("event at {seq} says it is {}", stored.sequence),
            ));
        }
        Ok(Some(stored))
    }

    fn read_event_bytes(&self, seq: u64) -> Result<Option<Vec<u8>>, Error> {
        if seq == 0 {
            return Ok(None);
        }
        let hi = seq_key(LOG_PREFIX, seq);
        let found = self
            .tree
            .range([LOG_PREFIX].as_slice()..=hi.as_slice())
            .next_back()
            .transpose()
            .map_err(|e| storage_error("read", e))?;
        let Some((key, value)) = found else {
            return Ok(None);
        };
        let first = parse_seq_key(&key).map_err(|e| storage_error("corrupt key", e))?;
        let entries =
            layout::chunk_entries(&value).map_err(|e| storage_error("corrupt chunk", e))?;
        // `first <= seq` by the range bound.
        Ok(usize::try_from(seq - first)
            .ok()
            .and_then(|i| entries.get(i))
            .map(|e| e.to_vec()))
    }

    /// The sequence of `id` if it is stored (durable or being committed by
    /// the writer, which is the only caller before durability).
    /// The stored event with this id, read and decoded once.
    fn find_event(&self, id: &str) -> Result<Option<StoredEvent>, Error> {
        let Some(seq) = self.id_candidate(id)? else {
            return Ok(None);
        };
        let stored = self
            .read_event(seq)?
            .ok_or_else(|| storage_error("id index", format!("points at missing event {seq}")))?;
        Ok((stored.event.id.as_str() == id).then_some(stored))
    }

    /// The sequence the id index gives for `id`: certain for a collided id,
    /// otherwise to be confirmed against the stored event.
    fn id_candidate(&self, id: &str) -> Result<Option<u64>, Error> {
        let ids = self
            .ids
            .read()
            .map_err(|_| Error::Internal("id index poisoned".into()))?;
        if let Some(&seq) = ids.collided.get(id) {
            return Ok(Some(seq));
        }
        Ok(ids.by_fingerprint.get(&fingerprint(id)).copied())
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
        Self::open_with(dir, config, projection, |data_file| {
            let file = std::fs::File::open(data_file)
                .map_err(|e| storage_error(&format!("open {}", data_file.display()), e))?;
            Ok(Box::new(FsyncDataFile(file)) as Box<dyn Syncer>)
        })
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
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(config.cache_capacity_bytes)
            .open()
            .map_err(|e| storage_error(&format!("open {}", dir.display()), e))?;
        let tree = db
            .open_tree(layout::TREE)
            .map_err(|e| storage_error("open tree", e))?;
        check_format(&db, &tree, dir)?;
        let mut syncer = make_syncer(&dir.join("db"))?;
        db.flush().map_err(|e| storage_error("flush", e))?;
        syncer.sync().map_err(|e| storage_error("fsync", e))?;

        let (durable_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            db,
            tree,
            durable: AtomicU64::new(0),
            ids: RwLock::new(IdIndex::default()),
            durable_tx,
            closed: AtomicBool::new(false),
        });
        let recovered = recover(&shared, syncer.as_mut())?;
        replay(&shared, projection.as_ref())?;
        shared
            .durable
            .store(recovered.last_sequence, Ordering::Release);
        shared.durable_tx.send_replace(recovered.last_sequence);
        tracing::info!(
            dir = %dir.display(),
            events = recovered.last_sequence,
            agreements = recovered.agreements.len(),
            "store opened"
        );

        let (jobs, rx) = mpsc::channel(config.writer_queue.max(1));
        let w = writer::Writer::new(
            Arc::clone(&shared),
            syncer,
            projection,
            recovered.agreements,
            recovered.last_sequence + 1,
            config.max_group_events.max(1),
        );
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
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .handle
            .jobs
            .send(writer::Msg::Close(done_tx))
            .await
            .is_ok()
        {
            let _ = done_rx.await;
        }
        if let Some(thread) = self.writer.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| storage_error("join writer", e))?
                .map_err(|_| Error::Internal("the writer thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.handle.shared.closed.store(true, Ordering::Release);
    }
}

fn check_format(db: &sled::Db, tree: &sled::Tree, dir: &Path) -> Result<(), Error> {
    let found = db
        .get(layout::FORMAT_KEY)
        .map_err(|e| storage_error("read format version", e))?;
    match found {
        Some(v) => {
            let version = <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes);
            match version {
                Ok(layout::FORMAT_VERSION) => Ok(()),
                Ok(other) => Err(Error::Internal(format!(
                    "the store in {} has format version {other}; this build of caravan reads version {} only",
                    dir.display(),
                    layout::FORMAT_VERSION
                ))),
                Err(_) => Err(Error::Internal(format!(
                    "the store in {} has an unreadable format version",
                    dir.display()
                ))),
            }
        }
        None if tree.is_empty() => {
            db.insert(layout::FORMAT_KEY, &layout::FORMAT_VERSION.to_be_bytes())
                .map_err(|e| storage_error("write format version", e))?;
            Ok(())
        }
        None => Err(Error::Internal(format!(
            "{} holds data but no caravan format version; it is not a caravan store",
            dir.display()
        ))),
    }
}

struct Recovered {
    last_sequence: u64,
    agreements: HashSet<String>,
}

/// Loads the in-memory id index and the agreement set from the derived keys,
/// after checking that the fingerprint chunks cover exactly the log's gapless
/// sequence range. If they do not, rebuilds every derived key from the log.
fn recover(shared: &Shared, syncer: &mut dyn Syncer) -> Result<Recovered, Error> {
    let last_sequence = last_log_sequence(shared)?;
    let ids = match load_ids(shared, last_sequence) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "derived keys do not match the log; rebuilding them from the log");
            rebuild_derived(shared, syncer)?;
            load_ids(shared, last_sequence)?
        }
    };
    *shared
        .ids
        .write()
        .map_err(|_| Error::Internal("id index poisoned".into()))? = ids;

    let mut agreements = HashSet::new();
    for item in shared.tree.scan_prefix([layout::AGREEMENT_PREFIX]) {
        let (k, _) = item.map_err(|e| storage_error("scan agreements", e))?;
        let id =
            std::str::from_utf8(&k[1..]).map_err(|e| storage_error("corrupt agreement key", e))?;
        agreements.insert(id.to_owned());
    }
    Ok(Recovered {
        last_sequence,
        agreements,
    })
}

/// Feeds the whole log to `projection`, in order, in bounded batches.
fn replay(shared: &Shared, projection: &dyn Projection) -> Result<(), Error> {
    const EVENTS_PER_BATCH: usize = 4096;
    let mut batch = Vec::with_capacity(EVENTS_PER_BATCH);
    for item in shared.tree.scan_prefix([LOG_PREFIX]) {
        let (_, v) = item.map_err(|e| storage_error("replay", e))?;
        for entry in layout::chunk_entries(&v).map_err(|e| storage_error("corrupt chunk", e))? {
            batch.push(
                convert::decode_stored(entry).map_err(|e| storage_error("corrupt event", e))?,
            );
        }
        if batch.len() >= EVENTS_PER_BATCH {
            projection.apply(std::mem::replace(
                &mut batch,
                Vec::with_capacity(EVENTS_PER_BATCH),
            ));
        }
    }
    projection.apply(batch);
    Ok(())
}

fn last_log_sequence(shared: &Shared) -> Result<u64, Error> {
    match shared
        .tree
        .scan_prefix([LOG_PREFIX])
        .next_back()
        .transpose()
        .map_err(|e| storage_error("scan log", e))?
    {
        None => Ok(0),
        Some((k, v)) => {
            let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
            let count = layout::chunk_count(&v).map_err(|e| storage_error("corrupt chunk", e))?;
            Ok(first + count - 1)
        }
    }
}

fn load_ids(shared: &Shared, last_sequence: u64) -> Result<IdIndex, Error> {
    let mut expected = 1u64;
    let mut ids = IdIndex::default();
    ids.by_fingerprint
        .reserve(usize::try_from(last_sequence).unwrap_or(0));
    for item in shared.tree.scan_prefix([IDS_PREFIX]) {
        let (k, v) = item.map_err(|e| storage_error("scan ids", e))?;
        let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
        if first != expected {
            return Err(storage_error(
                "inconsistent store",
                format!("fingerprints resume at {first}, expected {expected}"),
            ));
        }
        let fps = layout::decode_fingerprints(&v).map_err(|e| storage_error("corrupt ids", e))?;
        for (i, fp) in fps.enumerate() {
            let seq = first + i as u64;
            if let Some(&other) = ids.by_fingerprint.get(&fp) {
                // Two ids with one fingerprint: keep the later one in full.
                let id = event_id_at(shared, seq)?;
                if id == event_id_at(shared, other)? {
                    return Err(storage_error(
                        "inconsistent store",
                        format!("event id {id} stored twice ({other} and {seq})"),
                    ));
                }
                ids.collided.insert(id, seq);
            } else {
                ids.by_fingerprint.insert(fp, seq);
            }
            expected = seq + 1;
        }
    }
    if expected != last_sequence + 1 {
        return Err(storage_error(
            "inconsistent store",
            format!(
                "fingerprints end at {}, the log at {last_sequence}",
                expected - 1
            ),
        ));
    }
    Ok(ids)
}

fn event_id_at(shared: &Shared, seq: u64) -> Result<String, Error> {
    let bytes = shared
        .read_event_bytes(seq)?
        .ok_or_else(|| storage_error("inconsistent store", format!("no event {seq}")))?;
    convert::stored_event_id(&bytes).map_err(|e| storage_error("corrupt event", e))
}

/// Rewrites every key derived from the log (fingerprint chunks, agreement
/// keys) by reading the whole log, then flushes and fsyncs.
fn rebuild_derived(shared: &Shared, syncer: &mut dyn Syncer) -> Result<(), Error> {
    const KEYS_PER_BATCH: usize = 1024;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let flush = |batch: &mut sled::Batch, pending: &mut usize| -> Result<(), Error> {
        shared
            .tree
            .apply_batch(std::mem::take(batch))
            .map_err(|e| storage_error("rebuild", e))?;
        *pending = 0;
        Ok(())
    };
    for prefix in [IDS_PREFIX, layout::AGREEMENT_PREFIX] {
        for item in shared.tree.scan_prefix([prefix]) {
            let (k, _) = item.map_err(|e| storage_error("rebuild scan", e))?;
            batch.remove(k);
            pending += 1;
            if pending >= KEYS_PER_BATCH {
                flush(&mut batch, &mut pending)?;
            }
        }
    }
    let mut agreements: HashMap<String, u64> = HashMap::new();
    for item in shared.tree.scan_prefix([LOG_PREFIX]) {
        let (k, v) = item.map_err(|e| storage_error("rebuild scan", e))?;
        let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
        let entries = layout::chunk_entries(&v).map_err(|e| storage_error("corrupt chunk", e))?;
        let mut fps = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let stored =
                convert::decode_stored(entry).map_err(|e| storage_error("corrupt event", e))?;
            fps.push(fingerprint(stored.event.id.as_str()));
            let about = match &stored.event.payload {
                crate::domain::Payload::Agreement(a) => Some(a.id.as_str()),
                crate::domain::Payload::AgreementStatusChanged(c) => Some(c.agreement_id.as_str()),
                _ => None,
            };
            if let Some(id) = about {
                agreements.insert(id.to_owned(), first + i as u64);
            }
        }
        batch.insert(
            &seq_key(IDS_PREFIX, first),
            layout::encode_fingerprints(&fps),
        );
        pending += 1;
        if pending >= KEYS_PER_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }
    for (id, seq) in agreements {
        batch.insert(layout::agreement_key(&id), &seq.to_be_bytes());
    }
    flush(&mut batch, &mut pending)?;
    shared.db.flush().map_err(|e| storage_error("flush", e))?;
    syncer.sync().map_err(|e| storage_error("fsync", e))?;
    Ok(())
}

impl StoreHandle {
    /// Queues events for the writer as one all-or-nothing request and returns
    /// a receiver for its outcome. Waits while the writer queue is full.
    pub async fn submit(
        &self,
        events: Vec<Prepared>,
    ) -> Result<oneshot::Receiver<Result<Vec<Outcome>, Error>>, Error> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(writer::Msg::Append(writer::Job { events, reply }))
            .await
            .map_err(|_| closed())?;
        Ok(rx)
    }

    /// Appends events all-or-nothing and waits until they are durable.
    pub async fn append(&self, events: Vec<Prepared>) -> Result<Vec<Outcome>, Error> {
        self.submit(events).await?.await.map_err(|_| closed())?
    }

    /// The newest durable sequence (0 for an empty store).
    pub fn last_sequence(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Follows the newest durable sequence as it grows.
    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.shared.durable_tx.subscribe()
    }

    /// The durable event with this sequence.
    pub fn event_at(&self, seq: u64) -> Result<Option<StoredEvent>, Error> {
        if seq > self.last_sequence() {
            return Ok(None);
        }
        self.shared.read_event(seq)
    }

    /// Up to `max` durable events after sequence `after`, in order, read from
    /// the log (one range scan over its chunks).
    pub fn events_after(&self, after: u64, max: usize) -> Result<Vec<StoredEvent>, Error> {
        let last = self.last_sequence();
        let mut out = Vec::new();
        if after >= last || max == 0 {
            return Ok(out);
        }
        let first = after + 1;
        let first_key = seq_key(LOG_PREFIX, first);
        // The chunk that holds `first` starts at or before it.
        let start = self
            .shared
            .tree
            .range([LOG_PREFIX].as_slice()..=first_key.as_slice())
            .next_back()
            .transpose()
            .map_err(|e| storage_error("read", e))?
            .map_or_else(|| first_key.to_vec(), |(k, _)| k.to_vec());
        for item in self.shared.tree.range(start..) {
            let (k, v) = item.map_err(|e| storage_error("read", e))?;
            if k.first() != Some(&LOG_PREFIX) {
                break;
            }
            let chunk_first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
            let entries =
                layout::chunk_entries(&v).map_err(|e| storage_error("corrupt chunk", e))?;
            for (i, entry) in entries.iter().enumerate() {
                let seq = chunk_first + i as u64;
                if seq < first {
                    continue;
                }
                if seq > last || out.len() >= max {
                    return Ok(out);
                }
                out.push(
                    convert::decode_stored(entry).map_err(|e| storage_error("corrupt event", e))?,
                );
            }
        }
        Ok(out)
    }

    /// The durable event with this id.
    pub fn event_by_id(&self, id: &EventId) -> Result<Option<StoredEvent>, Error> {
        Ok(self
            .shared
            .find_event(id.as_str())?
            .filter(|e| e.sequence <= self.last_sequence()))
    }
}

fn closed() -> Error {
    Error::Unavailable("the store is closed: the server is shutting down".into())
}

/// Adds log chunks holding `events` (encoded events, sequences `first`…) to a
/// batch: as many consecutive stored events per chunk as fit its value limit.
fn add_log_entries(
    batch: &mut sled::Batch,
    first: u64,
    events: &[&[u8]],
    ingested_at: &crate::domain::Timestamp,
) -> Result<(), Error> {
    let mut chunk = layout::ChunkBuilder::new();
    let mut chunk_first = first;
    for (i, bytes) in events.iter().enumerate() {
        let seq = first + i as u64;
        let before = chunk.len();
        let len = chunk.push_with(|buf| convert::encode_stored_parts(seq, ingested_at, bytes, buf));
        if len > layout::ChunkBuilder::MAX_ENTRY {
            return Err(storage_error(
                "event too large",
                format!("event {seq} encodes to {len} bytes"),
            ));
        }
        if chunk.len() > layout::MAX_VALUE_BYTES {
            chunk.truncate_to(before);
            let full = std::mem::replace(&mut chunk, layout::ChunkBuilder::new());
            batch.insert(&seq_key(LOG_PREFIX, chunk_first), full.finish());
            chunk_first = seq;
            chunk.push_with(|buf| convert::encode_stored_parts(seq, ingested_at, bytes, buf));
        }
    }
    if !chunk.is_empty() {
        batch.insert(&seq_key(LOG_PREFIX, chunk_first), chunk.finish());
    }
    Ok(())
}

/// Adds the fingerprint chunks of events `first`… to a batch.
fn add_fingerprints(batch: &mut sled::Batch, first: u64, fingerprints: &[u64]) {
    for (k, part) in fingerprints
        .chunks(layout::FINGERPRINTS_PER_CHUNK)
        .enumerate()
    {
        let seq = first + (k * layout::FINGERPRINTS_PER_CHUNK) as u64;
        batch.insert(&seq_key(IDS_PREFIX, seq), layout::encode_fingerprints(part));
    }
}

/// The storage engine's own ceiling for `caravan bench`: writes `events` into
/// a new sled database in `dir` exactly as the writer stores them (same log
/// chunks, fingerprint chunks and keys, same flush + fsync per batch of
/// `batch` events), without gRPC, validation, idempotency checks or views.
/// Returns the events written per second.
pub fn ceiling_write(dir: &Path, events: &[Event], batch: usize) -> Result<f64, Error> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(DEFAULT_CACHE_BYTES)
        .open()
        .map_err(|e| storage_error("open", e))?;
    let tree = db
        .open_tree(layout::TREE)
        .map_err(|e| storage_error("open tree", e))?;
    let mut data_file = FsyncDataFile(
        std::fs::File::open(dir.join("db")).map_err(|e| storage_error("open data file", e))?,
    );
    // Encoding the event itself happens off the writer thread in the server
    // too (`Prepared`); do it before the clock starts.
    let prepared: Vec<Vec<u8>> = events.iter().map(convert::encode_event).collect();
    let started = std::time::Instant::now();
    let now = crate::domain::Timestamp::now();
    let mut next = 1u64;
    for (group, bytes) in events
        .chunks(batch.max(1))
        .zip(prepared.chunks(batch.max(1)))
    {
        let mut sled_batch = sled::Batch::default();
        let entries: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let fingerprints: Vec<u64> = group.iter().map(|e| fingerprint(e.id.as_str())).collect();
        add_log_entries(&mut sled_batch, next, &entries, &now)?;
        add_fingerprints(&mut sled_batch, next, &fingerprints);
        tree.apply_batch(sled_batch)
            .map_err(|e| storage_error("write", e))?;
        db.flush().map_err(|e| storage_error("flush", e))?;
        data_file.sync().map_err(|e| storage_error("fsync", e))?;
        next += group.len() as u64;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
