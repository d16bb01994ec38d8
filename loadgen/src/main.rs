//! `loadgen`: see the library docs.

use clap::{Parser, Subcommand};
use loadgen::{call, kv, squeezenet};

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
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Mode::Kv(args) => run_kv(args),
        Mode::Call(args) => call::run(args),
        Mode::Squeezenet(args) => squeezenet::run(args),
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
