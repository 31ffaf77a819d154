//! Rewriting a store from its log: the in-place upgrades of older formats
//! ([`upgrade`]: format 1's chunks get their checksums; formats 1 and 2
//! get their derived keys in format 3's form), and the rebuild of every
//! key derived from the log ([`rebuild_derived`]), which opening also runs
//! when those keys do not match the log. Each step is atomic batches and an
//! fsync before the version changes, so a crash leaves the old version to
//! upgrade again.
//!
//! Depends on sled, `layout`, `log`, `owners` and the domain.

use super::layout::{self, fingerprint, parse_seq_key, seq_key, IDS_PREFIX, LOG_PREFIX};
use super::owners;
use super::recovery::Format;
use super::{log, storage_error, Syncer};
use crate::domain::{FeedName, Payload};
use crate::error::Error;
use std::collections::HashMap;

/// Upgrades an older store in place. Format 1: every log chunk is
/// rewritten with its checksum (a full one split in two, since the checksum
/// takes 8 bytes). Formats 1 and 2: the derived keys are rebuilt in their
/// new form (fingerprints of (feed, id), pair-feed keys). Only then, after
/// an fsync, is the version bumped. A crash at any point leaves a store of
/// its old version (whose chunks, for version 1, are of either form), and
/// the next start upgrades what is left.
pub(super) fn upgrade(
    db: &sled::Db,
    tree: &sled::Tree,
    from: Format,
    syncer: &mut dyn Syncer,
) -> Result<(), Error> {
    let rewritten = if from == Format::Version1 {
        rewrite_format_1_chunks(tree)?
    } else {
        0
    };
    let began = std::time::Instant::now();
    rebuild_derived(db, tree, syncer)?;
    db.insert(layout::FORMAT_KEY, &layout::FORMAT_VERSION.to_be_bytes())
        .map_err(|e| storage_error("write format version", e))?;
    db.flush().map_err(|e| storage_error("flush", e))?;
    syncer.sync().map_err(|e| storage_error("fsync", e))?;
    tracing::info!(
        chunks_rewritten = rewritten,
        from = if from == Format::Version1 {
            layout::FORMAT_VERSION_1
        } else {
            layout::FORMAT_VERSION_2
        },
        to = layout::FORMAT_VERSION,
        rebuild_ms = began.elapsed().as_millis(),
        "store upgraded: every log chunk carries a checksum, event ids are unique per feed, \
         and the feeds of each pair are recorded"
    );
    Ok(())
}

/// Rewrites every format-1 log chunk with its checksum, in atomic batches;
/// returns how many it rewrote.
fn rewrite_format_1_chunks(tree: &sled::Tree) -> Result<u64, Error> {
    const CHUNKS_PER_BATCH: usize = 1024;
    let mut rewritten = 0u64;
    let mut from = vec![LOG_PREFIX];
    loop {
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut next = None;
        for item in tree.range(from.clone()..) {
            let (k, v) = item.map_err(|e| storage_error("upgrade scan", e))?;
            if k.first() != Some(&LOG_PREFIX) {
                break;
            }
            if in_batch == CHUNKS_PER_BATCH {
                next = Some(k.to_vec());
                break;
            }
            let Some(entries) = layout::format_1_chunk_entries(&v) else {
                continue; // Already rewritten by an earlier, interrupted upgrade.
            };
            let entries = entries.map_err(|e| storage_error("corrupt chunk", e))?;
            let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
            rewrite_chunk(&mut batch, first, &entries);
            in_batch += 1;
            rewritten += 1;
        }
        tree.apply_batch(batch)
            .map_err(|e| storage_error("upgrade", e))?;
        match next {
            Some(k) => from = k,
            None => break,
        }
    }
    Ok(rewritten)
}

/// Adds to `batch` the format-2 form of a format-1 chunk of `entries`, whose
/// first sequence is `first`: one chunk, or two when the checksum makes it
/// too large for one.
fn rewrite_chunk(batch: &mut sled::Batch, mut first: u64, entries: &[&[u8]]) {
    let mut chunk = layout::ChunkBuilder::new();
    for entry in entries {
        let before = chunk.len();
        chunk.push_with(|buf| buf.extend_from_slice(entry));
        if chunk.len() > layout::MAX_VALUE_BYTES {
            chunk.truncate_to(before);
            let count = chunk.count();
            let full = std::mem::replace(&mut chunk, layout::ChunkBuilder::new());
            batch.insert(&seq_key(LOG_PREFIX, first), full.finish());
            first += count;
            chunk.push_with(|buf| buf.extend_from_slice(entry));
        }
    }
    batch.insert(&seq_key(LOG_PREFIX, first), chunk.finish());
}

/// Rewrites every key derived from the log (fingerprint chunks, agreement
/// keys, pair-feed keys) by reading the whole log, then flushes and fsyncs.
pub(super) fn rebuild_derived(
    db: &sled::Db,
    tree: &sled::Tree,
    syncer: &mut dyn Syncer,
) -> Result<(), Error> {
    const KEYS_PER_BATCH: usize = 1024;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let flush = |batch: &mut sled::Batch, pending: &mut usize| -> Result<(), Error> {
        tree.apply_batch(std::mem::take(batch))
            .map_err(|e| storage_error("rebuild", e))?;
        *pending = 0;
        Ok(())
    };
    for prefix in [
        IDS_PREFIX,
        layout::AGREEMENT_PREFIX,
        layout::PAIR_FEED_PREFIX,
    ] {
        for item in tree.scan_prefix([prefix]) {
            let (k, _) = item.map_err(|e| storage_error("rebuild scan", e))?;
            batch.remove(k);
            pending += 1;
            if pending >= KEYS_PER_BATCH {
                flush(&mut batch, &mut pending)?;
            }
        }
    }
    let mut agreements: HashMap<String, u64> = HashMap::new();
    let mut pairs: HashMap<(owners::Pair, FeedName), u64> = HashMap::new();
    for item in tree.scan_prefix([LOG_PREFIX]) {
        let (k, v) = item.map_err(|e| storage_error("rebuild scan", e))?;
        let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
        let chunk = layout::open_chunk(&v).map_err(|e| storage_error("corrupt chunk", e))?;
        let entries = chunk
            .entries()
            .map_err(|e| storage_error("corrupt chunk", e))?;
        let mut fps = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let stored = log::decode(entry)?;
            let event = &stored.event;
            fps.push(fingerprint(event.feed.as_str(), event.id.as_str()));
            let about = match &event.payload {
                Payload::Agreement(a) => Some(a.id.as_str()),
                Payload::AgreementStatusChanged(c) => Some(c.agreement_id.as_str()),
                Payload::TradeRecord(r) => {
                    let pair = owners::Pair::of(&r.key);
                    pairs
                        .entry((pair, event.feed.clone()))
                        .or_insert(first + i as u64);
                    None
                }
                Payload::TradeRecordRetracted(_) => None,
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
        pending += 1;
        if pending >= KEYS_PER_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }
    for ((pair, feed), seq) in pairs {
        let (k, v) = owners::pair_feed_entry(&pair, &feed, seq);
        batch.insert(k, v);
        pending += 1;
        if pending >= KEYS_PER_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }
    flush(&mut batch, &mut pending)?;
    db.flush().map_err(|e| storage_error("flush", e))?;
    syncer.sync().map_err(|e| storage_error("fsync", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{NoProjection, Store, StoreConfig};
    use std::path::Path;
    use std::sync::Arc;

    fn copy_fixture(to: &Path) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format1-store");
        std::fs::create_dir_all(to).unwrap();
        for name in ["conf", "db"] {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }

    /// The log chunks of a closed store: (first sequence, format 1?).
    fn chunks(dir: &Path) -> (Vec<(u64, bool)>, u32) {
        // sled's lock may outlive a close for a moment: wait for it.
        let db =
            crate::storage::opening::open_sled(dir, crate::storage::DEFAULT_CACHE_BYTES).unwrap();
        let tree = db.open_tree(layout::TREE).unwrap();
        let chunks = tree
            .scan_prefix([LOG_PREFIX])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (
                    parse_seq_key(&k).unwrap(),
                    layout::format_1_chunk_entries(&v).is_some(),
                )
            })
            .collect();
        let version = u32::from_be_bytes(
            db.get(layout::FORMAT_KEY)
                .unwrap()
                .unwrap()
                .as_ref()
                .try_into()
                .unwrap(),
        );
        (chunks, version)
    }

    /// An upgrade cut short after some of its batches (each atomic) leaves a
    /// version-1 store of both chunk forms: the next start finishes it.
    #[tokio::test]
    async fn an_interrupted_upgrade_is_finished_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        copy_fixture(dir.path());
        let (before, version) = chunks(dir.path());
        assert_eq!(version, layout::FORMAT_VERSION_1);
        assert!(before.len() > 4 && before.iter().all(|(_, v1)| *v1));
        {
            // The first half of the chunks rewritten, as by a cut-off upgrade.
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree(layout::TREE).unwrap();
            let mut batch = sled::Batch::default();
            for kv in tree.scan_prefix([LOG_PREFIX]).take(before.len() / 2) {
                let (k, v) = kv.unwrap();
                let entries = layout::format_1_chunk_entries(&v).unwrap().unwrap();
                rewrite_chunk(&mut batch, parse_seq_key(&k).unwrap(), &entries);
            }
            tree.apply_batch(batch).unwrap();
            db.flush().unwrap();
        }
        let (half, _) = chunks(dir.path());
        assert!(half.iter().any(|(_, v1)| *v1) && half.iter().any(|(_, v1)| !*v1));

        let store =
            Store::open(dir.path(), StoreConfig::default(), Arc::new(NoProjection)).unwrap();
        let handle = store.handle();
        assert_eq!(handle.last_sequence(), 374);
        for seq in 1..=374 {
            let e = handle.event_at(seq).unwrap().expect("every event");
            assert_eq!(e.sequence, seq);
        }
        drop(handle);
        store.close().await.unwrap();
        let (after, version) = chunks(dir.path());
        assert_eq!(version, layout::FORMAT_VERSION);
        assert!(after.iter().all(|(_, v1)| !*v1), "every chunk rewritten");
        assert_eq!(after.first().map(|c| c.0), Some(1));
    }
}
