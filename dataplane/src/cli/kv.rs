//! `squall kv`: read and write keys.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use client::Client;
use serde_json::json;
use wire::message::{LwwValue, PriorityValue, Value};

use super::output::{emit, note, text, value_json, value_raw, value_text, write_stdout};
use super::{connect_blocking, Conn, NOT_UTF8_HINT};
use crate::concern::WriteConcern;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum Lattice {
    Lww,
    Set,
    OrderedSet,
    Max,
    Priority,
}

#[derive(Clone, Debug, Subcommand)]
pub(super) enum KvCommand {
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
        /// Acknowledged once this many copies have it: 1 (the node's own),
        /// quorum (a majority of the key's holders) or all. Default: the
        /// node's --write-concern.
        #[arg(long, value_enum, conflicts_with = "if_absent")]
        w: Option<WriteConcern>,
        /// Only if KEY holds no value (then acknowledged by every holder);
        /// otherwise nothing changes, and the exit status is 1.
        #[arg(long)]
        if_absent: bool,
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
        /// Read the copy the node at --addr holds itself, never another
        /// node's (to see where a key lives, or whether copies agree).
        #[arg(long)]
        local: bool,
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

pub(super) fn run(cmd: KvCommand) -> anyhow::Result<u8> {
    match cmd {
        KvCommand::Put {
            key,
            values,
            lattice,
            priority,
            file,
            w,
            if_absent,
            conn,
        } => {
            let values: Vec<Vec<u8>> = match file {
                Some(path) => vec![read_value_file(&path)?],
                None => values.into_iter().map(OsStringExt::into_vec).collect(),
            };
            let value = build_value(lattice, &values, priority)?;
            let stored = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                match (w, if_absent) {
                    (_, true) => {
                        return Ok(c.put_if_absent(key.as_bytes(), value).await?.is_none())
                    }
                    (Some(w), _) => c.put_with_concern(key.as_bytes(), value, w.code()).await?,
                    (None, _) => c.put(key.as_bytes(), value).await?,
                }
                Ok(true)
            })?;
            let text = if stored {
                "OK"
            } else {
                "(not stored: the key holds a value)"
            };
            emit(conn.json, &json!({"key": key, "ok": stored}), text)?;
            Ok(if stored { 0 } else { 1 })
        }
        KvCommand::Get {
            key,
            raw,
            local,
            conn,
        } => {
            let v = connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
                Ok(if local {
                    c.get_local(key.as_bytes()).await?
                } else {
                    c.get(key.as_bytes()).await?
                })
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
                    "snapshots": s.snapshots, "uptime_ms": s.uptime_ms,
                    "node_forwards": s.node_forwards, "stale_epoch": s.stale_epoch,
                    "primary_keys": s.primary_keys, "cache_keys": s.cache_keys,
                    "cache_bytes": s.cache_bytes, "cache_hits": s.cache_hits,
                    "cache_misses": s.cache_misses})
                })
                .collect();
            let text = stats
                .iter()
                .map(|s| {
                    let mut line = format!(
                        "shard {}: {} keys, {} tombstones, gets {}, puts {}, deletes {}, errors {}, \
                         forwarded out/in {}/{}, lsn {} (durable {}), wal {} B, snapshots {}, connections {}",
                        s.shard, s.live_keys, s.tombstones, s.gets, s.puts, s.deletes, s.errors,
                        s.forwarded_out, s.forwarded_in, s.last_lsn, s.durable_lsn, s.wal_bytes,
                        s.snapshots, s.connections
                    );
                    if s.cache_hits + s.cache_misses + s.cache_keys > 0 {
                        line.push_str(&format!(
                            "; node cache: {} keys, {} B, reads {} hit / {} missed",
                            s.cache_keys, s.cache_bytes, s.cache_hits, s.cache_misses
                        ));
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n");
            emit(conn.json, &json!({"shards": arr}), &text)?;
            Ok(0)
        }
    }
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
