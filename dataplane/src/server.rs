//! What one shard's connections share (the loop that accepts them is
//! `conn::accept_loop`): the shard and its side of the function platform,
//! the node's connection settings, the topology a `Hello` returns, the
//! node's view of its cluster, the shutdown event, and the connection
//! count and its limit (idle connections are reclaimed near it; past it a
//! connection is refused with `overloaded`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wire::message as w;

use crate::cache::NodeCache;
use crate::event::Event;
use crate::functions::{Remote, ShardFunctions};
use crate::leases::Leases;
use crate::links::Links;
use crate::members::{Members, Placement};
use crate::replicate::Pushes;
use crate::shard::Shard;

/// How a node's connections behave; one per node, shared by its shards.
#[derive(Debug)]
pub(crate) struct ConnSettings {
    /// How long a connection may take to finish a frame it started.
    pub partial_frame_timeout_ms: u64,
    /// How long a new connection may take to send `Hello`.
    pub hello_timeout_ms: u64,
    /// Idle time after which a connection may be reclaimed when its shard
    /// nears the connection limit.
    pub idle_reclaim_ms: u64,
    /// The secrets accepted; `None`: an open node.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Node-wide budget for read buffers grown past `READ_BUFFER_BYTES`.
    pub read_buffers_max_bytes: usize,
    /// Bytes of grown read buffers held now, node-wide.
    pub read_buffers_bytes: AtomicUsize,
    /// How many copies a write waits for (`--write-concern`).
    pub write_concern: crate::concern::WriteConcern,
    /// How often anti-entropy runs (0: never).
    pub anti_entropy_ms: u64,
    /// How long a commit record of an atomic call is kept.
    pub txn_record_ttl_ms: u64,
    /// Set to stop the node gracefully (a `Leave` request; the signal
    /// handlers set the same flag).
    pub stop: Arc<AtomicBool>,
}

/// One shard's serving side.
#[derive(Debug)]
pub(crate) struct Server {
    pub shard: Rc<Shard>,
    pub functions: Rc<ShardFunctions>,
    pub settings: Arc<ConnSettings>,
    /// The topology this shard reports (its `cluster` is filled in at
    /// each `Hello`, see [`Server::topology`]).
    topology: w::Topology,
    /// Set at shutdown; pulsed to make idle connections look at their age.
    pub shutdown: Event,
    pub open_connections: Cell<usize>,
    pub connections_max: usize,
    /// The shard's network ring (`--net uring`); `None`: glommio's sockets.
    pub net: Option<Rc<crate::uring::Net>>,
    /// The node's view of its cluster.
    pub members: Arc<Members>,
    /// This shard's copy of the placement (re-read when its version moves).
    placement: RefCell<Arc<Placement>>,
    /// This shard's connections to other nodes.
    pub links: Rc<Links>,
    /// Replication's push queues.
    pub pushes: Rc<Pushes>,
    /// The node's cache of other nodes' keys, and their leases on its own.
    pub cache: Arc<NodeCache>,
    pub leases: Arc<Leases>,
}

impl Server {
    pub fn new(
        shard: Rc<Shard>,
        functions: Rc<ShardFunctions>,
        settings: Arc<ConnSettings>,
        topology: w::Topology,
        remote: &Remote,
        pushes: Rc<Pushes>,
        connections_max: usize,
    ) -> Server {
        let members = remote.members.clone();
        Server {
            placement: RefCell::new(members.placement()),
            links: remote.links.clone(),
            cache: remote.cache.clone(),
            leases: remote.leases.clone(),
            pushes,
            shard,
            functions,
            settings,
            topology,
            shutdown: Event::default(),
            open_connections: Cell::new(0),
            connections_max,
            net: None,
            members,
        }
    }

    /// What `Hello` answers: the shards, and the cluster as it is now.
    pub fn topology(&self) -> w::Topology {
        let mut t = self.topology.clone();
        t.cluster = self.members.cluster_topology();
        t
    }

    /// Runs `f` with the current placement (this shard's copy, refreshed
    /// when the node's has moved on: one atomic load otherwise).
    pub fn with_placement<T>(&self, f: impl FnOnce(&Placement) -> T) -> T {
        if self.placement.borrow().version != self.members.version() {
            *self.placement.borrow_mut() = self.members.placement();
        }
        f(&self.placement.borrow())
    }

    /// After shutdown: waits until every connection has finished the batch
    /// in hand (idle ones close at once), or `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        while self.open_connections.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        if self.open_connections.get() > 0 {
            log::warn!(
                "{}: {} connection(s) still busy after the drain timeout",
                self.shard.id(),
                self.open_connections.get()
            );
        }
    }
}
