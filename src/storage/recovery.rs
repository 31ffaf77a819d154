//! What happens when a store opens, before anything is served:
//!
//! 1. the format version is checked (or written, for a new store; refused
//!    when the acknowledgement mark says events were acknowledged, since an
//!    empty store then means a lost data file); a format-1 or format-2 store
//!    is upgraded in place (`rewrite::upgrade`);
//! 2. the whole log is read ([`replay`]), checking every chunk's checksum,
//!    that the sequences are gapless from 1 (from the chunks' headers), and
//!    each decoded event's own sequence (events after the checkpoint and
//!    the agreement events it covers are decoded; the chunks below it only
//!    checked): a damaged log is refused, naming the sequences; the
//!    projection is restored from the views' newest checkpoint and fed only
//!    the events after it (a checkpoint that covers more than the log is
//!    refused);
//! 3. the log's end is checked against the acknowledgement mark
//!    ([`check_acknowledged`]): a log that ends before it is refused;
//! 4. the derived keys (event-id fingerprint chunks, agreement keys,
//!    pair-feed keys) are checked to cover exactly the log's range and to
//!    pass their checksums, and rebuilt from the log when they do not
//!    (`rewrite::rebuild_derived`); the id index and the pairs' feeds are
//!    loaded.
//!
//! Depends on sled, `layout`, `log`, `ids`, `mark` and the domain.

use super::derived::{self, Derived};
use super::event_codec::stored_event_key;
use super::ids::IdIndex;
use super::layout::{self, parse_seq_key, IDS_PREFIX, LOG_PREFIX};
use super::mark::Found;
use super::owners::{PairFeeds, Standing};
use super::rewrite::rebuild_derived;
use super::{log, storage_error, Projection, Syncer};
use crate::domain::{Lifecycle, Payload, StoredEvent};
use crate::error::Error;
use std::collections::HashMap;
use std::path::Path;

/// What the store knows once it is open, before the replay.
pub(super) struct Recovered {
    pub ids: IdIndex,
    pub pair_feeds: PairFeeds,
}

/// The format a store was found in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Format {
    Current,
    /// Written by format 2 (ids global, no pair-feed keys): its derived
    /// keys are rebuilt before anything else.
    Version2,
    /// Written by format 1: its chunks are rewritten with checksums, then as
    /// format 2.
    Version1,
}

/// Refuses a store of another format version (or none); writes the version
/// into a new, empty store, unless its mark says events were acknowledged.
pub(super) fn check_format(
    db: &sled::Db,
    tree: &sled::Tree,
    dir: &Path,
    mark: &Found,
) -> Result<Format, Error> {
    let found = db
        .get(layout::FORMAT_KEY)
        .map_err(|e| storage_error("read format version", e))?;
    match found {
        Some(v) => {
            let version = <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes);
            match version {
                Ok(layout::FORMAT_VERSION) => Ok(Format::Current),
                Ok(layout::FORMAT_VERSION_2) => Ok(Format::Version2),
                Ok(layout::FORMAT_VERSION_1) => Ok(Format::Version1),
                Ok(other) => Err(Error::Internal(format!(
                    "the store in {} has format version {other}; this build of caravan reads versions {} to {} only",
                    dir.display(),
                    layout::FORMAT_VERSION_1,
                    layout::FORMAT_VERSION
                ))),
                Err(_) => Err(Error::Internal(format!(
                    "the store in {} has an unreadable format version",
                    dir.display()
                ))),
            }
        }
        None if tree.is_empty() => {
            if let Found::At(acknowledged) = *mark {
                if acknowledged > 0 {
                    return Err(missing_events(dir, 0, acknowledged));
                }
            }
            db.insert(layout::FORMAT_KEY, &layout::FORMAT_VERSION.to_be_bytes())
                .map_err(|e| storage_error("write format version", e))?;
            Ok(Format::Current)
        }
        None => Err(Error::Internal(format!(
            "{} holds data but no caravan format version; it is not a caravan store",
            dir.display()
        ))),
    }
}

/// The refusal of a log that ends at `last` although events up to
/// `acknowledged` were acknowledged.
fn missing_events(dir: &Path, last: u64, acknowledged: u64) -> Error {
    Error::Internal(format!(
        "storage: the store in {} holds events up to sequence {last}, but events up to \
         {acknowledged} were acknowledged: events {}..={acknowledged} are missing (its data \
         file was damaged, truncated or replaced). It is not served, so that no \
         acknowledged event is lost silently and no sequence is handed out twice; \
         restore the store from a backup",
        dir.display(),
        last + 1
    ))
}

/// Refuses a log that ends before the acknowledgement mark. A log that goes
/// beyond it is fine: those events were durable but their acknowledgement
/// had not been recorded (nor sent) when the server stopped.
pub(super) fn check_acknowledged(dir: &Path, mark: &Found, last: u64) -> Result<(), Error> {
    match *mark {
        Found::At(acknowledged) if acknowledged > last => {
            Err(missing_events(dir, last, acknowledged))
        }
        Found::Missing if last > 0 => {
            tracing::warn!(
                dir = %dir.display(),
                last_sequence = last,
                "no acknowledgement mark: taking the log's end as acknowledged"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Takes the id index [`load_ids`] read (while the log was replayed), after
/// checking that its fingerprint chunks cover exactly the log's gapless
/// sequence range, and loads the pair-feed keys. If either fails, rebuilds
/// every derived key from the log and loads both again.
pub(super) fn recover(
    db: &sled::Db,
    tree: &sled::Tree,
    last_sequence: u64,
    loaded: Result<LoadedIds, Error>,
    syncer: &mut dyn Syncer,
) -> Result<Recovered, Error> {
    let load_pairs = || PairFeeds::load(tree).map_err(|e| storage_error("pair-feed keys", e));
    let checked = loaded
        .and_then(|l| l.covering(last_sequence))
        .and_then(|ids| Ok((ids, load_pairs()?)));
    let (ids, pair_feeds) = match checked {
        Ok(both) => both,
        Err(e) => {
            tracing::warn!(error = %e, "derived keys do not match the log; rebuilding them from the log");
            rebuild_derived(db, tree, syncer)?;
            (load_ids(tree)?.covering(last_sequence)?, load_pairs()?)
        }
    };
    Ok(Recovered { ids, pair_feeds })
}

/// The id index as the fingerprint chunks give it, and the sequence after
/// the last one they cover.
pub(super) struct LoadedIds {
    ids: IdIndex,
    next: u64,
}

impl LoadedIds {
    /// The index, if its chunks end where the log does.
    fn covering(self, last_sequence: u64) -> Result<IdIndex, Error> {
        if self.next != last_sequence + 1 {
            return Err(storage_error(
                "inconsistent store",
                format!(
                    "fingerprints end at {}, the log at {last_sequence}",
                    self.next - 1
                ),
            ));
        }
        Ok(self.ids)
    }
}

/// What the replay found.
pub(super) struct Replayed {
    /// The log's last sequence (0 for an empty log).
    pub last_sequence: u64,
    /// Where every agreement stands, and its owner.
    pub agreements: HashMap<String, Standing>,
    /// The sequence the views' checkpoint covered (0: none).
    pub checkpoint: u64,
}

/// Reads the whole log, checking as it reads that it is whole: every chunk
/// passes its checksum, the chunks' sequences follow each other from 1
/// without a gap, and every event it decodes says it is the sequence it is
/// stored at. The projection is restored from the views' newest checkpoint
/// (with the agreement events it covers, the only events below it that are
/// decoded), then fed the rest of the log, in order, in bounded batches.
/// Agreements are folded as recorded, unchecked: a log written before the
/// lifecycle rules is read as it is.
pub(super) fn replay(
    tree: &sled::Tree,
    dir: &Path,
    projection: &dyn Projection,
    derived: &Derived,
) -> Result<Replayed, Error> {
    const EVENTS_PER_BATCH: usize = 4096;
    let damaged = |from: u64, what: String| {
        Error::Internal(format!(
            "storage: the log of the store in {} is damaged from sequence {from} on ({what}); \
             it is not served. Restore the store from a backup",
            dir.display()
        ))
    };
    let checkpoint_damaged = |what: String| {
        Error::Internal(format!(
            "storage: the views' checkpoint in {} is damaged ({what}); it is not served. \
             Restore the store from a backup",
            dir.display()
        ))
    };
    let covers = derived::covered(tree).map_err(checkpoint_damaged)?;
    let covered_agreements = derived::checkpointed_agreements(tree).map_err(checkpoint_damaged)?;
    let mut next_covered = covered_agreements.iter().peekable();
    let mut restored: Option<Vec<StoredEvent>> = Some(Vec::new());
    let restore =
        |agreements: Vec<StoredEvent>| projection.restore(derived.clone(), covers, agreements);
    let mut agreements: HashMap<String, Standing> = HashMap::new();
    let mut fold = |stored: &StoredEvent| match &stored.event.payload {
        Payload::Agreement(a) => {
            let id = a.id.as_str();
            match agreements.get_mut(id) {
                Some(standing) => standing.life = standing.life.amended(a),
                None => {
                    let standing = Standing {
                        life: Lifecycle::start(a),
                        owner: stored.event.feed.clone(),
                    };
                    agreements.insert(id.to_owned(), standing);
                }
            }
        }
        Payload::AgreementStatusChanged(c) => {
            if let Some(standing) = agreements.get_mut(c.agreement_id.as_str()) {
                standing.life = standing.life.changed(c);
            }
        }
        _ => {}
    };
    let mut batch = Vec::with_capacity(EVENTS_PER_BATCH);
    let mut expected = 1u64;
    for item in tree.scan_prefix([LOG_PREFIX]) {
        let (k, v) = item.map_err(|e| damaged(expected, e.to_string()))?;
        let first = parse_seq_key(&k).map_err(|e| damaged(expected, e))?;
        if first != expected {
            return Err(if first > expected {
                damaged(
                    expected,
                    format!("events {expected}..={} are missing", first - 1),
                )
            } else {
                damaged(
                    first,
                    format!("a chunk overlaps the one before it at {first}"),
                )
            });
        }
        // A chunk that the checkpoint covers whole and that holds none of
        // the agreement events it names: its checksum and its count are all
        // that is read (nothing is decompressed or decoded).
        let count = layout::chunk_count(&v).map_err(|e| damaged(first, e))?;
        let Some(last) = (first + count).checked_sub(1).filter(|l| *l >= first) else {
            return Err(damaged(first, "an empty log chunk".into()));
        };
        if last <= covers && next_covered.peek().is_none_or(|s| **s > last) {
            expected = last + 1;
            continue;
        }
        let chunk = layout::open_chunk(&v).map_err(|e| damaged(first, e))?;
        let entries = chunk.entries().map_err(|e| damaged(first, e))?;
        if entries.len() as u64 != count {
            return Err(damaged(first, "a log chunk unlike its header".into()));
        }
        for (i, entry) in entries.iter().enumerate() {
            let seq = first + i as u64;
            let covered = seq <= covers;
            let wanted = covered && next_covered.next_if_eq(&&seq).is_some();
            if covered && !wanted {
                continue;
            }
            let stored = log::decode(entry).map_err(|e| damaged(seq, e.to_string()))?;
            if stored.sequence != seq {
                return Err(damaged(
                    seq,
                    format!("the event stored at {seq} says it is {}", stored.sequence),
                ));
            }
            fold(&stored);
            if covered {
                if !matches!(
                    stored.event.payload,
                    Payload::Agreement(_) | Payload::AgreementStatusChanged(_)
                ) {
                    return Err(checkpoint_damaged(format!(
                        "it names event {seq} as an agreement event"
                    )));
                }
                if let Some(r) = restored.as_mut() {
                    r.push(stored);
                }
                continue;
            }
            if let Some(r) = restored.take() {
                restore(r)?;
            }
            batch.push(stored);
        }
        expected = first + entries.len() as u64;
        if batch.len() >= EVENTS_PER_BATCH {
            projection.apply(std::mem::replace(
                &mut batch,
                Vec::with_capacity(EVENTS_PER_BATCH),
            ));
        }
    }
    let last = expected - 1;
    if covers > last {
        return Err(checkpoint_damaged(format!(
            "it covers sequences up to {covers}, but the log ends at {last}"
        )));
    }
    if let Some(r) = restored.take() {
        restore(r)?;
    }
    projection.apply(batch);
    Ok(Replayed {
        last_sequence: last,
        agreements,
        checkpoint: covers,
    })
}

/// Loads the id index from the fingerprint chunks, checking that they follow
/// each other from sequence 1 without a gap; two events with one
/// fingerprint are told apart by reading their feeds and ids from the log. Reads only the `I` chunks
/// (and the log's events of shared fingerprints), so that it runs beside
/// [`replay`].
pub(super) fn load_ids(tree: &sled::Tree) -> Result<LoadedIds, Error> {
    // Room for every id at once: the last chunk tells how many there are.
    let events = match tree.scan_prefix([IDS_PREFIX]).next_back() {
        None => 0,
        Some(item) => {
            let (k, v) = item.map_err(|e| storage_error("scan ids", e))?;
            let first = parse_seq_key(&k).map_err(|e| storage_error("corrupt key", e))?;
            let fps =
                layout::decode_fingerprints(&v).map_err(|e| storage_error("corrupt ids", e))?;
            // The sequence of its last fingerprint.
            first.saturating_add(fps.count() as u64).saturating_sub(1)
        }
    };
    let mut expected = 1u64;
    let mut ids = IdIndex::with_capacity(usize::try_from(events).unwrap_or(0));
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
            ids.push_loaded(fp, seq);
            expected = seq + 1;
        }
    }
    for (other, seq) in ids.finish_load() {
        // Two events with one fingerprint: keep the later one in full.
        let key = event_key_at(tree, seq)?;
        if key == event_key_at(tree, other)? {
            return Err(storage_error(
                "inconsistent store",
                format!(
                    "event id {:?} of one feed stored twice ({other} and {seq})",
                    key.replace('\0', " ")
                ),
            ));
        }
        ids.insert_collided(key, seq);
    }
    Ok(LoadedIds {
        ids,
        next: expected,
    })
}

/// The (feed, id) of the event at `seq`, as `layout::id_key` writes it.
fn event_key_at(tree: &sled::Tree, seq: u64) -> Result<String, Error> {
    let bytes = log::event_bytes(tree, seq)?
        .ok_or_else(|| storage_error("inconsistent store", format!("no event {seq}")))?;
    stored_event_key(&bytes).map_err(|e| storage_error("corrupt event", e))
}
