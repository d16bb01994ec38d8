//! `squall fn`: list, register, delete and call functions.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use client::Client;
use serde_json::json;
use wire::message::Arg;

use super::output::emit;
use super::{connect_blocking, print_removed, print_result, Conn};

#[derive(Clone, Debug, Subcommand)]
pub(super) enum FnCommand {
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

pub(super) fn run(cmd: FnCommand) -> anyhow::Result<()> {
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
