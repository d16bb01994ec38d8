//! Consistent hashing with virtual nodes.
//!
//! Keys and ring tokens are hashed with XXH64 (seed 0), a hash every language
//! has, so that shard-aware clients can route on their own from the token
//! table the node sends at handshake (`docs/wire-protocol.md`).
//!
//! * key position: `xxh64(key)`
//! * member `m`'s token `v`: `xxh64(le_u64(m.ring_seed()) ++ le_u64(v))`
//! * owner: the member of the first token `≥` the key's position, wrapping
//!   around to the smallest token.
//!
//! [`HashRing`] is generic over its member type: today members are the shards
//! of one node; the cluster ring will use the same code with node ids, and a
//! key's home becomes (node ring → node, that node's shard ring → shard).

use xxhash_rust::xxh64::xxh64;

use crate::ids::ShardId;

/// Something that can own a range of the ring.
pub trait RingMember: Copy + Ord {
    /// A stable number that seeds this member's token positions.
    fn ring_seed(self) -> u64;
}

impl RingMember for ShardId {
    fn ring_seed(self) -> u64 {
        u64::from(self.0)
    }
}

/// Position of a key on the ring.
#[must_use]
pub fn key_position(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// Position of a member's `vnode`-th token.
#[must_use]
pub fn token_position(seed: u64, vnode: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&seed.to_le_bytes());
    buf[8..].copy_from_slice(&vnode.to_le_bytes());
    xxh64(&buf, 0)
}

/// A consistent hash ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashRing<M> {
    /// Sorted by (position, member): the order is total, so equal positions
    /// (astronomically rare) still resolve the same way everywhere.
    tokens: Vec<(u64, M)>,
}

impl<M: RingMember> HashRing<M> {
    /// A ring where every member has `vnodes` tokens.
    pub fn new(members: impl IntoIterator<Item = M>, vnodes: u32) -> HashRing<M> {
        let mut tokens = Vec::new();
        for m in members {
            for v in 0..u64::from(vnodes) {
                tokens.push((token_position(m.ring_seed(), v), m));
            }
        }
        HashRing::from_tokens(tokens)
    }

    /// A ring from an explicit token table (e.g. received at handshake).
    pub fn from_tokens(mut tokens: Vec<(u64, M)>) -> HashRing<M> {
        tokens.sort_unstable();
        tokens.dedup();
        HashRing { tokens }
    }

    /// The member owning `key`, or `None` on an empty ring.
    #[must_use]
    pub fn owner(&self, key: &[u8]) -> Option<M> {
        self.owner_of_position(key_position(key))
    }

    /// The member owning ring position `pos`.
    #[must_use]
    pub fn owner_of_position(&self, pos: u64) -> Option<M> {
        let i = self.tokens.partition_point(|(t, _)| *t < pos);
        self.tokens
            .get(i)
            .or_else(|| self.tokens.first())
            .map(|(_, m)| *m)
    }

    /// The token table, sorted.
    #[must_use]
    pub fn tokens(&self) -> &[(u64, M)] {
        &self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: u16) -> impl Iterator<Item = ShardId> {
        (0..n).map(ShardId)
    }

    #[test]
    fn one_member_owns_everything_and_empty_ring_owns_nothing() {
        let ring = HashRing::new(shards(1), 8);
        assert!((0..100u32).all(|i| ring.owner(&i.to_le_bytes()) == Some(ShardId(0))));
        let empty: HashRing<ShardId> = HashRing::new(shards(0), 8);
        assert_eq!(empty.owner(b"k"), None);
    }

    #[test]
    fn load_is_spread_within_bounds() {
        let ring = HashRing::new(shards(4), 256);
        let mut counts = [0u32; 4];
        for i in 0..100_000u32 {
            counts[usize::from(ring.owner(format!("key-{i}").as_bytes()).unwrap().0)] += 1;
        }
        for c in counts {
            assert!((17_000..33_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn adding_a_member_moves_keys_only_to_it() {
        let before = HashRing::new(shards(3), 64);
        let after = HashRing::new(shards(4), 64);
        let mut moved = 0;
        for i in 0..10_000u32 {
            let k = i.to_le_bytes();
            let (a, b) = (before.owner(&k).unwrap(), after.owner(&k).unwrap());
            if a != b {
                assert_eq!(b, ShardId(3), "a key moved between old members");
                moved += 1;
            }
        }
        assert!(moved > 1_000 && moved < 4_000, "moved {moved} of 10000");
    }

    #[test]
    fn token_table_round_trips() {
        let ring = HashRing::new(shards(3), 16);
        assert_eq!(HashRing::from_tokens(ring.tokens().to_vec()), ring);
    }

    #[test]
    fn positions_are_the_documented_xxh64() {
        // Pinned so that other-language clients can check their hashing.
        assert_eq!(key_position(b""), 0xef46_db37_51d8_e999);
    }
}
