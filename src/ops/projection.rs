//! The query views as a store's projection: [`Pages`] (the store's
//! checkpoint keys behind the views' `PageStore`) and [`ViewsOnly`] (a
//! store whose only follower is a set of views, as `caravan verify` builds
//! them). The server's own projection (views and the subscriptions' ring)
//! is `grpc/server.rs`'s `Followers`, over the same `Pages`.
//!
//! Depends on the store facade and the views.

use crate::domain::{StoredEvent, TradeFigureKey};
use crate::error::Error;
use crate::storage::{Derived, Projection};
use crate::views::{CheckpointBatch, CheckpointSettings, KeyValue, PageStore, Unreadable, Views};
use std::sync::Arc;

/// The store's checkpoint keys, as the views see them.
pub(crate) struct Pages(pub(crate) Derived);

fn unreadable(e: Error) -> Unreadable {
    Unreadable(e.to_string())
}

impl PageStore for Pages {
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Unreadable> {
        self.0.scan(from, to, each).map_err(unreadable)
    }

    fn floor(&self, lowest: &[u8], key: &[u8]) -> Result<Option<KeyValue>, Unreadable> {
        self.0.floor(lowest, key).map_err(unreadable)
    }

    fn put(&self, puts: Vec<KeyValue>) -> Result<(), Unreadable> {
        self.0.put(puts).map_err(unreadable)
    }

    fn apply(&self, batch: CheckpointBatch) -> Result<(), Unreadable> {
        self.0
            .apply(
                batch.puts,
                batch.deletes,
                batch.covers,
                &batch.agreement_events,
            )
            .map_err(unreadable)
    }

    fn sync(&self) -> Result<(), Unreadable> {
        self.0.sync().map_err(unreadable)
    }

    fn room(&self) -> Result<(), String> {
        self.0.room()
    }
}

/// Restores `views` from a store's checkpoint keys (the projection's
/// `restore`, shared by every projection with views).
pub(crate) fn restore_views(
    views: &Arc<Views>,
    derived: Derived,
    covers: u64,
    agreements: Vec<StoredEvent>,
    settings: CheckpointSettings,
) -> Result<(), Error> {
    views
        .restore(Arc::new(Pages(derived)), covers, agreements, settings)
        .map_err(|e| Error::Internal(format!("storage: {e}; restore the store from a backup")))
}

fn view_error(e: Unreadable) -> Error {
    Error::Internal(format!("the views: {e}"))
}

/// A store's views alone (no subscriptions' ring).
pub(crate) struct ViewsOnly(pub(crate) Arc<Views>);

impl ViewsOnly {
    pub(crate) fn new(views: Arc<Views>) -> Self {
        ViewsOnly(views)
    }
}

impl Projection for ViewsOnly {
    fn apply(&self, events: Vec<StoredEvent>) {
        self.0.apply(events)
    }

    fn restore(
        &self,
        derived: Derived,
        covers: u64,
        agreements: Vec<StoredEvent>,
    ) -> Result<(), Error> {
        restore_views(
            &self.0,
            derived,
            covers,
            agreements,
            CheckpointSettings::default(),
        )
    }

    fn figure_is_current(&self, key: &TradeFigureKey) -> Result<bool, Error> {
        self.0.figure_is_current(key).map_err(view_error)
    }

    fn figure_first_record(&self, key: &TradeFigureKey) -> Result<Option<u64>, Error> {
        self.0.figure_first_record(key).map_err(view_error)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_and_the_views_agree_on_the_words_of_a_put_off_checkpoint() {
        assert_eq!(crate::storage::NO_ROOM, crate::views::NO_ROOM);
    }
}
