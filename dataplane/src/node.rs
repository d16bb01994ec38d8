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
use wire::Status;

use crate::forward::{self, PeerEnds};
use crate::functions::{self, NodeStore, StoreRequest, INLINE_EXECUTOR_ID_BASE};
use crate::limits::{
    CONNECTIONS_PER_SHARD_MAX, FN_QUEUE_DEPTH, FORWARD_QUEUE_DEPTH, IO_MEMORY_PER_SHARD_BYTES,
    LARGE_BLOCK_BYTES, RECLAIM_AT_PERCENT, RECLAIM_PULSE_INTERVAL_MS, SHARDS_MAX,
    SHUTDOWN_DRAIN_TIMEOUT_MS, STOP_POLL_INTERVAL_MS, STORE_QUEUE_DEPTH,
};
use crate::shard::{bump, Shard, ShardFunctions};
use crate::storage::{FsyncPolicy, Storage};
use executor::limits::MAILBOX_DEPTH;
use executor::message::Postbox;
use executor::registry::Registry;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub shards: usize,
    /// Shard 0 listens here; shard i on port + i (or an ephemeral port each
    /// when the port is 0).
    pub listen: String,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub vnodes_per_shard: u32,
    pub snapshot_wal_bytes: u64,
    /// Busy-poll this long before a shard sleeps (0 = sleep at once).
    pub spin_before_park_us: u64,
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
    let cpus = core_ids();
    let (host, base_port) = split_listen(&config.listen)?;
    match &config.auth {
        Some(auth) => log::info!("authentication required: secrets for {}", auth.summary()),
        None if !is_loopback(&host) => log::warn!(
            "listening on {host} without authentication: anyone who reaches this port can \
             read every key and upload code (use --auth-token-file)"
        ),
        None => {}
    }
    let control = Arc::new(Control {
        stop,
        drained: AtomicUsize::new(0),
        stoppers: std::sync::Mutex::new(Vec::new()),
    });
    let ring = HashRing::new((0..n).map(|i| ShardId(i as u16)), config.vnodes_per_shard);
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<SocketAddr, String>)>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    // Function executors: `executors_per_shard` beside each shard, pinned to
    // the shard's core; they reach the store through per-shard request
    // queues and each other through mailboxes.
    let wasm = wasm_host::WasmRuntime::new(config.wasm_compiler)
        .context("starting the WebAssembly runtime")?;
    let mut registry = Registry::with_builtins()
        .with_wasm(wasm)
        .with_models(Arc::new(crate::model_fns::Runtime));
    crate::model_fns::register_builtins(&mut registry)?;
    let registry = Arc::new(registry);
    let (store_txs, mut store_rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| futures_channel::mpsc::channel(STORE_QUEUE_DEPTH))
        .unzip();
    let store = Arc::new(NodeStore::new(store_txs, ring.clone()));
    let executors = n * config.executors_per_shard;
    let post = Arc::new(Postbox::new(
        0..executors as u64,
        MAILBOX_DEPTH,
        crate::shard::wall_us(),
    ));
    let shard_cpus: Vec<usize> = (0..n).map(|i| cpus[i % cpus.len()]).collect();
    let pool = functions::Pool::start(
        &shard_cpus,
        config.pin_executors,
        config.executors_per_shard,
        registry.clone(),
        store,
        post,
        FN_QUEUE_DEPTH,
    )
    .context("starting the function executors")?;
    let dag_generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let conn = Arc::new(crate::conn::ConnSettings {
        partial_frame_timeout_ms: config.partial_frame_timeout_ms,
        hello_timeout_ms: config.hello_timeout_ms,
        idle_reclaim_ms: config.idle_reclaim_ms,
        read_buffers_max_bytes: config.read_buffers_mb << 20,
        auth: config.auth.clone(),
        read_buffers_bytes: AtomicUsize::new(0),
    });
    let mut topo_txs = Vec::new();
    let mut handles = Vec::new();
    for (i, ends) in forward::mesh(n, FORWARD_QUEUE_DEPTH)
        .into_iter()
        .enumerate()
    {
        let (topo_tx, topo_rx) = mpsc::channel::<w::Topology>();
        topo_txs.push(topo_tx);
        let cpu = shard_cpus[i];
        let port = if base_port == 0 {
            0
        } else {
            base_port + i as u16
        };
        let listen = format!("{host}:{port}");
        let ctx = ShardStart {
            id: ShardId(i as u16),
            listen,
            dir: config.data_dir.join(format!("shard-{i}")),
            fsync: config.fsync,
            snapshot_wal_bytes: config.snapshot_wal_bytes,
            ring: ring.clone(),
            ends,
            ready: ready_tx.clone(),
            done: done_tx.clone(),
            topology: topo_rx,
            control: control.clone(),
            shards: n,
            connections_max: config.connections_max,
            conn: conn.clone(),
            functions: ShardFunctions {
                pool: pool.clone(),
                registry: registry.clone(),
                dag_generation: dag_generation.clone(),
            },
            store_rx: store_rxs.remove(0),
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
    if let Some(e) = failure {
        control.stop.store(true, Ordering::SeqCst);
        drop(topo_txs); // shards waiting for the topology give up
        for h in handles {
            let _ = h.join();
        }
        anyhow::bail!(e);
    }
    let addrs: Vec<SocketAddr> = addrs.into_iter().flatten().collect();
    let topology = w::Topology {
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
    };
    for tx in &topo_txs {
        let _ = tx.send(topology.clone());
    }
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    log::info!(
        "node ready: {n} shard(s) on {} (fsync {:?}, data in {})",
        list.join(" "),
        config.fsync,
        config.data_dir.display()
    );
    // The one line scripts and tests wait for.
    println!("squall ready shards={n} addrs={}", list.join(","));
    // Wait for every shard to finish its shutdown (drained, WAL synced).
    // The executor threads are not joined: tearing a glommio executor down
    // with sockets and channels still registered can take long (it once
    // spun for minutes here), and nothing durable depends on it.
    drop(handles);
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
                result = Err(anyhow::anyhow!(
                    "a shard thread died (panicked) before finishing its shutdown"
                ));
                break;
            }
        }
    }
    if result.is_ok() {
        log::info!("node stopped cleanly: every acknowledged write is on disk");
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
    dir: PathBuf,
    fsync: FsyncPolicy,
    snapshot_wal_bytes: u64,
    ring: HashRing<ShardId>,
    ends: Vec<Option<PeerEnds>>,
    ready: mpsc::Sender<(usize, Result<SocketAddr, String>)>,
    done: mpsc::Sender<(usize, Result<(), String>)>,
    topology: mpsc::Receiver<w::Topology>,
    control: Arc<Control>,
    shards: usize,
    connections_max: usize,
    conn: Arc<crate::conn::ConnSettings>,
    functions: ShardFunctions,
    store_rx: futures_channel::mpsc::Receiver<StoreRequest>,
}

async fn run_shard(ctx: ShardStart) -> Result<(), String> {
    let i = usize::from(ctx.id.0);
    let started = async {
        let (storage, recovered) =
            Storage::open(ctx.dir.clone(), ctx.id, ctx.fsync, ctx.snapshot_wal_bytes)
                .await
                .map_err(|e| format!("{e:#}"))?;
        let listener = TcpListener::bind(&ctx.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", ctx.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((storage, recovered, listener, addr))
    };
    let (storage, recovered, listener, addr) = match started.await {
        Ok(s) => s,
        Err(e) => {
            let _ = ctx.ready.send((i, Err(e.clone())));
            return Err(e);
        }
    };
    // Registered functions this shard stores join the shared registry
    // before any shard serves (the topology waits for every shard).
    let prefix = executor::registry::stored::KEY_PREFIX.as_bytes();
    for key in recovered.partition.live_keys_with_prefix(prefix) {
        let name = executor::registry::stored::name_of(key).unwrap_or_default();
        let body = match recovered.partition.get(key) {
            Some(kvs_core::Value::Lww(l)) => executor::registry::stored::decode(l.value()),
            _ => Err("not an LWW value".to_owned()),
        };
        match body.and_then(|b| {
            ctx.functions
                .registry
                .define(name, &b)
                .map_err(|e| e.to_string())
        }) {
            Ok(()) => log::info!("{}: function {name:?} registered (recovered)", ctx.id),
            Err(e) => log::warn!("{}: stored function {name:?} ignored: {e}", ctx.id),
        }
    }
    let _ = ctx.ready.send((i, Ok(addr)));
    // Blocks this thread briefly at start-up only: nothing else runs here yet.
    let Ok(mut topology) = ctx.topology.recv() else {
        return Ok(()); // another shard failed to start
    };
    topology.shard = ctx.id.0;
    let hello = w::Response::Hello(topology.clone());
    let mut hello_body = Vec::new();
    wire::frame::encode_frame(0, &hello, &mut hello_body).map_err(|e| e.to_string())?;
    let hello_body = hello_body.split_off(wire::frame::FRAME_HEADER_BYTES);

    let shard = Rc::new(Shard::new(
        ctx.id,
        recovered.partition,
        storage.clone(),
        Rc::new(ctx.ring),
        (topology, hello_body),
        recovered.max_clock_us,
        ctx.conn,
    ));
    let peers = forward::connect(&shard, ctx.ends).await;
    *shard.peers.borrow_mut() = peers;
    *shard.inline.borrow_mut() = Some(executor::registry::Executor::new(
        INLINE_EXECUTOR_ID_BASE | u64::from(ctx.id.0),
        ctx.functions.registry.clone(),
    ));
    *shard.functions.borrow_mut() = Some(ctx.functions);
    glommio::spawn_local(functions::serve_store(shard.clone(), ctx.store_rx)).detach();
    let rebuilt = {
        let shard = shard.clone();
        Box::new(move || shard.after_rebuild())
    };
    glommio::spawn_local(
        storage
            .clone()
            .run_flusher(shard.partition.clone(), rebuilt),
    )
    .detach();
    glommio::spawn_local(storage.clone().run_batch_syncer()).detach();
    let (stop_tx, stop_rx) = futures_channel::oneshot::channel();
    ctx.control
        .stoppers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(stop_tx);
    glommio::spawn_local(watch_stop(shard.clone(), stop_rx)).detach();
    log::info!("{}: serving on {addr} (cpu-pinned executor)", ctx.id);

    accept_loop(&shard, &listener, ctx.connections_max).await;

    // Drain: connections finish the batch in hand; idle ones close now.
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_TIMEOUT_MS);
    while shard.open_connections.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    if shard.open_connections.get() > 0 {
        log::warn!(
            "{}: {} connection(s) still busy after the drain timeout",
            ctx.id,
            shard.open_connections.get()
        );
    }
    // Other shards may still forward their in-flight requests here.
    ctx.control.drained.fetch_add(1, Ordering::SeqCst);
    while ctx.control.drained.load(Ordering::SeqCst) < ctx.shards && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    storage
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

async fn accept_loop(shard: &Rc<Shard>, listener: &TcpListener, connections_max: usize) {
    let mut last_pulse = Instant::now() - Duration::from_secs(1);
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait_set().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                log::warn!("{}: accept failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.open_connections.get() * 100 >= connections_max * RECLAIM_AT_PERCENT {
            // Near the limit: idle connections look at their age and the
            // oldest make room (rate-limited: a pulse wakes them all).
            if last_pulse.elapsed() >= Duration::from_millis(RECLAIM_PULSE_INTERVAL_MS) {
                last_pulse = Instant::now();
                shard.shutdown.pulse();
                futures_lite::future::yield_now().await;
            }
        }
        if shard.open_connections.get() >= connections_max {
            bump(&shard.stats.connections_refused);
            glommio::spawn_local(refuse(stream, connections_max)).detach();
            continue;
        }
        bump(&shard.stats.connections);
        shard.open_connections.set(shard.open_connections.get() + 1);
        let s = shard.clone();
        glommio::spawn_local(async move {
            crate::conn::serve(s.clone(), stream).await;
            s.open_connections.set(s.open_connections.get() - 1);
        })
        .detach();
    }
}

async fn refuse(mut stream: glommio::net::TcpStream, connections_max: usize) {
    use futures_lite::AsyncWriteExt;
    let mut buf = Vec::new();
    let msg =
        format!("this shard already serves {connections_max} connections (its limit); retry later");
    wire::frame::encode_error(0, Status::Overloaded, &msg, &mut buf);
    let _ = stream.write_all(&buf).await;
}

/// Waits for the main thread to say stop (or to be gone).
async fn watch_stop(shard: Rc<Shard>, stop: futures_channel::oneshot::Receiver<()>) {
    let _ = stop.await;
    log::info!("{}: stop requested; draining", shard.id);
    shard.shutdown.set();
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
