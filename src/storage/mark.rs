//! The acknowledgement mark: a small file beside sled's, `<dir>/acknowledged`,
//! holding the newest sequence ever acknowledged. The publisher rewrites and
//! fsyncs it after a group's log fsync and before the group's
//! acknowledgements, so it is never behind what a feed was told.
//!
//! sled's own recovery drops everything after a damaged spot of its data
//! file, and an emptied or truncated data file opens as an empty store; the
//! mark is what such a log is checked against when the store opens
//! (`recovery`): a log that ends before the mark is refused, never served.
//!
//! Format: 24 bytes, rewritten in place: the magic `caravan\x01`, the
//! sequence (u64 BE), and the xxh3-64 of those 16 bytes (u64 BE). A damaged
//! mark fails its checksum and the store refuses to start, naming the file.
//!
//! Depends on std, `xxhash-rust` and `error`; not on sled.

use crate::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The mark's file name inside the store's directory.
pub(crate) const FILE: &str = "acknowledged";

const MAGIC: &[u8; 8] = b"caravan\x01";
const LEN: usize = 24;
const SEED: u64 = 0x6361_7261_766d_726b; // "caravmrk"

/// What the mark file says.
#[derive(Debug, PartialEq)]
pub(super) enum Found {
    /// There is no mark (a new store, or one written before marks).
    Missing,
    /// Events up to this sequence were acknowledged.
    At(u64),
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn encode(sequence: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&sequence.to_be_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&b[..16], SEED);
    b[16..].copy_from_slice(&sum.to_be_bytes());
    b
}

fn decode(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != LEN {
        return Err(format!("{} bytes instead of {LEN}", bytes.len()));
    }
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&bytes[..16], SEED);
    if bytes[..8] != MAGIC[..] || bytes[16..] != sum.to_be_bytes() {
        return Err("it fails its checksum".into());
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[8..16]);
    Ok(u64::from_be_bytes(seq))
}

/// Reads the mark of the store in `dir`; a damaged one is an error that
/// names the file.
pub(super) fn read(dir: &Path) -> Result<Found, Error> {
    let path = path(dir);
    let mut bytes = Vec::with_capacity(LEN);
    match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(unreadable(&path, &e.to_string())),
        Ok(f) => {
            // Read at most one byte more than a mark, to tell a longer file.
            f.take(LEN as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| unreadable(&path, &e.to_string()))?;
        }
    }
    decode(&bytes)
        .map(Found::At)
        .map_err(|why| unreadable(&path, &why))
}

fn unreadable(path: &Path, why: &str) -> Error {
    Error::Internal(format!(
        "storage: the acknowledgement mark {} is damaged ({why}): the store cannot \
         tell whether acknowledged events are missing, so it refuses to serve. If \
         the log is known to be complete, delete the file; it is rewritten from the \
         log at the next start",
        path.display()
    ))
}

/// The open mark file of a store being served.
pub(super) struct Mark {
    file: File,
    path: PathBuf,
    at: u64,
}

impl Mark {
    /// Opens (or creates) the mark of the store in `dir` and records
    /// `sequence` in it, durably (the file and its directory entry).
    pub(super) fn open(dir: &Path, sequence: u64) -> Result<Mark, Error> {
        let path = path(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Internal(format!("storage: open {}: {e}", path.display())))?;
        let mut mark = Mark {
            file,
            path,
            at: u64::MAX,
        };
        mark.advance(sequence)
            .and_then(|()| mark.file.set_len(LEN as u64))
            .and_then(|()| mark.file.sync_all())
            .map_err(|e| Error::Internal(format!("storage: write {}: {e}", mark.path.display())))?;
        super::directory::sync_dir(dir)?;
        Ok(mark)
    }

    /// Records that events up to `sequence` are acknowledged (from now on),
    /// and waits until that is on disk.
    pub(super) fn advance(&mut self, sequence: u64) -> io::Result<()> {
        if sequence == self.at {
            return Ok(());
        }
        // One 24-byte write at offset 0: within one disk sector.
        self.file.write_all_at(&encode(sequence), 0)?;
        self.file.sync_data()?;
        self.at = sequence;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Missing);
        let mut mark = Mark::open(dir.path(), 7).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::At(7));
        mark.advance(1 << 40).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::At(1 << 40));
        let good = std::fs::read(dir.path().join(FILE)).unwrap();
        for byte in 0..LEN {
            let mut bad = good.clone();
            bad[byte] ^= 0x10;
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            assert!(read(dir.path()).is_err(), "byte {byte}");
        }
        for len in [0, 1, 16, 23, 25] {
            let mut bad = good.clone();
            bad.resize(len, 0);
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("acknowledgement mark"), "{len}: {err}");
        }
    }
}
