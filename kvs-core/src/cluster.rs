//! Where a key lives in a cluster: a ring of nodes over each node's ring of
//! shards, and the epoch of a membership view. Pure functions of the view,
//! so every node and every client with the same view computes the same
//! owners and the same epoch, with no coordination.
//!
//! The specification (any language can implement it; pinned by tests):
//!
//! * **Node ring.** Member `n` has `node_vnodes` tokens at
//!   [`token_position`](crate::ring::token_position)`(n.id, v)` for `v` in `0..node_vnodes`. A key's
//!   position on it is `xxh64(key, seed = NODE_RING_SEED)` — a different
//!   seed from the shard ring's (`xxh64(key, 0)`), so that which node owns a
//!   key says nothing about which of its shards does.
//! * **Replicas.** The first `r` distinct nodes met walking the node ring
//!   clockwise from the key's position (wrapping around); the first is the
//!   key's primary. Fewer when the view has fewer than `r` nodes.
//! * **Shard.** On each replica node, the shard owning the key on that
//!   node's shard ring ([`HashRing`] over its `shards` shards,
//!   `shard_vnodes` tokens each, positions `xxh64(key, 0)`), exactly as a
//!   single node routes today.
//! * **Epoch.** `xxh64` (seed 0) of the members sorted by id, each encoded
//!   as `le_u64(id) ++ le_u64(incarnation) ++ le_u16(shards)`. Two views
//!   with the same members, incarnations and shard counts have the same
//!   epoch; any join, leave or restart changes it.

use xxhash_rust::xxh64::xxh64;

use crate::ids::{NodeId, ShardId};
use crate::ring::{HashRing, RingMember};

/// The seed of key positions on the node ring.
pub const NODE_RING_SEED: u64 = 0x5371_7561_6c6c_4e52; // "SquallNR"

impl RingMember for NodeId {
    fn ring_seed(self) -> u64 {
        self.0
    }
}

/// One member of a membership view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub id: NodeId,
    /// Bumped at every start of the node: tells a restarted node from the
    /// one that was there before.
    pub incarnation: u64,
    /// Shards the node runs (its shard ring).
    pub shards: u16,
}

/// A key's position on the node ring.
#[must_use]
pub fn node_key_position(key: &[u8]) -> u64 {
    xxh64(key, NODE_RING_SEED)
}

/// The epoch of a view (see the module doc): equal views, equal epochs.
#[must_use]
pub fn epoch(members: &[Member]) -> u64 {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup_by_key(|m| m.id);
    let mut buf = Vec::with_capacity(sorted.len() * 18);
    for m in &sorted {
        buf.extend_from_slice(&m.id.0.to_le_bytes());
        buf.extend_from_slice(&m.incarnation.to_le_bytes());
        buf.extend_from_slice(&m.shards.to_le_bytes());
    }
    xxh64(&buf, 0)
}

/// The cluster's placement for one membership view.
#[derive(Clone, Debug)]
pub struct ClusterRing {
    members: Vec<Member>,
    nodes: HashRing<NodeId>,
    /// By member, in `members` order (sorted by id).
    shard_rings: Vec<HashRing<ShardId>>,
    epoch: u64,
}

impl ClusterRing {
    /// The placement for `members` (a member listed twice counts once: the
    /// entry with the higher incarnation).
    #[must_use]
    pub fn new(members: &[Member], node_vnodes: u32, shard_vnodes: u32) -> ClusterRing {
        let mut members = members.to_vec();
        // Highest incarnation first within an id, then keep the first.
        members.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(b.incarnation.cmp(&a.incarnation)));
        members.dedup_by_key(|m| m.id);
        let nodes = HashRing::new(members.iter().map(|m| m.id), node_vnodes);
        let shard_rings = members
            .iter()
            .map(|m| HashRing::new((0..m.shards).map(ShardId), shard_vnodes))
            .collect();
        ClusterRing {
            epoch: epoch(&members),
            members,
            nodes,
            shard_rings,
        }
    }

    /// The view's members, sorted by id.
    #[must_use]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The node ring.
    #[must_use]
    pub fn node_ring(&self) -> &HashRing<NodeId> {
        &self.nodes
    }

    /// The first node clockwise from `key`: its primary (`replicas(key,
    /// 1)`, without allocating); `None` for an empty view.
    #[must_use]
    pub fn primary(&self, key: &[u8]) -> Option<NodeId> {
        let tokens = self.nodes.tokens();
        let pos = node_key_position(key);
        let start = tokens.partition_point(|(t, _)| *t < pos);
        tokens.get(start % tokens.len().max(1)).map(|&(_, n)| n)
    }

    /// The first `r` distinct nodes clockwise from `key` (the primary
    /// first); fewer when the view is smaller than `r`.
    #[must_use]
    pub fn replicas(&self, key: &[u8], r: usize) -> Vec<NodeId> {
        let tokens = self.nodes.tokens();
        let mut out: Vec<NodeId> = Vec::with_capacity(r.min(self.members.len()));
        if tokens.is_empty() {
            return out;
        }
        let pos = node_key_position(key);
        let start = tokens.partition_point(|(t, _)| *t < pos);
        for i in 0..tokens.len() {
            if out.len() == r {
                break;
            }
            let (_, node) = tokens[(start + i) % tokens.len()];
            if !out.contains(&node) {
                out.push(node);
            }
        }
        out
    }

    /// The shard of `node` that holds `key`; `None` if `node` is not a
    /// member.
    #[must_use]
    pub fn shard_on(&self, node: NodeId, key: &[u8]) -> Option<ShardId> {
        let i = self.members.binary_search_by_key(&node, |m| m.id).ok()?;
        self.shard_rings[i].owner(key)
    }

    /// Where `key`'s `r` replicas live: (node, shard) each, primary first.
    #[must_use]
    pub fn homes(&self, key: &[u8], r: usize) -> Vec<(NodeId, ShardId)> {
        self.replicas(key, r)
            .into_iter()
            .filter_map(|n| self.shard_on(n, key).map(|s| (n, s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token_position;

    fn view(ids: &[u64]) -> Vec<Member> {
        ids.iter()
            .map(|&id| Member {
                id: NodeId(id),
                incarnation: 1,
                shards: 2,
            })
            .collect()
    }

    fn keys(n: u32) -> impl Iterator<Item = Vec<u8>> {
        (0..n).map(|i| format!("key-{i}").into_bytes())
    }

    #[test]
    fn replicas_are_distinct_primary_first_and_capped_by_the_view() {
        let ring = ClusterRing::new(&view(&[10, 20, 30, 40, 50]), 64, 16);
        assert_eq!(ClusterRing::new(&[], 64, 16).primary(b"k"), None);
        for k in keys(2_000) {
            let r3 = ring.replicas(&k, 3);
            assert_eq!(ring.primary(&k), Some(r3[0]));
            assert_eq!(r3.len(), 3);
            assert!(r3[0] != r3[1] && r3[1] != r3[2] && r3[0] != r3[2], "{r3:?}");
            assert_eq!(
                ring.replicas(&k, 1),
                r3[..1],
                "the primary is the first replica"
            );
            assert_eq!(ring.replicas(&k, 9).len(), 5, "at most the view's size");
            assert_eq!(
                Some(r3[0]),
                ring.node_ring().owner_of_position(node_key_position(&k))
            );
        }
        let empty = ClusterRing::new(&[], 64, 16);
        assert!(empty.replicas(b"k", 3).is_empty());
    }

    #[test]
    fn primaries_and_replicas_spread_evenly() {
        let ring = ClusterRing::new(&view(&[1, 2, 3, 4, 5]), 256, 64);
        let mut primary = [0u32; 5];
        let mut copies = [0u32; 5];
        for k in keys(50_000) {
            let r = ring.replicas(&k, 3);
            primary[(r[0].0 - 1) as usize] += 1;
            for n in r {
                copies[(n.0 - 1) as usize] += 1;
            }
        }
        for c in primary {
            assert!((7_500..12_500).contains(&c), "primaries: {primary:?}");
        }
        for c in copies {
            assert!((22_500..37_500).contains(&c), "copies: {copies:?}");
        }
    }

    #[test]
    fn a_joining_node_takes_keys_only_from_others_and_about_its_share() {
        let before = ClusterRing::new(&view(&[1, 2, 3, 4]), 128, 16);
        let after = ClusterRing::new(&view(&[1, 2, 3, 4, 5]), 128, 16);
        let mut moved = 0;
        for k in keys(20_000) {
            let (a, b) = (before.replicas(&k, 1)[0], after.replicas(&k, 1)[0]);
            if a != b {
                assert_eq!(b, NodeId(5), "a key moved between old members");
                moved += 1;
            }
            // With replication, the new node joins a key's set or it is unchanged.
            let (a3, b3) = (before.replicas(&k, 3), after.replicas(&k, 3));
            let lost: Vec<_> = a3.iter().filter(|n| !b3.contains(n)).collect();
            assert!(lost.len() <= 1, "{a3:?} → {b3:?}");
            if !lost.is_empty() {
                assert!(b3.contains(&NodeId(5)), "{a3:?} → {b3:?}");
            }
        }
        assert!((2_400..5_600).contains(&moved), "moved {moved} of 20000");
    }

    #[test]
    fn the_node_and_the_shard_are_chosen_independently() {
        // Keys a node owns spread over all its shards.
        let ring = ClusterRing::new(&view(&[7, 8]), 128, 64);
        let mut per_shard = [0u32; 2];
        for k in keys(20_000) {
            let homes = ring.homes(&k, 1);
            if homes[0].0 == NodeId(7) {
                per_shard[usize::from(homes[0].1 .0)] += 1;
            }
        }
        let total = per_shard[0] + per_shard[1];
        assert!(
            per_shard.iter().all(|&c| c * 10 > total * 4),
            "{per_shard:?}"
        );
        assert_eq!(ring.shard_on(NodeId(99), b"k"), None);
    }

    #[test]
    fn equal_views_have_equal_epochs_and_any_change_moves_it() {
        let a = view(&[3, 1, 2]);
        let mut b = view(&[2, 3, 1]);
        assert_eq!(epoch(&a), epoch(&b), "order does not matter");
        assert_eq!(ClusterRing::new(&a, 8, 8).epoch(), epoch(&b));
        b[0].incarnation = 2;
        assert_ne!(epoch(&a), epoch(&b), "a restart");
        assert_ne!(epoch(&a), epoch(&view(&[1, 2])), "a leave");
        let mut c = view(&[1, 2, 3]);
        c[1].shards = 4;
        assert_ne!(epoch(&a), epoch(&c), "a different shard count");
    }

    #[test]
    fn a_member_listed_twice_counts_once_at_its_latest_incarnation() {
        let mut v = view(&[1, 2]);
        v.push(Member {
            id: NodeId(2),
            incarnation: 5,
            shards: 2,
        });
        let ring = ClusterRing::new(&v, 16, 8);
        assert_eq!(ring.members().len(), 2);
        assert_eq!(ring.members()[1].incarnation, 5);
    }

    #[test]
    fn positions_and_epochs_are_pinned() {
        // Pinned so that other-language clients can check their hashing
        // and a change of seed or encoding cannot pass unnoticed.
        assert_eq!(node_key_position(b""), 0xe1e5_e1e5_3abf_371e);
        assert_eq!(node_key_position(b"squall"), 0x3ef1_17f3_1a5a_fd3e);
        let one = [Member {
            id: NodeId(1),
            incarnation: 1,
            shards: 1,
        }];
        assert_eq!(epoch(&one), 0xe751_80c3_71bd_4a95);
        assert_eq!(
            token_position(1, 0),
            ClusterRing::new(&one, 1, 1).node_ring().tokens()[0].0
        );
    }
}
