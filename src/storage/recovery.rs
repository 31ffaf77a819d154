//! What happens when a store opens, before anything is served: the format
//! version is checked (or written, for a new store); the derived keys (event-id
//! fingerprint chunks, agreement keys) are checked to cover exactly the log's
//! gapless sequence range, and rebuilt from the log when they do not; the id
//! index and the agreement set are loaded; the whole log is replayed into the
//! projection.
//!
//! Depends on sled, `layout`, `log`, `ids` and the domain.

use super::event_codec::stored_event_id;
use super::ids::IdIndex;
use super::layout::{self, fingerprint, parse_seq_key, seq_key, IDS_PREFIX, LOG_PREFIX};
use super::{log, storage_error, Projection, Syncer};
use crate::domain::{Lifecycle, Payload};
use crate::error::Error;
use std::collections::HashMap;
use std::path::Path;

/// What the store knows once it is open, before the replay.
pub(super) struct Recovered {
    pub last_sequence: u64,
    pub ids: IdIndex,
}

/// Refuses a store of another format version (or none); writes the version
/// into a new, empty store.
pub(super) fn check_format(db: &sled::Db, tree: &sled::Tree, dir: &Path) -> Result<(), Error> {
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

/// Loads the id index from the derived keys, after
/// checking that the fingerprint chunks cover exactly the log's gapless
/// sequence range. If they do not, rebuilds every derived key from the log.
pub(super) fn recover(
    db: &sled::Db,
    tree: &sled::Tree,
    syncer: &mut dyn Syncer,
) -> Result<Recovered, Error> {
    let last_sequence = last_log_sequence(tree)?;
    let ids = match load_ids(tree, last_sequence) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "derived keys do not match the log; rebuilding them from the log");
            rebuild_derived(db, tree, syncer)?;
            load_ids(tree, last_sequence)?
        }
    };
    Ok(Recovered { last_sequence, ids })
}

/// Feeds the whole log to `projection`, in order, in bounded batches, and
/// returns where every agreement stands (folded as recorded, unchecked: a
/// log written before the lifecycle rules is read as it is).
pub(super) fn replay(
    tree: &sled::Tree,
    projection: &dyn Projection,
) -> Result<HashMap<String, Lifecycle>, Error> {
    const EVENTS_PER_BATCH: usize = 4096;
    let mut agreements: HashMap<String, Lifecycle> = HashMap::new();
    let mut batch = Vec::with_capacity(EVENTS_PER_BATCH);
    for item in tree.scan_prefix([LOG_PREFIX]) {
        let (_, v) = item.map_err(|e| storage_error("replay", e))?;
        for entry in layout::chunk_entries(&v).map_err(|e| storage_error("corrupt chunk", e))? {
            let stored = log::decode(entry)?;
            match &stored.event.payload {
                Payload::Agreement(a) => {
                    let id = a.id.as_str();
                    let life = match agreements.get(id) {
                        Some(life) => life.amended(a),
                        None => Lifecycle::start(a),
                    };
                    agreements.insert(id.to_owned(), life);
                }
                Payload::AgreementStatusChanged(c) => {
                    if let Some(life) = agreements.get_mut(c.agreement_id.as_str()) {
                        *life = life.changed(c);
                    }
                }
                _ => {}
            }
            batch.push(stored);
        }
        if batch.len() >= EVENTS_PER_BATCH {
            projection.apply(std::mem::replace(
                &mut batch,
                Vec::with_capacity(EVENTS_PER_BATCH),
            ));
        }
    }
    projection.apply(batch);
    Ok(agreements)
}

fn last_log_sequence(tree: &sled::Tree) -> Result<u64, Error> {
    match tree
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

fn load_ids(tree: &sled::Tree, last_sequence: u64) -> Result<IdIndex, Error> {
    let mut expected = 1u64;
    let mut ids = IdIndex::with_capacity(usize::try_from(last_sequence).unwrap_or(0));
    for item in tree.scan_prefix([IDS_PREFIX]) {
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
            if let Err(other) = ids.insert(fp, seq) {
                // Two ids with one fingerprint: keep the later one in full.
                let id = event_id_at(tree, seq)?;
                if id == event_id_at(tree, other)? {
                    return Err(storage_error(
                        "inconsistent store",
                        format!("event id {id} stored twice ({other} and {seq})"),
                    ));
                }
                ids.insert_collided(id, seq);
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

fn event_id_at(tree: &sled::Tree, seq: u64) -> Result<String, Error> {
    let bytes = log::event_bytes(tree, seq)?
        .ok_or_else(|| storage_error("inconsistent store", format!("no event {seq}")))?;
    stored_event_id(&bytes).map_err(|e| storage_error("corrupt event", e))
}

/// Rewrites every key derived from the log (fingerprint chunks, agreement
/// keys) by reading the whole log, then flushes and fsyncs.
fn rebuild_derived(db: &sled::Db, tree: &sled::Tree, syncer: &mut dyn Syncer) -> Result<(), Error> {
    const KEYS_PER_BATCH: usize = 1024;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let flush = |batch: &mut sled::Batch, pending: &mut usize| -> Result<(), Error> {
        tree.apply_batch(std::mem::take(batch))
            .map_err(|e| storage_error("rebuild", e))?;
        *pending = 0;
        Ok(())
    };
    for prefix in [IDS_PREFIX, layout::AGREEMENT_PREFIX] {
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
    for item in tree.scan_prefix([LOG_PREFIX]) {
        let (k, v) = item.map_err(|e| storage_error("rebuild scan", e))?;
        let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
        let entries = layout::chunk_entries(&v).map_err(|e| storage_error("corrupt chunk", e))?;
        let mut fps = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let stored = log::decode(entry)?;
            fps.push(fingerprint(stored.event.id.as_str()));
            let about = match &stored.event.payload {
                Payload::Agreement(a) => Some(a.id.as_str()),
                Payload::AgreementStatusChanged(c) => Some(c.agreement_id.as_str()),
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
    db.flush().map_err(|e| storage_error("flush", e))?;
    syncer.sync().map_err(|e| storage_error("fsync", e))?;
    Ok(())
}
