//! What the store calls out to: the projection that receives every durable
//! event (the query views), the syncer that makes a group durable, and the
//! observer told about group commits and failures (metrics). The store
//! defines these traits; the layers above implement them, so the store
//! depends on none of them.
//!
//! Depends on the domain, `error` and the store's `Derived` keys.

use super::{storage_error, Derived};
use crate::domain::{StoredEvent, TradeFigureKey};
use crate::error::Error;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Told what the writer does, for metrics. Called on the writer thread:
/// must not block.
pub trait StoreObserver: Send + Sync + 'static {
    /// A group commit wrote `events` new events: its batch and flush took
    /// `write`, its fsync `fsync`.
    fn group_committed(
        &self,
        events: usize,
        write: std::time::Duration,
        fsync: std::time::Duration,
    );
    /// The store stopped (`write`, `fsync`, `mark`) or paused (`disk_low`)
    /// writing.
    fn write_failed(&self, reason: &'static str);
}

/// A [`StoreObserver`] in the store's settings.
#[derive(Clone)]
pub struct Observer(pub Arc<dyn StoreObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// Makes written data durable. The store calls it after sled's own flush and
/// before it acknowledges anything; a failure fails the whole group.
pub trait Syncer: Send + 'static {
    fn sync(&mut self) -> io::Result<()>;
}

/// The production syncer: fsync of sled's data file `<dir>/db`. sled 0.34.7's
/// flush ends in `sync_file_range`, which does not make data durable.
pub(super) struct FsyncDataFile(pub(super) std::fs::File);

impl Syncer for FsyncDataFile {
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// Receives every durable event, in sequence order: the whole log when the
/// store opens, then each group right after its fsync and before any of it is
/// acknowledged. Query views are built this way.
pub trait Projection: Send + Sync + 'static {
    fn apply(&self, events: Vec<StoredEvent>);

    /// Called once when the store opens, before any `apply`: the views'
    /// checkpoint keys, the sequence their newest checkpoint covers (0: none;
    /// only later events are then applied) and the agreement events it
    /// covers, in sequence order.
    fn restore(
        &self,
        derived: Derived,
        covers: u64,
        agreements: Vec<StoredEvent>,
    ) -> Result<(), Error> {
        let _ = (derived, covers, agreements);
        Ok(())
    }

    /// Whether the figure of `key` is current (stored, not retracted) in
    /// what was applied: a retraction needs one. Asked by the writer only
    /// once everything committed has been applied.
    fn figure_is_current(&self, key: &TradeFigureKey) -> Result<bool, Error> {
        let _ = key;
        Ok(true)
    }

    /// The sequence of the first record of the figure `key` in what was
    /// applied (`None`: never recorded): its feed owns the figure. The
    /// writer asks it without waiting for the publisher, and looks at the
    /// groups not yet applied itself.
    fn figure_first_record(&self, key: &TradeFigureKey) -> Result<Option<u64>, Error> {
        let _ = key;
        Ok(None)
    }
}

pub(super) fn fsync_data_file(data_file: &Path) -> Result<Box<dyn Syncer>, Error> {
    let file = std::fs::File::open(data_file)
        .map_err(|e| storage_error(&format!("open {}", data_file.display()), e))?;
    Ok(Box::new(FsyncDataFile(file)))
}

/// A projection that keeps nothing.
pub struct NoProjection;

impl Projection for NoProjection {
    fn apply(&self, _: Vec<StoredEvent>) {}
}
