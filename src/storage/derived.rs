//! The views' checkpoint keys in the store: figure pages and rollup groups
//! (whose bytes are the views' business), the sequence the newest
//! checkpoint covers, and the agreement events it covers. Every value
//! carries a checksum, added here on write and checked here on every read;
//! a checkpoint is one atomic sled batch, made durable by an fsync of the
//! data file.
//!
//! Depends on sled and `layout`; knows nothing of the views' types.

use super::layout::{
    self, seal, seq_key, unseal, CHECKPOINTED_AGREEMENT_PREFIX, CHECKPOINT_KEY, VIEW_PREFIXES,
};
use super::storage_error;
use crate::error::Error;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// How a refusal for want of space ends (the views' checkpoint thread puts
/// the checkpoint off when it reads it; `views::NO_ROOM` is the same words).
pub const NO_ROOM: &str = "put off until space is freed";

/// Bytes sled may take on disk for each byte of a batch (its log keeps
/// whole pages and their older versions until it cleans its segments); an
/// estimate on the safe side, from a full 64 MiB tmpfs.
pub const WRITE_AMPLIFICATION: u64 = 4;

/// A key and its (checked) payload.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A handle on the checkpoint keys, given to the projection when the store
/// opens.
#[derive(Clone)]
pub struct Derived {
    tree: sled::Tree,
    /// sled's data file, fsynced after a checkpoint (sled's flush does not).
    data_file: Arc<File>,
    dir: std::path::PathBuf,
    /// The appends' minimum free space (`--min-free-disk-mib`): a checkpoint
    /// starts only with twice this free, and writes a batch only if this
    /// much stays free after it ([`WRITE_AMPLIFICATION`] times its bytes).
    min_free_bytes: u64,
}

impl Derived {
    pub(super) fn new(tree: sled::Tree, dir: &Path, min_free_bytes: u64) -> Result<Derived, Error> {
        let data_file = File::open(dir.join("db"))
            .map_err(|e| storage_error("open the data file for checkpoints", e))?;
        Ok(Derived {
            tree,
            data_file: Arc::new(data_file),
            dir: dir.to_path_buf(),
            min_free_bytes,
        })
    }

    /// Whether the disk has room to begin a checkpoint (twice the minimum).
    pub fn room(&self) -> Result<(), String> {
        self.room_for(self.min_free_bytes / WRITE_AMPLIFICATION)
    }

    /// Whether writing `bytes` leaves the minimum free.
    fn room_for(&self, bytes: u64) -> Result<(), String> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = super::space::free_bytes(&self.dir)
            .map_err(|e| format!("free space of {}: {e}", self.dir.display()))?;
        let needed = self
            .min_free_bytes
            .saturating_add(bytes.saturating_mul(WRITE_AMPLIFICATION));
        if free < needed {
            return Err(format!(
                "the store's disk has {} MiB free; this checkpoint needs {} MiB \
                 (--min-free-disk-mib and room for what it writes); {NO_ROOM}",
                free >> 20,
                needed >> 20
            ));
        }
        Ok(())
    }

    /// Calls `each` with every view key in `from..to` and its checked
    /// payload, in key order, until it returns false.
    pub fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error> {
        for item in self.tree.range(from..to) {
            let (k, v) = item.map_err(|e| storage_error("read a view page", e))?;
            let payload = unseal(&v, "view page").map_err(|e| damaged(&k, e))?;
            if !each(&k, payload) {
                break;
            }
        }
        Ok(())
    }

    /// The greatest view key in `lowest..=key`, with its checked payload.
    pub fn floor(&self, lowest: &[u8], key: &[u8]) -> Result<Option<KeyValue>, Error> {
        let Some(item) = self.tree.range(lowest..=key).next_back() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(|e| storage_error("read a view page", e))?;
        let payload = unseal(&v, "view page").map_err(|e| damaged(&k, e))?;
        Ok(Some((k.to_vec(), payload.to_vec())))
    }

    /// Writes view keys ahead of a checkpoint, in one batch.
    pub fn put(&self, puts: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), Error> {
        let bytes: usize = puts.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.room_for(bytes as u64).map_err(Error::Unavailable)?;
        let mut batch = sled::Batch::default();
        for (k, v) in puts {
            check_put(&k, &v)?;
            batch.insert(k, seal(v));
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| storage_error("write a checkpoint", e))
    }

    /// Applies one checkpoint in one atomic batch: its view keys, the
    /// agreement events it covers, and the sequence it covers. Not yet
    /// durable: see [`Derived::sync`].
    pub fn apply(
        &self,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
        covers: u64,
        agreement_events: &[u64],
    ) -> Result<(), Error> {
        let bytes: usize = puts.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.room_for(bytes as u64).map_err(Error::Unavailable)?;
        let mut batch = sled::Batch::default();
        let ours = |k: &[u8]| k.first().is_some_and(|p| VIEW_PREFIXES.contains(p));
        for k in deletes {
            if !ours(&k) {
                return Err(Error::Internal(format!(
                    "a checkpoint may not delete key {k:02x?}"
                )));
            }
            batch.remove(k);
        }
        for (k, v) in puts {
            check_put(&k, &v)?;
            batch.insert(k, seal(v));
        }
        for seq in agreement_events {
            batch.insert(
                &seq_key(CHECKPOINTED_AGREEMENT_PREFIX, *seq)[..],
                seal(Vec::new()),
            );
        }
        batch.insert(CHECKPOINT_KEY, seal(covers.to_be_bytes().to_vec()));
        self.tree
            .apply_batch(batch)
            .map_err(|e| storage_error("write a checkpoint", e))
    }

    /// Makes every applied checkpoint durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.tree
            .flush()
            .map_err(|e| storage_error("flush a checkpoint", e))?;
        self.data_file
            .sync_all()
            .map_err(|e| storage_error("fsync a checkpoint", e))
    }
}

/// A checkpoint writes only the views' keys, each within the value limit.
fn check_put(k: &[u8], v: &[u8]) -> Result<(), Error> {
    let ours = k.first().is_some_and(|p| VIEW_PREFIXES.contains(p));
    if !ours || v.len() + 8 > layout::MAX_VALUE_BYTES {
        return Err(Error::Internal(format!(
            "a checkpoint may not write key {k:02x?} ({} bytes)",
            v.len()
        )));
    }
    Ok(())
}

fn damaged(key: &[u8], e: String) -> Error {
    Error::Internal(format!(
        "storage: {e} (key {:02x?}); the views' checkpoint is damaged",
        &key[..key.len().min(32)]
    ))
}

/// Deletes every checkpoint key (in batches, then fsynced by the opening that
/// follows), so that the views are rebuilt from the log.
pub(super) fn drop_checkpoint(tree: &sled::Tree, why: &str) -> Result<(), Error> {
    const KEYS_PER_BATCH: usize = 10_000;
    let prefixes = VIEW_PREFIXES
        .iter()
        .chain(std::iter::once(&CHECKPOINTED_AGREEMENT_PREFIX));
    let mut dropped = 0u64;
    // The checkpoint key first: a crash halfway leaves no checkpoint, and
    // the next opening drops what is left (`orphaned`).
    tree.remove(CHECKPOINT_KEY)
        .map_err(|e| storage_error("delete the checkpoint", e))?;
    for prefix in prefixes {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in tree.scan_prefix([*prefix]).keys().take(KEYS_PER_BATCH) {
                batch.remove(item.map_err(|e| storage_error("read the checkpoint", e))?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            dropped += n as u64;
            tree.apply_batch(batch)
                .map_err(|e| storage_error("delete the checkpoint", e))?;
        }
    }
    tree.flush()
        .map_err(|e| storage_error("delete the checkpoint", e))?;
    tracing::warn!(
        keys = dropped,
        "the views' checkpoint was deleted ({why}); the views are rebuilt from the whole log"
    );
    Ok(())
}

/// Whether view keys are stored without a checkpoint key: left by a drop
/// that a crash interrupted (the checkpoint key goes first). Kept, they
/// would be merged with the views rebuilt from the log.
pub(super) fn orphaned(tree: &sled::Tree) -> Result<bool, Error> {
    let read = |e| storage_error("read the checkpoint", e);
    if tree.contains_key(CHECKPOINT_KEY).map_err(read)? {
        return Ok(false);
    }
    for prefix in VIEW_PREFIXES
        .iter()
        .chain(std::iter::once(&CHECKPOINTED_AGREEMENT_PREFIX))
    {
        if tree
            .scan_prefix([*prefix])
            .keys()
            .next()
            .transpose()
            .map_err(read)?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The sequence the newest checkpoint covers: 0 when there is none.
pub(super) fn covered(tree: &sled::Tree) -> Result<u64, String> {
    let Some(v) = tree.get(CHECKPOINT_KEY).map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let payload = unseal(&v, "checkpoint key")?;
    <[u8; 8]>::try_from(payload)
        .map(u64::from_be_bytes)
        .map_err(|_| "checkpoint key of the wrong size".to_owned())
}

/// The agreement events that checkpoints cover, in sequence order.
pub(super) fn checkpointed_agreements(tree: &sled::Tree) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for item in tree.scan_prefix([CHECKPOINTED_AGREEMENT_PREFIX]) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        unseal(&v, "checkpointed agreement key")?;
        out.push(layout::parse_seq_key(&k)?);
    }
    Ok(out)
}
