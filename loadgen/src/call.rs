//! `loadgen call`: one client calling one function serially, beside the
//! physical floor measured in the same run — a bare loopback TCP echo round
//! trip of the same size — so the platform's overhead is a ratio, not a
//! guess. (The composition benchmark of the functions/DAG issue builds on
//! this mode once DAG calls reach the wire.)

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client::{Client, ClientOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::histogram;
use wire::message::{Arg, DagCall, DagDef, FnCall, Request, Response, SourceArgs};

#[derive(Clone, Debug, clap::Args)]
pub struct CallArgs {
    /// Any shard of the Squall node.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub addr: String,
    /// Function to call.
    #[arg(long, default_value = "increment")]
    pub function: String,
    /// Its arguments.
    #[arg(long = "arg", default_values_t = vec!["41".to_owned()])]
    pub args: Vec<String>,
    /// Measured calls (serial, one client).
    #[arg(long, default_value_t = 10_000)]
    pub calls: u64,
    /// Unmeasured calls first (per client).
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    /// Concurrent closed-loop clients (1 = the serial latency experiment;
    /// more = the throughput mode). Measured calls are split among them.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Client i sends its calls to shard i mod shards (each shard keeps a
    /// copy of the DAG) instead of all to one shard (the DAG's owner for
    /// compose, the first shard for call): the throughput mode over every
    /// shard.
    #[arg(long)]
    pub spread: bool,
    /// CPU the echo server (the floor) runs on: put it where the node's
    /// shard runs, so both round trips cross the same cores.
    #[arg(long, default_value_t = 0)]
    pub echo_cpu: usize,
    /// Print one JSON object (last line).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result and an SVG latency CDF into this folder.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Set by `loadgen compose`: call the DAG square(increment(x)) instead.
    #[arg(skip)]
    pub compose: bool,
}

/// Name of the DAG `loadgen compose` registers: increment → square.
pub const COMPOSE_DAG: &str = "loadgen-compose";

/// A loopback echo server on its own threads, pinned to `cpu`; returns its
/// address.
fn echo_server(cpu: usize) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::Builder::new()
        .name("echo".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_nodelay(true);
                std::thread::spawn(move || {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        })?;
    Ok(addr)
}

/// The same echo on a glommio executor pinned to `cpu` (the runtime the
/// node's shards use): the floor for a server on this runtime, so the gap
/// between the two floors is the runtime's share of a request.
fn glommio_echo_server(cpu: usize) -> anyhow::Result<String> {
    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
    let (tx, rx) = std::sync::mpsc::channel();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
        .name("glommio-echo")
        .io_memory(128 * 1024)
        .spawn(move || async move {
            let listener = match glommio::net::TcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            let _ = tx.send(
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .map_err(|e| e.to_string()),
            );
            while let Ok(mut s) = listener.accept().await {
                let _ = s.set_nodelay(true);
                glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                })
                .detach();
            }
        })
        .map_err(|e| {
            anyhow::anyhow!("starting the glommio echo (needs 512 KiB of locked memory): {e}")
        })?;
    rx.recv()?.map_err(|e| anyhow::anyhow!("glommio echo: {e}"))
}

/// `warmup + calls` echo round trips of 64 bytes to `addr`; the measured ones.
async fn echo_floor(
    addr: &str,
    warmup: u64,
    calls: u64,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let payload = vec![7u8; 64];
    let mut back = vec![0u8; payload.len()];
    let mut floor = histogram();
    for i in 0..warmup + calls {
        let t0 = Instant::now();
        s.write_all(&payload).await?;
        s.read_exact(&mut back).await?;
        if i >= warmup {
            floor.record(t0.elapsed().as_nanos().max(1) as u64)?;
        }
    }
    Ok(floor)
}

struct Percentiles {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    mean_us: f64,
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        mean_us: h.mean() / 1000.0,
    }
}

async fn connect(args: &CallArgs, i: usize) -> anyhow::Result<Client> {
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        client_name: format!("loadgen-call-{i}"),
    };
    Client::connect(&args.addr, opts)
        .await
        .with_context(|| format!("connecting to {}", args.addr))
}

async fn register_compose(args: &CallArgs) -> anyhow::Result<()> {
    let mut c = connect(args, 0).await?;
    c.register_dag(DagDef::new(
        COMPOSE_DAG,
        &["increment", "square"],
        &[("increment", "square")],
    ))
    .await?;
    Ok(())
}

/// One closed-loop client: `warmup` unmeasured calls, then `calls`
/// measured ones. Returns its latencies and the last result.
async fn one_client(
    args: &CallArgs,
    i: usize,
    calls: u64,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Vec<u8>)> {
    let mut c = connect(args, i).await?;
    let fn_args: Vec<Vec<u8>> = args.args.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut h = histogram();
    let mut last = Vec::new();
    let shards = c.topology().shards.len().max(1);
    let shard = u16::try_from(i % shards).unwrap_or(0);
    for n in 0..args.warmup + calls {
        let t0 = Instant::now();
        last = match (args.compose, args.spread) {
            (true, false) => {
                let sources = vec![SourceArgs::values("increment", fn_args.clone())];
                c.call_dag(COMPOSE_DAG, sources, 0).await?
            }
            (false, false) => c.call_function(&args.function, fn_args.clone(), 0).await?,
            (compose, true) => {
                let request = if compose {
                    let sources = vec![SourceArgs::values("increment", fn_args.clone())];
                    Request::CallDag(DagCall::new(COMPOSE_DAG, sources))
                } else {
                    Request::Call(FnCall {
                        function: args.function.as_bytes().to_vec(),
                        args: fn_args.iter().cloned().map(Arg::Value).collect(),
                        timeout_ms: 0,
                    })
                };
                match c.call(shard, request).await? {
                    Response::Output(out) => out,
                    other => anyhow::bail!("unexpected reply {other:?}"),
                }
            }
        };
        if n >= args.warmup {
            h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        }
    }
    Ok((h, last))
}

/// Runs the benchmark and prints its report.
pub fn run(args: &CallArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The floor: the same number of bytes a call moves, echoed back by
        // a blocking thread; and the same echo on glommio (the runtime floor).
        let echo = echo_server(args.echo_cpu)?;
        let floor = echo_floor(&echo, args.warmup, args.calls).await?;
        let runtime_floor = match glommio_echo_server(args.echo_cpu) {
            Ok(addr) => Some(echo_floor(&addr, args.warmup, args.calls).await?),
            Err(e) => {
                eprintln!("loadgen: no glommio echo floor: {e:#}");
                None
            }
        };

        let label = if args.compose {
            register_compose(args).await?;
            "square(increment(x))".to_owned()
        } else {
            format!("`{}`", args.function)
        };
        // Every client makes `calls / clients` measured calls, serially.
        let per_client = args.calls.div_ceil(args.clients as u64);
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                let args = args.clone();
                tokio::spawn(async move { one_client(&args, i, per_client).await })
            })
            .collect();
        let mut h = histogram();
        let mut last = Vec::new();
        for t in tasks {
            let (th, out) = t.await??;
            h.add(th)?;
            last = out;
        }
        let elapsed = started.elapsed();
        let (p, f) = (percentiles(&h), percentiles(&floor));
        let g = runtime_floor.as_ref().map(percentiles);
        let mode = if args.compose { "compose" } else { "call" };
        let ops = ((args.warmup + per_client) * args.clients as u64) as f64 / elapsed.as_secs_f64();
        let report = json!({
            "mode": mode,
            "function": if args.compose { "square(increment(x))" } else { args.function.as_str() },
            "calls": args.calls, "clients": args.clients, "spread": args.spread,
            "result": String::from_utf8_lossy(&last),
            "ops_per_sec": ops, "p50_us": p.p50_us, "p99_us": p.p99_us, "p999_us": p.p999_us,
            "mean_us": p.mean_us,
            "floor_p50_us": f.p50_us, "floor_p99_us": f.p99_us,
            "glommio_floor_p50_us": g.as_ref().map(|g| g.p50_us),
            "glommio_floor_p99_us": g.as_ref().map(|g| g.p99_us),
            "ratio_p50_to_floor": p.p50_us / f.p50_us, "ratio_p99_to_floor": p.p99_us / f.p99_us,
        });
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(format!("{mode}.json")), format!("{report}\n"))?;
            let plot = dir.join(format!("{mode}-cdf.svg"));
            let title = format!(
                "{label}: latency CDF, {} calls, {} client(s)",
                args.calls, args.clients
            );
            let mut series = vec![("Squall", &h), ("loopback TCP echo (floor)", &floor)];
            if let Some(g) = &runtime_floor {
                series.push(("the same echo on glommio", g));
            }
            crate::report::write_cdf_svg(&plot, &title, &series)?;
        }
        if args.json {
            println!("{report}");
        } else {
            println!(
                "{label} {:?} -> {:?}, {} calls from {} client(s), {:.0} calls/s:",
                args.args,
                String::from_utf8_lossy(&last),
                args.calls,
                args.clients,
                ops
            );
            println!("| system | median | p99 |");
            println!("| --- | --- | --- |");
            println!(
                "| Squall {label} (this run) | {:.1} µs | {:.1} µs |",
                p.p50_us, p.p99_us
            );
            println!(
                "| loopback TCP echo (this run, the floor) | {:.1} µs | {:.1} µs |",
                f.p50_us, f.p99_us
            );
            if let Some(g) = &g {
                println!(
                    "| the same echo on a glommio executor (this run: the runtime's floor) | {:.1} µs | {:.1} µs |",
                    g.p50_us, g.p99_us
                );
            }
            println!("| Cloudburst, square(increment(x)) (paper) | 3590 µs | 6370 µs |");
            println!("| AWS Lambda, direct (paper) | 79600 µs | 178000 µs |");
            println!(
                "ratio to the floor: median {:.2}x, p99 {:.2}x",
                p.p50_us / f.p50_us,
                p.p99_us / f.p99_us
            );
        }
        Ok(())
    })
}
