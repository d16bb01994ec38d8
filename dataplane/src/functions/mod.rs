//! The function platform beside the store: executors, the function
//! registry and DAGs, and the calls that run through them. It sits on top
//! of the shard ([`crate::shard`]) and reaches its data only through the
//! shard's API; the shard in turn tells it about writes of registration
//! keys through a [`WriteObserver`](crate::shard::WriteObserver)
//! ([`watch::Mirror`]).
//!
//! - [`pool`]: the executor threads beside the shards, and how a DAG run's
//!   steps move between them (executor to executor).
//! - [`call`]: one call from start to result — plan, run, deadline,
//!   retries, continuations, storing an outcome under an output key.
//! - [`chain`]: chains of a call's functions sent node to node.
//! - [`dags`]: validated DAGs, cached per shard and invalidated by
//!   generation.
//! - [`store`]: the store as executor threads see it ([`NodeStore`]).
//! - [`requests`]: the function requests a connection hands over.
//! - [`watch`]: mirroring stored registrations into the node's registry.
//!
//! A node has one [`Platform`] (shared by every shard thread) and one
//! [`ShardFunctions`] per shard.

mod call;
mod chain;
mod dags;
mod pool;
mod requests;
mod store;
mod watch;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use executor::dag::FunctionOptions;
use executor::function::Placement;
use executor::instances::Instances;
use executor::limits::MAILBOX_DEPTH;
use executor::message::Postbox;
use executor::registry::Registry;
use executor::run::Arg;
use kvs_core::ring::HashRing;
use kvs_core::ShardId;

pub(crate) use requests::Answer;
pub(crate) use store::{serve_store, Remote, StoreRequest};
pub(crate) use watch::Mirror;

use crate::limits::{FN_QUEUE_DEPTH, STORE_QUEUE_DEPTH};
use crate::shard::Shard;
use dags::DagCache;
use pool::Pool;
use store::NodeStore;

/// Executor ids of the shards' inline executors (`| shard`); executor
/// threads use their index in the pool.
const INLINE_EXECUTOR_ID_BASE: u64 = 1 << 32;

/// (function registry, DAG) generations a cached DAG was validated under.
type Generations = (u64, u64);

/// How the node's executors run.
#[derive(Clone, Debug)]
pub(crate) struct PlatformConfig {
    /// Executor threads beside each shard (on its core).
    pub executors_per_shard: usize,
    /// Pin each executor to its shard's core (false: the OS places them).
    pub pin_executors: bool,
    pub wasm_compiler: wasm_host::Compiler,
    /// Register the test suite's fixture functions (`--test-fixtures`).
    pub test_fixtures: bool,
    /// Store an upload's machine code with it, and load the machine code
    /// registration records carry instead of compiling (compile once per
    /// cluster): only on a node with authentication, where nobody but the
    /// cluster's nodes (the admin role) writes those records.
    pub trust_precompiled: bool,
    /// Plan the functions of each DAG call over the cluster's members in
    /// rotation (`--spread-functions`), not beside their data.
    pub spread_functions: bool,
}

/// The node's function platform, shared by its shards.
#[derive(Clone, Debug)]
pub(crate) struct Platform {
    pool: Arc<Pool>,
    registry: Arc<Registry>,
    wasm: Arc<wasm_host::WasmRuntime>,
    trust_precompiled: bool,
    spread_functions: bool,
    /// Bumped by every write of a DAG key on any shard of the node.
    dag_generation: Arc<AtomicU64>,
    /// The waits for the results of chains ending on this node.
    chains: Arc<chain::Chains>,
}

impl Platform {
    /// Starts the executors: `executors_per_shard` beside each shard (on
    /// `shard_cpus[shard]`). They reach the store through one request
    /// queue per shard; the receivers returned go to the shards
    /// ([`serve_store`]).
    pub fn start(
        config: &PlatformConfig,
        shard_cpus: &[usize],
        ring: &HashRing<ShardId>,
        now_us: u64,
        cache: Arc<crate::cache::NodeCache>,
    ) -> anyhow::Result<(Platform, Vec<futures_channel::mpsc::Receiver<StoreRequest>>)> {
        let wasm = wasm_host::WasmRuntime::new(config.wasm_compiler)
            .context("starting the WebAssembly runtime")?;
        let mut registry = Registry::with_builtins()
            .with_wasm(wasm.clone())
            .with_models(Arc::new(crate::model_fns::Runtime));
        crate::model_fns::register_builtins(&mut registry)?;
        if config.test_fixtures {
            registry = registry.with_fixtures();
            log::warn!("test fixtures registered (--test-fixtures): sleep_ms, whoami, ...");
        }
        let registry = Arc::new(registry);
        let (store_txs, store_rxs): (Vec<_>, Vec<_>) = shard_cpus
            .iter()
            .map(|_| futures_channel::mpsc::channel(STORE_QUEUE_DEPTH))
            .unzip();
        let store = Arc::new(NodeStore::new(store_txs, ring.clone(), cache));
        let executors = shard_cpus.len() * config.executors_per_shard;
        let post = Arc::new(Postbox::new(0..executors as u64, MAILBOX_DEPTH, now_us));
        let pool = Pool::start(
            shard_cpus,
            config.pin_executors,
            config.executors_per_shard,
            registry.clone(),
            store,
            post,
            FN_QUEUE_DEPTH,
        )
        .context("starting the function executors")?;
        let platform = Platform {
            pool,
            registry,
            wasm,
            trust_precompiled: config.trust_precompiled,
            spread_functions: config.spread_functions,
            dag_generation: Arc::new(AtomicU64::new(0)),
            chains: Arc::default(),
        };
        Ok((platform, store_rxs))
    }

    /// The generations now.
    fn generations(&self) -> Generations {
        (
            self.registry.generation(),
            self.dag_generation.load(Ordering::Acquire),
        )
    }

    /// Whether a trigger of `function` runs inline — where it is, at once,
    /// with no hand-off: a pure built-in (microseconds), one replica, no
    /// batching, every argument a value. The one rule every path uses.
    fn runs_inline(&self, function: &str, options: &FunctionOptions, args: &[Arg]) -> bool {
        runs_inline(&self.registry, function, options, args)
    }
}

/// The bytes of an inline function's arguments (all values, as
/// [`Platform::runs_inline`] asks).
fn inline_args(args: Vec<Arg>) -> Vec<Vec<u8>> {
    (args.into_iter())
        .map(|a| match a {
            Arg::Value(v) | Arg::Ref(v) => v,
        })
        .collect()
}

/// Arguments as the wire carries them.
fn wire_args(args: impl IntoIterator<Item = Arg>) -> Vec<wire::message::Arg> {
    (args.into_iter())
        .map(|a| match a {
            Arg::Value(v) => wire::message::Arg::Value(v),
            Arg::Ref(k) => wire::message::Arg::Ref(k),
        })
        .collect()
}

/// Arguments as the wire carried them.
fn args_from_wire(args: Vec<wire::message::Arg>) -> Vec<Arg> {
    (args.into_iter())
        .map(|a| match a {
            wire::message::Arg::Value(v) => Arg::Value(v),
            wire::message::Arg::Ref(k) => Arg::Ref(k),
        })
        .collect()
}

/// See [`Platform::runs_inline`].
fn runs_inline(
    registry: &Registry,
    function: &str,
    options: &FunctionOptions,
    args: &[Arg],
) -> bool {
    options.replicas == 1
        && options.batch_max == 1
        && registry.placement(function) == Some(Placement::Inline)
        && args.iter().all(|a| matches!(a, Arg::Value(_)))
}

/// One shard's side of the platform: its inline executor, its DAG cache,
/// its background calls.
#[derive(Debug)]
pub(crate) struct ShardFunctions {
    platform: Platform,
    shard: Rc<Shard>,
    /// Instances of inline functions, run on this shard's own thread.
    inline: RefCell<Instances>,
    dags: Rc<DagCache>,
    /// Calls with an output key running in the background now.
    background_calls: Cell<usize>,
    /// The keys other nodes hold (output keys).
    remote: Rc<Remote>,
    /// Nodes that refused a function step as overloaded, left out of this
    /// shard's plans until the instant given (`BUSY_NODE_AVOID_MS`).
    busy: RefCell<HashMap<SocketAddr, Instant>>,
    /// Turns through the other members for functions this node, saturated,
    /// sends away.
    shed_turn: Cell<usize>,
}

impl ShardFunctions {
    /// The platform's side of shard `shard`, over the same DAG cache as
    /// `mirror` (the observer given to that shard).
    pub fn new(
        platform: Platform,
        shard: Rc<Shard>,
        mirror: &Mirror,
        remote: Rc<Remote>,
    ) -> ShardFunctions {
        let id = INLINE_EXECUTOR_ID_BASE | u64::from(shard.id().0);
        ShardFunctions {
            inline: RefCell::new(Instances::new(id, platform.registry.clone())),
            dags: mirror.dags(),
            background_calls: Cell::new(0),
            remote,
            platform,
            shard,
            busy: RefCell::default(),
            shed_turn: Cell::new(0),
        }
    }

    /// The members changed: chains through a node that left or restarted
    /// end (one shard of the node calls this for all).
    pub fn members_changed(&self) {
        let placement = self.remote.members.placement();
        (self.platform.chains).members_changed(|n| placement.identity(n));
    }

    /// Whether the node at `addr` refused a step as overloaded lately.
    fn is_busy(&self, addr: SocketAddr) -> bool {
        let mut busy = self.busy.borrow_mut();
        match busy.get(&addr) {
            Some(&until) if Instant::now() < until => true,
            Some(_) => {
                busy.remove(&addr);
                false
            }
            None => false,
        }
    }
}
