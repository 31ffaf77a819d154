//! What this node knows of the stream: its head (the newest event
//! sequence), when it last heard from it, and where the newest events are
//! (the stream sequence of the message that ends with each). Read by the
//! ingest health, the sequencer, and every read's answer (how stale it may
//! be); written by the sequencer, the follower and the probe.

use super::link::Link;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Message positions remembered, at most (the newest): the writer asks for
/// the one it applied last, never far behind the follower.
const POSITIONS: usize = 4096;

/// How often the probe asks the stream for its head.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Probes that fail in a row before ingest stops for want of a quorum.
pub const FAILED_PROBES: u32 = 2;

/// The stream as this node last saw it.
pub struct ClusterState {
    began: Instant,
    /// The newest event sequence this node has heard of.
    head: AtomicU64,
    /// Milliseconds after `began` this node last heard from the stream.
    contact_ms: AtomicU64,
    /// Whether the stream answered the last probe (ingest needs it).
    reachable: AtomicBool,
    /// Event sequence → stream sequence of the message that ends with it.
    positions: Mutex<BTreeMap<u64, u64>>,
    /// The last event this node appended itself (the stream confirmed it;
    /// the writer writes it without waiting for the follower).
    appended: AtomicU64,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            began: Instant::now(),
            head: AtomicU64::new(0),
            contact_ms: AtomicU64::new(0),
            reachable: AtomicBool::new(true),
            positions: Mutex::new(BTreeMap::new()),
            appended: AtomicU64::new(0),
        }
    }
}

impl ClusterState {
    /// The stream answered, its head at least `head`.
    pub fn heard(&self, head: u64) {
        self.head.fetch_max(head, Ordering::AcqRel);
        self.contact_ms
            .store(self.began.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// The message at stream sequence `message` ends with event `last`.
    pub(crate) fn record(&self, last: u64, message: u64) {
        let mut p = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(last, message);
        while p.len() > POSITIONS {
            p.pop_first();
        }
    }

    /// The stream sequence of the message that ends with event `last`, if
    /// remembered.
    pub(crate) fn position(&self, last: u64) -> Option<u64> {
        let p = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        p.get(&last).copied()
    }

    /// This node appended events up to `last` (confirmed by the stream).
    pub(crate) fn appended(&self, last: u64) {
        self.appended.fetch_max(last, Ordering::AcqRel);
    }

    /// The last event this node appended itself: the follower need not
    /// decode those, the writer holds them already.
    pub(crate) fn own(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// The newest event sequence this node has heard of.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// How long since this node last heard from the stream.
    pub fn silence(&self) -> Duration {
        let contact = Duration::from_millis(self.contact_ms.load(Ordering::Acquire));
        self.began.elapsed().saturating_sub(contact)
    }

    /// Whether the stream answered the last probe.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }
}

/// Asks the stream for its head every [`PROBE_INTERVAL`] until shutdown:
/// ingest is served only while it answers (it needs a quorum).
pub async fn probe(link: Link, state: Arc<ClusterState>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // Probes failed in a row: one is not enough to stop ingest (a stream
    // just created answers before its replicas have reported).
    let mut failed = 0u32;
    loop {
        let answered = tokio::select! {
            r = tokio::time::timeout(super::link::REQUEST_TIMEOUT, link.stream_state()) => r,
            _ = &mut stop => return,
        };
        match answered {
            Ok(Ok(stream)) if stream.quorum => {
                failed = 0;
                state.heard(stream.head);
                if !state.reachable.swap(true, Ordering::AcqRel) {
                    tracing::info!(head = stream.head, "JetStream has a quorum again");
                }
            }
            failure => {
                failed += 1;
                if failed >= FAILED_PROBES {
                    let why = match failure {
                        Ok(Ok(_)) => "the stream's leader has no quorum".to_owned(),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "no answer".to_owned(),
                    };
                    unreachable_now(&state, &why);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = &mut stop => return,
        }
    }
}

fn unreachable_now(state: &ClusterState, why: &str) {
    if state.reachable.swap(false, Ordering::AcqRel) {
        tracing::warn!(
            error = why,
            "JetStream does not answer: ingest waits for a quorum; reads go on"
        );
    }
}
