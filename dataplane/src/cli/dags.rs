//! `squall dag`: register, call, list and delete DAGs of functions.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use client::Client;
use executor::txn::TXN_ID_MAX;
use serde_json::json;
use wire::message::{Arg, Consistency, DagCall, DagDef, SourceArgs};

use super::output::emit;
use super::{connect_blocking, print_removed, print_result, Conn};

#[derive(Clone, Debug, Subcommand)]
pub(super) enum DagCommand {
    /// Register (or replace) DAG NAME: `--function` for each function, in
    /// fan-in argument order, and `--edge FROM:TO` for each edge.
    Create {
        name: String,
        #[arg(long = "function", required = true)]
        functions: Vec<String>,
        #[arg(long = "edge")]
        edges: Vec<String>,
        /// FUNCTION=N: run N competing replicas of FUNCTION; the first valid result wins.
        #[arg(long = "replicas")]
        replicas: Vec<String>,
        /// FUNCTION=N: hand up to N queued triggers of FUNCTION to one invocation.
        #[arg(long = "batch")]
        batch: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run DAG NAME; `--arg FUNCTION=VALUE` gives a source function an argument,
    /// `--ref FUNCTION=KEY` one read from KEY (both repeatable, values first).
    Call {
        name: String,
        #[arg(long = "arg")]
        args: Vec<String>,
        #[arg(long = "ref")]
        refs: Vec<String>,
        /// The deadline of each run on the node.
        #[arg(long, default_value_t = 10_000)]
        call_timeout_ms: u32,
        /// Run again (up to this many times) after a run that timed out or panicked.
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Then run this DAG with the result (repeatable: a chain of continuations).
        #[arg(long = "then")]
        then: Vec<String>,
        /// What the functions' reads may see: lww (each read the newest
        /// version the node has), dsrr (every function of a run sees the
        /// version of a key the run first read, or the run's own latest
        /// write), sk (each read of a key never older than what the run saw of
        /// it), mk and dsc (reads never older than the write sets and
        /// dependencies of what the run read; their calls are always
        /// atomic, as with --atomic: the dependencies travel in commit
        /// records).
        #[arg(long, default_value = "lww", value_parser = consistency)]
        consistency: Consistency,
        /// Atomic: each run's writes are kept until it ends, then committed
        /// as one write set, once, however often the call is re-run
        /// (--retries, a node lost midway). Deletes are refused in it.
        #[arg(long)]
        atomic: bool,
        /// Atomic, with this transaction id (hex, 1 to 2^58-1) instead of a random
        /// one: send the call again with the same id and it still takes
        /// effect once.
        #[arg(long, value_parser = txn_id)]
        txn: Option<u64>,
        /// Store the result under this key instead of returning it; the command
        /// then waits up to --wait-ms for it (0: print the key and return).
        #[arg(long)]
        output_key: Option<String>,
        #[arg(long, default_value_t = 10_000)]
        wait_ms: u64,
        /// Write the result's bytes exactly, with no newline (binary results).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete DAG NAME.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every registered DAG.
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

fn txn_id(hex: &str) -> Result<u64, String> {
    match u64::from_str_radix(hex.trim_start_matches("0x"), 16) {
        Ok(id @ 1..=TXN_ID_MAX) => Ok(id),
        _ => Err(format!(
            "a transaction id is a hex number from 1 to {TXN_ID_MAX:x}, not {hex:?}"
        )),
    }
}

fn consistency(name: &str) -> Result<Consistency, String> {
    Consistency::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Consistency::ALL.iter().map(|c| c.name()).collect();
        format!("one of {}", names.join(", "))
    })
}

pub(super) fn run(cmd: DagCommand) -> anyhow::Result<()> {
    match cmd {
        DagCommand::Create {
            name,
            functions,
            edges,
            replicas,
            batch,
            conn,
        } => {
            let mut pairs = Vec::with_capacity(edges.len());
            for e in &edges {
                let pair = e
                    .split_once(':')
                    .with_context(|| format!("--edge takes FROM:TO, not {e:?}"))?;
                pairs.push(pair);
            }
            let names: Vec<&str> = functions.iter().map(String::as_str).collect();
            let mut def = DagDef::new(&name, &names, &pairs);
            for (flag, list) in [("--replicas", &replicas), ("--batch", &batch)] {
                for item in list {
                    let (f, n) = item
                        .split_once('=')
                        .and_then(|(f, n)| Some((f, n.parse::<u32>().ok()?)))
                        .with_context(|| format!("{flag} takes FUNCTION=N, not {item:?}"))?;
                    let slot = def
                        .functions
                        .iter_mut()
                        .find(|x| x.name == f.as_bytes())
                        .with_context(|| {
                            format!("{flag}: {f:?} is not one of the --function names")
                        })?;
                    if flag == "--replicas" {
                        slot.replicas = n;
                    } else {
                        slot.batch_max = n;
                    }
                }
            }
            connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.register_dag(def).await?)
            })?;
            emit(conn.json, &json!({"dag": name, "ok": true}), "OK")?;
        }
        DagCommand::Call {
            name,
            args,
            refs,
            call_timeout_ms,
            retries,
            then,
            consistency,
            atomic,
            txn,
            output_key,
            wait_ms,
            raw,
            conn,
        } => {
            let mut sources: Vec<SourceArgs> = Vec::new();
            let tagged = args
                .iter()
                .map(|a| ("--arg", a))
                .chain(refs.iter().map(|r| ("--ref", r)));
            for (flag, a) in tagged {
                let (f, v) = a
                    .split_once('=')
                    .with_context(|| format!("{flag} takes FUNCTION=VALUE, not {a:?}"))?;
                let v = v.as_bytes().to_vec();
                let arg = if flag == "--ref" {
                    Arg::Ref(v)
                } else {
                    Arg::Value(v)
                };
                match sources.iter_mut().find(|s| s.function == f.as_bytes()) {
                    Some(s) => s.args.push(arg),
                    None => sources.push(SourceArgs {
                        function: f.as_bytes().to_vec(),
                        args: vec![arg],
                    }),
                }
            }
            let mut call = DagCall::new(&name, sources).with_consistency(consistency);
            call.timeout_ms = call_timeout_ms;
            call.retries = retries;
            call.then = then.iter().map(|t| t.as_bytes().to_vec()).collect();
            call.txn = match (txn, atomic) {
                (Some(id), _) => id,
                (None, true) => loop {
                    let id = getrandom::u64()
                        .map_err(|e| anyhow::anyhow!("no random transaction id: {e}"))?
                        & TXN_ID_MAX;
                    if id != 0 {
                        break id;
                    }
                },
                (None, false) => 0,
            };
            let out = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                let Some(key) = output_key else {
                    return Ok(c.call_dag_with(call).await?);
                };
                call.output_key = key.clone().into_bytes();
                c.call_dag_to_key(call).await?;
                if wait_ms == 0 {
                    return Ok(format!("pending: {key}").into_bytes());
                }
                Ok(c.wait_for(key.as_bytes(), Duration::from_millis(wait_ms))
                    .await?)
            })?;
            print_result(&conn, raw, json!({"dag": name}), &out)?;
        }
        DagCommand::Delete { name, conn } => {
            let removed = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.delete_dag(&name).await?)
            })?;
            print_removed(conn.json, "dag", &name, removed)?;
        }
        DagCommand::List { conn } => {
            let names = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.list_dags().await?)
            })?;
            emit(conn.json, &json!({"dags": names}), &names.join("\n"))?;
        }
    }
    Ok(())
}
