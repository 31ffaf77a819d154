//! The store's free disk space, checked before each group commit (and, by
//! `derived`, before each checkpoint write): sled must never meet a full
//! disk, since after one failed write it fails every read and write until a
//! restart. Below the minimum the store *pauses* writing ([`WriteState::DiskLow`])
//! and resumes by itself once space is freed.
//!
//! Depends on rustix (statvfs) and the store's observer.

use super::{derived, Observer};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Whether the store takes appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteState {
    Writable,
    /// Refusing appends while the disk is nearly full; resumes by itself.
    DiskLow(String),
    /// Stopped after a failed write, fsync or mark; needs a restart.
    Stopped(String),
}

/// Free bytes on the file system of `dir` (for an unprivileged user).
pub(super) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The free-space check of one store.
pub(super) struct Space {
    dir: PathBuf,
    /// `--min-free-disk-mib`, in bytes (0: no check).
    min_free_bytes: u64,
    /// Why appends are refused for now, if they are.
    low: Mutex<Option<String>>,
    observer: Option<Observer>,
}

impl Space {
    pub(super) fn new(dir: &Path, min_free_bytes: u64, observer: Option<Observer>) -> Space {
        Space {
            dir: dir.to_path_buf(),
            min_free_bytes,
            low: Mutex::new(None),
            observer,
        }
    }

    /// Why appends are refused for now, if they are.
    pub(super) fn low(&self) -> Option<String> {
        self.low.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks the free space before a group that writes about `bytes`:
    /// `Err` (and the store pauses writing) when less than the minimum would
    /// stay free, `Ok` (and writing resumes) otherwise.
    pub(super) fn check(&self, bytes: u64) -> Result<(), String> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.dir).ok();
        let needed = self
            .min_free_bytes
            .saturating_add(bytes.saturating_mul(derived::WRITE_AMPLIFICATION));
        let mut low = self.low.lock().unwrap_or_else(|p| p.into_inner());
        match free {
            Some(free) if free < needed => {
                let why = format!(
                    "the store's disk is nearly full: {} MiB free, and --min-free-disk-mib {} \
                     must stay free after this write: appends are refused until space is freed \
                     (acknowledged events are safe)",
                    free >> 20,
                    self.min_free_bytes >> 20
                );
                if low.is_none() {
                    tracing::error!(dir = %self.dir.display(), free_bytes = free, "{why}");
                    if let Some(o) = &self.observer {
                        o.0.write_failed("disk_low");
                    }
                }
                *low = Some(why.clone());
                Err(why)
            }
            _ => {
                if low.take().is_some() {
                    tracing::info!(dir = %self.dir.display(), free_bytes = ?free, "disk space is back above the minimum; appends resume");
                }
                Ok(())
            }
        }
    }
}
