//! The storage engine's own ceiling, for `caravan bench`: sled alone, writing
//! what the writer writes, so that the service's ingest rate can be compared
//! with it in the same run.
//!
//! Depends on sled and the store's own layout and log code.

use super::event_codec::encode_event;
use super::layout::{self, fingerprint};
use super::{log, storage_error, FsyncDataFile, Syncer, DEFAULT_CACHE_BYTES};
use crate::domain::{Event, Timestamp};
use crate::error::Error;
use std::path::Path;

/// Writes `events` into a new sled database in `dir` exactly as the writer
/// stores them (same log chunks, fingerprint chunks and keys, same flush +
/// fsync per batch of `batch` events), without gRPC, validation, idempotency
/// checks or views. Returns the events written per second.
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
    let prepared: Vec<Vec<u8>> = events.iter().map(encode_event).collect();
    let started = std::time::Instant::now();
    let now = Timestamp::now();
    let mut next = 1u64;
    for (group, bytes) in events
        .chunks(batch.max(1))
        .zip(prepared.chunks(batch.max(1)))
    {
        let mut sled_batch = sled::Batch::default();
        let entries: Vec<log::Entry<'_>> = bytes.iter().map(|b| (b.as_slice(), None)).collect();
        let fingerprints: Vec<u64> = group
            .iter()
            .map(|e| fingerprint(e.feed.as_str(), e.id.as_str()))
            .collect();
        log::add_entries(&mut sled_batch, next, &entries, &now)?;
        log::add_fingerprints(&mut sled_batch, next, &fingerprints);
        tree.apply_batch(sled_batch)
            .map_err(|e| storage_error("write", e))?;
        db.flush().map_err(|e| storage_error("flush", e))?;
        data_file.sync().map_err(|e| storage_error("fsync", e))?;
        next += group.len() as u64;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
