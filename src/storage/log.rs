//! The log on sled: reading events back out of their chunks (one event, or a
//! run of them in sequence order) and adding a group's events to a write
//! batch as chunks and fingerprint chunks. The byte formats are in `layout`;
//! the encoding of one event is in `event_codec`.
//!
//! Depends on sled, `layout`, `event_codec` and the domain.

use super::event_codec::{decode_stored, encode_stored_parts};
use super::layout::{self, parse_seq_key, seq_key, IDS_PREFIX, LOG_PREFIX};
use super::storage_error;
use crate::domain::{IdentityName, StoredEvent, Timestamp};
use crate::error::Error;
use std::collections::HashMap;

/// The encoded stored event at `seq`, if the log has it (durable or not).
pub(super) fn event_bytes(tree: &sled::Tree, seq: u64) -> Result<Option<Vec<u8>>, Error> {
    let Some((first, entries)) = chunk_at(tree, seq)? else {
        return Ok(None);
    };
    // `first <= seq` by the range bound.
    Ok(usize::try_from(seq - first)
        .ok()
        .and_then(|i| entries.into_iter().nth(i)))
}

/// The log chunk that a duplicate check read last, its entries decoded:
/// re-sent events mostly come in the order they were stored, so one check
/// after another falls in the same chunk (decompressing it for each of its
/// ~30 events made re-sends three times slower). Chunks never change once
/// written, so it is never stale.
#[derive(Default)]
pub(super) struct LastChunk(std::sync::Mutex<Option<Chunk>>);

/// A log chunk's first sequence and its entries.
type Chunk = (u64, Vec<Vec<u8>>);

impl LastChunk {
    /// The decoded stored event at `seq`, checked to say it is `seq`.
    pub(super) fn event(&self, tree: &sled::Tree, seq: u64) -> Result<Option<StoredEvent>, Error> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let holds = |c: &Option<Chunk>| {
            c.as_ref().is_some_and(|(first, entries)| {
                seq.checked_sub(*first)
                    .is_some_and(|i| i < entries.len() as u64)
            })
        };
        if !holds(&last) {
            *last = chunk_at(tree, seq)?;
        }
        let Some(bytes) = last
            .as_ref()
            .and_then(|(first, entries)| entries.get(usize::try_from(seq - first).ok()?))
        else {
            return Ok(None);
        };
        let stored = decode(bytes)?;
        if stored.sequence != seq {
            return Err(storage_error(
                "corrupt log",
                format!("event at {seq} says it is {}", stored.sequence),
            ));
        }
        Ok(Some(stored))
    }
}

/// The chunk whose range starts at or before `seq`: its first sequence and
/// its entries.
fn chunk_at(tree: &sled::Tree, seq: u64) -> Result<Option<Chunk>, Error> {
    if seq == 0 {
        return Ok(None);
    }
    let hi = seq_key(LOG_PREFIX, seq);
    let found = tree
        .range([LOG_PREFIX].as_slice()..=hi.as_slice())
        .next_back()
        .transpose()
        .map_err(|e| storage_error("read", e))?;
    let Some((key, value)) = found else {
        return Ok(None);
    };
    let first = parse_seq_key(&key).map_err(|e| storage_error("corrupt key", e))?;
    let chunk = layout::open_chunk(&value).map_err(|e| storage_error("corrupt chunk", e))?;
    let entries = chunk
        .entries()
        .map_err(|e| storage_error("corrupt chunk", e))?;
    Ok(Some((first, entries.iter().map(|e| e.to_vec()).collect())))
}

/// The decoded stored event at `seq`, checked to say it is `seq`.
pub(super) fn event(tree: &sled::Tree, seq: u64) -> Result<Option<StoredEvent>, Error> {
    let Some(bytes) = event_bytes(tree, seq)? else {
        return Ok(None);
    };
    let stored = decode(&bytes)?;
    if stored.sequence != seq {
        return Err(storage_error(
            "corrupt log",
            format!("event at {seq} says it is {}", stored.sequence),
        ));
    }
    Ok(Some(stored))
}

/// The decoded events at `sequences` (any order, repeats allowed) that the
/// log holds, each chunk read and decompressed once however many of its
/// events are asked for.
pub(super) fn events_at(
    tree: &sled::Tree,
    sequences: impl IntoIterator<Item = u64>,
) -> Result<HashMap<u64, StoredEvent>, Error> {
    let mut wanted: Vec<u64> = sequences.into_iter().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = HashMap::with_capacity(wanted.len());
    // In sequence order, one chunk serves every event asked of it.
    let chunk = LastChunk::default();
    for seq in wanted {
        if let Some(stored) = chunk.event(tree, seq)? {
            out.insert(seq, stored);
        }
    }
    Ok(out)
}

/// Decodes one log entry.
pub(super) fn decode(entry: &[u8]) -> Result<StoredEvent, Error> {
    decode_stored(entry).map_err(|e| storage_error("corrupt event", e))
}

/// Calls `each` with the encoded events after `after` and at most `last`,
/// in order, up to `max` of them (one range scan over their chunks, each
/// chunk's checksum verified and the chunks checked to follow each other).
fn each_entry_after(
    tree: &sled::Tree,
    after: u64,
    last: u64,
    max: usize,
    each: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    if after >= last || max == 0 {
        return Ok(());
    }
    let first = after + 1;
    let first_key = seq_key(LOG_PREFIX, first);
    // The chunk that holds `first` starts at or before it.
    let start = tree
        .range([LOG_PREFIX].as_slice()..=first_key.as_slice())
        .next_back()
        .transpose()
        .map_err(|e| storage_error("read", e))?
        .map_or_else(|| first_key.to_vec(), |(k, _)| k.to_vec());
    let mut expected = None;
    let mut taken = 0;
    for item in tree.range(start..) {
        let (k, v) = item.map_err(|e| storage_error("read", e))?;
        if k.first() != Some(&LOG_PREFIX) {
            break;
        }
        let chunk_first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
        if expected.is_some_and(|e| e != chunk_first) {
            return Err(storage_error(
                "corrupt log",
                format!("a gap before chunk {chunk_first}"),
            ));
        }
        let chunk = layout::open_chunk(&v).map_err(|e| storage_error("corrupt chunk", e))?;
        let entries = chunk
            .entries()
            .map_err(|e| storage_error("corrupt chunk", e))?;
        expected = Some(chunk_first + entries.len() as u64);
        for (i, entry) in entries.iter().enumerate() {
            let seq = chunk_first + i as u64;
            if seq < first {
                continue;
            }
            if seq > last || taken >= max {
                return Ok(());
            }
            each(entry)?;
            taken += 1;
        }
    }
    Ok(())
}

/// Up to `max` events after sequence `after` and at most `last`, in order
/// (one range scan over their chunks).
pub(super) fn events_after(
    tree: &sled::Tree,
    after: u64,
    last: u64,
    max: usize,
) -> Result<Vec<StoredEvent>, Error> {
    let mut out = Vec::new();
    each_entry_after(tree, after, last, max, &mut |entry| {
        out.push(decode(entry)?);
        Ok(())
    })?;
    Ok(out)
}

/// Up to `max` encoded events after `after` and at most `last`, in order,
/// as the log holds them (their chunks' checksums verified).
pub(super) fn entries_after(
    tree: &sled::Tree,
    after: u64,
    last: u64,
    max: usize,
) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    each_entry_after(tree, after, last, max, &mut |entry| {
        out.push(entry.to_vec());
        Ok(())
    })?;
    Ok(out)
}

/// One event for [`add_entries`]: its encoding and who wrote it.
pub(super) type Entry<'a> = (&'a [u8], Option<&'a IdentityName>);

/// Adds log chunks holding `events` (encoded events and their authors,
/// sequences `first`…) to a batch: as many consecutive stored events per
/// chunk as fit its value limit.
pub(super) fn add_entries(
    batch: &mut sled::Batch,
    first: u64,
    events: &[Entry<'_>],
    ingested_at: &Timestamp,
) -> Result<(), Error> {
    let mut chunk = layout::ChunkBuilder::new();
    let mut chunk_first = first;
    for (i, &(bytes, author)) in events.iter().enumerate() {
        let seq = first + i as u64;
        let before = chunk.len();
        let len = chunk.push_with(|buf| encode_stored_parts(seq, ingested_at, bytes, author, buf));
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
            chunk.push_with(|buf| encode_stored_parts(seq, ingested_at, bytes, author, buf));
        }
    }
    if !chunk.is_empty() {
        batch.insert(&seq_key(LOG_PREFIX, chunk_first), chunk.finish());
    }
    Ok(())
}

/// Adds the fingerprint chunks of events `first`… to a batch.
pub(super) fn add_fingerprints(batch: &mut sled::Batch, first: u64, fingerprints: &[u64]) {
    for (k, part) in fingerprints
        .chunks(layout::FINGERPRINTS_PER_CHUNK)
        .enumerate()
    {
        let seq = first + (k * layout::FINGERPRINTS_PER_CHUNK) as u64;
        batch.insert(&seq_key(IDS_PREFIX, seq), layout::encode_fingerprints(part));
    }
}
