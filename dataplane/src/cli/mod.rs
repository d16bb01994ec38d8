//! The `squall` command line: `squall node …` runs a node; `squall kv …`,
//! `fn …`, `dag …`, `model …`, `predict …`, `cluster …` and `leave` talk to
//! one.
//!
//! This module holds `main`, the top-level parser ([`Cli`], [`Command`]),
//! the connection flags every client command takes ([`Conn`]) and the
//! helpers those commands share (connecting, printing a result or a
//! delete). Each command group has its own module, with its flags and its
//! handler: [`node`] (flags → `NodeConfig`), [`kv`], [`functions`] (`fn`),
//! [`dags`] (`dag`), [`models`] (`model`, `predict`), [`cluster`].
//!
//! Output ([`output`]): text, one JSON object (`--json`) or raw bytes
//! (`--raw`), all through one writer that stops quietly when stdout's
//! reader goes away. Errors ([`report`]): text with a hint naming the
//! command that fixes them, or JSON with `--json`; exit status 2.

mod cluster;
mod dags;
mod functions;
mod kv;
mod models;
mod node;
mod output;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use client::{Client, ClientOptions};
use serde_json::json;

use cluster::ClusterCommand;
use dags::DagCommand;
use functions::FnCommand;
use kv::KvCommand;
use models::ModelCommand;
use node::NodeArgs;
use output::{emit, encoded, note, text, write_stdout};

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

/// The configuration `squall node ARGS…` gives, for tests that run a node
/// in their own process.
#[cfg(test)]
pub(crate) fn node_config(args: &[&str]) -> anyhow::Result<crate::node::NodeConfig> {
    let argv = ["squall", "node"].into_iter().chain(args.iter().copied());
    match Cli::try_parse_from(argv)?.command {
        Command::Node(a) => a.config(),
        _ => unreachable!("parsed as `squall node`"),
    }
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
    /// What the cluster looks like from one of its members.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Make the node at --addr leave its cluster and stop, gracefully: it
    /// leaves the membership (peers see it at once), hands every key to its
    /// new holders, answers what it has begun, syncs its WAL and exits.
    /// Needs the admin role.
    Leave {
        /// Return only once the node has stopped (its port refuses
        /// connections), or fail after --wait-timeout-s.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 120)]
        wait_timeout_s: u64,
        #[command(flatten)]
        conn: Conn,
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
            Command::Cluster { command } => Some(command.conn()),
            Command::Leave { conn, .. } => Some(conn),
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
        Command::Node(a) => node::run(a),
        Command::Kv { command } => kv::run(command),
        Command::Fn { command } => functions::run(command).map(|()| 0),
        Command::Dag { command } => dags::run(command).map(|()| 0),
        Command::Model { command } => models::run(command).map(|()| 0),
        Command::Cluster { command } => cluster::run(command).map(|()| 0),
        Command::Leave {
            wait,
            wait_timeout_s,
            conn,
        } => cluster::leave(&conn, wait, wait_timeout_s).map(|()| 0),
        Command::Predict {
            image,
            dag,
            model,
            call_timeout_ms,
            conn,
        } => models::predict(&image, &dag, &model, call_timeout_ms, &conn),
    }
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
            ..ClientOptions::default()
        };
        let mut c = Client::connect(&conn.addr, opts)
            .await
            .with_context(|| format!("connecting to {}", conn.addr))?;
        f(&mut c).await
    })
}
