//! Routing: which shard a key goes to.
//!
//! The handshake's [`Topology`] lists every shard's address and the ring's
//! token table (`docs/wire-protocol.md`). A key belongs to the shard of the
//! first token at or after the key's xxh64 hash, wrapping around to the
//! first token. Registrations route like the keys they are stored under
//! (`squall:fn:<name>`, `squall:dag:<name>`), so they go straight to the
//! shard that stores them.

use wire::message::Topology;

use crate::{ClientError, Result};

/// A node's topology and its ring, sorted for lookups.
#[derive(Debug)]
pub(crate) struct Route {
    topology: Topology,
    /// (position, shard), sorted.
    ring: Vec<(u64, u16)>,
}

impl Route {
    /// The routes of `topology`, as learned from `addr`; refused if the
    /// ring is empty or hashed with a function this client does not know.
    pub(crate) fn new(addr: &str, topology: Topology) -> Result<Route> {
        let mut ring: Vec<(u64, u16)> = topology
            .ring
            .tokens
            .iter()
            .map(|t| (t.position, t.shard))
            .collect();
        ring.sort_unstable();
        if topology.ring.hash != wire::RING_HASH_XXH64 || ring.is_empty() {
            return Err(ClientError::Protocol {
                addr: addr.to_owned(),
                message: format!(
                    "unsupported ring (hash {}, {} tokens)",
                    topology.ring.hash,
                    ring.len()
                ),
            });
        }
        Ok(Route { topology, ring })
    }

    /// What the node said at handshake.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The shard the client first connected to (function calls go there).
    pub(crate) fn home(&self) -> u16 {
        self.topology.shard
    }

    /// The shard that owns `key`.
    pub(crate) fn shard_for(&self, key: &[u8]) -> u16 {
        let pos = xxhash_rust::xxh64::xxh64(key, 0);
        let i = self.ring.partition_point(|(p, _)| *p < pos);
        self.ring
            .get(i)
            .or_else(|| self.ring.first())
            .map_or(0, |(_, s)| *s)
    }

    /// The address of the shard owning `key` (empty if the topology does
    /// not list it).
    pub(crate) fn key_addr(&self, key: &[u8]) -> String {
        let shard = usize::from(self.shard_for(key));
        self.topology
            .shards
            .get(shard)
            .map(|s| String::from_utf8_lossy(&s.addr).into_owned())
            .unwrap_or_default()
    }

    /// The shard owning function `name`'s registry key (where its
    /// registration and deletion go).
    pub(crate) fn function_shard(&self, name: &str) -> u16 {
        self.shard_for(format!("{}{name}", wire::FUNCTION_KEY_PREFIX).as_bytes())
    }

    /// The shard owning DAG `name`'s registry key (where its requests go).
    pub(crate) fn dag_shard(&self, name: &str) -> u16 {
        self.shard_for(format!("{}{name}", wire::DAG_KEY_PREFIX).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::message::{ClusterTopology, ClusterView, Limits, RingInfo, RingToken, ShardInfo};

    fn topology(hash: u8, tokens: &[(u64, u16)]) -> Topology {
        Topology {
            protocol_version: wire::PROTOCOL_VERSION,
            shard: 1,
            shards: (0..2)
                .map(|id| ShardInfo {
                    id,
                    addr: format!("127.0.0.1:{}", 7400 + id).into_bytes(),
                })
                .collect(),
            ring: RingInfo {
                hash,
                vnodes_per_shard: 1,
                tokens: tokens
                    .iter()
                    .map(|&(position, shard)| RingToken { position, shard })
                    .collect(),
            },
            limits: Limits {
                frame_body_bytes_max: 0,
                key_bytes_max: 0,
                value_bytes_max: 0,
                keys_per_get_max: 0,
                connections_max: 0,
            },
            cluster: ClusterTopology {
                node: 1,
                replication: 1,
                node_vnodes: 1,
                view: ClusterView {
                    epoch: 0,
                    node: 1,
                    members: vec![],
                },
            },
        }
    }

    #[test]
    fn a_key_goes_to_the_first_token_at_or_after_its_hash_wrapping_around() {
        let key = b"k";
        let h = xxhash_rust::xxh64::xxh64(key, 0);
        assert!(h > 0 && h < u64::MAX, "the test needs room either side");
        // Unsorted on purpose: the route sorts the tokens.
        let r = Route::new(
            "a",
            topology(wire::RING_HASH_XXH64, &[(u64::MAX, 1), (h, 0)]),
        )
        .unwrap();
        assert_eq!(r.shard_for(key), 0, "a token at the hash owns it");
        let r = Route::new(
            "a",
            topology(wire::RING_HASH_XXH64, &[(h - 1, 0), (h + 1, 1)]),
        )
        .unwrap();
        assert_eq!(r.shard_for(key), 1);
        assert_eq!(r.key_addr(key), "127.0.0.1:7401");
        let r = Route::new("a", topology(wire::RING_HASH_XXH64, &[(0, 1), (h - 1, 0)])).unwrap();
        assert_eq!(r.shard_for(key), 1, "past the last token: the first");
        assert_eq!(r.home(), 1);
    }

    #[test]
    fn unknown_ring_hashes_and_empty_rings_are_refused() {
        assert!(Route::new("a", topology(wire::RING_HASH_XXH64, &[])).is_err());
        let err = Route::new("a", topology(wire::RING_HASH_XXH64 + 1, &[(0, 0)])).unwrap_err();
        assert!(err.to_string().contains("unsupported ring"), "{err}");
    }
}
