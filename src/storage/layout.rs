//! The byte layout of the store: tree name, key prefixes, the format version,
//! and the encoding of log chunks and fingerprint chunks. Documented byte by
//! byte in docs/ARCHITECTURE.md; a change here needs a new format version.
//! Depends on nothing but `xxhash-rust`. The encoding of one event inside a
//! chunk is `event_codec`'s.

/// The one sled tree that holds everything, so that one `apply_batch` writes
/// the log and its derived keys atomically.
pub const TREE: &str = "caravan";

/// Key of the format version (a big-endian u32), kept in sled's default tree,
/// not in [`TREE`], so that it is read before anything of the data.
pub const FORMAT_KEY: &[u8] = b"\x00format";
/// The format this build writes. Version 2 added the checksums of log and
/// fingerprint chunks; version 3 made event ids unique per feed (a
/// fingerprint covers the feed and the id) and added the pair-feed keys. An
/// older store is upgraded in place when it opens (`recovery::upgrade`).
pub const FORMAT_VERSION: u32 = 3;
/// The older formats this build upgrades: 2 (fingerprints of the id alone,
/// no pair-feed keys) and 1 (no checksums either).
pub const FORMAT_VERSION_2: u32 = 2;
pub const FORMAT_VERSION_1: u32 = 1;

/// `E` + first sequence (u64 BE) → a log chunk of consecutive events.
pub const LOG_PREFIX: u8 = b'E';
/// `I` + first sequence (u64 BE) → the event-id fingerprints of consecutive events.
pub const IDS_PREFIX: u8 = b'I';
/// `A` + agreement id (UTF-8) → sequence (u64 BE) of the latest event about it.
pub const AGREEMENT_PREFIX: u8 = b'A';
/// `O` + reporter, partner (alpha-2) + commodity level (u8: 0 all, 2/4/6
/// HS digits, 7 sector) + feed name (UTF-8) → the sequence (u64 BE, sealed)
/// of the feed's first trade record of that pair at that level: which feeds
/// have written figures there, so that a feed's figures where no other feed
/// writes need no look-up to be known as its own.
pub const PAIR_FEED_PREFIX: u8 = b'O';

/// `C` → the sequence the views' newest checkpoint covers (u64 BE), then
/// its checksum.
pub const CHECKPOINT_KEY: &[u8] = b"C";
/// `G` + sequence (u64 BE) → nothing: an agreement event that a checkpoint
/// covers, so that a restart folds the agreements without reading the log.
pub const CHECKPOINTED_AGREEMENT_PREFIX: u8 = b'G';
/// Prefixes of the views' own keys (their bytes are the views' `page.rs`):
/// `P` figure pages, `R` rollup groups, `D` runs (a checkpoint's revisions
/// of one pair, not yet merged into its pages).
pub const VIEW_PREFIXES: [u8; 3] = [b'P', b'R', b'D'];

/// The largest value written to sled. sled 0.34.7 moves large values into
/// blob files it never fsyncs; values of a few KiB stay in its main file.
pub const MAX_VALUE_BYTES: usize = 4096;

/// First byte of a log chunk of format 2: its last 8 bytes are a checksum.
const CHUNK_FORMAT: u8 = 2;
/// First byte of a compressed log chunk: `[3][count u16 BE][length u16 BE]`,
/// the LZ4 block of the format-2 chunk (without its checksum) of that
/// length, then the checksum of all of that. Written since format 2 by
/// every chunk that compresses; readers take both.
const CHUNK_FORMAT_LZ4: u8 = 3;
/// The compressed chunk's header.
const LZ4_HEADER: usize = 5;
/// First byte of a log chunk written by format 1 (no checksum); read only
/// while a store is upgraded.
const CHUNK_FORMAT_1: u8 = 1;
const CHUNK_HEADER: usize = 3;
/// The checksum that ends every chunk (xxh3-64, big-endian).
const CHECKSUM: usize = 8;
/// Fingerprints per fingerprint chunk (8 bytes each, and the checksum: fits
/// MAX_VALUE_BYTES).
pub const FINGERPRINTS_PER_CHUNK: usize = MAX_VALUE_BYTES / 8 - 1;

/// Seed of the checksum of every checkpoint value (pages, rollups, the
/// checkpoint key). Part of the format: never change it.
const DERIVED_CHECKSUM_SEED: u64 = 0x6361_7261_7676_6965; // "caravvie"

/// A checkpoint value with its checksum appended.
pub fn seal(mut payload: Vec<u8>) -> Vec<u8> {
    let sum = checksum(DERIVED_CHECKSUM_SEED, &payload);
    payload.extend_from_slice(&sum);
    payload
}

/// The payload of a value written by [`seal`], checked.
pub fn unseal<'a>(value: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    verified(DERIVED_CHECKSUM_SEED, value, what)
}

/// Seeds of the chunk checksums. Part of the format: never change them.
const LOG_CHECKSUM_SEED: u64 = 0x6361_7261_766c_6f67; // "caravlog"
const IDS_CHECKSUM_SEED: u64 = 0x6361_7261_7669_6473; // "caravids"

fn checksum(seed: u64, bytes: &[u8]) -> [u8; CHECKSUM] {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed).to_be_bytes()
}

/// `value` without its checksum, if the checksum matches.
fn verified<'a>(seed: u64, value: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let Some(at) = value.len().checked_sub(CHECKSUM) else {
        return Err(format!(
            "{what} of {} bytes, too short for its checksum",
            value.len()
        ));
    };
    let (body, sum) = value.split_at(at);
    if sum != checksum(seed, body) {
        return Err(format!("{what} fails its checksum"));
    }
    Ok(body)
}

/// Seed of the event-id fingerprint. Part of the format: never change it.
const FINGERPRINT_SEED: u64 = 0x6361_7261_7661_6e31; // "caravan1"

/// The 64-bit fingerprint of an event id of a feed (ids are unique per
/// feed): of the feed's name, a zero byte (which no feed name holds) and the
/// id. Format 2 took the id alone.
pub fn fingerprint(feed: &str, event_id: &str) -> u64 {
    // Feed names are at most 64 bytes and ids 128: one buffer on the stack.
    let mut buf = [0u8; 256];
    let len = feed.len() + 1 + event_id.len();
    match buf.get_mut(..len) {
        Some(b) => {
            b[..feed.len()].copy_from_slice(feed.as_bytes());
            b[feed.len() + 1..].copy_from_slice(event_id.as_bytes());
            xxhash_rust::xxh3::xxh3_64_with_seed(b, FINGERPRINT_SEED)
        }
        None => {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(feed.as_bytes());
            v.push(0);
            v.extend_from_slice(event_id.as_bytes());
            xxhash_rust::xxh3::xxh3_64_with_seed(&v, FINGERPRINT_SEED)
        }
    }
}

/// An event's identity in full (feed, a zero byte, id): how the id index
/// keeps the rare id whose fingerprint another already holds.
pub fn id_key(feed: &str, event_id: &str) -> String {
    let mut k = String::with_capacity(feed.len() + 1 + event_id.len());
    k.push_str(feed);
    k.push('\0');
    k.push_str(event_id);
    k
}

/// `O` + reporter + partner (alpha-2) + commodity level (u8) + feed.
pub fn pair_feed_key(reporter: &str, partner: &str, level: u8, feed: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + feed.len());
    k.push(PAIR_FEED_PREFIX);
    k.extend_from_slice(reporter.as_bytes());
    k.extend_from_slice(partner.as_bytes());
    k.push(level);
    k.extend_from_slice(feed.as_bytes());
    k
}

/// The (reporter, partner, level, feed) of an `O` key.
pub fn parse_pair_feed_key(key: &[u8]) -> Result<(&str, &str, u8, &str), String> {
    let bad = || format!("malformed pair-feed key {key:?}");
    let rest = key.get(1..).ok_or_else(bad)?;
    if rest.len() < 6 {
        return Err(bad());
    }
    let (reporter, partner, level, feed) = (&rest[..2], &rest[2..4], rest[4], &rest[5..]);
    match (
        std::str::from_utf8(reporter),
        std::str::from_utf8(partner),
        std::str::from_utf8(feed),
    ) {
        (Ok(r), Ok(p), Ok(f)) => Ok((r, p, level, f)),
        _ => Err(bad()),
    }
}

/// `prefix` + big-endian sequence.
pub fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence of an `E`/`I` key.
pub fn parse_seq_key(key: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = key
        .get(1..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("malformed sequence key {key:?}"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// `A` + agreement id.
pub fn agreement_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(AGREEMENT_PREFIX);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Builds log chunks: `[format u8 = 2][count u16 BE]`, then `count` times
/// `[len u16 BE][StoredEvent protobuf]`, then the xxh3-64 checksum of all of
/// that (u64 BE); at most [`MAX_VALUE_BYTES`] in all.
pub struct ChunkBuilder {
    buf: Vec<u8>,
    count: u16,
}

impl ChunkBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(MAX_VALUE_BYTES);
        buf.extend_from_slice(&[CHUNK_FORMAT, 0, 0]);
        ChunkBuilder { buf, count: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many entries it holds.
    pub fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// Largest event encoding a chunk can hold.
    pub const MAX_ENTRY: usize = MAX_VALUE_BYTES - CHUNK_HEADER - 2 - CHECKSUM;

    /// Appends an entry written by `write` (which must add ≤ MAX_ENTRY bytes).
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        write(&mut self.buf);
        let len = self.buf.len() - at - 2;
        self.buf[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        self.count += 1;
        len
    }

    /// Removes the last entry (used when it turns out not to fit).
    pub fn truncate_to(&mut self, len_before: usize) {
        self.buf.truncate(len_before - CHECKSUM);
        self.count -= 1;
    }

    /// The chunk's length once finished, checksum included.
    pub fn len(&self) -> usize {
        self.buf.len() + CHECKSUM
    }

    /// The chunk as stored: compressed when that makes it smaller (events
    /// repeat their feed, countries, codes and sources: world-shaped data
    /// compresses about 3:1), else as it is.
    pub fn finish(mut self) -> Vec<u8> {
        let c = self.count.to_be_bytes();
        self.buf[1..3].copy_from_slice(&c);
        let packed = lz4_flex::block::compress(&self.buf);
        if LZ4_HEADER + packed.len() < self.buf.len() {
            let mut out = Vec::with_capacity(LZ4_HEADER + packed.len() + CHECKSUM);
            out.push(CHUNK_FORMAT_LZ4);
            out.extend_from_slice(&c);
            // At most MAX_VALUE_BYTES: fits.
            out.extend_from_slice(&(self.buf.len() as u16).to_be_bytes());
            out.extend_from_slice(&packed);
            let sum = checksum(LOG_CHECKSUM_SEED, &out);
            out.extend_from_slice(&sum);
            return out;
        }
        let sum = checksum(LOG_CHECKSUM_SEED, &self.buf);
        self.buf.extend_from_slice(&sum);
        self.buf
    }
}

/// A log chunk's header and entries, its checksum verified (decompressed
/// when it was stored compressed).
pub struct ChunkBody<'a>(std::borrow::Cow<'a, [u8]>);

impl ChunkBody<'_> {
    /// The entries, in order.
    pub fn entries(&self) -> Result<Vec<&[u8]>, String> {
        entries_of(&self.0)
    }
}

/// Opens a log chunk: its checksum verified, decompressed if need be.
pub fn open_chunk(value: &[u8]) -> Result<ChunkBody<'_>, String> {
    match value.first() {
        Some(&CHUNK_FORMAT) => Ok(ChunkBody(std::borrow::Cow::Borrowed(verified(
            LOG_CHECKSUM_SEED,
            value,
            "log chunk",
        )?))),
        Some(&CHUNK_FORMAT_LZ4) => {
            let body = verified(LOG_CHECKSUM_SEED, value, "log chunk")?;
            let header = body
                .get(..LZ4_HEADER)
                .ok_or("truncated compressed log chunk")?;
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if !(CHUNK_HEADER..=MAX_VALUE_BYTES).contains(&len) {
                return Err(format!("compressed log chunk of {len} bytes"));
            }
            let mut raw = vec![0u8; len];
            let n = lz4_flex::block::decompress_into(&body[LZ4_HEADER..], &mut raw)
                .map_err(|e| format!("compressed log chunk does not decompress: {e}"))?;
            if n != len || raw[0] != CHUNK_FORMAT || raw[1..3] != header[1..3] {
                return Err("compressed log chunk that does not match its header".into());
            }
            Ok(ChunkBody(std::borrow::Cow::Owned(raw)))
        }
        _ => Err("log chunk with an unknown header".into()),
    }
}

/// How many events a log chunk holds, its checksum verified but nothing
/// decoded or decompressed.
pub fn chunk_count(value: &[u8]) -> Result<u64, String> {
    let body = match value.first() {
        Some(&CHUNK_FORMAT) | Some(&CHUNK_FORMAT_LZ4) => {
            verified(LOG_CHECKSUM_SEED, value, "log chunk")?
        }
        _ => return Err("log chunk with an unknown header".into()),
    };
    let header = body.get(..CHUNK_HEADER).ok_or("truncated log chunk")?;
    Ok(u64::from(u16::from_be_bytes([header[1], header[2]])))
}

/// The entries of a log chunk written by format 1 (no checksum), read only
/// to upgrade its store; `None` for a chunk of another format.
pub fn format_1_chunk_entries(value: &[u8]) -> Option<Result<Vec<&[u8]>, String>> {
    (value.first() == Some(&CHUNK_FORMAT_1)).then(|| entries_of(value))
}

fn entries_of(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    if body.len() < CHUNK_HEADER {
        return Err("truncated log chunk".into());
    }
    let count = u16::from_be_bytes([body[1], body[2]]) as usize;
    let mut entries = Vec::with_capacity(count);
    let mut at = CHUNK_HEADER;
    for _ in 0..count {
        let len_bytes = body.get(at..at + 2).ok_or("truncated log chunk")?;
        let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let entry = body
            .get(at + 2..at + 2 + len)
            .ok_or("truncated log chunk")?;
        entries.push(entry);
        at += 2 + len;
    }
    if at != body.len() {
        return Err("log chunk with trailing bytes".into());
    }
    Ok(entries)
}

/// A fingerprint chunk: fingerprints as u64 BE, one per consecutive
/// sequence, then their xxh3-64 checksum (u64 BE).
pub fn encode_fingerprints(fps: &[u64]) -> Vec<u8> {
    let mut v: Vec<u8> = fps.iter().flat_map(|f| f.to_be_bytes()).collect();
    let sum = checksum(IDS_CHECKSUM_SEED, &v);
    v.extend_from_slice(&sum);
    v
}

/// The fingerprints of a chunk, its checksum verified.
pub fn decode_fingerprints(value: &[u8]) -> Result<impl Iterator<Item = u64> + '_, String> {
    let body = verified(IDS_CHECKSUM_SEED, value, "fingerprint chunk")?;
    if !body.len().is_multiple_of(8) {
        return Err("fingerprint chunk of a length not divisible by 8".into());
    }
    Ok(body
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_stay_within_the_value_limit() {
        let mut b = ChunkBuilder::new();
        let mut n = 0;
        loop {
            let before = b.len();
            b.push_with(|buf| buf.extend_from_slice(&[n as u8; 100]));
            if b.len() > MAX_VALUE_BYTES {
                b.truncate_to(before);
                break;
            }
            n += 1;
        }
        let v = b.finish();
        assert!(v.len() <= MAX_VALUE_BYTES);
        let chunk = open_chunk(&v).unwrap();
        let entries = chunk.entries().unwrap();
        assert_eq!(entries.len(), n);
        assert_eq!(chunk_count(&v), Ok(n as u64));
        assert_eq!(entries[3], &[3u8; 100][..]);
        assert!(open_chunk(&v[..v.len() - 1]).is_err());
    }

    #[test]
    fn chunks_that_compress_are_stored_compressed_others_as_they_are() {
        let build = |entry: &dyn Fn(u64) -> Vec<u8>| {
            let mut b = ChunkBuilder::new();
            for i in 0..30 {
                b.push_with(|buf| buf.extend_from_slice(&entry(i)));
            }
            b.finish()
        };
        let repetitive = |i: u64| format!("world-1-{i} CN KZ 271111 caravan gen").into_bytes();
        let random = |i: u64| {
            xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
                .to_le_bytes()
                .to_vec()
        };
        for (entry, compressed) in [
            (&repetitive as &dyn Fn(u64) -> Vec<u8>, true),
            (&random, false),
        ] {
            let v = build(entry);
            assert_eq!(v[0] == CHUNK_FORMAT_LZ4, compressed);
            let raw: usize = (0..30).map(|i| 2 + entry(i).len()).sum::<usize>() + CHUNK_HEADER;
            assert_eq!(v.len() < raw, compressed, "{} of {raw} bytes", v.len());
            let chunk = open_chunk(&v).unwrap();
            let entries = chunk.entries().unwrap();
            assert_eq!(entries.len(), 30);
            assert_eq!(chunk_count(&v), Ok(30));
            for (i, e) in entries.iter().enumerate() {
                assert_eq!(*e, entry(i as u64).as_slice());
            }
        }
    }

    #[test]
    fn every_flipped_bit_of_a_chunk_is_caught() {
        let mut b = ChunkBuilder::new();
        for n in 0..5u8 {
            b.push_with(|buf| buf.extend_from_slice(&[n; 20]));
        }
        let chunk = b.finish();
        assert_eq!(chunk[0], CHUNK_FORMAT_LZ4);
        let mut plain = ChunkBuilder::new();
        plain.push_with(|buf| buf.extend_from_slice(&[1, 2, 3]));
        let plain = plain.finish();
        assert_eq!(plain[0], CHUNK_FORMAT);
        let fps = encode_fingerprints(&[1, 2, 3]);
        assert_eq!(
            decode_fingerprints(&fps).unwrap().collect::<Vec<_>>(),
            [1, 2, 3]
        );
        for (value, is_log) in [(&chunk, true), (&plain, true), (&fps, false)] {
            for byte in 0..value.len() {
                for bit in 0..8 {
                    let mut bad = value.clone();
                    bad[byte] ^= 1 << bit;
                    let refused = if is_log {
                        open_chunk(&bad)
                            .and_then(|c| c.entries().map(|_| ()))
                            .is_err()
                            && chunk_count(&bad).is_err()
                    } else {
                        decode_fingerprints(&bad).is_err()
                    };
                    assert!(refused, "byte {byte}, bit {bit}");
                }
            }
        }
    }

    #[test]
    fn sequence_keys_sort_numerically() {
        assert!(seq_key(LOG_PREFIX, 255) < seq_key(LOG_PREFIX, 256));
        assert_eq!(parse_seq_key(&seq_key(IDS_PREFIX, 77)).unwrap(), 77);
    }
}
