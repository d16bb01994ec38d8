//! Cluster membership and failure detection: SWIM (probe, indirect probe,
//! suspicion, piggybacked dissemination) as implemented by `foca`, behind
//! a sans-I/O interface. The caller feeds it what arrived
//! ([`Membership::handle_data`]) and the timers it asked for once they are
//! due ([`Membership::handle_timer`]); every call returns [`Output`]s —
//! bytes to send to a peer, a timer to arm, a member that came up or went
//! down. The same code runs on a node's socket and in the seeded
//! simulation below.
//!
//! A member's identity is a [`Peer`]: its address (the membership slot),
//! its node id, the incarnation of that node (bumped at every start, kept
//! in its data directory) and a renewal count (bumped when the node finds
//! itself declared down and rejoins). On the same address the higher
//! (incarnation, renewal) wins, so a restarted node replaces its old self.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// A timer foca asked for, to hand back to [`Membership::handle_timer`] when due.
pub use foca::Timer;
use foca::{AccumulatingRuntime, Config, Foca, Identity, OwnedNotification, PostcardCodec};
use kvs_core::cluster::Member;
use kvs_core::NodeId;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// A member of the cluster, as membership messages carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub addr: SocketAddr,
    pub node: u64,
    pub incarnation: u64,
    /// Shards the node runs (its shard ring); fixed for an incarnation.
    pub shards: u16,
    pub renewals: u16,
    /// Copies of each key (`--replication`) and virtual nodes per shard
    /// (`--vnodes`) this node places keys with: every node of a cluster
    /// must use the same, or they place keys differently.
    pub replication: u16,
    pub shard_vnodes: u32,
}

impl Peer {
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId(self.node)
    }

    /// This peer as a member of a placement view (`kvs_core::cluster`).
    #[must_use]
    pub fn member(&self) -> Member {
        Member {
            id: NodeId(self.node),
            incarnation: self.incarnation,
            shards: self.shards,
        }
    }

    /// Why `other` cannot share a placement with this node (the settings
    /// every node must share differ), or `None` when it can.
    #[must_use]
    pub fn layout_mismatch(&self, other: &Peer) -> Option<String> {
        let differ =
            (self.replication, self.shard_vnodes) != (other.replication, other.shard_vnodes);
        differ.then(|| {
            format!(
                "{} at {} runs with --replication {} --vnodes {}, this node with \
                 --replication {} --vnodes {}: every node of a cluster needs the \
                 same; it is left out of this node's placement",
                other.node_id(),
                other.addr,
                other.replication,
                other.shard_vnodes,
                self.replication,
                self.shard_vnodes
            )
        })
    }

    /// A stand-in for a seed whose node id is not known yet: only its
    /// address matters for an announcement.
    #[must_use]
    pub fn seed(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            node: 0,
            incarnation: 0,
            shards: 0,
            renewals: 0,
            replication: 0,
            shard_vnodes: 0,
        }
    }
}

impl Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Peer {
            renewals: self.renewals.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.renewals) > (adversary.incarnation, adversary.renewals)
    }
}

/// Largest membership packet (foca's encoded message): fits one datagram
/// on any Ethernet path, with room for an authentication tag.
pub const PACKET_BYTES_MAX: usize = 1400;

/// How fast membership reacts.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often each member probes another.
    pub probe_period_ms: u64,
    /// How long a probe waits for its answer before asking others.
    pub probe_rtt_ms: u64,
    /// How long a suspected member has to refute before it is down.
    pub suspect_to_down_ms: u64,
}

impl Timing {
    /// For nodes on one network (loopback, a LAN): a killed node is
    /// declared down by every member within about 1.2 s.
    pub const LAN: Timing = Timing {
        probe_period_ms: 200,
        probe_rtt_ms: 60,
        suspect_to_down_ms: 600,
    };

    fn config(self) -> Config {
        let mut c = Config::simple();
        c.max_packet_size = NonZeroUsize::new(PACKET_BYTES_MAX).unwrap_or(NonZeroUsize::MIN);
        c.probe_period = Duration::from_millis(self.probe_period_ms);
        c.probe_rtt = Duration::from_millis(self.probe_rtt_ms);
        c.suspect_to_down_after = Duration::from_millis(self.suspect_to_down_ms);
        c.num_indirect_probes = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        c.max_transmissions = NonZeroU8::new(10).unwrap_or(NonZeroU8::MIN);
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.probe_period_ms),
            num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.probe_period_ms * 25),
            num_members: NonZeroUsize::MIN,
        });
        // Members declared down are still asked in now and then, so that a
        // partition (or a loss long enough for false downs) heals by
        // itself: the side that hears back renews and rejoins. They are
        // remembered for a day.
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(self.probe_period_ms * 5),
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        c.remove_down_after = Duration::from_secs(24 * 3600);
        c
    }
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` to `to.addr`.
    Send { to: Peer, bytes: Vec<u8> },
    /// Call [`Membership::handle_timer`] with `timer` after `after`.
    Arm { after: Duration, timer: Timer<Peer> },
    /// `peer` is now a live member.
    Up(Peer),
    /// `peer` was declared down.
    Down(Peer),
    /// A live member renewed its identity (it found itself declared down
    /// and rejoined): the first is the identity it had, the second the one
    /// it has now. It stays up.
    Renamed(Peer, Peer),
    /// The input was refused (a malformed or foreign message, a timer of
    /// an earlier identity): the sentence is for the log; what the state
    /// machine did before refusing (the other outputs) still stands.
    Refused(String),
}

/// One node's view of the cluster.
pub struct Membership {
    foca: Foca<Peer, PostcardCodec, SmallRng, foca::NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Peer>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Membership({:?})", self.foca.identity())
    }
}

impl Membership {
    /// This node as `me`; `seed` makes its random choices reproducible.
    #[must_use]
    pub fn new(me: Peer, timing: Timing, seed: u64) -> Membership {
        Membership {
            foca: Foca::new(
                me,
                timing.config(),
                SmallRng::seed_from_u64(seed),
                PostcardCodec,
            ),
            runtime: AccumulatingRuntime::new(),
        }
    }

    /// Asks `to` (a seed: [`Peer::seed`] will do) to let this node in.
    pub fn announce(&mut self, to: Peer) -> Vec<Output> {
        let r = self.foca.announce(to, &mut self.runtime);
        self.finish(r)
    }

    /// A membership message arrived.
    pub fn handle_data(&mut self, bytes: &[u8]) -> Vec<Output> {
        let r = self.foca.handle_data(bytes, &mut self.runtime);
        self.finish(r)
    }

    /// A timer armed by an [`Output::Arm`] is due.
    pub fn handle_timer(&mut self, timer: Timer<Peer>) -> Vec<Output> {
        let r = self.foca.handle_timer(timer, &mut self.runtime);
        self.finish(r)
    }

    /// Leaves the cluster on purpose (peers see it down without waiting
    /// for suspicion).
    pub fn leave(&mut self) -> Vec<Output> {
        let r = self.foca.leave_cluster(&mut self.runtime);
        self.finish(r)
    }

    /// The live members this node knows (itself not included), by address.
    #[must_use]
    pub fn members(&self) -> Vec<Peer> {
        let mut v: Vec<Peer> = self.foca.iter_members().map(|m| *m.id()).collect();
        v.sort_unstable();
        v
    }

    fn finish(&mut self, r: Result<(), foca::Error>) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some((to, bytes)) = self.runtime.to_send() {
            out.push(Output::Send {
                to,
                bytes: bytes.to_vec(),
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            out.push(Output::Arm { after, timer });
        }
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(p) => out.push(Output::Up(p)),
                OwnedNotification::MemberDown(p) => out.push(Output::Down(p)),
                OwnedNotification::Rename(old, new) => out.push(Output::Renamed(old, new)),
                _ => {}
            }
        }
        if let Err(e) = r {
            out.push(Output::Refused(e.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod sim {
    //! A seeded simulation: N members on a virtual clock, messages
    //! delivered after a random delay (or lost), timers fired in time
    //! order. Same seed, same run.
    use rand::Rng;

    use super::*;
    use crate::timeline::Timeline;

    enum Event {
        Deliver { to: usize, bytes: Vec<u8> },
        Fire { at: usize, timer: Timer<Peer> },
    }

    struct Sim {
        nodes: Vec<Membership>,
        peers: Vec<Peer>,
        alive: Vec<bool>,
        time: Timeline<Event>,
        rng: SmallRng,
        loss_percent: u32,
        /// (observer, peer index) → when it saw the peer go down (µs).
        downs: Vec<(usize, usize, u64)>,
        /// Identities renewed (members that found themselves declared
        /// down while alive, as others saw them).
        renames: usize,
    }

    impl Sim {
        fn new(n: usize, seed: u64, loss_percent: u32) -> Sim {
            let peers: Vec<Peer> = (0..n)
                .map(|i| Peer {
                    addr: SocketAddr::from(([127, 0, 0, 1 + i as u8], 7400)),
                    node: 1000 + i as u64,
                    incarnation: 1,
                    shards: 1,
                    renewals: 0,
                    replication: 1,
                    shard_vnodes: 16,
                })
                .collect();
            let nodes = peers
                .iter()
                .enumerate()
                .map(|(i, p)| Membership::new(*p, Timing::LAN, seed ^ (i as u64 + 1)))
                .collect();
            let mut sim = Sim {
                nodes,
                alive: vec![true; n],
                peers,
                time: Timeline::new(),
                rng: SmallRng::seed_from_u64(seed),
                loss_percent,
                downs: Vec::new(),
                renames: 0,
            };
            for i in 1..n {
                let out = sim.nodes[i].announce(Peer::seed(sim.peers[0].addr));
                sim.apply(i, out);
            }
            sim
        }

        fn index_of(&self, addr: SocketAddr) -> Option<usize> {
            self.peers.iter().position(|p| p.addr == addr)
        }

        fn apply(&mut self, from: usize, out: Vec<Output>) {
            for o in out {
                match o {
                    Output::Send { to, bytes } => {
                        let Some(to) = self.index_of(to.addr) else {
                            continue;
                        };
                        if self.rng.random_range(0..100) < self.loss_percent {
                            continue;
                        }
                        let delay = self.rng.random_range(50..2_000);
                        self.time.after(delay, Event::Deliver { to, bytes });
                    }
                    Output::Arm { after, timer } => {
                        let delay = after.as_micros() as u64;
                        self.time.after(delay, Event::Fire { at: from, timer });
                    }
                    Output::Up(_) | Output::Refused(_) => {}
                    Output::Renamed(..) => self.renames += 1,
                    Output::Down(p) => {
                        if let Some(i) = self.index_of(p.addr) {
                            self.downs.push((from, i, self.time.now_us()));
                        }
                    }
                }
            }
        }

        fn run_until(&mut self, end_us: u64) {
            while let Some(e) = self.time.next_until(end_us) {
                let (node, out) = match e {
                    Event::Deliver { to, bytes } if self.alive[to] => {
                        (to, self.nodes[to].handle_data(&bytes))
                    }
                    Event::Fire { at, timer } if self.alive[at] => {
                        (at, self.nodes[at].handle_timer(timer))
                    }
                    _ => continue, // to or of a dead node
                };
                self.apply(node, out);
            }
        }
    }

    fn converged(sim: &Sim) -> bool {
        let n = sim.nodes.len();
        (0..n).all(|i| {
            !sim.alive[i]
                || sim.nodes[i].members().len() == sim.alive.iter().filter(|a| **a).count() - 1
        }) && n > 0
    }

    #[test]
    fn garbage_is_refused_and_changes_nothing() {
        let me = Peer::seed(SocketAddr::from(([127, 0, 0, 1], 1)));
        let mut m = Membership::new(me, Timing::LAN, 1);
        for bytes in [&b""[..], b"garbage", &[0xff; 64]] {
            let out = m.handle_data(bytes);
            assert!(
                matches!(out.as_slice(), [Output::Refused(_)]),
                "{bytes:?}: {out:?}"
            );
        }
        assert!(m.members().is_empty());
    }

    #[test]
    fn members_find_each_other_through_one_seed() {
        for seed in 0..8 {
            let mut sim = Sim::new(5, seed, 0);
            sim.run_until(3_000_000);
            assert!(
                converged(&sim),
                "seed {seed}: {:?}",
                sim.nodes
                    .iter()
                    .map(Membership::members)
                    .collect::<Vec<_>>()
            );
            assert!(
                sim.downs.is_empty(),
                "seed {seed}: false downs {:?}",
                sim.downs
            );
        }
    }

    #[test]
    fn a_killed_member_is_down_everywhere_within_1500_ms() {
        for seed in 0..8 {
            let mut sim = Sim::new(5, seed, 0);
            sim.run_until(3_000_000);
            assert!(converged(&sim), "seed {seed}");
            let victim = 3;
            sim.alive[victim] = false;
            let killed_at = sim.time.now_us();
            sim.run_until(killed_at + 5_000_000);
            for observer in (0..5).filter(|&o| o != victim) {
                let seen = sim
                    .downs
                    .iter()
                    .find(|&&(o, v, _)| o == observer && v == victim)
                    .map(|&(_, _, t)| t - killed_at);
                let Some(after_us) = seen else {
                    panic!("seed {seed}: node {observer} never saw node {victim} down")
                };
                assert!(
                    after_us <= 1_500_000,
                    "seed {seed}: node {observer} took {after_us} µs"
                );
            }
            assert!(
                sim.downs.iter().all(|&(_, v, _)| v == victim),
                "seed {seed}: a live member declared down: {:?}",
                sim.downs
            );
        }
    }

    #[test]
    fn lossy_links_cause_no_false_downs() {
        for seed in 0..4 {
            let mut sim = Sim::new(5, seed, 5);
            sim.run_until(60_000_000);
            assert!(converged(&sim), "seed {seed}");
            assert!(
                sim.downs.is_empty(),
                "seed {seed}: false downs {:?}",
                sim.downs
            );
        }
    }

    #[test]
    fn after_heavy_loss_falsely_downed_members_renew_and_all_converge() {
        let mut renamed = 0;
        for seed in 0..4 {
            let mut sim = Sim::new(5, seed, 45);
            sim.run_until(20_000_000);
            sim.loss_percent = 0;
            // As a node does (`dataplane::members`): one that knows no live
            // member announces itself to its seed again every second.
            for second in 21..=35u64 {
                sim.run_until(second * 1_000_000);
                for i in 0..sim.nodes.len() {
                    if sim.nodes[i].members().is_empty() {
                        let seed_addr = sim.peers[usize::from(i == 0)].addr;
                        let out = sim.nodes[i].announce(Peer::seed(seed_addr));
                        sim.apply(i, out);
                    }
                }
            }
            assert!(
                converged(&sim),
                "seed {seed}: not whole again after the loss: {:?}",
                sim.nodes
                    .iter()
                    .map(|m| m
                        .members()
                        .iter()
                        .map(|p| (p.node, p.renewals))
                        .collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            );
            renamed += sim.renames;
        }
        // Members declared down while alive come back under a renewed
        // identity (`Output::Renamed` elsewhere): the case the node's view
        // must follow.
        assert!(renamed > 0, "45% loss never made a member renew");
    }
}
