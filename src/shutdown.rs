//! The shutdown signal shared by the server and its long-running handlers
//! (after mini-redis's `Shutdown`): one trigger, many cheap listeners.
//! Depends only on tokio.

use tokio::sync::watch;

/// Tells every listener that the server is shutting down.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Listens for the shutdown signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has been triggered (at once if it already was,
    /// or if the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}
