//! Building a store from a backup's events ([`import`]): the log written
//! chunk by chunk from the events exactly as the backup holds them (their
//! sequences, times and authors kept), then every key derived from the log
//! rebuilt (`rewrite::rebuild_derived`), the format version written and the
//! acknowledgement mark set at the last event, each step fsynced. The views
//! are built from the log when a server first opens the store.
//!
//! Depends on sled, `layout`, `log`, `rewrite`, `mark` and the domain.

use super::layout::{self, seq_key, LOG_PREFIX};
use super::opening::{open_sled, sled_failures_as_errors};
use super::{directory, log, mark, rewrite, storage_error, FsyncDataFile, Syncer};
use crate::error::Error;
use std::path::Path;

/// Log chunks written per sled batch.
const CHUNKS_PER_BATCH: usize = 256;

/// Writes a new store in `dir` (which must not hold one) from `entries`:
/// encoded stored events that must be sequences 1, 2, 3… in order. Returns
/// the last sequence. On any error the directory is left as it is, not a
/// store to serve (its format version is written last).
pub fn import(
    dir: &Path,
    entries: &mut dyn Iterator<Item = Result<Vec<u8>, Error>>,
    cache_bytes: u64,
) -> Result<u64, Error> {
    if dir.join("db").exists() || dir.join("conf").exists() {
        return Err(Error::Internal(format!(
            "{} already holds a store; restore into a new directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| storage_error(&format!("create {}", dir.display()), e))?;
    sled_failures_as_errors(dir, || {
        let db = open_sled(dir, cache_bytes)
            .map_err(|e| storage_error(&format!("open {}", dir.display()), e))?;
        let tree = db
            .open_tree(layout::TREE)
            .map_err(|e| storage_error("open tree", e))?;
        let mut next = 1u64;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut chunk = layout::ChunkBuilder::new();
        let mut chunk_first = 1u64;
        for entry in entries {
            let bytes = entry?;
            let stored = log::decode(&bytes)?;
            if stored.sequence != next {
                return Err(Error::Internal(format!(
                    "the backup's event {next} says it is {}: the events are not consecutive",
                    stored.sequence
                )));
            }
            if bytes.len() > layout::ChunkBuilder::MAX_ENTRY {
                return Err(storage_error(
                    "event too large",
                    format!("event {next} is {} bytes", bytes.len()),
                ));
            }
            let before = chunk.len();
            chunk.push_with(|buf| buf.extend_from_slice(&bytes));
            if chunk.len() > layout::MAX_VALUE_BYTES {
                chunk.truncate_to(before);
                let full = std::mem::replace(&mut chunk, layout::ChunkBuilder::new());
                batch.insert(&seq_key(LOG_PREFIX, chunk_first), full.finish());
                in_batch += 1;
                chunk_first = next;
                chunk.push_with(|buf| buf.extend_from_slice(&bytes));
                if in_batch >= CHUNKS_PER_BATCH {
                    tree.apply_batch(std::mem::take(&mut batch))
                        .map_err(|e| storage_error("write", e))?;
                    in_batch = 0;
                }
            }
            next += 1;
        }
        if !chunk.is_empty() {
            batch.insert(&seq_key(LOG_PREFIX, chunk_first), chunk.finish());
        }
        tree.apply_batch(batch)
            .map_err(|e| storage_error("write", e))?;
        let last = next - 1;
        let data = std::fs::File::open(dir.join("db"))
            .map_err(|e| storage_error("open the data file", e))?;
        let mut syncer = FsyncDataFile(data);
        db.flush().map_err(|e| storage_error("flush", e))?;
        syncer.sync().map_err(|e| storage_error("fsync", e))?;
        rewrite::rebuild_derived(&db, &tree, &mut syncer)?;
        db.insert(layout::FORMAT_KEY, &layout::FORMAT_VERSION.to_be_bytes())
            .map_err(|e| storage_error("write format version", e))?;
        db.flush().map_err(|e| storage_error("flush", e))?;
        syncer.sync().map_err(|e| storage_error("fsync", e))?;
        drop(tree);
        drop(db);
        mark::Mark::open(dir, last)?;
        directory::sync_dir(dir)?;
        Ok(last)
    })
}
