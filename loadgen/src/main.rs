//! `loadgen`: see the library docs.

use clap::{Parser, Subcommand};
use loadgen::{call, consistency, kv, squeezenet};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for Squall (and Redis, for comparison)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Key-value throughput and latency (closed loop, pipelined).
    Kv(kv::KvArgs),
    /// One client calling one function serially, beside the loopback floor.
    Call(call::CallArgs),
    /// One client calling the DAG square(increment(x)) serially, beside the loopback floor.
    Compose(call::CallArgs),
    /// One client calling the SqueezeNet pipeline DAG (preprocess → 3 replicas →
    /// average → top-5), beside the same pipeline in this process, sequential
    /// and with the replicas on threads.
    Squeezenet(squeezenet::SqueezeArgs),
    /// Cloudburst's consistency experiment: random DAGs of 2-5 functions read
    /// Zipf-distributed keys and write at the sink, from concurrent clients
    /// on every given node, in one consistency mode; an anomaly checker
    /// counts, per guarantee, the calls whose reads broke it.
    Consistency(consistency::ConsistencyArgs),
}

fn run_kv(args: &kv::KvArgs) -> anyhow::Result<()> {
    let s = kv::run(args)?;
    if args.json {
        println!("{}", kv::report(args, &s));
    } else {
        let target = format!("{:?}", args.target).to_lowercase();
        println!(
            "kv {target} {} clients={} pipeline={} keys={} value={}B reads={:.0}% zipf={}: {}",
            args.addr,
            args.clients,
            args.pipeline,
            args.keys,
            args.value_bytes,
            args.read_ratio * 100.0,
            args.zipf,
            s.line()
        );
        if let Some((before, during, after)) = s.around_kill() {
            let per_s: Vec<String> = s
                .timeline
                .iter()
                .map(|(ok, err)| format!("{ok}/{err}"))
                .collect();
            println!(
                "around the kill at {:.1} s: {before:.0} ops/s before, {during:.0} during (2 s), \
                 {after:.0} after ({:.0}% of before); ok/errors per second: {}",
                s.kill_at_s.unwrap_or(0.0),
                100.0 * after / before.max(1.0),
                per_s.join(" ")
            );
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Mode::Kv(args) => run_kv(args),
        Mode::Call(args) => call::run(args),
        Mode::Squeezenet(args) => squeezenet::run(args),
        Mode::Consistency(args) => consistency::run(args),
        Mode::Compose(args) => call::run(&call::CallArgs {
            compose: true,
            ..args.clone()
        }),
    };
    if let Err(e) = result {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(2);
    }
}
