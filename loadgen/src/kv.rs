//! `loadgen kv`: the key-value benchmark against Squall or Redis.
//!
//! Each of `--clients` closed-loop clients sends a batch of `--pipeline`
//! requests (reads with probability `--read-ratio`, else writes of
//! `--value-bytes`), waits for every reply, and records the batch's round
//! trip once per request in it. Pipeline 1 is plain request/response. The
//! same batches, keys and value sizes go to both targets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client::{Client, ClientOptions, Op};
use hdrhistogram::Histogram;
use serde_json::json;
use wire::message::{KvGet, KvPut, LwwValue, Request, Value};

use crate::report::{histogram, pid_cpu, process_cpu, Summary};
use crate::workload::{key_name, Action, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Squall,
    Redis,
}

#[derive(Clone, Debug, clap::Args)]
pub struct KvArgs {
    /// The secret for a node started with --auth-token-file (its first
    /// line). Default: the SQUALL_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// What to drive.
    #[arg(long, value_enum, default_value = "squall")]
    pub target: Target,
    /// Address (HOST:PORT) of the Squall node (any shard) or the Redis server.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub addr: String,
    /// Concurrent closed-loop clients (one connection each; Squall: one per shard).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Requests each client sends before waiting for their replies.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Measured duration, after warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Fraction of requests that are reads.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Zipf skew of key popularity (0 = uniform; 0.99 is YCSB's default).
    #[arg(long, default_value_t = 0.99)]
    pub zipf: f64,
    /// Skip writing every key once before the run.
    #[arg(long)]
    pub no_preload: bool,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Per-batch deadline; a batch past it counts as errors.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Print one JSON object (last line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Squall only: send every request to the first shard, like a client that
    /// ignores the topology (measures the node's forwarding hop).
    #[arg(long)]
    pub naive_routing: bool,
    /// PID of the server process: its CPU use over the measured window is
    /// reported as `server_cpu_pct` (Linux /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Kill this process (SIGKILL) --kill-at-s seconds into the measured
    /// window, to see what a node's crash costs: the report then has a
    /// per-second timeline and throughput before, during (the 2 s after
    /// the kill) and after.
    #[arg(long, requires = "kill_at_s")]
    pub kill_pid: Option<u32>,
    /// When to kill --kill-pid, in seconds into the measured window.
    #[arg(long, requires = "kill_pid")]
    pub kill_at_s: Option<f64>,
}

/// One connection to the target.
enum Conn {
    /// The client, and whether to ignore its routing.
    Squall(Box<Client>, bool),
    Redis(redis::aio::MultiplexedConnection),
}

impl Conn {
    async fn open(args: &KvArgs, name: &str) -> anyhow::Result<Conn> {
        Ok(match args.target {
            Target::Squall => {
                let opts = ClientOptions {
                    timeout: Duration::from_millis(args.timeout_ms),
                    client_name: name.to_owned(),
                    token: client::load_token(args.token_file.as_deref())
                        .map_err(anyhow::Error::msg)?,
                    route_across_nodes: !args.naive_routing,
                };
                let c = Client::connect(&args.addr, opts)
                    .await
                    .with_context(|| format!("connecting to {}", args.addr))?;
                Conn::Squall(Box::new(c), args.naive_routing)
            }
            Target::Redis => {
                let client = redis::Client::open(format!("redis://{}/", args.addr))?;
                let con = client
                    .get_multiplexed_async_connection()
                    .await
                    .with_context(|| format!("connecting to redis at {}", args.addr))?;
                Conn::Redis(con)
            }
        })
    }

    /// Runs one batch; returns how many requests failed.
    async fn batch(&mut self, actions: &[Action], value: &[u8]) -> usize {
        match self {
            Conn::Squall(c, naive) => {
                let ops = actions
                    .iter()
                    .map(|a| {
                        let (k, req) = match *a {
                            Action::Read(k) => {
                                let key = key_name(k).into_bytes();
                                (key.clone(), Request::Get(KvGet { keys: vec![key] }))
                            }
                            Action::Write(k) => {
                                let key = key_name(k).into_bytes();
                                let value = Value::Lww(LwwValue {
                                    timestamp: 0,
                                    writer: 0,
                                    bytes: value.to_vec(),
                                });
                                (key.clone(), Request::Put(KvPut { key, value }))
                            }
                        };
                        let dest = if *naive {
                            c.home_dest(c.topology().shard)
                        } else {
                            c.dest_for(&k)
                        };
                        Op { dest, request: req }
                    })
                    .collect();
                match c.execute(ops).await {
                    Ok(replies) => replies.iter().filter(|r| r.is_err()).count(),
                    Err(_) => actions.len(),
                }
            }
            Conn::Redis(con) => {
                let mut p = redis::pipe();
                for a in actions {
                    match *a {
                        Action::Read(k) => p.cmd("GET").arg(key_name(k)),
                        Action::Write(k) => p.cmd("SET").arg(key_name(k)).arg(value),
                    };
                }
                match p.query_async::<Vec<redis::Value>>(con).await {
                    Ok(v) => v
                        .iter()
                        .filter(|x| matches!(x, redis::Value::ServerError(_)))
                        .count(),
                    Err(_) => actions.len(),
                }
            }
        }
    }
}

/// Runs the benchmark and returns its summary.
pub fn run(args: &KvArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.clients > 0 && args.pipeline > 0,
        "--clients and --pipeline must be at least 1"
    );
    anyhow::ensure!(args.duration_s > 0.0, "--duration-s must be positive");
    let rt = if args.threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    rt.block_on(run_async(args))
}

async fn run_async(args: &KvArgs) -> anyhow::Result<Summary> {
    let value = vec![b'v'; args.value_bytes];
    if !args.no_preload {
        preload(args, &value).await?;
    }
    let mut conns = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        conns.push(Conn::open(args, &format!("loadgen-{i}")).await?);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_s);
    let end = measure_from + Duration::from_secs_f64(args.duration_s);
    let server_pid = args.server_pid;
    let cpu_before = std::sync::Arc::new(std::sync::Mutex::new(None::<(Duration, Duration)>));
    let mut tasks = Vec::new();
    let zipf = Workload::zipf_table(args.keys, args.zipf)?;
    // Per second of the measured window: requests that succeeded, failed.
    let seconds = args.duration_s.ceil() as usize + 1;
    let timeline: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        (0..seconds)
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    );
    if let (Some(pid), Some(at)) = (args.kill_pid, args.kill_at_s) {
        tokio::spawn(async move {
            tokio::time::sleep_until((measure_from + Duration::from_secs_f64(at)).into()).await;
            let killed = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            eprintln!("loadgen: killed {pid} at {at} s: {killed:?}");
        });
    }
    for (i, mut conn) in conns.into_iter().enumerate() {
        let mut w = Workload::new(0x5eed + i as u64, args.keys, args.read_ratio, zipf.clone())?;
        let (value, pipeline, cpu_before) = (value.clone(), args.pipeline, cpu_before.clone());
        let timeline = timeline.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut actions = Vec::with_capacity(pipeline);
            loop {
                actions.clear();
                actions.extend((0..pipeline).map(|_| w.next_action()));
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let failed = conn.batch(&actions, &value).await;
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    if let Ok(mut c) = cpu_before.lock() {
                        c.get_or_insert_with(|| {
                            (process_cpu(), server_pid.map_or(Duration::ZERO, pid_cpu))
                        });
                    }
                    let ns = (t1 - t0).as_nanos() as u64;
                    h.record_n(ns.max(1), pipeline as u64).ok();
                    ops += (pipeline - failed) as u64;
                    errors += failed as u64;
                    let second = (t1 - measure_from).as_secs() as usize;
                    if let Some((ok, err)) = timeline.get(second) {
                        ok.fetch_add((pipeline - failed) as u64, Ordering::Relaxed);
                        err.fetch_add(failed as u64, Ordering::Relaxed);
                    }
                }
            }
            let routing = match &conn {
                Conn::Squall(c, _) => Some(c.routing_stats()),
                Conn::Redis(_) => None,
            };
            (h, ops, errors, routing)
        }));
    }
    let mut h: Histogram<u64> = histogram();
    let (mut ops, mut errors) = (0, 0);
    let mut routing: Option<client::RoutingStats> = None;
    for t in tasks {
        let (th, o, e, r) = t.await?;
        h.add(th).ok();
        ops += o;
        errors += e;
        if let Some(r) = r {
            let sum = routing.get_or_insert_with(Default::default);
            sum.stale_batches += r.stale_batches;
            sum.refreshes += r.refreshes;
            sum.failovers += r.failovers;
        }
    }
    let (cpu_after, server_after) = (process_cpu(), server_pid.map_or(Duration::ZERO, pid_cpu));
    let (cpu_first, server_first) = cpu_before
        .lock()
        .ok()
        .and_then(|c| *c)
        .unwrap_or((cpu_after, server_after));
    let elapsed = Instant::now()
        .min(end)
        .saturating_duration_since(measure_from);
    let mut s = Summary::new(
        &h,
        ops,
        errors,
        elapsed,
        cpu_after.saturating_sub(cpu_first),
    );
    s.routing = routing;
    if args.kill_at_s.is_some() {
        let whole = args.duration_s.floor() as usize;
        s.timeline = timeline
            .iter()
            .take(whole)
            .map(|(ok, err)| (ok.load(Ordering::Relaxed), err.load(Ordering::Relaxed)))
            .collect();
        s.kill_at_s = args.kill_at_s;
    }
    if server_pid.is_some() {
        s.server_cpu_pct = Some(
            100.0 * server_after.saturating_sub(server_first).as_secs_f64()
                / elapsed.as_secs_f64().max(1e-9),
        );
    }
    Ok(s)
}

async fn preload(args: &KvArgs, value: &[u8]) -> anyhow::Result<()> {
    let mut conn = Conn::open(args, "loadgen-preload").await?;
    let keys: Vec<u64> = (0..args.keys).collect();
    for chunk in keys.chunks(256) {
        let actions: Vec<Action> = chunk.iter().map(|&k| Action::Write(k)).collect();
        let failed = conn.batch(&actions, value).await;
        anyhow::ensure!(failed == 0, "preload: {failed} writes failed");
    }
    Ok(())
}

/// The JSON report of a run.
pub fn report(args: &KvArgs, s: &Summary) -> serde_json::Value {
    let mut obj = s.json();
    if let Some(o) = obj.as_object_mut() {
        let extra = json!({
            "mode": "kv",
            "target": match args.target { Target::Squall => "squall", Target::Redis => "redis" },
            "addr": args.addr,
            "clients": args.clients,
            "pipeline": args.pipeline,
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "read_ratio": args.read_ratio,
            "zipf": args.zipf,
            "naive_routing": args.naive_routing,
        });
        if let Some(e) = extra.as_object() {
            o.extend(e.clone());
        }
    }
    obj
}
