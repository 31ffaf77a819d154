//! The ring of the most recent durable events, shared by every subscription
//! so that live subscribers do not each read and decode them from the log.
//! The publisher thread fills it (through the server's projection) after each
//! fsync, only while someone subscribes; it always holds a contiguous run of
//! sequences.
//!
//! Depends only on the domain.

use crate::domain::StoredEvent;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub(crate) struct Recent {
    /// At most `capacity` events (`--recent-events`): the oldest is dropped
    /// for each new one, so the ring never grows, and a subscriber that falls
    /// out of it reads the log instead.
    events: RwLock<VecDeque<Arc<StoredEvent>>>,
    capacity: usize,
    subscribers: AtomicUsize,
}

impl Recent {
    pub(crate) fn new(capacity: usize) -> Arc<Recent> {
        Arc::new(Recent {
            events: RwLock::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            subscribers: AtomicUsize::new(0),
        })
    }

    /// Keeps copies of durable events, if anyone subscribes.
    pub(crate) fn push(&self, batch: &[StoredEvent]) {
        if self.subscribers.load(Ordering::Acquire) == 0 || batch.is_empty() {
            return;
        }
        let mut events = self.events.write().unwrap_or_else(|p| p.into_inner());
        if events
            .back()
            .is_some_and(|b| b.sequence + 1 != batch[0].sequence)
        {
            events.clear(); // a pause in feeding: keep the run contiguous
        }
        for e in batch {
            if events.len() == self.capacity {
                events.pop_front();
            }
            events.push_back(Arc::new(e.clone()));
        }
    }

    /// Events `first..` (at most `max`, none past `upto`), if the ring holds
    /// `first`.
    pub(super) fn from(&self, first: u64, upto: u64, max: usize) -> Option<Vec<Arc<StoredEvent>>> {
        let events = self.events.read().unwrap_or_else(|p| p.into_inner());
        let front = events.front()?.sequence;
        if first < front || first > events.back()?.sequence {
            return None;
        }
        let skip = usize::try_from(first - front).ok()?;
        Some(
            events
                .iter()
                .skip(skip)
                .take_while(|e| e.sequence <= upto)
                .take(max)
                .cloned()
                .collect(),
        )
    }
}

/// Counts a subscriber for as long as it lives: the ring is filled only
/// while the count is above zero.
pub(super) struct Subscribed(Arc<Recent>);

impl Subscribed {
    pub(super) fn new(recent: &Arc<Recent>) -> Self {
        recent.subscribers.fetch_add(1, Ordering::AcqRel);
        Subscribed(Arc::clone(recent))
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}
