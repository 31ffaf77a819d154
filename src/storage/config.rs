//! The store's settings ([`StoreConfig`]) and their defaults.
//!
//! Depends only on the store's `Observer`.

use super::Observer;

/// Settings of the store. Every queue here is bounded.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// Append requests waiting for the writer; senders wait when it is full.
    pub writer_queue: usize,
    /// The most events one group commit takes before it writes and fsyncs.
    pub max_group_events: usize,
    /// Deletes the views' checkpoint when the store opens, so that the views
    /// are rebuilt from the whole log.
    pub rebuild_views: bool,
    /// Appends are refused (UNAVAILABLE, nothing written) while the store's
    /// file system has fewer free bytes than this, so that sled never meets
    /// a full disk (after a failed write it fails reads too); they resume by
    /// themselves once space is freed. 0: no check.
    pub min_free_disk_bytes: u64,
    /// Told about group commits and write failures (metrics).
    pub observer: Option<Observer>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_bytes: DEFAULT_CACHE_BYTES,
            writer_queue: DEFAULT_WRITER_QUEUE,
            max_group_events: DEFAULT_MAX_GROUP_EVENTS,
            rebuild_views: false,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK_BYTES,
            observer: None,
        }
    }
}

/// Default sled cache: 64 MiB. It serves appends, duplicate checks, lookups
/// and the views' figure pages that queries read.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Default writer queue: 1,024 requests.
pub const DEFAULT_WRITER_QUEUE: usize = 1024;
/// Default free space below which appends are refused: 256 MiB.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 * 1024 * 1024;
/// Default group-commit size: 16,384 events.
pub const DEFAULT_MAX_GROUP_EVENTS: usize = 16_384;
