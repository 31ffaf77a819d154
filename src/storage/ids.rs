//! The event-id index, in memory: event id → sequence for every stored event,
//! kept as 64-bit fingerprints (the `I` chunks of `layout`) mapping to
//! sequences. The rare id whose fingerprint another id already holds is kept
//! in full. A fingerprint hit is only a candidate: the store confirms it by
//! reading the stored event's id.
//!
//! Depends only on std.

use std::collections::HashMap;

/// Fingerprints are uniform: their top bits choose one of 2^16 buckets, each
/// a sorted vector of (fingerprint, sequence). 16 bytes per event and a
/// quarter of that at most spare (a hash map of the same pairs took 16 bytes
/// and a control byte per bucket at a load of 7/16 to 7/8: 285 MB for 10 M
/// events), and no rehash of the whole map as it grows.
const BUCKET_BITS: u32 = 16;

/// Spare room a bucket gets when it is full: a quarter of its length.
const GROWTH_DIVISOR: usize = 4;

pub(super) struct IdIndex {
    buckets: Vec<Vec<(u64, u64)>>,
    collided: HashMap<String, u64>,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex::with_capacity(0)
    }
}

impl IdIndex {
    /// An empty index with room for `events` ids.
    pub(super) fn with_capacity(events: usize) -> Self {
        let per_bucket = events >> BUCKET_BITS;
        let room = per_bucket + per_bucket / 16;
        IdIndex {
            buckets: (0..1usize << BUCKET_BITS)
                .map(|_| Vec::with_capacity(room))
                .collect(),
            collided: HashMap::new(),
        }
    }

    fn bucket(&self, fingerprint: u64) -> &Vec<(u64, u64)> {
        &self.buckets[(fingerprint >> (64 - BUCKET_BITS)) as usize]
    }

    /// The sequence the index gives for `id`: certain for a collided id,
    /// otherwise to be confirmed against the stored event.
    pub(super) fn candidate(&self, id: &str, fingerprint: u64) -> Option<u64> {
        if let Some(&seq) = self.collided.get(id) {
            return Some(seq);
        }
        let bucket = self.bucket(fingerprint);
        bucket
            .binary_search_by_key(&fingerprint, |(f, _)| *f)
            .ok()
            .map(|i| bucket[i].1)
    }

    /// Records `seq` under `fingerprint`; when another id holds it already,
    /// records nothing and returns that id's sequence (the caller then keeps
    /// this id in full with [`IdIndex::insert_collided`]).
    pub(super) fn insert(&mut self, fingerprint: u64, seq: u64) -> Result<(), u64> {
        let bucket = &mut self.buckets[(fingerprint >> (64 - BUCKET_BITS)) as usize];
        match bucket.binary_search_by_key(&fingerprint, |(f, _)| *f) {
            Ok(i) => Err(bucket[i].1),
            Err(i) => {
                if bucket.len() == bucket.capacity() {
                    bucket.reserve_exact(1 + bucket.len() / GROWTH_DIVISOR);
                }
                bucket.insert(i, (fingerprint, seq));
                Ok(())
            }
        }
    }

    /// Adds `seq` under `fingerprint` while an index is loaded, unsorted;
    /// [`IdIndex::finish_load`] must follow. Inserting 10 M fingerprints
    /// one by one into sorted buckets moved about 12 GB (7 s of a start).
    pub(super) fn push_loaded(&mut self, fingerprint: u64, seq: u64) {
        self.buckets[(fingerprint >> (64 - BUCKET_BITS)) as usize].push((fingerprint, seq));
    }

    /// Sorts what [`IdIndex::push_loaded`] added. Of the sequences that
    /// share a fingerprint only the lowest stays; the others are returned
    /// with it, (kept, other), for the caller to check and keep in full.
    pub(super) fn finish_load(&mut self) -> Vec<(u64, u64)> {
        let mut shared = Vec::new();
        for bucket in &mut self.buckets {
            bucket.sort_unstable();
            let mut kept: Option<(u64, u64)> = None;
            bucket.retain(|&(f, seq)| match kept {
                Some((k, first)) if k == f => {
                    shared.push((first, seq));
                    false
                }
                _ => {
                    kept = Some((f, seq));
                    true
                }
            });
        }
        shared
    }

    /// Records an id whose fingerprint another id holds.
    pub(super) fn insert_collided(&mut self, id: String, seq: u64) {
        self.collided.insert(id, seq);
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
            assert_eq!(ids.candidate("x", *fp), Some(seq as u64 + 1));
            assert_eq!(ids.insert(*fp, 0), Err(seq as u64 + 1));
        }
        // The extremes of the bucket range, and a neighbour of each.
        for fp in [0, u64::MAX, 1, u64::MAX - 1] {
            assert_eq!(ids.candidate("x", fp), None);
            assert_eq!(ids.insert(fp, 7), Ok(()));
            assert_eq!(ids.candidate("x", fp), Some(7));
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
            assert_eq!(loaded.candidate("x", *fp), one_by_one.candidate("x", *fp));
        }
    }

    #[test]
    fn a_taken_fingerprint_keeps_the_later_id_in_full() {
        let mut ids = IdIndex::with_capacity(2);
        assert_eq!(ids.insert(7, 1), Ok(()));
        assert_eq!(ids.insert(7, 2), Err(1));
        ids.insert_collided("b".into(), 2);
        assert_eq!(ids.candidate("a", 7), Some(1));
        assert_eq!(ids.candidate("b", 7), Some(2));
        assert_eq!(ids.candidate("c", 8), None);
    }
}
