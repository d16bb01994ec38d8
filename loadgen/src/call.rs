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
    /// The secret for a node started with --auth-token-file (its first
    /// line). Default: the SQUALL_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
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
    /// Which implementation of increment and square: the node's built-ins,
    /// or the example WebAssembly guests uploaded by this run (see --guests).
    #[arg(long, value_enum, default_value = "native")]
    pub functions: Functions,
    /// Where the built guests are (`scripts/build-guests.sh`).
    #[arg(long, default_value = "guests/target/wasm32-unknown-unknown/release")]
    pub guests: std::path::PathBuf,
    /// The uploaded guests' CPU limit: 10 ms or less lets a pure guest run
    /// inline on the shard, as the native built-ins do.
    #[arg(long, default_value_t = 10)]
    pub wasm_timeout_ms: u32,
    /// Set by `loadgen compose`: call the DAG square(increment(x)) instead.
    #[arg(skip)]
    pub compose: bool,
}

/// Implementations of the benchmark's functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Functions {
    Native,
    Wasm,
}

impl CallArgs {
    /// (source function, sink function, DAG) names for this run.
    fn names(&self) -> (&'static str, &'static str, &'static str) {
        match self.functions {
            Functions::Native => ("increment", "square", COMPOSE_DAG),
            Functions::Wasm => (
                "loadgen-wasm-increment",
                "loadgen-wasm-square",
                "loadgen-compose-wasm",
            ),
        }
    }
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
        token: client::load_token(args.token_file.as_deref()).map_err(anyhow::Error::msg)?,
        ..ClientOptions::default()
    };
    Client::connect(&args.addr, opts)
        .await
        .with_context(|| format!("connecting to {}", args.addr))
}

/// What uploading the guests cost, per guest: the registration (compile +
/// checks + durable write) and the first call (instantiation + call).
#[derive(Debug, Default)]
struct Upload {
    register_ms: Vec<f64>,
    first_call_us: Vec<f64>,
}

/// Registers what the run calls: the guests (timed) when the functions are
/// WebAssembly, and the composition DAG.
async fn register(args: &CallArgs) -> anyhow::Result<Upload> {
    let mut c = connect(args, 0).await?;
    let (inc, sq, dag) = args.names();
    let mut upload = Upload::default();
    if args.functions == Functions::Wasm {
        for (name, file, input) in [(inc, "increment", "41"), (sq, "square", "42")] {
            let path = args.guests.join(format!("{file}.wasm"));
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (build it with scripts/build-guests.sh)",
                    path.display()
                )
            })?;
            let t0 = Instant::now();
            c.register_wasm(name, bytes, 0, args.wasm_timeout_ms)
                .await?;
            let t1 = Instant::now();
            c.call_function(name, vec![input.as_bytes().to_vec()], 0)
                .await?;
            upload.register_ms.push((t1 - t0).as_secs_f64() * 1e3);
            upload.first_call_us.push(t1.elapsed().as_secs_f64() * 1e6);
        }
    }
    if args.compose {
        c.register_dag(DagDef::new(dag, &[inc, sq], &[(inc, sq)]))
            .await?;
    }
    Ok(upload)
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
    let (inc, _, dag) = args.names();
    let function = if args.functions == Functions::Wasm && !args.compose {
        inc
    } else {
        args.function.as_str()
    };
    for n in 0..args.warmup + calls {
        let t0 = Instant::now();
        last = match (args.compose, args.spread) {
            (true, false) => {
                let sources = vec![SourceArgs::values(inc, fn_args.clone())];
                c.call_dag(dag, sources, 0).await?
            }
            (false, false) => c.call_function(function, fn_args.clone(), 0).await?,
            (compose, true) => {
                let request = if compose {
                    let sources = vec![SourceArgs::values(inc, fn_args.clone())];
                    Request::CallDag(DagCall::new(dag, sources))
                } else {
                    Request::Call(FnCall {
                        function: function.as_bytes().to_vec(),
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

        let upload = register(args).await?;
        let label = match (args.compose, args.functions) {
            (true, Functions::Native) => "square(increment(x))".to_owned(),
            (true, Functions::Wasm) => "square(increment(x)), WebAssembly guests".to_owned(),
            (false, Functions::Native) => format!("`{}`", args.function),
            (false, Functions::Wasm) => "`increment`, WebAssembly guest".to_owned(),
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
        let mode = match (args.compose, args.functions) {
            (true, Functions::Native) => "compose",
            (true, Functions::Wasm) => "compose-wasm",
            (false, Functions::Native) => "call",
            (false, Functions::Wasm) => "call-wasm",
        };
        let ops = ((args.warmup + per_client) * args.clients as u64) as f64 / elapsed.as_secs_f64();
        let report = json!({
            "mode": mode,
            "function": if args.compose { "square(increment(x))" } else { args.function.as_str() },
            "calls": args.calls, "clients": args.clients, "spread": args.spread,
            "functions": format!("{:?}", args.functions).to_lowercase(),
            "upload_register_ms": upload.register_ms, "upload_first_call_us": upload.first_call_us,
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
            for (i, (ms, us)) in upload.register_ms.iter().zip(&upload.first_call_us).enumerate() {
                println!(
                    "(upload of guest {}: registration {ms:.1} ms, then first call {us:.0} µs)",
                    i + 1
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
