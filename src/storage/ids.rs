//! The event-id index, in memory: event id → sequence for every stored event,
//! kept as 64-bit fingerprints (the `I` chunks of `layout`) mapping to
//! sequences. The rare id whose fingerprint another id already holds is kept
//! in full. A fingerprint hit is only a candidate: the store confirms it by
//! reading the stored event's id.
//!
//! Depends only on std.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Identity hasher for fingerprints that are already uniformly distributed.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
pub(super) struct IdIndex {
    by_fingerprint: HashMap<u64, u64, BuildHasherDefault<FingerprintHasher>>,
    collided: HashMap<String, u64>,
}

impl IdIndex {
    /// An empty index with room for `events` ids.
    pub(super) fn with_capacity(events: usize) -> Self {
        let mut ids = IdIndex::default();
        ids.by_fingerprint.reserve(events);
        ids
    }

    /// The sequence the index gives for `id`: certain for a collided id,
    /// otherwise to be confirmed against the stored event.
    pub(super) fn candidate(&self, id: &str, fingerprint: u64) -> Option<u64> {
        if let Some(&seq) = self.collided.get(id) {
            return Some(seq);
        }
        self.by_fingerprint.get(&fingerprint).copied()
    }

    /// Records `seq` under `fingerprint`; when another id holds it already,
    /// records nothing and returns that id's sequence (the caller then keeps
    /// this id in full with [`IdIndex::insert_collided`]).
    pub(super) fn insert(&mut self, fingerprint: u64, seq: u64) -> Result<(), u64> {
        match self.by_fingerprint.entry(fingerprint) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(seq);
                Ok(())
            }
            std::collections::hash_map::Entry::Occupied(e) => Err(*e.get()),
        }
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
