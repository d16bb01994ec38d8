//! `squall node`: its flags, and the [`NodeConfig`] they make.

use std::path::PathBuf;

use clap::ValueEnum;
use cluster::membership::Timing;

use crate::concern::WriteConcern;
use crate::limits::{
    ANTI_ENTROPY_INTERVAL_MS, CACHE_MB_DEFAULT, CONNECTIONS_PER_SHARD_MAX, EXECUTORS_PER_SHARD_MAX,
    HELLO_TIMEOUT_MS_DEFAULT, IDLE_RECLAIM_MS_DEFAULT, PARTIAL_FRAME_TIMEOUT_MS_DEFAULT,
    READ_BUFFERS_MB_DEFAULT, REPLICATION_MAX, SNAPSHOT_WAL_BYTES_DEFAULT,
    SNAPSHOT_WAL_PERCENT_DEFAULT, TXN_RECORD_TTL_MS, VNODES_PER_SHARD_DEFAULT,
};
use crate::node::NodeConfig;
use crate::storage::{FsyncPolicy, SnapshotPolicy};
use crate::uring::NetPath;

#[derive(Clone, Debug, clap::Args)]
pub(super) struct NodeArgs {
    /// Shards (executors, one per core). Default: one per core this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// Address of shard 0; shard i listens on PORT+i (PORT 0: each picks a free port).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Also serve Redis clients (RESP2: GET, SET, DEL, MGET, MSET, EXISTS,
    /// PING, INFO, …) on HOST:PORT, LWW keys only. Every shard listens
    /// there (the kernel spreads connections); PORT 0 picks a free port.
    /// With --auth-token-file, clients send `AUTH <secret>` in the clear.
    #[arg(long, value_name = "HOST:PORT")]
    resp_listen: Option<String>,
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
    /// Snapshot a shard once its WAL has grown by this many MiB (bounds restart time)
    /// and by --snapshot-wal-percent of its newest snapshot.
    #[arg(long, default_value_t = SNAPSHOT_WAL_BYTES_DEFAULT >> 20)]
    snapshot_wal_mb: u64,
    /// ... and once its WAL has grown by this percentage of the newest snapshot's size: a
    /// snapshot rewrites every key, so this bounds the bytes snapshots write per byte logged
    /// (100: at most one), while restart replays at most this much of a snapshot's size of
    /// WAL. 0: --snapshot-wal-mb alone.
    #[arg(long, default_value_t = SNAPSHOT_WAL_PERCENT_DEFAULT)]
    snapshot_wal_percent: u64,
    /// Busy-poll this many microseconds before a shard sleeps: trades an idle
    /// core's cycles for lower wake-up latency. 0 sleeps at once.
    #[arg(long, default_value_t = 0)]
    spin_before_park_us: u64,
    /// The path client sockets take. `glommio`: glommio's sockets, a
    /// syscall per receive and per send. `uring`: each shard serves its
    /// connections on an io_uring of its own (multishot receive into
    /// provided buffers, the sends of a batch in one submission; Linux
    /// 6.0+, else glommio's with a warning). Measured alike per core here,
    /// lower p50 under load, higher for a serial client (docs/benchmarks.md).
    #[arg(long, value_enum, env = "SQUALL_NET", default_value_t = NetPath::Glommio)]
    net: NetPath,
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
    /// Also register the functions the test suite uses (sleep_ms, whoami,
    /// send_to, recv_wait, valid_on, batch_size, fail_first). For tests and
    /// benchmarks only: they can sleep, fail or misbehave on purpose.
    #[arg(long)]
    test_fixtures: bool,
    /// Join a cluster through any of its members: ADDR[,ADDR…], each a
    /// member's shard-0 address (HOST:PORT; names are resolved at every
    /// attempt). Without it the node starts alone, and others may join it.
    /// Membership (SWIM) runs over UDP on shard 0's address.
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',')]
    join: Vec<String>,
    /// The address other nodes and clients reach shard 0 at, when it is not
    /// --listen (listening on 0.0.0.0, behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Membership: how often this node probes another member.
    #[arg(long, default_value_t = Timing::LAN.probe_period_ms)]
    probe_period_ms: u64,
    /// Membership: how long a probe waits for its answer before asking
    /// other members to probe too.
    #[arg(long, default_value_t = Timing::LAN.probe_rtt_ms)]
    probe_rtt_ms: u64,
    /// Membership: how long a suspected member has to refute before every
    /// member marks it down. Failure detection takes about
    /// probe period + probe RTT + this.
    #[arg(long, default_value_t = Timing::LAN.suspect_to_down_ms)]
    suspect_ms: u64,
    /// Copies of each key in the cluster (1 to 7; every node of a cluster
    /// must use the same). Each write is pushed to the key's other holders
    /// within milliseconds; a failed node's keys are copied to a new holder.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=REPLICATION_MAX as i64))]
    replication: u16,
    /// How many copies a write waits for before it is acknowledged: 1 (this
    /// node's), quorum (a majority of the key's holders) or all (every
    /// holder in the current view). With --replication 1, always 1.
    #[arg(long, value_enum, default_value = "1")]
    write_concern: WriteConcern,
    /// With --replication above 1: how often (ms) each shard compares the
    /// keys it shares with each other node (a digest per range of the ring)
    /// and sends the ones whose copies differ. 0 turns anti-entropy off.
    #[arg(long, default_value_t = ANTI_ENTROPY_INTERVAL_MS)]
    anti_entropy_ms: u64,
    /// Cache (MiB) of the keys other nodes hold that this node's functions
    /// read: filled on first read, kept fresh by the holder's pushes, each
    /// key for a 5 s lease at most; past the size, keys are evicted by
    /// CLOCK (least recently read first). 0 turns it off.
    #[arg(long, default_value_t = CACHE_MB_DEFAULT)]
    cache_mb: usize,
    /// How long (ms) each copy of an atomic call's commit record is kept:
    /// a re-run or re-send of the call within it takes no effect again.
    /// Each shard keeps at most 100,000 (the oldest go first, logged).
    #[arg(long, default_value_t = TXN_RECORD_TTL_MS, value_parser = clap::value_parser!(u64).range(1000..))]
    txn_record_ttl_ms: u64,
    /// Plan the functions of every DAG call this node runs over the
    /// cluster's members in rotation (this node first, then the others by
    /// id), each trigger sent with the call's session, instead of beside
    /// their data. It costs a network round trip per function on another
    /// node: for experiments (Cloudburst's consistency experiment ran each
    /// DAG's functions on different machines) and for measuring that path.
    #[arg(long)]
    spread_functions: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WasmCompilerArg {
    Winch,
    Cranelift,
}

impl NodeArgs {
    /// The node configuration these flags give.
    pub(super) fn config(self) -> anyhow::Result<NodeConfig> {
        let a = self;
        let shards = a
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(NodeConfig {
            shards,
            listen: a.listen,
            resp_listen: a.resp_listen,
            data_dir: a.data_dir,
            fsync: a.fsync,
            vnodes_per_shard: a.vnodes,
            snapshot: SnapshotPolicy {
                wal_bytes: a.snapshot_wal_mb.max(1) << 20,
                wal_percent: a.snapshot_wal_percent,
            },
            spin_before_park_us: a.spin_before_park_us,
            net: a.net,
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
            test_fixtures: a.test_fixtures,
            join: a.join.into_iter().filter(|s| !s.is_empty()).collect(),
            advertise: a.advertise,
            replication: usize::from(a.replication),
            write_concern: a.write_concern,
            anti_entropy_ms: a.anti_entropy_ms,
            cache_bytes: a.cache_mb.saturating_mul(1 << 20),
            txn_record_ttl_ms: a.txn_record_ttl_ms,
            spread_functions: a.spread_functions,
            membership: Timing {
                probe_period_ms: a.probe_period_ms.max(1),
                probe_rtt_ms: a.probe_rtt_ms.clamp(1, a.probe_period_ms.max(1)),
                suspect_to_down_ms: a.suspect_ms.max(1),
            },
            wasm_compiler: match a.wasm_compiler {
                WasmCompilerArg::Winch => wasm_host::Compiler::Winch,
                WasmCompilerArg::Cranelift => wasm_host::Compiler::Cranelift,
            },
        })
    }
}

/// Runs a node (`squall node`); returns only if it fails to start.
pub(super) fn run(a: NodeArgs) -> anyhow::Result<u8> {
    crate::node::run(a.config()?)?;
    // Exit now, without tearing down the shard threads (see node::run).
    std::process::exit(0)
}
