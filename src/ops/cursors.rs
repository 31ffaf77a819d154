//! Where each running subscription is, for the lag gauge: each
//! subscription holds a [`Cursor`] in the server's [`Cursors`]; dropping it
//! removes it. A scrape reads the smallest.
//!
//! Depends only on std.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The subscriptions' cursors, for the lag gauge: each running subscription
/// holds one [`Cursor`]; dropping it removes it.
#[derive(Default)]
pub struct Cursors {
    next: AtomicU64,
    live: Mutex<std::collections::HashMap<u64, Arc<AtomicU64>>>,
}

/// One subscription's cursor, as the lag gauge reads it.
pub struct Cursor {
    id: u64,
    at: Arc<AtomicU64>,
    owner: Arc<Cursors>,
}

impl Cursors {
    pub fn open(self: &Arc<Self>, at: u64) -> Cursor {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let at = Arc::new(AtomicU64::new(at));
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&at));
        Cursor {
            id,
            at,
            owner: Arc::clone(self),
        }
    }

    /// (How many, the smallest cursor) of the running subscriptions.
    pub fn oldest(&self) -> (u64, Option<u64>) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let min = live.values().map(|a| a.load(Ordering::Relaxed)).min();
        (live.len() as u64, min)
    }
}

impl Cursor {
    pub fn set(&self, at: u64) {
        self.at.store(at, Ordering::Relaxed);
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.owner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}
