//! `loadgen consistency`: Cloudburst's consistency experiment. Random DAGs
//! of 2 to 5 `consistency_probe` functions, arranged in levels (every
//! function of a level feeds every function of the next; the last level is
//! the one sink), read Zipf-distributed keys — each level its own draw —
//! and the sink writes a few more, each value naming its version and what
//! its call read (the `anomaly` crate's formats). Concurrent clients call
//! them on every given node, in one consistency mode; each call's result
//! is its log of reads, which the anomaly checker tests per guarantee
//! (DSRR, single-key causal, multi-key causal, distributed-session causal,
//! read atomic). The report counts, per guarantee, the calls that broke
//! it, beside the calls' latency.

use kvs_core::ids::{txn_writer, TXN_ID_MAX};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomaly::{check, Guarantee, Log, Plan, Tally, Version};
use anyhow::Context as _;
use client::{Client, ClientOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use wire::message::{Consistency, DagCall, DagDef, Request, Response, SourceArgs};

use crate::report::histogram;
use crate::workload::{Action, Workload, ZipfTable};

/// The probe function every DAG of the experiment is made of.
pub const PROBE: &str = "consistency_probe";

#[derive(Clone, Debug, clap::Args)]
pub struct ConsistencyArgs {
    /// The nodes, comma-separated; client i calls node i mod their number
    /// (the DAGs are registered through the first).
    #[arg(long, default_value = "127.0.0.1:7400", value_delimiter = ',')]
    pub addr: Vec<String>,
    /// The secret for nodes started with --auth-token-file (its first line).
    /// Default: the SQUALL_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// DAG calls in all, split among the clients.
    #[arg(long, default_value_t = 4000)]
    pub calls: u64,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Keys the functions read and the sinks write (Cloudburst: 1,000,000;
    /// fewer keys, more conflicts).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Zipf skew of the key choice (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Keys each level of a DAG reads.
    #[arg(long, default_value_t = 2)]
    pub reads: usize,
    /// Keys each sink writes (together: one write set).
    #[arg(long, default_value_t = 2)]
    pub writes: usize,
    /// How long each function past the first level computes before its
    /// reads (a wider window for concurrent writes).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u32,
    /// The calls' consistency mode: lww, dsrr, sk, mk, dsc (mk and dsc
    /// calls are always atomic).
    #[arg(long, default_value = "lww", value_parser = consistency)]
    pub consistency: Consistency,
    /// Atomic calls (`--atomic`): each sink's writes commit as one write
    /// set, and the functions' reads never show part of another's.
    #[arg(long)]
    pub atomic: bool,
    /// Prefix of the experiment's keys.
    #[arg(long, default_value = "consistency:")]
    pub prefix: String,
    /// The deadline of each call on the node.
    #[arg(long, default_value_t = 10_000)]
    pub call_timeout_ms: u32,
    /// Seed of the key and shape choices (client i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object (last line).
    #[arg(long)]
    pub json: bool,
}

fn consistency(name: &str) -> Result<Consistency, String> {
    Consistency::from_name(name).ok_or_else(|| "one of lww, dsrr, sk, mk, dsc".to_owned())
}

/// The DAG shapes of the experiment: functions per level (1 or 2), the
/// last level one sink, 2 to 5 functions in all.
#[must_use]
pub fn shapes() -> Vec<Vec<usize>> {
    fn extend(prefix: &mut Vec<usize>, total: usize, out: &mut Vec<Vec<usize>>) {
        if total >= 2 && prefix.len() >= 2 && prefix.last() == Some(&1) {
            out.push(prefix.clone());
        }
        for part in [1, 2] {
            if total + part <= 5 {
                prefix.push(part);
                extend(prefix, total + part, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::new(), 0, &mut out);
    out
}

/// A shape's DAG: its name and its definition.
fn dag_of(shape: &[usize]) -> (String, DagDef) {
    let sizes: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let name = format!("loadgen-consistency-{}", sizes.join("-"));
    let level_names: Vec<Vec<String>> = shape
        .iter()
        .enumerate()
        .map(|(l, &n)| (0..n).map(|f| format!("{PROBE}#{l}{f}")).collect())
        .collect();
    let functions: Vec<&str> = level_names.iter().flatten().map(String::as_str).collect();
    let edges: Vec<(&str, &str)> = level_names
        .windows(2)
        .flat_map(|w| {
            w[0].iter()
                .flat_map(|a| w[1].iter().map(move |b| (a.as_str(), b.as_str())))
        })
        .collect();
    let def = DagDef::new(&name, &functions, &edges);
    (name, def)
}

async fn connect(args: &ConsistencyArgs, i: usize) -> anyhow::Result<Client> {
    let addr = &args.addr[i % args.addr.len()];
    let opts = ClientOptions {
        timeout: Duration::from_millis(u64::from(args.call_timeout_ms) + 5_000),
        client_name: format!("loadgen-consistency-{i}"),
        token: client::load_token(args.token_file.as_deref()).map_err(anyhow::Error::msg)?,
        ..ClientOptions::default()
    };
    Client::connect(addr, opts)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// What one client saw.
struct Seen {
    latency: hdrhistogram::Histogram<u64>,
    /// Per call, the dependency metadata its commit record carries per
    /// key it writes (bytes).
    metadata: hdrhistogram::Histogram<u64>,
    tally: Tally,
    errors: u64,
    first_error: Option<String>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn one_client(
    args: Arc<ConsistencyArgs>,
    i: usize,
    calls: u64,
    zipf: Option<Arc<ZipfTable>>,
) -> anyhow::Result<Seen> {
    let mut c = connect(&args, i).await?;
    let txn_base = now_us();
    let mut keys = Workload::new(args.seed + i as u64, args.keys, 1.0, zipf)?;
    let mut draw = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let (Action::Read(k) | Action::Write(k)) = keys.next_action();
                format!("{}{k}", args.prefix)
            })
            .collect()
    };
    let shapes = shapes();
    let mut pick = SmallRng::seed_from_u64(args.seed.wrapping_add(1 << 20).wrapping_add(i as u64));
    let mut seen = Seen {
        latency: histogram(),
        metadata: histogram(),
        tally: Tally::default(),
        errors: 0,
        first_error: None,
    };
    for n in 0..calls {
        let shape = &shapes[pick.random_range(0..shapes.len())];
        let levels: Vec<Vec<String>> = shape.iter().map(|_| draw(args.reads)).collect();
        // Distinct per call and per run (transaction ids are 58 bits).
        let txn = (txn_base ^ ((i as u64) << 40 | n)) & TXN_ID_MAX | 1 << 57;
        let version = Version {
            clock: now_us(),
            // An atomic call's sink writes its versions as its commit
            // would stamp them: readers find the write set they belong to.
            writer: match args.atomic {
                true => txn_writer(txn, 0),
                false => ((i as u64 + 1) << 32) | n,
            },
        };
        let plan = Plan::new(version, levels, draw(args.writes), args.pause_ms)?;
        let start = Log::start(plan).encode();
        let (name, _) = dag_of(shape);
        let sources = (0..shape[0])
            .map(|f| SourceArgs::values(&format!("{PROBE}#0{f}"), vec![start.clone()]))
            .collect();
        let mut call = DagCall::new(&name, sources).with_consistency(args.consistency);
        call.timeout_ms = args.call_timeout_ms;
        if args.atomic {
            call.txn = txn;
        }
        let t0 = Instant::now();
        // Shard 0 of the node this client is connected to: the DAG runs
        // where the call arrives (its probes take no key arguments).
        match c.call(0, Request::CallDag(call)).await {
            Ok(Response::Output(out)) => {
                seen.latency.record(t0.elapsed().as_nanos().max(1) as u64)?;
                let log = Log::parse(&out).context("a call's result is not a probe log")?;
                if args.atomic && !log.plan.writes.is_empty() {
                    seen.metadata.record(metadata_per_key(&log).max(1))?;
                }
                seen.tally.add(check(&log));
            }
            Ok(other) => anyhow::bail!("unexpected reply {other:?}"),
            Err(e) => {
                seen.errors += 1;
                seen.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(seen)
}

/// The dependency metadata an atomic call's commit record carries per key
/// it writes: its read set — each key read with a value, as the record
/// encodes it (length, key, clock, writer) — over the keys written.
fn metadata_per_key(log: &Log) -> u64 {
    let mut read: Vec<&str> = (log.reads.iter())
        .filter(|r| r.written.is_some())
        .map(|r| r.key.as_str())
        .collect();
    read.sort_unstable();
    read.dedup();
    let bytes: usize = read.iter().map(|k| 4 + k.len() + 16).sum();
    (bytes / log.plan.writes.len().max(1)) as u64
}

/// Registers the DAGs, runs the clients, prints the report.
pub fn run(args: &ConsistencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(!args.addr.is_empty(), "--addr names at least one node");
    anyhow::ensure!(
        (1..=anomaly::record::KEYS_PER_LEVEL_MAX).contains(&args.reads)
            && args.writes <= anomaly::record::KEYS_PER_LEVEL_MAX,
        "--reads is 1 to {0} and --writes 0 to {0}",
        anomaly::record::KEYS_PER_LEVEL_MAX
    );
    let zipf = Workload::zipf_table(args.keys, args.zipf)?;
    let mut args = args.clone();
    // Causal calls are always atomic (the node draws an id for one without
    // it). The experiment sends its own ids even then: its sinks write
    // versions that name their commit (see `one_client`).
    args.atomic |= matches!(
        args.consistency,
        Consistency::MultiKeyCausal | Consistency::DistributedSessionCausal
    );
    let args = Arc::new(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = connect(&args, 0).await?;
        for shape in shapes() {
            c.register_dag(dag_of(&shape).1).await?;
        }
        let per_client = args.calls.div_ceil(args.clients as u64);
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| tokio::spawn(one_client(args.clone(), i, per_client, zipf.clone())))
            .collect();
        let (mut latency, mut metadata) = (histogram(), histogram());
        let mut tally = Tally::default();
        let (mut errors, mut first_error) = (0, None);
        for t in tasks {
            let s = t.await??;
            latency.add(s.latency)?;
            metadata.add(s.metadata)?;
            tally.merge(&s.tally);
            errors += s.errors;
            first_error = first_error.or(s.first_error);
        }
        report(
            &args,
            &latency,
            &metadata,
            &tally,
            errors,
            first_error,
            started.elapsed(),
        );
        Ok(())
    })
}

fn report(
    args: &ConsistencyArgs,
    latency: &hdrhistogram::Histogram<u64>,
    metadata: &hdrhistogram::Histogram<u64>,
    tally: &Tally,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
) {
    let us = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let anomalies: serde_json::Map<String, serde_json::Value> = Guarantee::ALL
        .iter()
        .map(|g| (g.name().to_owned(), json!(tally.anomalies(*g))))
        .collect();
    let mode = args.consistency.name();
    if args.json {
        println!(
            "{}",
            json!({
                "mode": "consistency", "consistency": mode, "atomic": args.atomic,
                "calls": tally.calls,
                "errors": errors, "first_error": first_error, "clients": args.clients,
                "nodes": args.addr.len(), "keys": args.keys, "zipf": args.zipf,
                "reads": args.reads, "writes": args.writes, "pause_ms": args.pause_ms,
                "ops_per_sec": tally.calls as f64 / elapsed.as_secs_f64(),
                "p50_us": us(0.5), "p99_us": us(0.99), "anomalies": anomalies,
                "metadata_bytes_per_key_p50": metadata.value_at_quantile(0.5),
                "metadata_bytes_per_key_p99": metadata.value_at_quantile(0.99),
            })
        );
        return;
    }
    let mode = if args.atomic {
        format!("{mode} --atomic")
    } else {
        mode.to_owned()
    };
    println!(
        "consistency {mode}: {} calls checked, {errors} failed, from {} clients on {} node(s); \
         {} keys, zipf {}, {} reads per level, {} writes: p50 {:.0} µs, p99 {:.0} µs",
        tally.calls,
        args.clients,
        args.addr.len(),
        args.keys,
        args.zipf,
        args.reads,
        args.writes,
        us(0.5),
        us(0.99)
    );
    if let Some(e) = first_error {
        println!("first failure: {e}");
    }
    println!("| guarantee | calls that broke it |");
    println!("| --- | --- |");
    for g in Guarantee::ALL {
        println!("| {} | {} |", g.name(), tally.anomalies(g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_the_level_dags_of_two_to_five_functions() {
        let all = shapes();
        assert_eq!(all.len(), 11, "{all:?}");
        for s in &all {
            let n: usize = s.iter().sum();
            assert!(
                (2..=5).contains(&n) && s.len() >= 2 && s.last() == Some(&1),
                "{s:?}"
            );
        }
        let (name, def) = dag_of(&[2, 2, 1]);
        assert_eq!(name, "loadgen-consistency-2-2-1");
        assert_eq!(def.functions.len(), 5);
        assert_eq!(def.edges.len(), 4 + 2, "levels fully connected");
    }
}
