//! The node's membership: SWIM (`cluster::membership`, through foca) over
//! UDP on shard 0's address, driven by one task on shard 0; and
//! [`Members`], the view every shard reads (`ClusterStatus`).
//!
//! * **Packets**: one foca message of at most `MEMBERSHIP_PACKET_BYTES_MAX`
//!   bytes per datagram. On a node with `--auth-token-file` it is followed
//!   by a 32-byte tag (`wire::auth::Secret::packet_tag` under the first
//!   admin secret); a packet that no admin secret verifies is dropped and
//!   counted, so only nodes holding the cluster's admin secret take part.
//! * **Joining**: the node announces itself to each `--join` seed at start,
//!   and again every `JOIN_RETRY_MS` while it knows no live member (a node
//!   that lost everyone, say behind a partition, finds its way back the
//!   same way). After that foca's gossip keeps the view whole. Seed names
//!   are resolved at every attempt (a Kubernetes pod's name resolves only
//!   once the pod exists).
//! * **Leaving**: at shutdown the node leaves on purpose, so its peers mark
//!   it down at once instead of after the suspicion timeout; a node asked
//!   to leave (`Leave`) does so as soon as it begins handing its keys over.
//! * **The view** keeps members that went down (and since when), so that
//!   `cluster status` shows them; a restarted node (same address, higher
//!   incarnation) replaces its old self.
//! * **Placement** ([`Placement`]): where keys live for the live members
//!   (`kvs_core::cluster::ClusterRing`, R copies of each key), rebuilt
//!   at every change and versioned, so that shards re-read it only when it
//!   changed; subscribers (each shard's hand-off) are told. A leaving node
//!   places every key elsewhere. Every member holds the registrations of
//!   functions and DAGs and the per-key copies ([`on_every_member`]);
//!   other keys under `squall:` (models, inboxes, error outcomes) are not
//!   spread: each node keeps its own, as a single node does.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cluster::membership::{Membership, Output, Peer, Timer, Timing};
use futures_channel::mpsc;
use futures_lite::StreamExt as _;
use glommio::net::UdpSocket;
use kvs_core::cluster::ClusterRing;
use kvs_core::{NodeId, ShardId, Value};
use wire::auth::{Secret, PACKET_TAG_BYTES};
use wire::message as w;

use crate::limits::{JOIN_RETRY_MS, MEMBERSHIP_PACKET_BYTES_MAX, NODE_VNODES, REPLICATION_MAX};

/// The members this node knows of, itself included; read by every shard.
#[derive(Debug)]
pub(crate) struct Members {
    me: Peer,
    seen: Mutex<BTreeMap<SocketAddr, Seen>>,
    placement: Mutex<Arc<Placement>>,
    /// `placement`'s version, readable without the lock.
    version: AtomicU64,
    leaving: AtomicBool,
    /// Set when the node starts leaving: shard 0's membership task leaves
    /// then.
    leave_membership: AtomicBool,
    shard_vnodes: u32,
    /// Copies of each key (`--replication`).
    replication: usize,
    /// Told (with the new version) at every placement change.
    watchers: Mutex<Vec<mpsc::UnboundedSender<u64>>>,
    /// Per shard: the placement version its hand-off finished for.
    handed_off: Vec<AtomicU64>,
    /// Members left out for settings that differ from this node's
    /// (address, incarnation): each is logged once.
    refused: Mutex<HashSet<(SocketAddr, u64)>>,
    /// Keys with copies of their own, as this node's store holds them.
    overrides: Mutex<HashMap<Vec<u8>, usize>>,
}

/// Where keys live, for one view of the members.
#[derive(Debug)]
pub(crate) struct Placement {
    pub version: u64,
    ring: ClusterRing,
    me: NodeId,
    /// Only this node (nothing to route).
    solo: bool,
    addrs: HashMap<NodeId, SocketAddr>,
    /// Each member's node id and incarnation, by address: a node started
    /// again at the same address is another member.
    identities: HashMap<SocketAddr, (u64, u64)>,
    replication: usize,
    /// Keys with copies of their own (`squall:replicas:<key>`).
    overrides: Arc<HashMap<Vec<u8>, usize>>,
}

impl Placement {
    /// How many nodes hold `key`: its own number if it has one, every
    /// member for the per-key settings themselves, else `--replication`.
    fn copies(&self, key: &[u8]) -> usize {
        if on_every_member(key) {
            return usize::MAX; // as many as there are members
        }
        if self.overrides.is_empty() {
            return self.replication;
        }
        self.overrides.get(key).copied().unwrap_or(self.replication)
    }

    /// Whether `key` is spread over the members (not a lone node's, not a
    /// node's own `squall:` key).
    fn spread(&self, key: &[u8]) -> bool {
        !self.solo && (!node_local(key) || on_every_member(key))
    }

    /// Whether a write of `key` may have to be pushed to other holders
    /// (cheap: no ring lookup when every key has one copy).
    pub fn may_push(&self, key: &[u8]) -> bool {
        self.spread(key)
            && (self.replication > 1 || !self.overrides.is_empty() || on_every_member(key))
    }

    /// Where a request for `key` goes: `None` when this node holds a copy
    /// (or nobody else does: a lone or last node keeps everything; keys
    /// under `squall:` stay where they are written), else the key's
    /// primary and its address.
    pub fn remote_owner(&self, key: &[u8]) -> Option<(NodeId, SocketAddr)> {
        if self.solo || node_local(key) {
            return None;
        }
        let copies = self.copies(key);
        if copies == 1 {
            let owner = self.ring.primary(key)?;
            return (owner != self.me)
                .then(|| self.addrs.get(&owner).map(|a| (owner, *a)))
                .flatten();
        }
        let replicas = self.ring.replicas(key, copies);
        if replicas.contains(&self.me) {
            return None;
        }
        let owner = *replicas.first()?;
        self.addrs.get(&owner).map(|a| (owner, *a))
    }

    /// The nodes that hold `key`, by address (this node's own included),
    /// primary first; empty for a key that is not spread (`squall:`, a
    /// lone node).
    pub fn holders(&self, key: &[u8]) -> Vec<SocketAddr> {
        if !self.spread(key) {
            return Vec::new();
        }
        self.ring
            .replicas(key, self.copies(key))
            .iter()
            .filter_map(|n| self.addrs.get(n).copied())
            .collect()
    }

    /// Whether the node at `addr` is in the view.
    pub fn holds_node(&self, addr: SocketAddr) -> bool {
        self.addrs.values().any(|a| *a == addr)
    }

    /// The node id and incarnation of the member at `addr`, if the view
    /// holds one.
    pub fn identity(&self, addr: SocketAddr) -> Option<(u64, u64)> {
        self.identities.get(&addr).copied()
    }

    /// Whether this node is the only member.
    pub fn solo(&self) -> bool {
        self.solo
    }

    /// This node's own address in the view (absent while it leaves).
    pub fn my_addr(&self) -> Option<SocketAddr> {
        self.addrs.get(&self.me).copied()
    }

    /// Copies of each key.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// This node, unless it is leaving (then it holds nothing).
    pub fn me(&self) -> Option<NodeId> {
        self.addrs.contains_key(&self.me).then_some(self.me)
    }

    /// The other members keys are placed on.
    pub fn others(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut v: Vec<_> = self
            .addrs
            .iter()
            .filter(|(n, _)| **n != self.me)
            .map(|(n, a)| (*n, *a))
            .collect();
        v.sort_unstable();
        v
    }

    /// The address of member `node`.
    pub fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.addrs.get(&node).copied()
    }

    /// Whether this node is `key`'s primary (a lone node is every key's,
    /// a leaving one none's; a key that is not spread is its node's).
    pub fn is_primary(&self, key: &[u8]) -> bool {
        if !self.spread(key) {
            return true;
        }
        self.addrs.contains_key(&self.me) && self.ring.primary(key) == Some(self.me)
    }

    /// Whether this node and `other` both hold `key`.
    pub fn shared_with(&self, key: &[u8], other: NodeId) -> bool {
        if !self.spread(key) {
            return false;
        }
        let r = self.ring.replicas(key, self.copies(key));
        r.contains(&self.me) && r.contains(&other)
    }

    /// Whether this node and `other` both hold `key`, and it lives on
    /// `other`'s shard `shard` (the scope of `other`'s `Digest`).
    pub fn shared_on(&self, key: &[u8], other: NodeId, shard: ShardId) -> bool {
        self.ring.shard_on(other, key) == Some(shard) && self.shared_with(key, other)
    }

    /// The epoch of the members keys are placed on: what every reply's
    /// header carries.
    pub fn epoch(&self) -> u64 {
        self.ring.epoch()
    }
}

impl cluster::handoff::Holders<SocketAddr> for Placement {
    fn holders(&self, key: &[u8]) -> Vec<SocketAddr> {
        Placement::holders(self, key)
    }
}

/// Keys under this prefix are the node's own (not spread over the
/// cluster), but for those every member holds ([`on_every_member`]).
const SYSTEM_KEY_PREFIX: &[u8] = b"squall:";

/// Whether `key` is under `squall:` but for the commit records, which are
/// spread like users' keys.
fn node_local(key: &[u8]) -> bool {
    key.starts_with(SYSTEM_KEY_PREFIX) && !key.starts_with(wire::TXN_KEY_PREFIX.as_bytes())
}

/// Whether every member holds `key`: the per-key copies, and function and
/// DAG registrations (so that any node runs what any node registered).
/// Model chunks are not among them (up to 256 MiB each model): a node
/// runs the models registered on it.
pub(crate) fn on_every_member(key: &[u8]) -> bool {
    [
        wire::REPLICAS_KEY_PREFIX,
        wire::FUNCTION_KEY_PREFIX,
        wire::DAG_KEY_PREFIX,
    ]
    .iter()
    .any(|p| key.starts_with(p.as_bytes()))
}

/// Whether `key` sets another key's copies (`squall:replicas:<key>`).
pub(crate) fn is_replicas_key(key: &[u8]) -> bool {
    key.starts_with(wire::REPLICAS_KEY_PREFIX.as_bytes())
}

/// What a `squall:replicas:<key>` value sets: the key and its number of
/// copies (an LWW value, the number in decimal from 1 to
/// `REPLICATION_MAX`, for a key outside `squall:`); else a sentence.
pub(crate) fn copies_of<'k>(key: &'k [u8], value: &Value) -> Result<(&'k [u8], usize), String> {
    let prefix = wire::REPLICAS_KEY_PREFIX;
    let target = key.strip_prefix(prefix.as_bytes()).unwrap_or_default();
    if target.is_empty() || target.starts_with(SYSTEM_KEY_PREFIX) {
        return Err(format!(
            "{prefix}<key> names a key outside squall: (got {:?})",
            String::from_utf8_lossy(key)
        ));
    }
    let Value::Lww(lww) = value else {
        return Err(format!(
            "{prefix}<key> holds an lww value: the number of copies, not a {} value",
            value.kind().name()
        ));
    };
    std::str::from_utf8(lww.value())
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|n| (1..=REPLICATION_MAX).contains(n))
        .map(|n| (target, n))
        .ok_or_else(|| {
            format!(
                "the copies of a key are a number from 1 to {REPLICATION_MAX}, not {:?}",
                String::from_utf8_lossy(lww.value())
            )
        })
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    peer: Peer,
    up: bool,
    since: Instant,
}

impl Members {
    pub fn new(me: Peer, shard_vnodes: u32, replication: usize) -> Members {
        let seen = BTreeMap::from([(
            me.addr,
            Seen {
                peer: me,
                up: true,
                since: Instant::now(),
            },
        )]);
        let members = Members {
            me,
            seen: Mutex::new(seen),
            placement: Mutex::new(Arc::new(Placement {
                version: 0,
                ring: ClusterRing::new(&[me.member()], NODE_VNODES, shard_vnodes),
                me: me.node_id(),
                solo: true,
                addrs: HashMap::new(),
                identities: HashMap::new(),
                replication,
                overrides: Arc::default(),
            })),
            version: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            leave_membership: AtomicBool::new(false),
            shard_vnodes,
            replication,
            watchers: Mutex::new(Vec::new()),
            handed_off: (0..me.shards).map(|_| AtomicU64::new(0)).collect(),
            refused: Mutex::new(HashSet::new()),
            overrides: Mutex::new(HashMap::new()),
        };
        members.replace();
        members
    }

    /// Rebuilds the placement from the live members; tells the watchers.
    fn replace(&self) {
        let leaving = self.leaving.load(Ordering::SeqCst);
        let live: Vec<Peer> = self
            .live()
            .into_iter()
            .filter(|p| !(leaving && p.addr == self.me.addr))
            .collect();
        let members: Vec<_> = live.iter().map(Peer::member).collect();
        let overrides = Arc::new(
            self.overrides
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        );
        let mut placement = self
            .placement
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let version = placement.version + 1;
        *placement = Arc::new(Placement {
            version,
            ring: ClusterRing::new(&members, NODE_VNODES, self.shard_vnodes),
            me: self.me.node_id(),
            solo: live.len() == 1 && live[0].addr == self.me.addr,
            addrs: live.iter().map(|p| (p.node_id(), p.addr)).collect(),
            identities: (live.iter())
                .map(|p| (p.addr, (p.node, p.incarnation)))
                .collect(),
            replication: self.replication,
            overrides,
        });
        self.version.store(version, Ordering::SeqCst);
        drop(placement);
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|w| w.unbounded_send(version).is_ok());
    }

    /// The placement now.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Gives `key` its own number of copies (`None`: `--replication`
    /// again). A change is a new placement: the hand-off copies the key to
    /// its new holders, or takes the extra copies back.
    pub fn set_copies(&self, key: &[u8], copies: Option<usize>) {
        let mut overrides = self
            .overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = match copies {
            Some(n) => overrides.insert(key.to_vec(), n) != Some(n),
            None => overrides.remove(key).is_some(),
        };
        drop(overrides);
        if changed {
            let what = copies.map_or_else(
                || format!("{} (--replication)", self.replication),
                |n| n.to_string(),
            );
            log::info!(
                "key {:?} now has {what} copies",
                String::from_utf8_lossy(key)
            );
            self.replace();
        }
    }

    /// The placement's version now (cheap: shards compare it with theirs).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// A stream of placement versions, one per change from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<u64> {
        let (tx, rx) = mpsc::unbounded();
        self.watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// From now on every key is placed on the other members (this node is
    /// leaving: its hand-off gives them everything), and this node leaves
    /// the membership at once, so that its peers place keys the same way
    /// (and stop sending it requests) while it hands its keys over.
    pub fn start_leaving(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.leave_membership.store(true, Ordering::SeqCst);
        self.replace();
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// Shard `shard` has handed over everything placement `version` places
    /// elsewhere.
    pub fn handed_off(&self, shard: usize, version: u64) {
        if let Some(v) = self.handed_off.get(shard) {
            v.fetch_max(version, Ordering::SeqCst);
        }
    }

    /// Whether every shard has handed over what the current placement
    /// places elsewhere.
    pub fn all_handed_off(&self) -> bool {
        let now = self.version();
        self.handed_off
            .iter()
            .all(|v| v.load(Ordering::SeqCst) >= now)
    }

    fn seen(&self) -> MutexGuard<'_, BTreeMap<SocketAddr, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `peer` places keys with other settings than this node (it
    /// is then left out of the members); logged once per identity.
    fn incompatible(&self, peer: &Peer) -> bool {
        let Some(why) = self.me.layout_mismatch(peer) else {
            return false;
        };
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.insert((peer.addr, peer.incarnation)) {
            log::error!("member refused: {why}");
        }
        true
    }

    fn up(&self, peer: Peer) {
        if self.incompatible(&peer) {
            return;
        }
        let seen = Seen {
            peer,
            up: true,
            since: Instant::now(),
        };
        self.seen().insert(peer.addr, seen);
        self.replace();
    }

    fn down(&self, peer: Peer) {
        if self.incompatible(&peer) {
            return;
        }
        let mut seen = self.seen();
        let newer = |s: &Seen| {
            s.peer.node != peer.node
                || (s.peer.incarnation, s.peer.renewals) > (peer.incarnation, peer.renewals)
        };
        if seen.get(&peer.addr).is_some_and(newer) {
            return; // a newer identity on that address already replaced it
        }
        let now = Seen {
            peer,
            up: false,
            since: Instant::now(),
        };
        seen.insert(peer.addr, now);
        drop(seen);
        self.replace();
    }

    /// Live members (this node included), by address.
    pub fn live(&self) -> Vec<Peer> {
        self.seen()
            .values()
            .filter(|s| s.up)
            .map(|s| s.peer)
            .collect()
    }

    /// What `ClusterStatus` answers: every member seen, and the epoch of
    /// the ones keys are placed on (the live ones, less this node while it
    /// leaves).
    pub fn view(&self) -> w::ClusterView {
        let leaving = self.is_leaving();
        let members = self
            .seen()
            .values()
            .map(|s| w::MemberInfo {
                node: s.peer.node,
                addr: s.peer.addr.to_string().into_bytes(),
                incarnation: s.peer.incarnation,
                shards: s.peer.shards,
                state: match s.up {
                    true if leaving && s.peer.addr == self.me.addr => w::MEMBER_LEAVING,
                    true => w::MEMBER_UP,
                    false => w::MEMBER_DOWN,
                },
                state_ms: u64::try_from(s.since.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        w::ClusterView {
            epoch: self.placement().epoch(),
            node: self.me.node,
            members,
        }
    }

    /// The cluster part of the topology `Hello` answers.
    pub fn cluster_topology(&self) -> w::ClusterTopology {
        w::ClusterTopology {
            node: self.me.node,
            replication: u8::try_from(self.replication).unwrap_or(u8::MAX),
            node_vnodes: NODE_VNODES,
            view: self.view(),
        }
    }
}

/// How this node takes part in membership.
#[derive(Clone, Debug)]
pub(crate) struct GossipConfig {
    /// Where the membership socket binds (shard 0's listen address).
    pub bind: SocketAddr,
    /// `--join` seeds, `host:port` each.
    pub seeds: Vec<String>,
    pub timing: Timing,
    /// The admin secrets (`--auth-token-file`): the first signs, any
    /// verifies; `None` on an open node.
    pub secrets: Option<Vec<Secret>>,
}

/// What wakes the membership task.
enum Input {
    Packet(Vec<u8>),
    Timer(Timer<Peer>),
    Announce,
}

/// The running membership of this node (on shard 0).
pub(crate) struct Gossip {
    socket: UdpSocket,
    machine: RefCell<Membership>,
    members: Arc<Members>,
    inputs: mpsc::UnboundedSender<Input>,
    seeds: Vec<String>,
    secrets: Option<Vec<Secret>>,
    /// Packets dropped: unsigned or forged, too large, or refused by foca.
    refused: Cell<u64>,
    /// Faults on purpose (tests).
    faults: Option<crate::links::faults::LinkFaults>,
    /// Left the membership: nothing more is sent or taken.
    left: Cell<bool>,
}

impl Gossip {
    /// Binds the membership socket and starts the tasks that run it on the
    /// current (shard 0's) executor.
    pub fn start(config: GossipConfig, members: Arc<Members>) -> Result<Rc<Gossip>, String> {
        let socket = UdpSocket::bind(config.bind).map_err(|e| {
            format!(
                "cannot bind the membership socket (UDP) on {}: {e}",
                config.bind
            )
        })?;
        if config.secrets.as_ref().is_some_and(Vec::is_empty) {
            log::warn!(
                "the token file has no admin secret: this node can neither join a cluster nor \
                 be joined (node-to-node membership packets are signed with an admin secret)"
            );
        }
        let seed = members.me.node ^ members.me.incarnation;
        let machine = Membership::new(members.me, config.timing, seed);
        let (tx, rx) = mpsc::unbounded();
        let gossip = Rc::new(Gossip {
            socket,
            machine: RefCell::new(machine),
            members,
            inputs: tx,
            seeds: config.seeds,
            secrets: config.secrets,
            refused: Cell::new(0),
            faults: crate::links::faults::LinkFaults::from_env(seed),
            left: Cell::new(false),
        });
        glommio::spawn_local(gossip.clone().receive()).detach();
        glommio::spawn_local(gossip.clone().drive(rx)).detach();
        glommio::spawn_local(gossip.clone().leave_when_asked()).detach();
        if !gossip.seeds.is_empty() {
            gossip.input(Input::Announce);
        }
        Ok(gossip)
    }

    /// Leaves the membership once the node starts leaving
    /// (`Members::start_leaving`).
    async fn leave_when_asked(self: Rc<Self>) {
        while !self.members.leave_membership.load(Ordering::SeqCst) {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        self.leave().await;
    }

    /// Leaves the cluster on purpose (once): peers see this node down at
    /// once. From then on the membership task does nothing.
    pub async fn leave(&self) {
        if self.left.replace(true) {
            return;
        }
        let outputs = self.machine.borrow_mut().leave();
        self.act(outputs).await;
        log::info!("left the cluster");
    }

    fn input(&self, input: Input) {
        // The receiver lives as long as the executor: a send cannot fail
        // while anything still runs.
        let _ = self.inputs.unbounded_send(input);
    }

    /// Feeds the state machine, one input at a time, and carries out what
    /// it asks for.
    async fn drive(self: Rc<Self>, mut inputs: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = inputs.next().await {
            if self.left.get() {
                continue;
            }
            let outputs = match input {
                Input::Packet(bytes) => self.machine.borrow_mut().handle_data(&bytes),
                Input::Timer(timer) => self.machine.borrow_mut().handle_timer(timer),
                Input::Announce => self.announce(),
            };
            self.act(outputs).await;
        }
    }

    /// Announces this node to its seeds while it knows no live member,
    /// and asks to be woken to try again.
    fn announce(self: &Rc<Self>) -> Vec<Output> {
        let mut outputs = Vec::new();
        if self.machine.borrow().members().is_empty() {
            let me = self.members.me.addr;
            for seed in &self.seeds {
                match seed.to_socket_addrs() {
                    Ok(addrs) => {
                        for addr in addrs.filter(|a| *a != me) {
                            outputs.extend(self.machine.borrow_mut().announce(Peer::seed(addr)));
                        }
                    }
                    Err(e) => log::warn!("--join {seed}: {e}; trying again"),
                }
            }
        }
        let gossip = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
            gossip.input(Input::Announce);
        })
        .detach();
        outputs
    }

    async fn act(&self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, bytes } => self.send(to.addr, bytes).await,
                Output::Arm { after, timer } => {
                    let inputs = self.inputs.clone();
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(after).await;
                        let _ = inputs.unbounded_send(Input::Timer(timer));
                    })
                    .detach();
                }
                Output::Up(p) => {
                    log::info!(
                        "member up: {} at {} (incarnation {}, {} shard(s))",
                        p.node_id(),
                        p.addr,
                        p.incarnation,
                        p.shards
                    );
                    self.members.up(p);
                }
                Output::Down(p) => {
                    log::warn!(
                        "member down: {} at {} (incarnation {})",
                        p.node_id(),
                        p.addr,
                        p.incarnation
                    );
                    self.members.down(p);
                }
                Output::Renamed(old, new) => {
                    log::info!(
                        "member {} at {} renewed its identity (it was thought down); still up",
                        new.node_id(),
                        new.addr
                    );
                    if old.addr != new.addr {
                        self.members.down(old);
                    }
                    self.members.up(new);
                }
                Output::Refused(why) => self.refuse(&why),
            }
        }
    }

    async fn send(&self, to: SocketAddr, mut bytes: Vec<u8>) {
        if self.faults.as_ref().is_some_and(|f| f.drops_packet(to)) {
            return;
        }
        if let Some(secret) = self.secrets.as_ref().and_then(|s| s.first()) {
            let tag = secret.packet_tag(&bytes);
            bytes.extend_from_slice(&tag);
        }
        if let Err(e) = self.socket.send_to(&bytes, to).await {
            log::debug!("membership packet to {to} not sent: {e}");
        }
    }

    /// Receives packets for as long as the executor runs.
    async fn receive(self: Rc<Self>) {
        let mut buf = vec![0u8; MEMBERSHIP_PACKET_BYTES_MAX + PACKET_TAG_BYTES + 1];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((n, from)) => match self.open(&buf[..n]) {
                    Some(body) => self.input(Input::Packet(body.to_vec())),
                    None => self.refuse(&format!("a packet from {from} was not signed by an admin secret of this cluster, or too large")),
                },
                Err(e) => {
                    log::warn!("membership socket: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// The foca message in a packet, once its size and (on an
    /// authenticated node) its tag are checked.
    fn open<'a>(&self, packet: &'a [u8]) -> Option<&'a [u8]> {
        let Some(secrets) = &self.secrets else {
            return (packet.len() <= MEMBERSHIP_PACKET_BYTES_MAX).then_some(packet);
        };
        let body_len = packet.len().checked_sub(PACKET_TAG_BYTES)?;
        let (body, tag) = packet.split_at(body_len);
        let signed = secrets.iter().any(|s| s.verify_packet_tag(body, tag));
        (signed && body.len() <= MEMBERSHIP_PACKET_BYTES_MAX).then_some(body)
    }

    fn refuse(&self, why: &str) {
        let n = self.refused.get() + 1;
        self.refused.set(n);
        // The first, then every 1000th: a flood cannot flood the log.
        if n == 1 || n % 1000 == 0 {
            log::warn!("membership input refused ({n} so far): {why}");
        } else {
            log::debug!("membership input refused: {why}");
        }
    }
}
