//! Starting and stopping a node: one glommio executor per shard, each pinned
//! to its own core, each recovering its own partition, binding its own port,
//! and serving until SIGINT/SIGTERM.
//!
//! Start-up: check locked memory → build the forwarding mesh → spawn shard
//! threads → each recovers and binds, and reports its address → the main
//! thread builds the topology and hands it to every shard → shards connect
//! the mesh and start accepting; the node prints one `ready` line.
//!
//! Shutdown: every shard stops accepting, lets connections finish the batch
//! in hand (idle ones close at once), waits until all shards have drained
//! (forwarded requests still flow meanwhile), flushes and syncs its WAL, and
//! exits. The process exits 0.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use kvs_core::ring::HashRing;
use kvs_core::ShardId;
use wire::message as w;

use crate::cache::NodeCache;
use crate::conn::Protocol;
use crate::functions::{
    serve_store, Mirror, Platform, PlatformConfig, Remote, ShardFunctions, StoreRequest,
};
use crate::leases::{LeasePusher, Leases};
use crate::limits::{
    CONNECTIONS_PER_SHARD_MAX, FORWARD_QUEUE_DEPTH, IO_MEMORY_PER_SHARD_BYTES, LARGE_BLOCK_BYTES,
    SHARDS_MAX, SHUTDOWN_DRAIN_TIMEOUT_MS, STOP_POLL_INTERVAL_MS,
};
use crate::links::faults::LinkFaults;
use crate::links::Links;
use crate::members::{Gossip, GossipConfig, Members};
use crate::server::{ConnSettings, Server};
use crate::shard::{Shard, ShardParts};
use crate::storage::{FsyncPolicy, SnapshotPolicy, Storage};
use crate::transport::channels::{self, PeerEnds};
use crate::transport::faults::{Faults, Faulty};
use crate::transport::Transport;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub shards: usize,
    /// Shard 0 listens here; shard i on port + i (or an ephemeral port each
    /// when the port is 0).
    pub listen: String,
    /// Every shard also serves RESP2 here (`--resp-listen`).
    pub resp_listen: Option<String>,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub vnodes_per_shard: u32,
    pub snapshot: SnapshotPolicy,
    /// Busy-poll this long before a shard sleeps (0 = sleep at once).
    pub spin_before_park_us: u64,
    /// The path client sockets take (`--net`).
    pub net: crate::uring::NetPath,
    /// Connections each shard serves at once.
    pub connections_max: usize,
    /// How long a connection may take to finish a frame it started.
    pub partial_frame_timeout_ms: u64,
    /// How long a new connection may take to send `Hello`.
    pub hello_timeout_ms: u64,
    /// Idle time after which a connection may be reclaimed when its shard
    /// nears `connections_max`.
    pub idle_reclaim_ms: u64,
    /// Node-wide budget for read buffers holding large frames, in MiB.
    pub read_buffers_mb: usize,
    /// The secrets clients must prove (`--auth-token-file`); `None`: open.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Function executor threads beside each shard (on its core).
    pub executors_per_shard: usize,
    /// Pin each executor to its shard's core (false: the OS places them).
    pub pin_executors: bool,
    /// What compiles uploaded WebAssembly.
    pub wasm_compiler: wasm_host::Compiler,
    /// Register the test suite's fixture functions too.
    pub test_fixtures: bool,
    /// Members to join through (`host:port` of any member's shard 0);
    /// empty: start alone (others may join this node).
    pub join: Vec<String>,
    /// The address other nodes and clients reach shard 0 at, when it is
    /// not `listen` (behind NAT, or listening on 0.0.0.0).
    pub advertise: Option<String>,
    /// How fast membership notices failures.
    pub membership: cluster::membership::Timing,
    /// Copies of each key in the cluster (every node must use the same).
    pub replication: usize,
    /// How many copies a write waits for before it is acknowledged.
    pub write_concern: crate::concern::WriteConcern,
    /// How often anti-entropy runs (0: never; only with replication).
    pub anti_entropy_ms: u64,
    /// The cache of other nodes' keys (`--cache-mb`; 0: none).
    pub cache_bytes: usize,
    /// How long a commit record of an atomic call is kept.
    pub txn_record_ttl_ms: u64,
    /// Plan DAG calls' functions over the members in rotation.
    pub spread_functions: bool,
}

/// Shared between the main thread and the shards.
#[derive(Debug, Default)]
struct Control {
    stop: Arc<AtomicBool>,
    drained: AtomicUsize,
    /// One per running shard: fired by the main thread once `stop` is set
    /// (shards wait on it instead of polling the flag: an idle node runs no
    /// timers).
    stoppers: std::sync::Mutex<Vec<futures_channel::oneshot::Sender<()>>>,
}

/// Runs a node until SIGINT/SIGTERM (or a start-up failure).
pub fn run(config: NodeConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    run_until(config, stop)
}

/// Makes the allocator hand large blocks (read buffers of big frames,
/// large values) back to the OS when they are freed. glibc otherwise raises
/// its mmap threshold after the first large free, and every later large
/// buffer comes from the heap and stays in the process after its
/// connection closes (measured: 1.8 GB kept after 1000 slow 4 MiB frames).
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn return_large_blocks_to_the_os() {
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator; it is
    // thread-safe, takes no pointers, and any value is valid for
    // M_MMAP_THRESHOLD (blocks at least this large are mmap'ed, and
    // munmap'ed when freed).
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES as libc::c_int) };
    if ok != 1 {
        log::warn!(
            "could not set the allocator's mmap threshold; freed large buffers may stay resident"
        );
    }
}

#[cfg(not(target_env = "gnu"))]
fn return_large_blocks_to_the_os() {}

/// Runs a node until `stop` becomes true.
pub fn run_until(config: NodeConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    return_large_blocks_to_the_os();
    let n = config.shards;
    if n == 0 || n > SHARDS_MAX {
        anyhow::bail!("--shards must be between 1 and {SHARDS_MAX}, not {n}");
    }
    if config.connections_max == 0 || config.connections_max > CONNECTIONS_PER_SHARD_MAX {
        anyhow::bail!("--connections-max must be between 1 and {CONNECTIONS_PER_SHARD_MAX}");
    }
    crate::memlock::check(n)?;
    crate::memlock::check_io_uring()?;
    let cpus = core_ids();
    let (host, base_port) = split_listen(&config.listen)?;
    let resp_listen = config
        .resp_listen
        .as_deref()
        .map(resp_address)
        .transpose()?;
    if let Some(a) = resp_listen.filter(|a| !a.ip().is_loopback()) {
        match config.auth {
            Some(_) => log::warn!(
                "RESP on {a}: Redis clients send their secret in the clear (AUTH); \
                 serve RESP beyond loopback only on a trusted network"
            ),
            None => log::warn!(
                "RESP on {a} without authentication: anyone who reaches this port can read \
                 and write every LWW key (use --auth-token-file)"
            ),
        }
    }
    match &config.auth {
        Some(auth) => log::info!("authentication required: secrets for {}", auth.summary()),
        None if !is_loopback(&host) => log::warn!(
            "listening on {host} without authentication: anyone who reaches this port can \
             read every key and upload code (use --auth-token-file)"
        ),
        None => {}
    }
    let me = crate::identity::start(&config.data_dir)?;
    // glommio opens directories relative to nothing: a relative
    // `--data-dir` (the default, `./squall-data`) must be made absolute.
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("resolving --data-dir {}", config.data_dir.display()))?;
    log::info!("{}, incarnation {}", me.id, me.incarnation);
    let control = Arc::new(Control {
        stop,
        drained: AtomicUsize::new(0),
        stoppers: std::sync::Mutex::new(Vec::new()),
    });
    let ring = HashRing::new((0..n).map(|i| ShardId(i as u16)), config.vnodes_per_shard);
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<SocketAddr, String>)>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let shard_cpus: Vec<usize> = (0..n).map(|i| cpus[i % cpus.len()]).collect();
    // Cores no shard runs on help the shards recover, dealt out in turn.
    let spare_cpus = cpus.get(n..).unwrap_or_default();
    let platform_config = PlatformConfig {
        executors_per_shard: config.executors_per_shard,
        pin_executors: config.pin_executors,
        wasm_compiler: config.wasm_compiler,
        test_fixtures: config.test_fixtures,
        // Machine code in registration records runs only where nobody but
        // the cluster's nodes can write them.
        trust_precompiled: config.auth.is_some(),
        spread_functions: config.spread_functions,
    };
    let faults = match std::env::var(Faults::ENV) {
        Ok(spec) => {
            let f = Faults::parse(&spec).map_err(|e| anyhow::anyhow!("{}: {e}", Faults::ENV))?;
            log::warn!(
                "{}={spec}: messages between shards are disturbed on purpose",
                Faults::ENV
            );
            Some(f)
        }
        Err(_) => None,
    };
    let cache = Arc::new(NodeCache::new(config.cache_bytes));
    let leases = Arc::new(Leases::default());
    let (platform, store_rxs) = Platform::start(
        &platform_config,
        &shard_cpus,
        &ring,
        crate::shard::wall_us(),
        cache.clone(),
    )?;
    let conn = Arc::new(ConnSettings {
        partial_frame_timeout_ms: config.partial_frame_timeout_ms,
        hello_timeout_ms: config.hello_timeout_ms,
        idle_reclaim_ms: config.idle_reclaim_ms,
        read_buffers_max_bytes: config.read_buffers_mb << 20,
        auth: config.auth.clone(),
        read_buffers_bytes: AtomicUsize::new(0),
        stop: control.stop.clone(),
        write_concern: config.write_concern,
        anti_entropy_ms: config.anti_entropy_ms,
        txn_record_ttl_ms: config.txn_record_ttl_ms,
    });
    let mut topo_txs = Vec::new();
    let mut handles = Vec::new();
    let mesh = channels::mesh(n, FORWARD_QUEUE_DEPTH);
    for (i, (ends, store_rx)) in mesh.into_iter().zip(store_rxs).enumerate() {
        let (topo_tx, topo_rx) = mpsc::channel::<Started>();
        topo_txs.push(topo_tx);
        let cpu = shard_cpus[i];
        let port = if base_port == 0 {
            0
        } else {
            base_port + i as u16
        };
        let ctx = ShardStart {
            id: ShardId(i as u16),
            listen: format!("{host}:{port}"),
            resp_listen,
            dir: data_dir.join(format!("shard-{i}")),
            recovery_cpus: spare_cpus.iter().skip(i).step_by(n).copied().collect(),
            fsync: config.fsync,
            net: config.net,
            snapshot: config.snapshot,
            ring: ring.clone(),
            ends,
            ready: ready_tx.clone(),
            done: done_tx.clone(),
            topology: topo_rx,
            control: control.clone(),
            shards: n,
            connections_max: config.connections_max,
            conn: conn.clone(),
            platform: platform.clone(),
            store_rx,
            faults: faults.map(|f| Faults {
                seed: f.seed.wrapping_add(i as u64),
                ..f
            }),
        };
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{i}"))
            .io_memory(IO_MEMORY_PER_SHARD_BYTES);
        if config.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
        }
        let handle = builder
            .spawn(move || async move {
                let (i, done) = (usize::from(ctx.id.0), ctx.done.clone());
                let result = run_shard(ctx).await;
                let _ = done.send((i, result));
            })
            .map_err(std::io::Error::from)
            .with_context(|| format!("starting shard {i} on cpu {cpu}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    drop(done_tx);
    let addrs = match wait_until_ready(&ready_rx, n) {
        Ok(addrs) => addrs,
        Err(e) => {
            control.stop.store(true, Ordering::SeqCst);
            drop(topo_txs); // shards waiting for the topology give up
            for h in handles {
                let _ = h.join();
            }
            anyhow::bail!(e);
        }
    };
    let topology = topology_of(&addrs, &ring, &config);
    let me = cluster::membership::Peer {
        addr: advertised(&config, addrs[0])?,
        node: me.id.0,
        incarnation: me.incarnation,
        shards: n as u16,
        renewals: 0,
        replication: u16::try_from(config.replication).unwrap_or(u16::MAX),
        shard_vnodes: config.vnodes_per_shard,
    };
    let members = Arc::new(Members::new(
        me,
        config.vnodes_per_shard,
        config.replication,
    ));
    let mut gossip = Some(GossipConfig {
        bind: addrs[0],
        seeds: config.join.clone(),
        timing: config.membership,
        secrets: config
            .auth
            .as_ref()
            .map(|a| a.node_secrets().cloned().collect()),
    });
    for tx in &topo_txs {
        let _ = tx.send(Started {
            topology: topology.clone(),
            members: members.clone(),
            cache: cache.clone(),
            leases: leases.clone(),
            gossip: gossip.take(), // shard 0's
        });
    }
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    log::info!(
        "node ready: {n} shard(s) on {} (fsync {:?}, data in {})",
        list.join(" "),
        config.fsync,
        data_dir.display()
    );
    // The one line scripts and tests wait for.
    let resp = resp_listen.map_or(String::new(), |a| format!(" resp={a}"));
    if let Some(a) = resp_listen {
        log::info!("serving RESP2 (Redis clients) on {a}, on every shard");
    }
    println!(
        "squall ready shards={n} addrs={} node={:016x} incarnation={}{resp}",
        list.join(","),
        me.node,
        me.incarnation
    );
    // The executor threads are not joined: tearing a glommio executor down
    // with sockets and channels still registered can take long (it once
    // spun for minutes here), and nothing durable depends on it.
    drop(handles);
    let result = wait_for_shards(&control, &done_rx, n);
    if result.is_ok() {
        log::info!("node stopped cleanly: every acknowledged write is on disk");
    }
    result
}

/// The address this node is known by in the cluster: `--advertise`, or
/// shard 0's own address.
fn advertised(config: &NodeConfig, bound: SocketAddr) -> anyhow::Result<SocketAddr> {
    let Some(a) = &config.advertise else {
        if bound.ip().is_unspecified() && !config.join.is_empty() {
            anyhow::bail!(
                "listening on {bound}, other nodes cannot reach this node at that address: \
                 add --advertise HOST:PORT (where they reach shard 0)"
            );
        }
        return Ok(bound);
    };
    a.to_socket_addrs()
        .with_context(|| format!("--advertise {a:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--advertise {a:?} resolves to no address"))
}

/// What a shard learns once every shard is ready.
struct Started {
    topology: w::Topology,
    members: Arc<Members>,
    /// The node's cache of other nodes' keys, and its leases on its own.
    cache: Arc<NodeCache>,
    leases: Arc<Leases>,
    /// Shard 0 runs the node's membership.
    gossip: Option<GossipConfig>,
}

/// Every shard's address once all have recovered and bound, or the first
/// start-up failure.
fn wait_until_ready(
    ready_rx: &mpsc::Receiver<(usize, Result<SocketAddr, String>)>,
    n: usize,
) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = vec![None; n];
    let mut failure = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok((i, Ok(addr))) => addrs[i] = Some(addr),
            Ok((i, Err(e))) => {
                failure.get_or_insert(format!("shard {i}: {e}"));
            }
            Err(_) => {
                failure.get_or_insert("a shard thread died during start-up".to_owned());
                break;
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(addrs.into_iter().flatten().collect()),
    }
}

/// The topology every shard reports (each with its own id in `shard`).
fn topology_of(addrs: &[SocketAddr], ring: &HashRing<ShardId>, config: &NodeConfig) -> w::Topology {
    w::Topology {
        protocol_version: wire::PROTOCOL_VERSION,
        shard: 0,
        shards: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| w::ShardInfo {
                id: i as u16,
                addr: a.to_string().into_bytes(),
            })
            .collect(),
        ring: w::RingInfo {
            hash: wire::RING_HASH_XXH64,
            vnodes_per_shard: config.vnodes_per_shard,
            tokens: ring
                .tokens()
                .iter()
                .map(|&(position, s)| w::RingToken {
                    position,
                    shard: s.0,
                })
                .collect(),
        },
        limits: w::Limits {
            frame_body_bytes_max: wire::limits::FRAME_BODY_BYTES_MAX as u32,
            key_bytes_max: kvs_core::limits::KEY_BYTES_MAX as u32,
            value_bytes_max: kvs_core::limits::VALUE_BYTES_MAX as u32,
            keys_per_get_max: wire::limits::KEYS_PER_GET_MAX as u32,
            connections_max: config.connections_max as u32,
        },
        // Filled in at every Hello (`Server::topology`): it changes.
        cluster: w::ClusterTopology {
            node: 0,
            replication: 1,
            node_vnodes: 0,
            view: w::ClusterView {
                epoch: 0,
                node: 0,
                members: Vec::new(),
            },
        },
    }
}

/// Waits for every shard to finish its shutdown (drained, WAL synced),
/// telling them to stop once `control.stop` is set.
fn wait_for_shards(
    control: &Control,
    done_rx: &mpsc::Receiver<(usize, Result<(), String>)>,
    n: usize,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    let mut done = 0;
    while done < n {
        let next = match done_rx.recv_timeout(Duration::from_millis(STOP_POLL_INTERVAL_MS)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if control.stop.load(Ordering::Relaxed) {
                    // Every shard registered so far (later ones next time).
                    let stoppers = std::mem::take(
                        &mut *control
                            .stoppers
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    );
                    for tx in stoppers {
                        let _ = tx.send(());
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(mpsc::RecvError),
            Ok(v) => Ok(v),
        };
        done += 1;
        match next {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(e))) => result = Err(anyhow::anyhow!("shard {i}: {e}")),
            Err(_) => {
                return Err(anyhow::anyhow!(
                    "a shard thread died (panicked) before finishing its shutdown"
                ));
            }
        }
    }
    result
}

/// The cores this process may run on (respects `taskset`).
fn core_ids() -> Vec<usize> {
    let ids: Vec<usize> = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| parse_cpu_list(l.trim_start_matches("Cpus_allowed_list:").trim()))
        })
        .unwrap_or_default();
    if ids.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        ids
    }
}

fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// `--resp-listen`'s address, its port chosen now when 0: every shard
/// binds the same one.
fn resp_address(listen: &str) -> anyhow::Result<SocketAddr> {
    let mut addr = listen
        .to_socket_addrs()
        .with_context(|| format!("--resp-listen {listen:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--resp-listen {listen:?} resolves to no address"))?;
    if addr.port() == 0 {
        let probe = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for RESP on {addr}"))?;
        addr = probe.local_addr()?;
    }
    Ok(addr)
}

fn split_listen(listen: &str) -> anyhow::Result<(String, u16)> {
    let addr = listen
        .to_socket_addrs()
        .with_context(|| format!("--listen {listen:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--listen {listen:?} resolves to no address"))?;
    Ok((addr.ip().to_string(), addr.port()))
}

struct ShardStart {
    id: ShardId,
    listen: String,
    /// The RESP address every shard binds (port resolved).
    resp_listen: Option<SocketAddr>,
    dir: PathBuf,
    /// Cores whose threads may help build the partition at recovery.
    recovery_cpus: Vec<usize>,
    fsync: FsyncPolicy,
    net: crate::uring::NetPath,
    snapshot: SnapshotPolicy,
    ring: HashRing<ShardId>,
    ends: Vec<Option<PeerEnds>>,
    ready: mpsc::Sender<(usize, Result<SocketAddr, String>)>,
    done: mpsc::Sender<(usize, Result<(), String>)>,
    topology: mpsc::Receiver<Started>,
    control: Arc<Control>,
    shards: usize,
    connections_max: usize,
    conn: Arc<ConnSettings>,
    platform: Platform,
    store_rx: futures_channel::mpsc::Receiver<StoreRequest>,
    /// Faults to inject into messages to other shards (tests).
    faults: Option<Faults>,
}

async fn run_shard(ctx: ShardStart) -> Result<(), String> {
    let i = usize::from(ctx.id.0);
    let ring = Rc::new(ctx.ring);
    let mirror = Rc::new(Mirror::new(ctx.platform.clone(), ctx.id, ring.clone()));
    let started = async {
        let (storage, recovered) = Storage::open(
            ctx.dir.clone(),
            ctx.id,
            &ctx.recovery_cpus,
            ctx.fsync,
            ctx.snapshot,
            crate::shard::wall_us(),
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        let listener = TcpListener::bind(&ctx.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", ctx.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // glommio sets SO_REUSEPORT: every shard binds the same address.
        let resp = match ctx.resp_listen {
            Some(a) => Some(
                TcpListener::bind(a).map_err(|e| format!("cannot listen for RESP on {a}: {e}"))?,
            ),
            None => None,
        };
        Ok::<_, String>((storage, recovered, listener, addr, resp))
    };
    let (storage, recovered, listener, addr, resp) = match started.await {
        Ok(s) => s,
        Err(e) => {
            let _ = ctx.ready.send((i, Err(e.clone())));
            return Err(e);
        }
    };
    // Registered functions this shard stores join the shared registry
    // before any shard serves (the topology waits for every shard).
    mirror.load(&recovered.partition);
    let _ = ctx.ready.send((i, Ok(addr)));
    // Blocks this thread briefly at start-up only: nothing else runs here yet.
    let Ok(Started {
        mut topology,
        members,
        cache,
        leases,
        gossip,
    }) = ctx.topology.recv()
    else {
        return Ok(()); // another shard failed to start
    };
    topology.shard = ctx.id.0;
    // Per-key copies this shard stores join the placement before it serves.
    let copies = Rc::new(crate::replicate::CopiesMirror {
        members: members.clone(),
    });
    copies.load(&recovered.partition);
    let pushes = Rc::new(crate::replicate::Pushes::new(members.clone()));
    let lease_pusher = Rc::new(LeasePusher::new(leases.clone()));
    let (channels, inbound) = channels::connect(ctx.ends).await;
    let mut transport: Rc<dyn Transport> = Rc::new(channels);
    if let Some(f) = ctx.faults {
        transport = Rc::new(Faulty::new(transport, f));
    }
    let shard = Rc::new(Shard::new(ShardParts {
        id: ctx.id,
        partition: recovered.partition,
        clock_floor_us: recovered.max_clock_us,
        txn_record_ttl_ms: ctx.conn.txn_record_ttl_ms,
        storage,
        ring,
        transport,
        observers: vec![
            mirror.clone() as Rc<dyn crate::shard::WriteObserver>,
            copies as Rc<dyn crate::shard::WriteObserver>,
            lease_pusher.clone() as Rc<dyn crate::shard::WriteObserver>,
        ],
        writes: Some(pushes.clone() as Rc<dyn crate::shard::WriteObserver>),
    }));
    shard.start();
    for from in inbound {
        glommio::spawn_local(shard.clone().serve(from)).detach();
    }
    let secret = (ctx.conn.auth.as_ref()).and_then(|a| a.node_secrets().next().cloned());
    let links = Rc::new(Links::new(
        secret,
        LinkFaults::from_env(u64::from(ctx.id.0)),
    ));
    let remote = Rc::new(Remote {
        links,
        members: members.clone(),
        cache,
        leases,
    });
    glommio::spawn_local(serve_store(shard.clone(), remote.clone(), ctx.store_rx)).detach();
    let functions = Rc::new(ShardFunctions::new(
        ctx.platform,
        shard.clone(),
        &mirror,
        remote.clone(),
    ));
    let net = match ctx.net {
        crate::uring::NetPath::Glommio => None,
        crate::uring::NetPath::Uring => match crate::uring::Net::start() {
            Ok(net) => Some(net),
            Err(e) => {
                log::warn!(
                    "{}: no network ring ({e}; multishot receive needs Linux 6.0); \
                     serving on glommio's sockets",
                    ctx.id
                );
                None
            }
        },
    };
    let mut server = Server::new(
        shard.clone(),
        functions,
        ctx.conn,
        topology,
        &remote,
        pushes.clone(),
        ctx.connections_max,
    );
    server.net = net;
    let server = Rc::new(server);
    glommio::spawn_local(crate::handoff::run(server.clone())).detach();
    let links = server.links.clone();
    glommio::spawn_local(crate::replicate::run(shard.clone(), links.clone(), pushes)).detach();
    glommio::spawn_local(crate::leases::run(shard.clone(), links, lease_pusher)).detach();
    if ctx.id.0 == 0 {
        // Keys may have moved, or be this node's now: the cache starts
        // over. Chains through a node that left end.
        let (mut moved, cache) = (members.subscribe(), remote.cache.clone());
        let functions = server.functions.clone();
        glommio::spawn_local(async move {
            while futures_lite::StreamExt::next(&mut moved).await.is_some() {
                cache.clear();
                functions.members_changed();
            }
        })
        .detach();
    }
    let interval_ms = server.settings.anti_entropy_ms;
    if interval_ms > 0 && members.placement().replication() > 1 {
        glommio::spawn_local(crate::antientropy::run(server.clone(), interval_ms)).detach();
    }
    let gossip = match gossip {
        Some(config) => Some(Gossip::start(config, members)?),
        None => None,
    };
    let (stop_tx, stop_rx) = futures_channel::oneshot::channel();
    ctx.control
        .stoppers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(stop_tx);
    glommio::spawn_local(watch_stop(server.clone(), stop_rx)).detach();
    let sockets = if server.net.is_some() {
        "its own io_uring"
    } else {
        "glommio's"
    };
    log::info!(
        "{}: serving on {addr} (cpu-pinned executor, sockets on {sockets} ring)",
        ctx.id
    );

    if let Some(resp) = resp {
        let server = server.clone();
        glommio::spawn_local(async move {
            crate::conn::accept_loop(&server, &resp, Protocol::Resp).await;
        })
        .detach();
    }
    crate::conn::accept_loop(&server, &listener, Protocol::Native).await;
    if let Some(gossip) = gossip {
        gossip.leave().await;
    }

    // Drain: connections finish the batch in hand; idle ones close now.
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_TIMEOUT_MS);
    server.drain(deadline).await;
    // Other shards may still forward their in-flight requests here.
    ctx.control.drained.fetch_add(1, Ordering::SeqCst);
    while ctx.control.drained.load(Ordering::SeqCst) < ctx.shards && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    shard
        .close()
        .await
        .map_err(|e| format!("{}: final WAL flush failed: {e:#}", ctx.id))?;
    log::info!("{}: stopped; WAL flushed and synced", ctx.id);
    Ok(())
}

/// Whether `host` (an address or a name) is a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Waits for the main thread to say stop (or to be gone).
async fn watch_stop(server: Rc<Server>, stop: futures_channel::oneshot::Receiver<()>) {
    let _ = stop.await;
    log::info!("{}: stop requested; draining", server.shard.id());
    server.shutdown.set();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert!(parse_cpu_list("").is_empty());
    }
}
