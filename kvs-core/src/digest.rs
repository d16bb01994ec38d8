//! Range digests, for anti-entropy between replicas: two nodes compare a
//! digest of the keys they both hold, per range of the node ring, and only
//! the ranges whose digests differ are sent again. Anna has no such
//! mechanism: a replica that missed an update stays stale until the next
//! write to the key.
//!
//! The specification:
//!
//! * **Ranges.** The node ring (`crate::cluster`, positions
//!   `xxh64(key, NODE_RING_SEED)`) is cut into [`DIGEST_BUCKETS`] equal
//!   ranges; a key's range is the top 6 bits of its position.
//! * **Entry hash.** `xxh64(le_u32(len(key)) ++ key ++ state, seed 0)`,
//!   where `state` is `0x01 ++ codec::encode_value(value)` for a live value
//!   and `0x02 ++ le_u64(clock) ++ le_u64(writer)` for a tombstone: the
//!   key's entry in a snapshot (`codec::Encoder::entry`). Merged
//!   lattice states are canonical (sets and versions are ordered), so two
//!   replicas that converged hash every key the same.
//! * **Digest.** Per range, the wrapping sum of its keys' entry hashes:
//!   independent of order, so a node adds its shards' digests up, and each
//!   key's contribution is its own.

use xxhash_rust::xxh64::xxh64;

use crate::cluster::node_key_position;
use crate::codec::Encoder;
use crate::partition::EntryRef;

/// Ranges of the node ring a digest has.
pub const DIGEST_BUCKETS: usize = 64;

/// Per range of the node ring, the sum of the entry hashes of a set of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeDigest {
    buckets: [u64; DIGEST_BUCKETS],
}

impl Default for RangeDigest {
    fn default() -> Self {
        RangeDigest {
            buckets: [0; DIGEST_BUCKETS],
        }
    }
}

/// The range of the node ring `key` falls in.
#[must_use]
pub fn bucket_of(key: &[u8]) -> usize {
    // The top 6 bits: 0..64.
    (node_key_position(key) >> 58) as usize
}

/// A key's state, hashed (see the module doc).
#[must_use]
pub fn entry_hash(key: &[u8], entry: EntryRef<'_>) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 32);
    Encoder::new(&mut buf).entry(key, entry);
    xxh64(&buf, 0)
}

impl RangeDigest {
    /// Adds one key.
    pub fn add(&mut self, key: &[u8], entry: EntryRef<'_>) {
        let b = &mut self.buckets[bucket_of(key)];
        *b = b.wrapping_add(entry_hash(key, entry));
    }

    /// Adds another digest's keys (a node sums its shards').
    pub fn absorb(&mut self, other: &RangeDigest) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a = a.wrapping_add(b);
        }
    }

    /// The ranges where the two differ, as a bit mask (bit `i`: range `i`).
    #[must_use]
    pub fn differing(&self, other: &RangeDigest) -> u64 {
        let mut mask = 0u64;
        for (i, (a, b)) in self.buckets.iter().zip(other.buckets).enumerate() {
            if *a != b {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The sums, range by range (what travels on the wire).
    #[must_use]
    pub fn buckets(&self) -> &[u64; DIGEST_BUCKETS] {
        &self.buckets
    }

    /// A digest from its sums; `None` unless there are exactly
    /// [`DIGEST_BUCKETS`].
    #[must_use]
    pub fn from_buckets(sums: &[u64]) -> Option<RangeDigest> {
        Some(RangeDigest {
            buckets: sums.try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{Lww, Timestamp, Value};
    use crate::partition::Entry;

    fn lww(clock: u64, v: &str) -> Entry {
        Entry::Live(Value::Lww(Lww::new(
            Timestamp { clock, writer: 1 },
            v.as_bytes().to_vec(),
        )))
    }

    fn digest(entries: &[(&str, Entry)]) -> RangeDigest {
        let mut d = RangeDigest::default();
        for (k, e) in entries {
            d.add(k.as_bytes(), e.view());
        }
        d
    }

    #[test]
    fn equal_states_in_any_order_have_equal_digests() {
        let a = digest(&[("a", lww(1, "x")), ("b", lww(2, "y"))]);
        let b = digest(&[("b", lww(2, "y")), ("a", lww(1, "x"))]);
        assert_eq!(a, b);
        assert_eq!(a.differing(&b), 0);
        // Split over two shards and summed: the same.
        let mut s = digest(&[("a", lww(1, "x"))]);
        s.absorb(&digest(&[("b", lww(2, "y"))]));
        assert_eq!(s, a);
    }

    #[test]
    fn a_differing_key_marks_exactly_its_range() {
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let full: Vec<(&str, Entry)> = keys.iter().map(|k| (k.as_str(), lww(1, "v"))).collect();
        let a = digest(&full);
        for changed in [0, 17, 499] {
            let mut other = full.clone();
            other[changed].1 = lww(2, "v");
            let mask = a.differing(&digest(&other));
            assert_eq!(mask, 1 << bucket_of(keys[changed].as_bytes()), "{changed}");
            // A missing key, and a tombstone instead of the value, too.
            let mut missing = full.clone();
            missing.remove(changed);
            assert_eq!(a.differing(&digest(&missing)), mask);
            other[changed].1 = Entry::Tombstone(Timestamp {
                clock: 1,
                writer: 1,
            });
            assert_eq!(a.differing(&digest(&other)), mask);
        }
        // Keys spread over the ranges.
        let used = keys
            .iter()
            .map(|k| bucket_of(k.as_bytes()))
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(used.len(), DIGEST_BUCKETS);
    }

    #[test]
    fn buckets_round_trip_and_are_pinned() {
        let d = digest(&[("squall", lww(5, "v"))]);
        assert_eq!(RangeDigest::from_buckets(d.buckets()), Some(d.clone()));
        assert_eq!(RangeDigest::from_buckets(&[0; 3]), None);
        // Pinned so that a change of the hashed encoding cannot pass
        // unnoticed (nodes of two versions would never agree).
        assert_eq!(bucket_of(b"squall"), 0x3ef1_17f3_1a5a_fd3e >> 58);
        assert_eq!(
            entry_hash(b"squall", lww(5, "v").view()),
            0x1777_3d0a_f70f_1f84
        );
    }
}
