//! `squall cluster …`: what a cluster looks like from one of its members;
//! `squall leave`: a node leaves it.

use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use client::{Client, ClientOptions};
use serde_json::json;
use wire::message::{ClusterView, LwwValue, Value, MEMBER_DOWN, MEMBER_LEAVING, MEMBER_UP};

use super::{connect_blocking, emit, Conn};
use crate::limits::REPLICATION_MAX;

#[derive(Clone, Debug, clap::Subcommand)]
pub(super) enum ClusterCommand {
    /// The members the node at --addr knows of: their state and for how
    /// long, incarnation, shards, keys (asked of each live member: KEYS
    /// those it is the primary for, REPLICAS the copies it holds for other
    /// primaries), and the epoch of the live view (nodes that agree on the
    /// members report the same epoch).
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Gives KEY its own number of copies (selective replication for a hot
    /// key: each holder serves its reads and takes its writes, pushed to
    /// the others), whatever the cluster's --replication. Kept as
    /// `squall:replicas:KEY`, which every node holds; needs the admin role.
    Replicate {
        key: String,
        /// Copies: 1 to 7 (capped by the members there are), or 0 for the
        /// cluster's --replication again.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=REPLICATION_MAX as i64))]
        copies: u8,
        #[command(flatten)]
        conn: Conn,
    },
}

impl ClusterCommand {
    pub(super) fn conn(&self) -> &Conn {
        match self {
            ClusterCommand::Status { conn } | ClusterCommand::Replicate { conn, .. } => conn,
        }
    }
}

pub(super) fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status { conn } => status(&conn),
        ClusterCommand::Replicate { key, copies, conn } => replicate(&conn, &key, copies),
    }
}

/// `squall cluster replicate`: writes (or, for 0, deletes) the key's
/// `squall:replicas:` setting.
fn replicate(conn: &Conn, key: &str, copies: u8) -> anyhow::Result<()> {
    let setting = format!("{}{key}", wire::REPLICAS_KEY_PREFIX);
    connect_blocking(conn, "squall-cli", async |c: &mut Client| {
        if copies == 0 {
            c.delete(setting.as_bytes()).await?;
        } else {
            let value = Value::Lww(LwwValue {
                timestamp: 0,
                writer: 0,
                bytes: copies.to_string().into_bytes(),
            });
            c.put(setting.as_bytes(), value).await?;
        }
        Ok(())
    })?;
    let text = if copies == 0 {
        format!("{key}: the cluster's --replication")
    } else {
        format!("{key}: {copies} copies")
    };
    emit(conn.json, &json!({"key": key, "copies": copies}), &text)
}

fn status(conn: &Conn) -> anyhow::Result<()> {
    let conn = conn.clone();
    let (view, replication, keys) =
        connect_blocking(&conn, "squall-cli", async |c: &mut Client| {
            let view = c.cluster_status().await?;
            let replication = c.topology().cluster.replication;
            let mut keys = Vec::new();
            for m in &view.members {
                keys.push(if m.state != MEMBER_DOWN {
                    member_stats(&conn, &String::from_utf8_lossy(&m.addr)).await
                } else {
                    None
                });
            }
            Ok((view, replication, keys))
        })?;
    emit(
        conn.json,
        &as_json(&view, replication, &keys),
        &as_text(&view, replication, &keys),
    )
}

/// `squall leave`: asks the node to leave; with `wait`, polls its address
/// until it refuses connections.
pub(super) fn leave(conn: &Conn, wait: bool, wait_timeout_s: u64) -> anyhow::Result<()> {
    connect_blocking(conn, "squall-cli", async |c: &mut Client| {
        Ok(c.leave().await?)
    })?;
    if !wait {
        return emit(
            conn.json,
            &json!({"addr": conn.addr, "leaving": true}),
            "leaving",
        );
    }
    let start = Instant::now();
    let addrs: Vec<_> = conn
        .addr
        .to_socket_addrs()
        .with_context(|| format!("--addr {:?} is not HOST:PORT", conn.addr))?
        .collect();
    while addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok())
    {
        if start.elapsed() >= Duration::from_secs(wait_timeout_s) {
            anyhow::bail!(
                "the node at {} still accepts connections {wait_timeout_s} s after it began \
                 to leave (--wait-timeout-s)",
                conn.addr
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ms = start.elapsed().as_millis();
    emit(
        conn.json,
        &json!({"addr": conn.addr, "left": true, "wait_ms": ms}),
        &format!("left (stopped after {ms} ms)"),
    )
}

/// A member's counters, summed over its shards.
#[derive(Clone, Copy, Default)]
struct MemberStats {
    live_keys: u64,
    /// Requests it sent on to another node (a client's key it holds no
    /// copy of).
    node_forwards: u64,
    /// Requests it got from clients routing by another view.
    stale_epoch: u64,
    primary_keys: u64,
}

/// A member's counters; `None` if it does not answer.
async fn member_stats(conn: &Conn, addr: &str) -> Option<MemberStats> {
    let opts = ClientOptions {
        timeout: Duration::from_millis(conn.client_timeout_ms),
        client_name: "squall-cli".into(),
        token: client::load_token(conn.token_file.as_deref()).ok()?,
        ..ClientOptions::default()
    };
    let mut c = Client::connect(addr, opts).await.ok()?;
    let stats = c.stats().await.ok()?;
    Some(
        stats
            .iter()
            .fold(MemberStats::default(), |a, s| MemberStats {
                live_keys: a.live_keys + s.live_keys,
                primary_keys: a.primary_keys + s.primary_keys,
                node_forwards: a.node_forwards + s.node_forwards,
                stale_epoch: a.stale_epoch + s.stale_epoch,
            }),
    )
}

fn state(code: u8) -> &'static str {
    match code {
        MEMBER_UP => "up",
        MEMBER_LEAVING => "leaving",
        _ => "down",
    }
}

fn as_json(
    view: &ClusterView,
    replication: u8,
    stats: &[Option<MemberStats>],
) -> serde_json::Value {
    let members: Vec<_> = view
        .members
        .iter()
        .zip(stats)
        .map(|(m, s)| {
            json!({"node": format!("{:016x}", m.node), "addr": String::from_utf8_lossy(&m.addr),
                "state": state(m.state), "state_ms": m.state_ms, "incarnation": m.incarnation,
                "shards": m.shards, "live_keys": s.map(|s| s.live_keys),
                "primary_keys": s.map(|s| s.primary_keys),
                "replica_keys": s.map(|s| s.live_keys.saturating_sub(s.primary_keys)),
                "node_forwards": s.map(|s| s.node_forwards), "stale_epoch": s.map(|s| s.stale_epoch)})
        })
        .collect();
    json!({"epoch": format!("{:016x}", view.epoch), "node": format!("{:016x}", view.node),
        "replication": replication, "members": members})
}

fn as_text(view: &ClusterView, replication: u8, stats: &[Option<MemberStats>]) -> String {
    let up = view.members.iter().filter(|m| m.state == MEMBER_UP).count();
    let mut out = format!(
        "epoch {:016x} as node-{:016x} sees it: {up} up, {} down or leaving; \
         {replication} cop{} of each key\n\
         {:<22} {:<22} {:<5} {:>9} {:>11} {:>6} {:>10} {:>10}",
        view.epoch,
        view.node,
        view.members.len() - up,
        if replication == 1 { "y" } else { "ies" },
        "NODE",
        "ADDR",
        "STATE",
        "FOR",
        "INCARNATION",
        "SHARDS",
        "KEYS",
        "REPLICAS"
    );
    for (m, s) in view.members.iter().zip(stats) {
        let (keys, replicas) = s.map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |s| {
                let copies = s.live_keys.saturating_sub(s.primary_keys);
                (s.primary_keys.to_string(), copies.to_string())
            },
        );
        let me = if m.node == view.node {
            " (this node)"
        } else {
            ""
        };
        out.push_str(&format!(
            "\nnode-{:016x}  {:<22} {:<5} {:>8.1}s {:>11} {:>6} {:>10} {:>10}{me}",
            m.node,
            String::from_utf8_lossy(&m.addr),
            state(m.state),
            m.state_ms as f64 / 1000.0,
            m.incarnation,
            m.shards,
            keys,
            replicas
        ));
    }
    out
}
