//! Routing across nodes: which node a key goes to.
//!
//! The handshake's [`ClusterTopology`] lists the members, the replication
//! factor and the node ring's token count; from them the client builds the
//! same [`ClusterRing`] every node builds (`kvs_core::cluster` is the
//! specification), and sends a key to the first of its replicas it has no
//! reason to avoid. Keys under `squall:` (functions, DAGs, models) are not
//! spread: they go to the node the client connected to, like the requests
//! that use them.
//!
//! Every reply carries the answering node's epoch; a reply whose epoch is
//! not this placement's marks it stale, and the client asks for the view
//! again before its next batch (at most every `REFRESH_INTERVAL_MS_MIN`).
//! A node that failed a batch (refused, broke or timed out) is avoided
//! until the view changes: its keys go to their next replica.

use std::collections::{HashMap, HashSet};

use kvs_core::cluster::{ClusterRing, Member};
use kvs_core::{NodeId, ShardId};
use wire::message::{ClusterTopology, ClusterView, MEMBER_UP};

/// Where one request goes: a shard of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    pub node: u64,
    pub shard: u16,
}

/// The cluster as this client last learned it.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The node the client connected to.
    home: u64,
    epoch: u64,
    ring: ClusterRing,
    /// Shard-0 address (`host:port`) of each member keys are placed on.
    addrs: HashMap<u64, String>,
    replication: usize,
    node_vnodes: u32,
    shard_vnodes: u32,
    /// Nodes that failed a batch since the view last changed.
    avoid: HashSet<u64>,
    /// Every request goes to `home` (`ClientOptions::route_across_nodes`
    /// off), with epoch 0.
    pinned: bool,
}

/// Keys under this prefix stay on the node that stores them.
const SYSTEM_KEY_PREFIX: &[u8] = b"squall:";

impl Placement {
    /// The placement `home` reported at handshake; its shards' rings have
    /// `shard_vnodes` tokens per shard. `pinned`: send everything home.
    pub(crate) fn new(cluster: &ClusterTopology, shard_vnodes: u32, pinned: bool) -> Placement {
        let mut p = Placement {
            home: cluster.node,
            epoch: 0,
            ring: ClusterRing::new(&[], 1, 1),
            addrs: HashMap::new(),
            replication: usize::from(cluster.replication.max(1)),
            node_vnodes: cluster.node_vnodes.max(1),
            shard_vnodes: shard_vnodes.max(1),
            avoid: HashSet::new(),
            pinned,
        };
        p.update(&cluster.view);
        p
    }

    /// Takes a newer view (a `ClusterStatus` answer); forgets the nodes
    /// avoided if the epoch moved. Returns whether it did.
    pub(crate) fn update(&mut self, view: &ClusterView) -> bool {
        if view.epoch == self.epoch && !self.addrs.is_empty() {
            return false;
        }
        let up = view.members.iter().filter(|m| m.state == MEMBER_UP);
        let members: Vec<Member> = up
            .clone()
            .map(|m| Member {
                id: NodeId(m.node),
                incarnation: m.incarnation,
                shards: m.shards,
            })
            .collect();
        self.addrs = up
            .map(|m| (m.node, String::from_utf8_lossy(&m.addr).into_owned()))
            .collect();
        self.ring = ClusterRing::new(&members, self.node_vnodes, self.shard_vnodes);
        self.epoch = view.epoch;
        self.avoid.clear();
        true
    }

    /// The epoch of the view: sent in every request's header (0 when
    /// pinned: the client does not route).
    pub(crate) fn epoch(&self) -> u64 {
        if self.pinned {
            0
        } else {
            self.epoch
        }
    }

    pub(crate) fn home(&self) -> u64 {
        self.home
    }

    /// The address of `node`'s shard 0, if it is a member.
    pub(crate) fn addr(&self, node: u64) -> Option<&str> {
        self.addrs.get(&node).map(String::as_str)
    }

    /// The member nodes not avoided, `home` first: whom to ask for a newer
    /// view.
    pub(crate) fn nodes_home_first(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .addrs
            .keys()
            .filter(|n| !self.avoid.contains(n))
            .copied()
            .collect();
        v.sort_unstable_by_key(|&n| (n != self.home, n));
        v
    }

    /// Stops sending keys to `node` until the view changes.
    pub(crate) fn avoid(&mut self, node: u64) {
        self.avoid.insert(node);
    }

    /// The node `key` goes to: its first replica not avoided; when every
    /// replica is avoided, a member that is not (home first: it forwards
    /// by its own view, which may already know where the key went), else
    /// the primary. `home` for keys that are not spread or an empty view.
    pub(crate) fn node_for(&self, key: &[u8]) -> u64 {
        let node_local =
            key.starts_with(SYSTEM_KEY_PREFIX) && !key.starts_with(wire::TXN_KEY_PREFIX.as_bytes());
        if self.pinned || node_local || self.addrs.len() <= 1 {
            return self.home;
        }
        let replicas = self.ring.replicas(key, self.replication);
        if let Some(n) = replicas.iter().find(|n| !self.avoid.contains(&n.0)) {
            return n.0;
        }
        match self.nodes_home_first().first() {
            Some(&n) => n,
            None => replicas.first().map_or(self.home, |n| n.0),
        }
    }

    /// The shard of `node` that owns `key` (`None` if `node` is not in the
    /// view: the caller uses the node's own token table).
    pub(crate) fn shard_on(&self, node: u64, key: &[u8]) -> Option<u16> {
        self.ring.shard_on(NodeId(node), key).map(|ShardId(s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::message::{MemberInfo, MEMBER_DOWN, MEMBER_LEAVING};

    fn member(node: u64, state: u8) -> MemberInfo {
        MemberInfo {
            node,
            addr: format!("127.0.0.{node}:7400").into_bytes(),
            incarnation: 1,
            shards: 2,
            state,
            state_ms: 0,
        }
    }

    fn view(members: Vec<MemberInfo>) -> ClusterView {
        let live: Vec<Member> = members
            .iter()
            .filter(|m| m.state == MEMBER_UP)
            .map(|m| Member {
                id: NodeId(m.node),
                incarnation: m.incarnation,
                shards: m.shards,
            })
            .collect();
        ClusterView {
            epoch: kvs_core::cluster::epoch(&live),
            node: 1,
            members,
        }
    }

    fn topology(replication: u8, members: Vec<MemberInfo>) -> ClusterTopology {
        ClusterTopology {
            node: 1,
            replication,
            node_vnodes: 64,
            view: view(members),
        }
    }

    fn keys() -> impl Iterator<Item = Vec<u8>> {
        (0..2_000).map(|i| format!("key-{i}").into_bytes())
    }

    #[test]
    fn keys_go_where_the_nodes_place_them() {
        let up = [1, 2, 3].map(|n| member(n, MEMBER_UP)).to_vec();
        let p = Placement::new(&topology(2, up.clone()), 16, false);
        let members: Vec<Member> = [1, 2, 3]
            .map(|n| Member {
                id: NodeId(n),
                incarnation: 1,
                shards: 2,
            })
            .to_vec();
        let ring = ClusterRing::new(&members, 64, 16);
        assert_eq!(p.epoch(), ring.epoch());
        let mut per_node = [0; 3];
        for k in keys() {
            let n = p.node_for(&k);
            assert_eq!(Some(NodeId(n)), ring.primary(&k));
            assert_eq!(p.shard_on(n, &k), ring.shard_on(NodeId(n), &k).map(|s| s.0));
            per_node[(n - 1) as usize] += 1;
        }
        assert!(per_node.iter().all(|&c| c > 400), "{per_node:?}");
        assert_eq!(p.node_for(b"squall:fn:f"), 1, "system keys stay home");
        assert_eq!(p.addr(2), Some("127.0.0.2:7400"));
        let pinned = Placement::new(&topology(2, up), 16, true);
        assert!(keys().all(|k| pinned.node_for(&k) == 1));
        assert_eq!(pinned.epoch(), 0, "a pinned client does not route");
    }

    #[test]
    fn down_and_leaving_members_hold_nothing() {
        let mut members = vec![member(1, MEMBER_UP), member(2, MEMBER_DOWN)];
        members.push(member(3, MEMBER_LEAVING));
        let p = Placement::new(&topology(1, members), 16, false);
        assert!(keys().all(|k| p.node_for(&k) == 1));
        assert_eq!(p.addr(2), None);
        assert_eq!(p.nodes_home_first(), vec![1]);
    }

    #[test]
    fn an_avoided_node_sends_its_keys_to_the_next_replica_until_the_view_changes() {
        let up = [1, 2, 3].map(|n| member(n, MEMBER_UP)).to_vec();
        let mut p = Placement::new(&topology(2, up.clone()), 16, false);
        let on_2: Vec<Vec<u8>> = keys().filter(|k| p.node_for(k) == 2).collect();
        assert!(!on_2.is_empty());
        p.avoid(2);
        for k in &on_2 {
            let n = p.node_for(k);
            assert_ne!(n, 2);
            assert_eq!(n, p.ring.replicas(k, 2)[1].0, "the second replica");
        }
        assert!(!p.update(&view(up.clone())), "same epoch: nothing changes");
        assert!(on_2.iter().all(|k| p.node_for(k) != 2));
        // With every replica avoided, a member that is not (home first),
        // which forwards; with every member avoided, the primary.
        p.avoid(3);
        let both_out: Vec<&Vec<u8>> = on_2
            .iter()
            .filter(|k| p.ring.replicas(k, 2).iter().all(|n| n.0 != 1))
            .collect();
        assert!(!both_out.is_empty());
        assert!(both_out.iter().all(|k| p.node_for(k) == 1), "home");
        p.avoid(1);
        assert!(on_2.iter().all(|k| p.node_for(k) == 2));
        let mut now = up;
        now[1].incarnation = 2; // node 2 restarted: a new view
        assert!(p.update(&view(now)));
        assert!(on_2.iter().all(|k| p.node_for(k) == 2));
    }
}
