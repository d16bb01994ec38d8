//! The `squall` command line: `squall node …` runs a node, `squall kv …`
//! talks to one.
//!
//! Output ([`output`]): text, one JSON object (`--json`) or raw bytes
//! (`--raw`), all through one writer that stops quietly when stdout's
//! reader goes away. Errors ([`report`]): text with a hint naming the
//! command that fixes them, or JSON with `--json`; exit status 2.

mod output;
mod report;

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use client::{Client, ClientOptions};
use serde_json::json;
use wire::message::{Arg, DagCall, DagDef, LwwValue, PriorityValue, SourceArgs, Value};

use output::{emit, encoded, note, text, value_json, value_raw, value_text, write_stdout};

use crate::limits::{
    CONNECTIONS_PER_SHARD_MAX, EXECUTORS_PER_SHARD_MAX, HELLO_TIMEOUT_MS_DEFAULT,
    IDLE_RECLAIM_MS_DEFAULT, PARTIAL_FRAME_TIMEOUT_MS_DEFAULT, READ_BUFFERS_MB_DEFAULT,
    SNAPSHOT_WAL_BYTES_DEFAULT, VNODES_PER_SHARD_DEFAULT,
};
use crate::node::NodeConfig;
use crate::storage::FsyncPolicy;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "squall",
    version,
    about = "Squall: a stateful serverless platform over a durable, thread-per-core lattice KVS",
    long_about = "Squall: a stateful serverless platform over a durable, thread-per-core lattice KVS.\n\n\
        Run a node with `squall node`, then talk to it with `squall kv` (keys), `squall fn` (functions)\n\
        and `squall dag` (compositions of functions).\n\
        Logs go to stderr; set RUST_LOG=debug for more.\n\n\
        Output: text, or with --json one JSON object on stdout. Byte strings in JSON carry\n\
        \"encoding\": \"utf8\" (the text itself) or \"base64\" (RFC 4648, for bytes that are not UTF-8).\n\
        `kv get`, `fn call` and `dag call` take --raw to write the bytes exactly.\n\n\
        Errors: `squall: error: ...` and often `hint: ...` (what to run) on stderr, exit status 2.\n\
        With --json an error is one object on stdout instead, with the same exit status:\n\
        {\"error\": {\"status\": \"unknown_dag\", \"code\": 16, \"message\": \"...\", \"hint\": \"...\"}}\n\
        status/code: the node's status name and number; for errors of the CLI itself code is null\n\
        and status one of io, client_timeout, protocol, unknown_status, invalid, usage, cli.\n\
        hint: null when there is none.\n\n\
        A closed stdout (`squall kv get KEY | head`) ends the command quietly with exit status 0."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Debug, Subcommand)]
enum Command {
    /// Run a node: one pinned shard per core, each owning a partition of the keys.
    Node(NodeArgs),
    /// Read and write keys on a running node.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// List and call functions on a running node.
    Fn {
        #[command(subcommand)]
        command: FnCommand,
    },
    /// Register, call, list and delete DAGs of functions.
    Dag {
        #[command(subcommand)]
        command: DagCommand,
    },
    /// Store models (ONNX) and register the prediction pipeline.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Classify IMAGE (PNG or JPEG) with the prediction pipeline (see
    /// `squall model pipeline`) and print the top-5 classes.
    Predict {
        image: PathBuf,
        /// The pipeline DAG.
        #[arg(long, default_value = "predict")]
        dag: String,
        /// The model whose labels name the classes.
        #[arg(long, default_value = "squeezenet")]
        model: String,
        /// The deadline of the run on the node.
        #[arg(long, default_value_t = 10_000)]
        call_timeout_ms: u32,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Clone, Debug, Subcommand)]
enum ModelCommand {
    /// Store the ONNX model in FILE as NAME (in the KVS, chunked), with its
    /// class labels, and register function NAME running it: one argument, the
    /// input tensor (little-endian f32); the result, the output tensor.
    /// Executors load it once, on first use, and again after a new `put`.
    Put {
        name: String,
        file: PathBuf,
        /// Class labels, one `index,label` line per class (e.g. imagenet_labels.txt).
        #[arg(long)]
        labels: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register DAG --dag: preprocess → --replicas parallel uses of model
    /// --model on different executors → average → top5 (with the model's labels).
    Pipeline {
        #[arg(long, default_value = "predict")]
        dag: String,
        #[arg(long, default_value = "squeezenet")]
        model: String,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=i64::from(client::pipeline::REPLICAS_MAX)))]
        replicas: u32,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Clone, Debug, Subcommand)]
enum DagCommand {
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

#[derive(Clone, Debug, Subcommand)]
enum FnCommand {
    /// Print the registered functions.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Register function NAME: a WebAssembly MODULE file (compiled and checked
    /// by the node, run sandboxed), `--builtin B`, another name of a
    /// built-in, or `--model M`, inference with a stored model. Stored in the
    /// KVS: it survives restarts and every shard sees it.
    Register {
        name: String,
        /// A `.wasm` file built with the guest SDK (see docs/functions.md).
        #[arg(required_unless_present_any = ["builtin", "model"], conflicts_with_all = ["builtin", "model"])]
        module: Option<PathBuf>,
        #[arg(long, conflicts_with = "model")]
        builtin: Option<String>,
        /// A model stored with `squall model put`.
        #[arg(long)]
        model: Option<String>,
        /// The guest's linear memory limit (default 64, at most 256).
        #[arg(long, default_value_t = 0)]
        memory_mb: u32,
        /// The guest's CPU time per call (default 1000, at most 60000).
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete registered function NAME (built-ins stay).
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Call FUNCTION with ARGS (byte strings; numeric built-ins take decimal text)
    /// and then the values of the `--ref` keys.
    Call {
        function: String,
        args: Vec<OsString>,
        /// A key whose LWW value becomes an argument (repeatable).
        #[arg(long = "ref")]
        refs: Vec<String>,
        /// The call's deadline on the node.
        #[arg(long, default_value_t = 10_000)]
        call_timeout_ms: u32,
        /// Write the result's bytes exactly, with no newline (binary results).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Clone, Debug, clap::Args)]
struct NodeArgs {
    /// Shards (executors, one per core). Default: one per core this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// Address of shard 0; shard i listens on PORT+i (PORT 0: each picks a free port).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Where WAL segments and snapshots live (one subdirectory per shard).
    #[arg(long, default_value = "./squall-data")]
    data_dir: PathBuf,
    /// When a put is acknowledged: always = after fdatasync; batch = after write(2),
    /// synced every 10 ms; never = after write(2), never synced.
    #[arg(long, value_enum, default_value = "always")]
    fsync: FsyncPolicy,
    /// Virtual nodes per shard on the shard ring.
    #[arg(long, default_value_t = VNODES_PER_SHARD_DEFAULT)]
    vnodes: u32,
    /// Snapshot a shard once its WAL has grown by this many MiB (bounds restart time).
    #[arg(long, default_value_t = SNAPSHOT_WAL_BYTES_DEFAULT >> 20)]
    snapshot_wal_mb: u64,
    /// Busy-poll this many microseconds before a shard sleeps: trades an idle
    /// core's cycles for lower wake-up latency. 0 sleeps at once.
    #[arg(long, default_value_t = 0)]
    spin_before_park_us: u64,
    /// Connections each shard serves at once; more are refused with `overloaded`.
    #[arg(long, default_value_t = CONNECTIONS_PER_SHARD_MAX)]
    connections_max: usize,
    /// Disconnect a client that starts a frame and does not finish it within this time.
    #[arg(long, default_value_t = PARTIAL_FRAME_TIMEOUT_MS_DEFAULT)]
    partial_frame_timeout_ms: u64,
    /// Close a new connection that sends no Hello within this time (silent
    /// connections cannot hold the shard's connection slots).
    #[arg(long, default_value_t = HELLO_TIMEOUT_MS_DEFAULT)]
    hello_timeout_ms: u64,
    /// When a shard's connections reach 90% of --connections-max, close
    /// connections idle (nothing buffered or running) for at least this long.
    #[arg(long, default_value_t = IDLE_RECLAIM_MS_DEFAULT)]
    idle_reclaim_ms: u64,
    /// Node-wide memory for frames larger than 64 KiB while they arrive; a
    /// connection whose frame would exceed it gets `overloaded` and is closed.
    #[arg(long, default_value_t = READ_BUFFERS_MB_DEFAULT)]
    read_buffers_mb: usize,
    /// Require clients to prove a secret from this file (challenge-response;
    /// the secret never crosses the wire). One `ROLE SECRET` per line, ROLE
    /// read, write or admin; a file holding one bare secret grants admin.
    /// Without it the node is open to anyone who reaches its port.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<std::path::PathBuf>,
    /// What compiles uploaded WebAssembly: winch (uploads ready in ~10 ms) or
    /// cranelift (guest code ~2.4x faster, uploads ~3x slower).
    #[arg(long, value_enum, default_value = "winch")]
    wasm_compiler: WasmCompilerArg,
    /// Function executor threads beside each shard, pinned to its core (1 to 64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=EXECUTORS_PER_SHARD_MAX as i64))]
    executors_per_shard: u16,
    /// Let the OS place executor threads on any core instead of pinning them
    /// to their shard's core: better when long CPU-bound functions (model
    /// inference) outnumber cores, worse for microsecond functions.
    #[arg(long)]
    executors_float: bool,
}

/// The node address the CLI talks to unless given `--addr`.
const ADDR_DEFAULT: &str = "127.0.0.1:7400";

#[derive(Clone, Debug, clap::Args)]
struct Conn {
    /// Any shard of the node (the client learns the others).
    #[arg(long, default_value = ADDR_DEFAULT, global = true)]
    addr: String,
    /// Print one JSON object on stdout instead of text; errors too, as
    /// {"error": {"status", "code", "message", "hint"}} (see `squall --help`).
    ///
    /// Byte strings are text with "encoding": "utf8", or base64 with
    /// "encoding": "base64" when they are not UTF-8.
    #[arg(long, global = true)]
    json: bool,
    /// The client gives up on the node after this long.
    #[arg(long, default_value_t = 5000, global = true)]
    client_timeout_ms: u64,
    /// The secret to prove to a node started with --auth-token-file (its
    /// first line; a `ROLE SECRET` line works too). Default: the
    /// SQUALL_TOKEN environment variable.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WasmCompilerArg {
    Winch,
    Cranelift,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Lattice {
    Lww,
    Set,
    OrderedSet,
    Max,
    Priority,
}

#[derive(Clone, Debug, Subcommand)]
enum KvCommand {
    /// Merge a value into KEY. Sets take one or more VALUEs; max takes a number.
    /// The value is the VALUE arguments (any bytes the shell can pass) or,
    /// with --file, a file's or stdin's bytes exactly (binary included).
    Put {
        key: String,
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        values: Vec<OsString>,
        /// Read the value's bytes from PATH instead of VALUE (`-`: standard
        /// input), exactly as they are; a set gets them as one member.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "lww")]
        lattice: Lattice,
        /// Priority of the value (priority lattice; lowest wins).
        #[arg(long, default_value_t = 0)]
        priority: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print KEY's value (exit status 1 if it has none, without --json).
    ///
    /// Text shows bytes that are not UTF-8 as U+FFFD; --raw writes them
    /// exactly; --json gives "value" with "encoding": "utf8" or "base64".
    Get {
        key: String,
        /// Write the value's bytes exactly, with no newline (LWW, priority,
        /// max and single-version causal values; sets need --json).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete KEY.
    Del {
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every shard's counters.
    Stats {
        #[command(flatten)]
        conn: Conn,
    },
}

impl Command {
    /// The connection flags of a command that talks to a node.
    fn conn(&self) -> Option<&Conn> {
        match self {
            Command::Node(_) => None,
            Command::Kv { command } => Some(match command {
                KvCommand::Put { conn, .. }
                | KvCommand::Get { conn, .. }
                | KvCommand::Del { conn, .. }
                | KvCommand::Stats { conn } => conn,
            }),
            Command::Fn { command } => Some(match command {
                FnCommand::List { conn }
                | FnCommand::Register { conn, .. }
                | FnCommand::Delete { conn, .. }
                | FnCommand::Call { conn, .. } => conn,
            }),
            Command::Dag { command } => Some(match command {
                DagCommand::Create { conn, .. }
                | DagCommand::Call { conn, .. }
                | DagCommand::Delete { conn, .. }
                | DagCommand::List { conn } => conn,
            }),
            Command::Model { command } => Some(match command {
                ModelCommand::Put { conn, .. } | ModelCommand::Pipeline { conn, .. } => conn,
            }),
            Command::Predict { conn, .. } => Some(conn),
        }
    }
}

/// Entry point of the `squall` binary; returns its exit status: 0, 1 (`kv
/// get` found nothing) or 2 (an error, reported on stderr, or on stdout as
/// JSON with `--json`).
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,tract_onnx=error"),
    )
    .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let command = cli.command.clone();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.chain().any(|c| c.is::<output::StdoutClosed>()) => ExitCode::SUCCESS,
        Err(e) => {
            report::report(&command, &e);
            ExitCode::from(report::EXIT_ERROR)
        }
    }
}

/// A command line clap refused (or `--help`, `--version`): clap's text,
/// or with `--json` anywhere on the line a JSON error.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let json = std::env::args_os().any(|a| a == "--json");
    if json && !informational {
        let message = e.render().to_string();
        let message = message.trim_end().trim_start_matches("error: ");
        report::print_json_error(
            "usage",
            None,
            message,
            Some("`squall --help` lists the commands; `squall COMMAND --help` their options"),
        );
    } else {
        // clap ignores a closed stdout for --help; nothing else to do.
        let _ = e.print();
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(report::EXIT_ERROR))
}

/// Runs one command; its exit status if it succeeded.
fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Node(a) => {
            let shards = a
                .shards
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            crate::node::run(NodeConfig {
                shards,
                listen: a.listen,
                data_dir: a.data_dir,
                fsync: a.fsync,
                vnodes_per_shard: a.vnodes,
                snapshot_wal_bytes: a.snapshot_wal_mb.max(1) << 20,
                spin_before_park_us: a.spin_before_park_us,
                connections_max: a.connections_max,
                partial_frame_timeout_ms: a.partial_frame_timeout_ms.max(1),
                hello_timeout_ms: a.hello_timeout_ms.max(1),
                idle_reclaim_ms: a.idle_reclaim_ms,
                read_buffers_mb: a.read_buffers_mb.max(1),
                auth: match &a.auth_token_file {
                    Some(path) => Some(std::sync::Arc::new(crate::auth::Auth::from_file(path)?)),
                    None => None,
                },
                executors_per_shard: usize::from(a.executors_per_shard),
                pin_executors: !a.executors_float,
                wasm_compiler: match a.wasm_compiler {
                    WasmCompilerArg::Winch => wasm_host::Compiler::Winch,
                    WasmCompilerArg::Cranelift => wasm_host::Compiler::Cranelift,
                },
            })?;
            // Exit now, without tearing down the shard threads (see node::run).
            std::process::exit(0)
        }
        Command::Kv { command } => kv(command),
        Command::Fn { command } => function(command).map(|()| 0),
        Command::Dag { command } => dag(command).map(|()| 0),
        Command::Model { command } => model(command).map(|()| 0),
        Command::Predict {
            image,
            dag,
            model,
            call_timeout_ms,
            conn,
        } => {
            let bytes =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let call = client::pipeline::prediction_call(&dag, &model, bytes, call_timeout_ms);
            let out = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.call_dag_with(call).await?)
            })?;
            let text = String::from_utf8_lossy(&out).into_owned();
            let ranked: Vec<serde_json::Value> = models::tensor::parse_ranked(&text)?
                .into_iter()
                .map(|(class, p, label)| json!({"class": class, "probability": p, "label": label}))
                .collect();
            emit(
                conn.json,
                &json!({"image": image.display().to_string(), "top5": ranked}),
                text.trim_end(),
            )?;
            Ok(0)
        }
    }
}

fn model(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Put {
            name,
            file,
            labels,
            conn,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let labels = labels
                .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
                .transpose()?;
            let size = bytes.len();
            let has_labels = labels.is_some();
            let dags = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                c.put_model(&name, &bytes, labels.as_deref()).await?;
                // Only for the hint below: a failure here is no failure of the put.
                Ok(c.list_dags().await.unwrap_or_default())
            })?;
            emit(
                conn.json,
                &json!({"model": name, "bytes": size, "ok": true}),
                &format!("OK: model {name} ({size} bytes) stored; function {name} registered"),
            )?;
            let addr = if conn.addr == ADDR_DEFAULT {
                String::new()
            } else {
                format!(" --addr {}", conn.addr)
            };
            let model_flag = if name == "squeezenet" {
                String::new()
            } else {
                format!(" --model {name}")
            };
            if !has_labels {
                note(&format!(
                    "hint: `squall predict` needs the model's class labels: store them with \
                     `squall model put {name} FILE --labels LABELS{addr}`, then run \
                     `squall model pipeline{model_flag}{addr}`"
                ));
            } else if !dags.iter().any(|d| d == "predict") {
                note(&format!(
                    "hint: `squall model pipeline{model_flag}{addr}` registers the DAG that \
                     `squall predict IMAGE` runs"
                ));
            }
        }
        ModelCommand::Pipeline {
            dag,
            model,
            replicas,
            conn,
        } => {
            let def = client::pipeline::prediction_dag(&dag, &model, replicas);
            connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                if c.get(&wire::model::labels_key(&model)).await?.is_none() {
                    anyhow::bail!(
                        "model {model:?} has no labels stored; run `squall model put {model} FILE --labels LABELS`"
                    );
                }
                Ok(c.register_dag(def).await?)
            })?;
            emit(conn.json, &json!({"dag": dag, "ok": true}), "OK")?;
        }
    }
    Ok(())
}

fn dag(cmd: DagCommand) -> anyhow::Result<()> {
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
            let mut call = DagCall::new(&name, sources);
            call.timeout_ms = call_timeout_ms;
            call.retries = retries;
            call.then = then.iter().map(|t| t.as_bytes().to_vec()).collect();
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

/// Reports a delete: `deleted` / `(not found)`, or JSON naming what it was.
fn print_removed(json: bool, kind: &str, name: &str, removed: bool) -> anyhow::Result<()> {
    let text = if removed { "deleted" } else { "(not found)" };
    emit(json, &json!({kind: name, "removed": removed}), text)
}

/// Prints a function's or DAG's result: its bytes exactly (`--raw`), JSON
/// (`obj` plus `"result"` and `"encoding"`), or text.
fn print_result(
    conn: &Conn,
    raw: bool,
    mut obj: serde_json::Value,
    out: &[u8],
) -> anyhow::Result<()> {
    if raw {
        return write_stdout(out);
    }
    let (result, encoding) = encoded(out);
    if let Some(o) = obj.as_object_mut() {
        o.insert("result".into(), result.into());
        o.insert("encoding".into(), encoding.into());
    }
    emit(conn.json, &obj, &text(out))?;
    if !conn.json && encoding != "utf8" {
        note(NOT_UTF8_HINT);
    }
    Ok(())
}

/// Said on stderr when the text mode had to replace bytes.
const NOT_UTF8_HINT: &str = "hint: the output is not UTF-8 (shown with U+FFFD); --raw writes \
     its bytes exactly, --json encodes them in base64";

fn connect_blocking<T>(
    conn: &Conn,
    name: &str,
    f: impl AsyncFnOnce(&mut Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let opts = ClientOptions {
            timeout: Duration::from_millis(conn.client_timeout_ms),
            client_name: name.into(),
            token: client::load_token(conn.token_file.as_deref()).map_err(anyhow::Error::msg)?,
        };
        let mut c = Client::connect(&conn.addr, opts)
            .await
            .with_context(|| format!("connecting to {}", conn.addr))?;
        f(&mut c).await
    })
}

fn function(cmd: FnCommand) -> anyhow::Result<()> {
    match cmd {
        FnCommand::List { conn } => {
            let names = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.list_functions().await?)
            })?;
            emit(conn.json, &json!({"functions": names}), &names.join("\n"))?;
        }
        FnCommand::Register {
            name,
            module,
            builtin,
            model,
            memory_mb,
            timeout_ms,
            conn,
        } => {
            let module = module
                .map(|path| {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
                })
                .transpose()?;
            connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                match (module, builtin, model) {
                    (Some(bytes), _, _) => {
                        Ok(c.register_wasm(&name, bytes, memory_mb, timeout_ms).await?)
                    }
                    (None, Some(b), _) => Ok(c.register_function(&name, &b).await?),
                    (None, None, Some(m)) => Ok(c.register_model_function(&name, &m).await?),
                    (None, None, None) => anyhow::bail!("give a MODULE file, --builtin or --model"),
                }
            })?;
            emit(conn.json, &json!({"function": name, "ok": true}), "OK")?;
        }
        FnCommand::Delete { name, conn } => {
            let removed = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.delete_function(&name).await?)
            })?;
            print_removed(conn.json, "function", &name, removed)?;
        }
        FnCommand::Call {
            function,
            args,
            refs,
            call_timeout_ms,
            raw,
            conn,
        } => {
            let args: Vec<Arg> = args
                .into_iter()
                .map(|a| Arg::Value(a.into_vec()))
                .chain(refs.into_iter().map(|r| Arg::Ref(r.into_bytes())))
                .collect();
            let out = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.call_function_with(&function, args, call_timeout_ms)
                    .await?)
            })?;
            print_result(&conn, raw, json!({"function": function}), &out)?;
        }
    }
    Ok(())
}

/// Reads a value for `kv put --file`: the file's bytes, or stdin's for `-`.
fn read_value_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    // No value can be larger than a frame; stop reading there.
    let cap = wire::limits::FRAME_BODY_BYTES_MAX as u64;
    let mut bytes = Vec::new();
    let what = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .context("reading the value from standard input")?;
        "standard input".to_owned()
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", path.display()))?;
        path.display().to_string()
    };
    if bytes.len() as u64 > cap {
        anyhow::bail!(
            "{what} holds more than {cap} bytes, more than any value the node takes \
             (see its value_bytes_max)"
        );
    }
    Ok(bytes)
}

fn kv(cmd: KvCommand) -> anyhow::Result<u8> {
    match cmd {
        KvCommand::Put {
            key,
            values,
            lattice,
            priority,
            file,
            conn,
        } => {
            let values: Vec<Vec<u8>> = match file {
                Some(path) => vec![read_value_file(&path)?],
                None => values.into_iter().map(OsStringExt::into_vec).collect(),
            };
            let value = build_value(lattice, &values, priority)?;
            connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.put(key.as_bytes(), value).await?)
            })?;
            emit(conn.json, &json!({"key": key, "ok": true}), "OK")?;
            Ok(0)
        }
        KvCommand::Get { key, raw, conn } => {
            let v = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.get(key.as_bytes()).await?)
            })?;
            let Some(v) = v else {
                if raw {
                    note("(not found)");
                } else {
                    emit(
                        conn.json,
                        &json!({"key": key, "found": false}),
                        "(not found)",
                    )?;
                }
                return Ok(if conn.json { 0 } else { 1 });
            };
            if raw {
                write_stdout(&value_raw(&key, &v)?)?;
                return Ok(0);
            }
            let mut obj = json!({"key": key, "found": true});
            if let (Some(o), serde_json::Value::Object(fields)) =
                (obj.as_object_mut(), value_json(&v))
            {
                o.extend(fields);
            }
            let (text, lossy) = value_text(&v);
            emit(conn.json, &obj, &text)?;
            if lossy && !conn.json {
                note(NOT_UTF8_HINT);
            }
            Ok(0)
        }
        KvCommand::Del { key, conn } => {
            let removed = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.delete(key.as_bytes()).await?)
            })?;
            let text = if removed { "deleted" } else { "(not found)" };
            emit(conn.json, &json!({"key": key, "removed": removed}), text)?;
            Ok(0)
        }
        KvCommand::Stats { conn } => {
            let stats = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(c.stats().await?)
            })?;
            let arr: Vec<_> = stats
                .iter()
                .map(|s| {
                    json!({"shard": s.shard, "live_keys": s.live_keys, "tombstones": s.tombstones,
                    "gets": s.gets, "puts": s.puts, "deletes": s.deletes, "errors": s.errors,
                    "forwarded_out": s.forwarded_out, "forwarded_in": s.forwarded_in,
                    "connections": s.connections, "connections_refused": s.connections_refused,
                    "last_lsn": s.last_lsn, "durable_lsn": s.durable_lsn, "wal_bytes": s.wal_bytes,
                    "snapshots": s.snapshots, "uptime_ms": s.uptime_ms})
                })
                .collect();
            let text = stats
                .iter()
                .map(|s| {
                    format!(
                        "shard {}: {} keys, {} tombstones, gets {}, puts {}, deletes {}, errors {}, \
                         forwarded out/in {}/{}, lsn {} (durable {}), wal {} B, snapshots {}, connections {}",
                        s.shard, s.live_keys, s.tombstones, s.gets, s.puts, s.deletes, s.errors,
                        s.forwarded_out, s.forwarded_in, s.last_lsn, s.durable_lsn, s.wal_bytes,
                        s.snapshots, s.connections
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            emit(conn.json, &json!({"shards": arr}), &text)?;
            Ok(0)
        }
    }
}

fn build_value(lattice: Lattice, values: &[Vec<u8>], priority: u64) -> anyhow::Result<Value> {
    let one = || -> anyhow::Result<Vec<u8>> {
        match values {
            [v] => Ok(v.clone()),
            _ => anyhow::bail!("this lattice takes exactly one VALUE, got {}", values.len()),
        }
    };
    Ok(match lattice {
        Lattice::Lww => Value::Lww(LwwValue {
            timestamp: 0,
            writer: 0,
            bytes: one()?,
        }),
        Lattice::Set => Value::Set(values.to_vec()),
        Lattice::OrderedSet => Value::OrderedSet(values.to_vec()),
        Lattice::Max => {
            let bytes = one()?;
            let s = std::str::from_utf8(&bytes).map(str::trim).map_err(|_| {
                anyhow::anyhow!("max takes an unsigned integer, not {:?}", text(&bytes))
            })?;
            Value::Max(
                s.parse()
                    .with_context(|| format!("max takes an unsigned integer, not {s:?}"))?,
            )
        }
        Lattice::Priority => Value::Priority(PriorityValue {
            priority,
            bytes: one()?,
        }),
    })
}
