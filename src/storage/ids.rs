//! The event-id index, in memory: (feed, event id) → sequence for every
//! stored event, kept as 64-bit fingerprints (the `I` chunks of `layout`)
//! mapping to sequences. The rare event whose fingerprint another already
//! holds is kept in full. A fingerprint hit is only a candidate: the store
//! confirms it by reading the stored event's feed and id.
//!
//! Depends only on std.

use std::collections::HashMap;

/// Fingerprints are uniform: their top bits choose one of 2^16 buckets.
const BUCKET_BITS: u32 = 16;
const BUCKETS: usize = 1 << BUCKET_BITS;
// `IdIndex::finish_load` sorts by two bytes of fingerprint: one bucket each.
const _: () = assert!(BUCKET_BITS == 16);

/// Spare room a bucket gets when it is full: a quarter of its length.
const GROWTH_DIVISOR: usize = 4;

/// The ids found at start are one sorted vector of (fingerprint, sequence)
/// of exactly their number, 16 bytes per event, with the offset of each
/// bucket in it; the ids stored since go into 2^16 small sorted vectors,
/// each grown by a quarter when full. (A hash map of the same pairs took
/// 16 bytes and a control byte per bucket at a load of 7/16 to 7/8: 285 MB
/// for 10 M events; loading into per-bucket vectors left them up to half
/// empty: 208 MB; one vector takes 160 MB.)
pub(super) struct IdIndex {
    loaded: Vec<(u64, u64)>,
    /// Where each bucket begins in `loaded`, and its end at the last entry.
    starts: Vec<usize>,
    added: Vec<Vec<(u64, u64)>>,
    collided: HashMap<String, u64>,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex::with_capacity(0)
    }
}

fn bucket_of(fingerprint: u64) -> usize {
    (fingerprint >> (64 - BUCKET_BITS)) as usize
}

/// Reorders `v` by the byte of each fingerprint at `shift`, in place (an
/// American flag sort's pass), and returns where each of the 256 parts
/// begins, with the end last.
fn partition_by_byte(v: &mut [(u64, u64)], shift: u32) -> [usize; 257] {
    let byte = |f: u64| ((f >> shift) & 0xff) as usize;
    let mut starts = [0usize; 257];
    for (f, _) in v.iter() {
        starts[byte(*f) + 1] += 1;
    }
    for b in 0..256 {
        starts[b + 1] += starts[b];
    }
    // Each swap puts one entry into its part for good.
    let mut next = [0usize; 256];
    next.copy_from_slice(&starts[..256]);
    for b in 0..256 {
        while next[b] < starts[b + 1] {
            let i = next[b];
            let target = byte(v[i].0);
            if target != b {
                v.swap(i, next[target]);
            }
            next[target] += 1;
        }
    }
    starts
}

impl IdIndex {
    /// An empty index with room for `events` ids to be loaded.
    pub(super) fn with_capacity(events: usize) -> Self {
        // The count comes from the store, which can lie: room that cannot
        // be had is left out, and the vector grows as it loads instead.
        let mut loaded = Vec::new();
        let _ = loaded.try_reserve_exact(events);
        IdIndex {
            loaded,
            starts: vec![0; BUCKETS + 1],
            added: (0..BUCKETS).map(|_| Vec::new()).collect(),
            collided: HashMap::new(),
        }
    }

    /// The sequence the index holds under `fingerprint`, if any.
    fn find(&self, fingerprint: u64) -> Option<u64> {
        let b = bucket_of(fingerprint);
        let loaded = &self.loaded[self.starts[b]..self.starts[b + 1]];
        let search = |v: &[(u64, u64)]| {
            v.binary_search_by_key(&fingerprint, |(f, _)| *f)
                .ok()
                .map(|i| v[i].1)
        };
        search(loaded).or_else(|| search(&self.added[b]))
    }

    /// The sequence the index gives for an event whose (feed, id) is
    /// `key` (`layout::id_key`, built only when some id collided): certain
    /// for a collided id, otherwise to be confirmed against the stored event.
    pub(super) fn candidate(&self, key: impl FnOnce() -> String, fingerprint: u64) -> Option<u64> {
        if !self.collided.is_empty() {
            if let Some(&seq) = self.collided.get(&key()) {
                return Some(seq);
            }
        }
        self.find(fingerprint)
    }

    /// Records `seq` under `fingerprint`; when another id holds it already,
    /// records nothing and returns that id's sequence (the caller then keeps
    /// this id in full with [`IdIndex::insert_collided`]).
    pub(super) fn insert(&mut self, fingerprint: u64, seq: u64) -> Result<(), u64> {
        if let Some(held) = self.find(fingerprint) {
            return Err(held);
        }
        let bucket = &mut self.added[bucket_of(fingerprint)];
        let i = bucket.partition_point(|(f, _)| *f < fingerprint);
        if bucket.len() == bucket.capacity() {
            bucket.reserve_exact(1 + bucket.len() / GROWTH_DIVISOR);
        }
        bucket.insert(i, (fingerprint, seq));
        Ok(())
    }

    /// Adds `seq` under `fingerprint` while an index is loaded, unsorted;
    /// [`IdIndex::finish_load`] must follow. Inserting 10 M fingerprints
    /// one by one into sorted buckets moved about 12 GB (7 s of a start).
    pub(super) fn push_loaded(&mut self, fingerprint: u64, seq: u64) {
        self.loaded.push((fingerprint, seq));
    }

    /// Sorts what [`IdIndex::push_loaded`] added, in place: into 256 parts
    /// by the top byte of the fingerprint, each part into 256 by the next
    /// (each a pass of swaps whose 256 destinations stay in the cache: one
    /// pass into the 2^16 buckets at once missed it on every swap and took
    /// 1.5 s for 10 M ids), then each bucket. Of the sequences that share a
    /// fingerprint only the lowest stays; the others are returned with it,
    /// (kept, other), for the caller to check and keep in full.
    pub(super) fn finish_load(&mut self) -> Vec<(u64, u64)> {
        let v = &mut self.loaded;
        let top = partition_by_byte(v, 56);
        for part in top.windows(2) {
            let (from, to) = (part[0], part[1]);
            let within = partition_by_byte(&mut v[from..to], 48);
            for bucket in within.windows(2) {
                v[from + bucket[0]..from + bucket[1]].sort_unstable();
            }
        }
        // The whole vector is sorted now: keep the first of each run of
        // one fingerprint (its lowest sequence).
        let mut shared = Vec::new();
        let mut kept: Option<(u64, u64)> = None;
        v.retain(|&(f, seq)| match kept {
            Some((k, first)) if k == f => {
                shared.push((first, seq));
                false
            }
            _ => {
                kept = Some((f, seq));
                true
            }
        });
        v.shrink_to_fit();
        let mut starts = vec![0usize; BUCKETS + 1];
        for (b, start) in starts.iter_mut().enumerate() {
            let first = (b as u64) << (64 - BUCKET_BITS);
            *start = if b == BUCKETS {
                v.len()
            } else {
                v.partition_point(|(f, _)| *f < first)
            };
        }
        self.starts = starts;
        shared
    }

    /// Records an event whose fingerprint another holds, by its (feed, id)
    /// (`layout::id_key`).
    pub(super) fn insert_collided(&mut self, key: String, seq: u64) {
        self.collided.insert(key, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fingerprint_is_found_in_its_bucket_and_only_there() {
        let mut ids = IdIndex::with_capacity(1000);
        let fps: Vec<u64> = (0..50_000u64)
            .map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()))
            .collect();
        for (seq, fp) in fps.iter().enumerate() {
            assert_eq!(ids.insert(*fp, seq as u64 + 1), Ok(()));
        }
        for (seq, fp) in fps.iter().enumerate() {
            assert_eq!(ids.candidate(|| "x".into(), *fp), Some(seq as u64 + 1));
            assert_eq!(ids.insert(*fp, 0), Err(seq as u64 + 1));
        }
        // The extremes of the bucket range, and a neighbour of each.
        for fp in [0, u64::MAX, 1, u64::MAX - 1] {
            assert_eq!(ids.candidate(|| "x".into(), fp), None);
            assert_eq!(ids.insert(fp, 7), Ok(()));
            assert_eq!(ids.candidate(|| "x".into(), fp), Some(7));
        }
    }

    #[test]
    fn a_loaded_index_is_the_index_built_one_by_one() {
        let fps: Vec<u64> = (0..20_000u64)
            .map(|i| xxhash_rust::xxh3::xxh3_64(&(i % 19_000).to_le_bytes()))
            .collect();
        let (mut one_by_one, mut loaded) = (IdIndex::with_capacity(0), IdIndex::with_capacity(0));
        let mut taken = Vec::new();
        for (i, fp) in fps.iter().enumerate() {
            let seq = i as u64 + 1;
            if let Err(kept) = one_by_one.insert(*fp, seq) {
                taken.push((kept, seq));
            }
            loaded.push_loaded(*fp, seq);
        }
        let mut shared = loaded.finish_load();
        shared.sort_unstable_by_key(|(_, seq)| *seq);
        assert_eq!(shared.len(), 1_000);
        assert_eq!(shared, taken);
        for fp in &fps {
            assert_eq!(
                loaded.candidate(|| "x".into(), *fp),
                one_by_one.candidate(|| "x".into(), *fp)
            );
        }
    }

    #[test]
    fn ids_stored_after_a_load_are_found_beside_the_loaded_ones() {
        let fp = |i: u64| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        let mut ids = IdIndex::with_capacity(30_000);
        for i in 0..30_000u64 {
            ids.push_loaded(fp(i), i + 1);
        }
        // The extremes of the bucket range land in the first and last one.
        ids.push_loaded(0, 30_001);
        ids.push_loaded(u64::MAX, 30_002);
        assert!(ids.finish_load().is_empty());
        assert_eq!(ids.loaded.capacity(), 30_002);
        for i in 0..30_000u64 {
            assert_eq!(ids.insert(fp(i), 99), Err(i + 1), "loaded {i}");
        }
        assert_eq!(ids.candidate(|| "x".into(), 0), Some(30_001));
        assert_eq!(ids.candidate(|| "x".into(), u64::MAX), Some(30_002));
        for i in 30_000..40_000u64 {
            assert_eq!(ids.insert(fp(i), i + 3), Ok(()));
        }
        for i in 0..40_000u64 {
            let seq = if i < 30_000 { i + 1 } else { i + 3 };
            assert_eq!(ids.candidate(|| "x".into(), fp(i)), Some(seq));
        }
        assert_eq!(ids.candidate(|| "x".into(), 1), None);
    }

    #[test]
    fn a_taken_fingerprint_keeps_the_later_id_in_full() {
        let mut ids = IdIndex::with_capacity(2);
        assert_eq!(ids.insert(7, 1), Ok(()));
        assert_eq!(ids.insert(7, 2), Err(1));
        ids.insert_collided("b".into(), 2);
        assert_eq!(ids.candidate(|| "a".into(), 7), Some(1));
        assert_eq!(ids.candidate(|| "b".into(), 7), Some(2));
        assert_eq!(ids.candidate(|| "c".into(), 8), None);
    }
}
