//! Checking a store against its log ([`check`]), for `caravan verify` and
//! the Verify RPC: every log chunk's checksum and the gapless sequence from
//! 1; each event decodes and says its own sequence; the event-id
//! fingerprints, the agreement keys and the pair-feed keys equal what the
//! log gives; the acknowledgement mark is not beyond the log; the views'
//! checkpoint covers no more than the log, its agreement keys are the
//! agreement events it covers, and every checkpoint value passes its
//! checksum. What the views' pages *say* is checked above the store
//! (`ops::verify`), against views rebuilt from the log.
//!
//! Reads only; memory stays bounded by the agreements and pairs, not the
//! log (the fingerprints are compared as both are read, in order).
//!
//! Depends on sled, `layout`, `log`, `derived`, `mark`, `owners` and the domain.

use super::derived;
use super::layout::{self, fingerprint, parse_seq_key, IDS_PREFIX, LOG_PREFIX};
use super::mark::{self, Found};
use super::opening::{open_sled, sled_failures_as_errors};
use super::owners::{self, Pair};
use super::{log, storage_error};
use crate::domain::{FeedName, Payload};
use crate::error::Error;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

/// Something wrong in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// "log", "event-ids", "agreements", "pair-feeds", "mark", "checkpoint",
    /// "views".
    pub area: &'static str,
    /// The sequences it concerns (0, 0: not about sequences).
    pub first: u64,
    pub last: u64,
    pub description: String,
}

impl Finding {
    /// How a finding reads: `area: sequences a..b: description`.
    pub fn describe(area: &str, first: u64, last: u64, description: &str) -> String {
        match (first, last) {
            (0, 0) => format!("{area}: {description}"),
            (a, b) if a == b => format!("{area}: sequence {a}: {description}"),
            (a, b) => format!("{area}: sequences {a}..{b}: {description}"),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&Finding::describe(
            self.area,
            self.first,
            self.last,
            &self.description,
        ))
    }
}

/// What a check found, and what it looked at.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// One line per area checked.
    pub checked: Vec<String>,
    /// The last sequence of the log that was checked.
    pub last_sequence: u64,
    /// The sequence the views' checkpoint covers.
    pub checkpoint: u64,
}

/// Checks the store in `dir`, which no server may have open, against its
/// whole log (`caravan verify --data-dir`). Opens sled, nothing more: no
/// upgrade, repair or rebuild is made.
pub fn check_offline(dir: &Path) -> Result<Report, Error> {
    if !dir.join("db").exists() {
        return Err(Error::Internal(format!("{} holds no store", dir.display())));
    }
    sled_failures_as_errors(dir, || {
        let db = open_sled(dir, super::DEFAULT_CACHE_BYTES).map_err(|e| {
            if e.to_string().contains("could not acquire lock") {
                Error::Internal(format!(
                    "the store in {} is open in a running server; check it with \
                     `caravan verify --server URL`, or stop the server first",
                    dir.display()
                ))
            } else {
                super::opening::refused(dir, &e)
            }
        })?;
        let format = db
            .get(layout::FORMAT_KEY)
            .map_err(|e| storage_error("read format version", e))?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if format != Some(layout::FORMAT_VERSION) {
            return Err(Error::Internal(format!(
                "the store in {} has format {format:?}; verify reads format {} (start a server on it once to upgrade it)",
                dir.display(),
                layout::FORMAT_VERSION
            )));
        }
        let tree = db
            .open_tree(layout::TREE)
            .map_err(|e| storage_error("open tree", e))?;
        check(&tree, dir, None)
    })
}

/// Findings of one kind over consecutive sequences become one finding.
#[derive(Default)]
struct Ranges {
    open: Option<(&'static str, u64, u64, String)>,
}

impl Ranges {
    fn add(&mut self, out: &mut Vec<Finding>, area: &'static str, seq: u64, what: &str) {
        if let Some((a, _, last, d)) = &mut self.open {
            if *a == area && *last + 1 == seq && d == what {
                *last = seq;
                return;
            }
        }
        self.close(out);
        self.open = Some((area, seq, seq, what.to_owned()));
    }

    fn close(&mut self, out: &mut Vec<Finding>) {
        if let Some((area, first, last, description)) = self.open.take() {
            out.push(Finding {
                area,
                first,
                last,
                description,
            });
        }
    }
}

/// Checks the store in `tree` up to sequence `upto` (`None`: the whole
/// log). Keys that describe events beyond `upto` (written by a group not
/// yet acknowledged, on a live store) are not held against it.
pub(super) fn check(tree: &sled::Tree, dir: &Path, upto: Option<u64>) -> Result<Report, Error> {
    let read = |e: sled::Error| storage_error("verify: read", e);
    let mut report = Report::default();
    let mut out = Vec::new();
    let mut ranges = Ranges::default();
    let limit = upto.unwrap_or(u64::MAX);

    // The fingerprints as the I chunks give them, read as the log advances.
    let mut id_chunks = tree.scan_prefix([IDS_PREFIX]);
    let mut ids: VecDeque<(u64, u64)> = VecDeque::new();
    let mut ids_done = false;
    let mut ids_next = 1u64;
    let mut agreements: HashMap<String, u64> = HashMap::new();
    let mut agreement_events: BTreeSet<u64> = BTreeSet::new();
    let mut pairs: HashMap<(Pair, FeedName), u64> = HashMap::new();

    let mut next = 1u64;
    let mut chunks = 0u64;
    // A chunk that does not read: where it starts and why (its end is where
    // the next chunk starts).
    let mut damaged: Option<(u64, String)> = None;
    for item in tree.scan_prefix([LOG_PREFIX]) {
        let (k, v) = item.map_err(read)?;
        let first = match parse_seq_key(&k) {
            Ok(s) => s,
            Err(e) => {
                ranges.close(&mut out);
                out.push(Finding {
                    area: "log",
                    first: 0,
                    last: 0,
                    description: e,
                });
                continue;
            }
        };
        if first > limit {
            break;
        }
        chunks += 1;
        // A damaged chunk before this one covered up to here.
        if let Some((from, why)) = damaged.take() {
            ranges.close(&mut out);
            out.push(Finding {
                area: "log",
                first: from,
                last: first.saturating_sub(1).max(from),
                description: format!("in a chunk that does not read: {why}"),
            });
            next = first.max(next);
        }
        if first > next {
            ranges.close(&mut out);
            out.push(Finding {
                area: "log",
                first: next,
                last: first - 1,
                description: "missing from the log (a gap)".into(),
            });
        } else if first < next {
            ranges.close(&mut out);
            out.push(Finding {
                area: "log",
                first,
                last: next - 1,
                description: "held by two chunks (overlap)".into(),
            });
        }
        let entries = layout::open_chunk(&v).and_then(|c| {
            c.entries()
                .map(|es| es.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
        });
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                damaged = Some((first, e));
                next = first + 1;
                continue;
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            let seq = first + i as u64;
            if seq > limit {
                break;
            }
            let stored = match log::decode(entry) {
                Ok(s) if s.sequence == seq => s,
                Ok(s) => {
                    ranges.add(
                        &mut out,
                        "log",
                        seq,
                        &format!("the event here says it is {}", s.sequence),
                    );
                    continue;
                }
                Err(e) => {
                    ranges.add(&mut out, "log", seq, &e.to_string());
                    continue;
                }
            };
            let event = &stored.event;
            let fp = fingerprint(event.feed.as_str(), event.id.as_str());
            // The I chunks up to this sequence.
            while !ids_done && ids.back().is_none_or(|(s, _)| *s < seq) {
                match id_chunks.next() {
                    None => ids_done = true,
                    Some(item) => {
                        let (k, v) = item.map_err(read)?;
                        let at = parse_seq_key(&k).unwrap_or(0);
                        if at != ids_next {
                            ranges.close(&mut out);
                            out.push(Finding {
                                area: "event-ids",
                                first: ids_next.min(at),
                                last: ids_next.max(at).saturating_sub(1),
                                description: format!(
                                    "fingerprint chunks do not follow each other (next expected {ids_next}, found {at})"
                                ),
                            });
                        }
                        let decoded =
                            layout::decode_fingerprints(&v).map(Iterator::collect::<Vec<u64>>);
                        match decoded {
                            Ok(fps) => {
                                let mut n = at;
                                for f in fps {
                                    ids.push_back((n, f));
                                    n += 1;
                                }
                                ids_next = n;
                            }
                            Err(e) => {
                                ranges.close(&mut out);
                                out.push(Finding {
                                    area: "event-ids",
                                    first: at,
                                    last: at,
                                    description: format!(
                                        "the fingerprint chunk starting here: {e}"
                                    ),
                                });
                                ids_next = at;
                            }
                        }
                    }
                }
            }
            while ids.front().is_some_and(|(s, _)| *s < seq) {
                ids.pop_front();
            }
            match ids.front() {
                Some(&(s, f)) if s == seq => {
                    ids.pop_front();
                    if f != fp {
                        ranges.add(
                            &mut out,
                            "event-ids",
                            seq,
                            "the fingerprint does not match the event's feed and id",
                        );
                    }
                }
                _ => ranges.add(&mut out, "event-ids", seq, "no fingerprint for this event"),
            }
            match &event.payload {
                Payload::Agreement(a) => {
                    agreements.insert(a.id.as_str().to_owned(), seq);
                    agreement_events.insert(seq);
                }
                Payload::AgreementStatusChanged(c) => {
                    agreements.insert(c.agreement_id.as_str().to_owned(), seq);
                    agreement_events.insert(seq);
                }
                Payload::TradeRecord(r) => {
                    pairs
                        .entry((Pair::of(&r.key), event.feed.clone()))
                        .or_insert(seq);
                }
                Payload::TradeRecordRetracted(_) => {}
            }
        }
        next = first + entries.len() as u64;
    }
    ranges.close(&mut out);
    if let Some((from, why)) = damaged.take() {
        out.push(Finding {
            area: "log",
            first: from,
            last: from,
            description: format!("the last chunk does not read ({why}); the log's end is unknown"),
        });
    }
    let last = next - 1;
    let last = upto.map_or(last, |u| u.min(last));
    report.last_sequence = last;
    report
        .checked
        .push(format!("log: sequences 1..{last} in {chunks} chunks"));
    if let Some(u) = upto {
        if last < u {
            out.push(Finding {
                area: "log",
                first: last + 1,
                last: u,
                description: "acknowledged but missing from the log".into(),
            });
        }
    }
    // Fingerprints beyond the log (on a live store, beyond `upto` is fine).
    if upto.is_none() {
        let beyond = ids
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| *s > last)
            .collect::<Vec<_>>();
        let mut more = id_chunks.next().is_some();
        if let Some(&f) = beyond.first() {
            out.push(Finding {
                area: "event-ids",
                first: f,
                last: *beyond.last().unwrap_or(&f),
                description: "fingerprints of events the log does not hold".into(),
            });
            more = false;
        }
        if more {
            out.push(Finding {
                area: "event-ids",
                first: last + 1,
                last: last + 1,
                description: "fingerprint chunks beyond the log's end".into(),
            });
        }
    }
    report
        .checked
        .push(format!("event-ids: fingerprints of 1..{last}"));

    // Agreement keys.
    let mut stored_agreements = 0;
    for item in tree.scan_prefix([layout::AGREEMENT_PREFIX]) {
        let (k, v) = item.map_err(read)?;
        stored_agreements += 1;
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        let seq = <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes).ok();
        match (seq, agreements.remove(&id)) {
            (Some(s), _) if s > last => {}
            (Some(s), Some(expected)) if s == expected => {}
            (Some(s), Some(expected)) => out.push(Finding {
                area: "agreements",
                first: s,
                last: s,
                description: format!(
                    "agreement {id:?} points at {s}, the log's latest event about it is {expected}"
                ),
            }),
            (None, _) => out.push(Finding {
                area: "agreements",
                first: 0,
                last: 0,
                description: format!("agreement {id:?} has an unreadable value"),
            }),
            (Some(s), None) => out.push(Finding {
                area: "agreements",
                first: s,
                last: s,
                description: format!("agreement {id:?} is not in the log"),
            }),
        }
    }
    for (id, seq) in agreements.into_iter().collect::<BTreeMap<_, _>>() {
        out.push(Finding {
            area: "agreements",
            first: seq,
            last: seq,
            description: format!("agreement {id:?} has no agreement key"),
        });
    }
    report
        .checked
        .push(format!("agreements: {stored_agreements} keys"));

    // Pair-feed keys.
    let mut stored_pairs = 0;
    for item in tree.scan_prefix([layout::PAIR_FEED_PREFIX]) {
        let (k, v) = item.map_err(read)?;
        stored_pairs += 1;
        let parsed = owners::parse_pair_feed(&k, &v);
        let Ok((pair, feed, seq)) = parsed else {
            out.push(Finding {
                area: "pair-feeds",
                first: 0,
                last: 0,
                description: format!(
                    "an unreadable pair-feed key {:?}",
                    String::from_utf8_lossy(&k)
                ),
            });
            continue;
        };
        if seq > last {
            continue;
        }
        let expected = pairs.remove(&(pair, feed.clone()));
        if expected != Some(seq) {
            out.push(Finding { area: "pair-feeds", first: seq, last: seq, description: format!("feed {:?} of {}: the key says its first record is {seq}, the log says {expected:?}", feed.as_str(), String::from_utf8_lossy(&k[1..6])) });
        }
    }
    let mut missing: Vec<_> = pairs.into_iter().collect();
    missing.sort_by_key(|(_, seq)| *seq);
    for ((_, feed), seq) in missing.into_iter().take(100) {
        out.push(Finding {
            area: "pair-feeds",
            first: seq,
            last: seq,
            description: format!(
                "feed {:?}: no pair-feed key for its first record here",
                feed.as_str()
            ),
        });
    }
    report
        .checked
        .push(format!("pair-feeds: {stored_pairs} keys"));

    // The acknowledgement mark.
    match mark::read(dir) {
        Ok(Found::At(acked)) if upto.is_none() && acked > last => out.push(Finding {
            area: "mark",
            first: last + 1,
            last: acked,
            description: "acknowledged (the mark says so) but missing from the log".into(),
        }),
        Ok(_) => {}
        Err(e) => out.push(Finding {
            area: "mark",
            first: 0,
            last: 0,
            description: e.to_string(),
        }),
    }
    report.checked.push("mark: against the log's end".into());

    // The views' checkpoint keys.
    match derived::covered(tree) {
        Ok(covers) => {
            report.checkpoint = covers;
            if covers > last && upto.is_none() {
                out.push(Finding {
                    area: "checkpoint",
                    first: last + 1,
                    last: covers,
                    description: "the checkpoint covers events the log does not hold".into(),
                });
            }
            match derived::checkpointed_agreements(tree) {
                Ok(seqs) => {
                    let seqs: BTreeSet<u64> = seqs.into_iter().collect();
                    let expected: BTreeSet<u64> =
                        agreement_events.range(..=covers).copied().collect();
                    for s in expected.difference(&seqs) {
                        out.push(Finding { area: "checkpoint", first: *s, last: *s, description: "an agreement event the checkpoint covers has no checkpointed-agreement key".into() });
                    }
                    for s in seqs.difference(&expected).filter(|s| **s <= covers) {
                        out.push(Finding { area: "checkpoint", first: *s, last: *s, description: "a checkpointed-agreement key of an event that is not an agreement event".into() });
                    }
                }
                Err(e) => out.push(Finding {
                    area: "checkpoint",
                    first: 0,
                    last: 0,
                    description: e,
                }),
            }
        }
        Err(e) => out.push(Finding {
            area: "checkpoint",
            first: 0,
            last: 0,
            description: e,
        }),
    }
    let mut view_keys = 0u64;
    for prefix in layout::VIEW_PREFIXES {
        for item in tree.scan_prefix([prefix]) {
            let (k, v) = item.map_err(read)?;
            view_keys += 1;
            if let Err(e) = layout::unseal(&v, "view key") {
                out.push(Finding {
                    area: "checkpoint",
                    first: 0,
                    last: 0,
                    description: format!("{e}: key {:?}", String::from_utf8_lossy(&k)),
                });
            }
        }
    }
    report.checked.push(format!(
        "checkpoint: covers {}, {view_keys} view keys' checksums",
        report.checkpoint
    ));
    report.findings = out;
    Ok(report)
}
