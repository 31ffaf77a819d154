//! The store's directory, before and after sled opens it: what a power cut
//! can leave behind that sled 0.34.7 does not recover from by itself, and
//! the directory fsyncs that sled never does.
//!
//! - A `snap.<lsn>.generating` file is a snapshot sled had not finished (it
//!   renames a finished one to `snap.<lsn>`); an empty one left by a cut is
//!   taken by sled as the newest snapshot and refused ("empty/corrupt
//!   snapshot file found"), although the data is intact. It is removed; sled
//!   rebuilds its snapshot from its log.
//! - `conf` is written by sled in two steps (text, then its CRC) and never
//!   fsynced: a torn one refuses startup although the data is intact. A
//!   `conf` whose CRC does not match is replaced by the one caravan's
//!   settings give (the only one this build writes).
//! - The directory and its parent are fsynced when the store is created and
//!   after sled has opened it, so that the entries of `db`, `conf` and the
//!   mark survive a cut on a file system that needs that (POSIX).
//!
//! Every repair is logged. Depends on std only.

use crate::error::Error;
use std::fs;
use std::path::Path;

/// The `conf` sled 0.34.7 writes for caravan's settings (segment size,
/// no compression, format 0.34), with its CRC-32 (little-endian).
const CONF: &[u8] =
    b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n\x76\x19\x51\xc1";

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("storage: {what} {}: {e}", path.display()))
}

/// Fsyncs a directory, so that the entries created in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", dir, e))
}

/// Before sled opens `dir`: creates it if needed (durably) and repairs what
/// a power cut leaves torn. Returns the repairs made, for the startup log.
pub(super) fn prepare(dir: &Path) -> Result<Vec<String>, Error> {
    let mut repairs = Vec::new();
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        sync_parent(dir)?;
    }
    let entries = fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
            repairs.push(format!(
                "removed {name}, a snapshot sled had not finished writing"
            ));
        }
    }
    let conf = dir.join("conf");
    match fs::read(&conf) {
        Ok(found) if found != CONF && !crc_matches(&found) => {
            let temporary = dir.join("conf.caravan-repair");
            fs::write(&temporary, CONF)
                .and_then(|()| fs::File::open(&temporary)?.sync_all())
                .and_then(|()| fs::rename(&temporary, &conf))
                .map_err(|e| io_error("rewrite", &conf, e))?;
            repairs.push(format!(
                "rewrote conf ({} bytes that fail their CRC: a torn write)",
                found.len()
            ));
        }
        _ => {}
    }
    if !repairs.is_empty() {
        sync_dir(dir)?;
    }
    Ok(repairs)
}

/// After sled has opened `dir` (and created its files): fsyncs the
/// directory and its parent.
pub(super) fn opened(dir: &Path) -> Result<(), Error> {
    sync_dir(dir)?;
    sync_parent(dir)
}

fn sync_parent(dir: &Path) -> Result<(), Error> {
    match dir.canonicalize().ok().as_deref().and_then(Path::parent) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Whether a `conf` ends with the CRC-32 of the rest, as sled writes it.
fn crc_matches(conf: &[u8]) -> bool {
    let Some(at) = conf.len().checked_sub(4) else {
        return false;
    };
    let (text, crc) = conf.split_at(at);
    crc32(text).to_le_bytes() == crc
}

/// CRC-32 (IEEE), as sled's `crc32fast` computes it; a `conf` is tens of
/// bytes, so bit by bit is enough.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Bytes of the files under `dir` (sled's data file, its blobs, the mark),
/// walked when asked (a handful of files); unreadable entries count 0.
pub(super) fn size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_caravan_expects_is_the_one_sled_writes() {
        assert!(crc_matches(CONF));
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s");
        drop(sled::Config::new().path(&store).open().unwrap());
        assert_eq!(fs::read(store.join("conf")).unwrap(), CONF);
    }

    #[test]
    fn a_torn_conf_and_an_unfinished_snapshot_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        for torn in [&CONF[..20], &CONF[..CONF.len() - 4], &[0u8; 62][..]] {
            fs::write(dir.path().join("conf"), torn).unwrap();
            fs::write(dir.path().join("snap.0000000000000AB0.generating"), b"").unwrap();
            let repairs = prepare(dir.path()).unwrap();
            assert_eq!(repairs.len(), 2, "{repairs:?}");
            assert_eq!(fs::read(dir.path().join("conf")).unwrap(), CONF);
            assert!(!dir.path().join("snap.0000000000000AB0.generating").exists());
        }
        // An intact conf, even of other settings, is sled's to judge.
        let other = b"segment_size: 1048576\nuse_compression: false\nversion: 0.34\n";
        let mut conf = other.to_vec();
        conf.extend_from_slice(&crc32(other).to_le_bytes());
        fs::write(dir.path().join("conf"), &conf).unwrap();
        assert!(prepare(dir.path()).unwrap().is_empty());
        assert_eq!(fs::read(dir.path().join("conf")).unwrap(), conf);
    }
}
