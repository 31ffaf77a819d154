//! The shutdown signal shared by the server and its long-running tasks
//! (after mini-redis's `Shutdown`): one trigger, many cheap listeners.
//!
//! Shutdown is by ownership: every task a handler spawns (query producers,
//! AppendStream readers and responders, subscriptions) is spawned on the
//! server's `TaskTracker`, watches this signal and ends by itself once it
//! fires; the server closes the tracker and waits for exactly those tasks
//! before it closes the store. Depends only on tokio.

use tokio::sync::watch;

/// Tells every listener that the server is shutting down.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Listens for the shutdown signal.
#[derive(Clone)]
pub(crate) struct Shutdown(
    /// A watch, not a broadcast: a listener only needs to know that shutdown
    /// has begun, never how often it was asked for, and a late listener
    /// still sees it.
    watch::Receiver<bool>,
);

/// A connected trigger and listener.
pub(crate) fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub(crate) fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered (at once if it already was,
    /// or if the trigger is gone).
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}
