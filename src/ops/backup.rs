//! The backup directory: what `caravan backup` writes and `caravan restore`
//! and `caravan verify` read.
//!
//! ```text
//! DIR/events-<first>-<last>.log   segments: records [u32 BE length][StoredEvent]
//! DIR/manifest.json               format, sequence range, event count, per-file
//!                                 SHA-256, and (incremental) the base backup
//! DIR/manifest.sha256             SHA-256 of manifest.json
//! ```
//!
//! The manifest is written last (a temporary file, fsynced, renamed, the
//! directory fsynced): a directory without one is an unfinished backup and
//! is refused. An incremental backup (`--since BASE`) holds only the events
//! after BASE's last sequence and names BASE (its path and its manifest's
//! SHA-256); restore and verify follow the chain to a full backup and check
//! every manifest and file on the way before anything is written.
//!
//! Depends on serde_json, sha2 and the generated `StoredEvent` (to read
//! each record's sequence).

use crate::error::Error;
use crate::proto::v1 as pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The manifest's name.
pub const MANIFEST: &str = "manifest.json";
/// The file holding the manifest's SHA-256.
pub const MANIFEST_SUM: &str = "manifest.sha256";
/// What `format` says in every manifest.
pub const FORMAT: &str = "caravan-backup";
/// The version of this layout.
pub const VERSION: u32 = 1;
/// Events per segment file.
pub const SEGMENT_EVENTS: u64 = 1_000_000;
/// The largest record a segment may hold (a log entry is at most 4 KiB).
const MAX_RECORD: usize = 4096;

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One segment file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub name: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub events: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The backup an incremental one continues.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Relative to the incremental backup's own directory when both are on
    /// one tree (so the chain can be moved or copied whole), else absolute.
    pub dir: PathBuf,
    pub last_sequence: u64,
    pub manifest_sha256: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The store format of the server it was taken from.
    pub store_format: u32,
    /// Unix seconds when it was finished.
    pub created_at: u64,
    /// The server it was taken from (its URL as given).
    pub server: String,
    pub base: Option<Base>,
    /// The events held here (first > last: none).
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub events: u64,
    pub files: Vec<Segment>,
}

/// Writes segments as events arrive, then the manifest.
pub struct Writer {
    dir: PathBuf,
    next: u64,
    first: u64,
    files: Vec<Segment>,
    open: Option<Open>,
}

struct Open {
    file: BufWriter<File>,
    path: PathBuf,
    hash: Sha256,
    first: u64,
    events: u64,
    bytes: u64,
}

impl Writer {
    /// A new backup in `dir` (created; it must be missing or empty) of the
    /// events after `after`.
    pub fn create(dir: &Path, after: u64) -> Result<Writer, Error> {
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| io("read", dir, e))?;
            if entries.next().is_some() {
                return Err(Error::Internal(format!(
                    "{} is not empty; a backup goes into a new directory",
                    dir.display()
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            next: after + 1,
            first: after + 1,
            files: Vec::new(),
            open: None,
        })
    }

    /// Appends the events of one backup message, which must start at the
    /// next sequence.
    pub fn push(&mut self, first: u64, events: &[Vec<u8>]) -> Result<(), Error> {
        if first != self.next {
            return Err(Error::Internal(format!(
                "the server sent events from {first}; {} was expected",
                self.next
            )));
        }
        for bytes in events {
            if bytes.len() > MAX_RECORD {
                return Err(Error::Internal(format!(
                    "event {} is {} bytes, more than a log entry holds",
                    self.next,
                    bytes.len()
                )));
            }
            if self
                .open
                .as_ref()
                .is_some_and(|o| o.events >= SEGMENT_EVENTS)
            {
                self.finish_segment()?;
            }
            if self.open.is_none() {
                let path = self.dir.join(format!("events-{:012}.partial", self.next));
                let file = File::create(&path).map_err(|e| io("create", &path, e))?;
                self.open = Some(Open {
                    file: BufWriter::with_capacity(1 << 20, file),
                    path,
                    hash: Sha256::new(),
                    first: self.next,
                    events: 0,
                    bytes: 0,
                });
            }
            if let Some(o) = self.open.as_mut() {
                let len = (bytes.len() as u32).to_be_bytes();
                o.hash.update(len);
                o.hash.update(bytes);
                o.file
                    .write_all(&len)
                    .and_then(|()| o.file.write_all(bytes))
                    .map_err(|e| io("write", &o.path, e))?;
                o.events += 1;
                o.bytes += 4 + bytes.len() as u64;
            }
            self.next += 1;
        }
        Ok(())
    }

    fn finish_segment(&mut self) -> Result<(), Error> {
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        let last = o.first + o.events - 1;
        let name = format!("events-{:012}-{:012}.log", o.first, last);
        let file = o
            .file
            .into_inner()
            .map_err(|e| io("write", &o.path, e.error()))?;
        file.sync_all().map_err(|e| io("fsync", &o.path, e))?;
        let path = self.dir.join(&name);
        std::fs::rename(&o.path, &path).map_err(|e| io("rename", &o.path, e))?;
        self.files.push(Segment {
            name,
            first_sequence: o.first,
            last_sequence: last,
            events: o.events,
            bytes: o.bytes,
            sha256: hex(&o.hash.finalize()),
        });
        Ok(())
    }

    /// Closes the last segment and writes the manifest: the backup is
    /// complete once this returns.
    pub fn finish(
        mut self,
        snapshot: u64,
        store_format: u32,
        server: &str,
        base: Option<Base>,
    ) -> Result<Manifest, Error> {
        if self.next != snapshot + 1 {
            return Err(Error::Internal(format!(
                "the stream ended at {}, before the snapshot {snapshot}",
                self.next - 1
            )));
        }
        self.finish_segment()?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            store_format,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            server: server.into(),
            base,
            first_sequence: self.first,
            last_sequence: snapshot,
            events: snapshot + 1 - self.first,
            files: self.files,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("manifest: {e}")))?;
        let sum = hex(&Sha256::digest(&text));
        for (name, bytes) in [
            (MANIFEST_SUM, format!("{sum}\n").into_bytes()),
            (MANIFEST, text),
        ] {
            let tmp = self.dir.join(format!("{name}.tmp"));
            let mut f = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| io("write", &tmp, e))?;
            std::fs::rename(&tmp, self.dir.join(name)).map_err(|e| io("rename", &tmp, e))?;
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync", &self.dir, e))?;
        Ok(manifest)
    }
}

/// The path of `to` as seen from `from` (both absolute, canonical):
/// `../2026-12-05` for a sibling.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

/// A backup's manifest, checked against its checksum; with the checksum.
pub fn read_manifest(dir: &Path) -> Result<(Manifest, String), Error> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        io(
            "read",
            &path,
            format!("{e} (a backup directory without a manifest is unfinished)"),
        )
    })?;
    let sum_path = dir.join(MANIFEST_SUM);
    let said = std::fs::read_to_string(&sum_path).map_err(|e| io("read", &sum_path, e))?;
    let sum = hex(&Sha256::digest(&text));
    if said.trim() != sum {
        return Err(Error::Internal(format!(
            "{} does not match its checksum in {MANIFEST_SUM}: the backup is damaged",
            path.display()
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| io("parse", &path, e))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(Error::Internal(format!(
            "{} is a {} version {} manifest; this build reads {FORMAT} version {VERSION}",
            path.display(),
            manifest.format,
            manifest.version
        )));
    }
    Ok((manifest, sum))
}

/// The chain of backups that ends in `dir`, from the full backup to `dir`,
/// each manifest checked and each link checked against the next.
pub fn chain(dir: &Path) -> Result<Vec<(PathBuf, Manifest)>, Error> {
    let mut out = Vec::new();
    let mut at = dir.to_path_buf();
    loop {
        let (manifest, _) = read_manifest(&at)?;
        let base = manifest.base.clone();
        out.push((at.clone(), manifest));
        let Some(base) = base else { break };
        if out.len() > 10_000 {
            return Err(Error::Internal(
                "a chain of more than 10,000 backups".into(),
            ));
        }
        // A relative path is relative to the backup that names it.
        let base_dir = at.join(&base.dir);
        let (base_manifest, sum) = read_manifest(&base_dir)?;
        if sum != base.manifest_sha256 || base_manifest.last_sequence != base.last_sequence {
            return Err(Error::Internal(format!(
                "{} is not the backup {} was taken on top of (its manifest changed)",
                base_dir.display(),
                at.display()
            )));
        }
        at = base_dir;
    }
    out.reverse();
    Ok(out)
}

/// What checking a backup found.
pub struct Checked {
    pub last_sequence: u64,
    pub events: u64,
    pub files: usize,
}

/// Checks a backup chain completely: every manifest, every file's size and
/// SHA-256, every record's sequence (consecutive from 1).
pub fn verify(dir: &Path) -> Result<Checked, Error> {
    let chain = chain(dir)?;
    let mut expected = 1u64;
    let mut files = 0;
    for (at, manifest) in &chain {
        if manifest.first_sequence != expected {
            return Err(Error::Internal(format!(
                "{} starts at {}, {expected} was expected",
                at.display(),
                manifest.first_sequence
            )));
        }
        let mut next = manifest.first_sequence;
        for seg in &manifest.files {
            files += 1;
            if seg.first_sequence != next {
                return Err(Error::Internal(format!(
                    "{}: {} starts at {}, {next} was expected",
                    at.display(),
                    seg.name,
                    seg.first_sequence
                )));
            }
            let mut n = 0u64;
            read_segment(at, seg, &mut |bytes| {
                let seq = pb::StoredEvent::decode(bytes)
                    .map_err(|e| {
                        Error::Internal(format!("{}: an undecodable event: {e}", seg.name))
                    })?
                    .sequence;
                if seq != next + n {
                    return Err(Error::Internal(format!(
                        "{}: event {} says it is {seq}",
                        seg.name,
                        next + n
                    )));
                }
                n += 1;
                Ok(())
            })?;
            next += n;
        }
        if next != manifest.last_sequence + 1 || next - manifest.first_sequence != manifest.events {
            return Err(Error::Internal(format!(
                "{}: the files hold {}..{}, the manifest says {}..{} ({} events)",
                at.display(),
                manifest.first_sequence,
                next - 1,
                manifest.first_sequence,
                manifest.last_sequence,
                manifest.events
            )));
        }
        expected = next;
    }
    Ok(Checked {
        last_sequence: expected - 1,
        events: expected - 1,
        files,
    })
}

/// Reads one segment, checking its size and checksum as it goes; `each`
/// gets every record. A damaged file fails before its end is reached only
/// on a malformed record; its checksum is compared at the end, so callers
/// that write what they read verify the whole chain first ([`verify`]).
pub fn read_segment(
    dir: &Path,
    seg: &Segment,
    each: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    if seg.name.contains('/') || seg.name.contains("..") {
        return Err(Error::Internal(format!("a segment named {:?}", seg.name)));
    }
    let path = dir.join(&seg.name);
    let file = File::open(&path).map_err(|e| io("open", &path, e))?;
    let size = file.metadata().map_err(|e| io("stat", &path, e))?.len();
    if size != seg.bytes {
        return Err(Error::Internal(format!(
            "{} is {size} bytes, the manifest says {}: the backup is damaged",
            path.display(),
            seg.bytes
        )));
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; MAX_RECORD];
    let mut left = seg.bytes;
    let mut records = 0u64;
    while left > 0 {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|e| io("read", &path, e))?;
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_RECORD || (n as u64 + 4) > left {
            return Err(Error::Internal(format!(
                "{}: a record of {n} bytes at offset {}: the backup is damaged",
                path.display(),
                seg.bytes - left
            )));
        }
        r.read_exact(&mut buf[..n])
            .map_err(|e| io("read", &path, e))?;
        hash.update(len);
        hash.update(&buf[..n]);
        each(&buf[..n])?;
        left -= 4 + n as u64;
        records += 1;
    }
    if hex(&hash.finalize()) != seg.sha256 || records != seg.events {
        return Err(Error::Internal(format!(
            "{} does not match its SHA-256 in the manifest: the backup is damaged",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_named_relative_to_the_backup_that_continues_it() {
        let rel = |a: &str, b: &str| relative(Path::new(a), Path::new(b));
        assert_eq!(
            rel("/b/2026-12-06", "/b/2026-12-05"),
            PathBuf::from("../2026-12-05")
        );
        assert_eq!(rel("/b/x/inc", "/b/full"), PathBuf::from("../../full"));
        assert_eq!(rel("/b/inc", "/b/inc/nested"), PathBuf::from("nested"));
        assert_eq!(
            Path::new("/b/2026-12-06").join(rel("/b/2026-12-06", "/c/full")),
            PathBuf::from("/b/2026-12-06/../../c/full")
        );
    }
}
