//! Opening sled's files: waiting for the lock a closed instance of the same
//! store still holds for a moment ([`open_sled`]), and turning a panic
//! inside sled (some damaged data files cause one) into one error naming
//! the store ([`sled_failures_as_errors`]).
//!
//! Depends on sled and `error`.

use crate::error::Error;
use std::io;
use std::path::Path;
use std::sync::Mutex;

/// How long opening waits for sled's lock on the data file. sled releases it
/// only when the last of its background threads of a closed instance lets
/// go, a few milliseconds after the close on a loaded machine; another
/// process that holds it is still refused, after this long.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled in `dir`, waiting up to [`LOCK_WAIT`] for its file lock.
pub(super) fn open_sled(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    let give_up = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                if std::time::Instant::now() >= give_up {
                    return Err(sled::Error::Io(e));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Why sled could not open the store in `dir`, in one line that says what
/// to do: free space for a full disk, restore for a damaged file.
pub(super) fn refused(dir: &Path, e: &sled::Error) -> Error {
    let full = matches!(e, sled::Error::Io(io) if io.kind() == io::ErrorKind::StorageFull
        || io.raw_os_error() == Some(28));
    if full {
        Error::Internal(format!(
            "storage: the disk of the store in {} is full ({e}); free space on it and start \
             again (acknowledged events are safe)",
            dir.display()
        ))
    } else {
        Error::Internal(format!(
            "storage: sled cannot open the store in {}: {e}. It is not served; if its data \
             file is damaged, restore the store from a backup",
            dir.display()
        ))
    }
}

/// Threads inside [`sled_failures_as_errors`]: a panic there becomes an
/// error with a message, so its report is not printed. A list, not one hook
/// per call, so that stores opened at once on several threads (tests) do not
/// undo each other's hooks.
static QUIET_THREADS: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());
static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

/// Runs `open`, turning a panic inside sled (which some damaged data files
/// cause, e.g. "tried to serialize Uninitialized") into one error naming the
/// store, without the panic's own report.
pub(super) fn sled_failures_as_errors<T>(
    dir: &Path,
    open: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let me = std::thread::current().id();
            let quiet = QUIET_THREADS.lock().is_ok_and(|q| q.contains(&me));
            if !quiet {
                previous(info);
            }
        }));
    });
    let me = std::thread::current().id();
    if let Ok(mut q) = QUIET_THREADS.lock() {
        q.push(me);
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    if let Ok(mut q) = QUIET_THREADS.lock() {
        q.retain(|t| *t != me);
    }
    result.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Error::Internal(format!(
            "storage: the store in {} is damaged: sled failed while reading it ({why}); \
             it is not served. Restore the store from a backup",
            dir.display()
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_opening_is_one_error_naming_the_store() {
        let dir = Path::new("/some/store");
        let err = sled_failures_as_errors::<()>(dir, || panic!("tried to serialize Uninitialized"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/some/store"), "{err}");
        assert!(err.contains("tried to serialize Uninitialized"), "{err}");
        assert!(sled_failures_as_errors(dir, || Ok(7)).unwrap() == 7);
        // Other threads' panics are still reported and caught as usual.
        let other = std::thread::spawn(|| panic!("elsewhere")).join();
        assert!(other.is_err());
    }
}
