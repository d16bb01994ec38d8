//! The node's limits, in one place. Each is named, enforced, and reported to
//! clients where they can act on it (`wire::message::Limits`).

/// Connections one shard serves at once (the default and the cap of
/// `--connections-max`); more are answered with `Overloaded` and closed.
/// Bounds per-connection buffers × count.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 1024;

/// Requests one connection may have read but not yet answered: those of the
/// batch in hand plus calls and forwarded requests still running (each is
/// answered when it completes, in any order). A client that pipelines
/// deeper is not refused: the node simply stops reading its socket until
/// replies are written (TCP back-pressure), so memory per connection stays
/// bounded by this many requests plus one frame.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;

/// Default time a connection may take to finish sending a frame it has
/// started (the default of `--partial-frame-timeout-ms`). A client that stalls
/// mid-frame is disconnected instead of holding a slot and a buffer forever.
/// Idle connections between frames are not timed out.
pub const PARTIAL_FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default time a new connection has to send its `Hello` (the default of
/// `--hello-timeout-ms`); then it is closed without an error frame. Silent
/// connections cannot hold the shard's connection slots.
pub const HELLO_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Largest frame body accepted before the handshake: `Hello` is a few dozen
/// bytes, so an unauthenticated peer cannot make the node buffer megabytes.
/// A larger frame gets `frame_too_large` and the connection closes.
pub const HELLO_FRAME_BODY_BYTES_MAX: usize = 4096;

/// Default idle time after which a connection may be reclaimed (the default
/// of `--idle-reclaim-ms`): when a shard's connections reach
/// `RECLAIM_AT_PERCENT` of its limit, connections with nothing buffered,
/// nothing in flight and no request for this long are closed to make room.
pub const IDLE_RECLAIM_MS_DEFAULT: u64 = 60_000;

/// Connections, as a percentage of `--connections-max`, at which a shard
/// starts reclaiming idle connections.
pub const RECLAIM_AT_PERCENT: usize = 90;

/// Shortest interval between two reclaim passes of one shard (each wakes
/// all its connections once).
pub const RECLAIM_PULSE_INTERVAL_MS: u64 = 100;

/// Default node-wide budget for read buffers grown past
/// `READ_BUFFER_BYTES` to hold large frames (the default of
/// `--read-buffers-mb`, in MiB). A connection whose frame would exceed it
/// gets `overloaded` and is closed: many slow large frames cannot pin
/// gigabytes.
pub const READ_BUFFERS_MB_DEFAULT: usize = 256;

/// Failed authentications one source address may make per
/// `AUTH_FAILURE_WINDOW_MS`; then its connections are refused
/// (`unauthenticated`) until the window ends. Makes guessing secrets slow.
pub const AUTH_FAILURES_PER_WINDOW_MAX: u32 = 10;
pub const AUTH_FAILURE_WINDOW_MS: u64 = 60_000;

/// Source addresses whose failures the node remembers at once (bounded
/// memory under a flood of sources).
pub const AUTH_FAILURE_SOURCES_MAX: usize = 4096;

/// Allocations at least this large are mapped from the OS on their own and
/// returned to it when freed (the allocator's mmap threshold), so memory
/// held for large frames comes back when their connections close.
pub const LARGE_BLOCK_BYTES: usize = 128 * 1024;

/// Initial read buffer of a connection; grows to one maximal frame only when
/// a large frame arrives, and shrinks back after.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Submission entries of a shard's network ring (`--net uring`); its
/// completion queue holds four times as many.
pub const URING_ENTRIES: u32 = 512;

/// Receive buffers the network ring provides (a power of two), each
/// `URING_BUFFER_BYTES`: 4 MiB per shard. A receive takes one and gives it
/// back once its bytes are copied to the connection.
pub const URING_BUFFERS: usize = 256;
pub const URING_BUFFER_BYTES: usize = 16 * 1024;
const _: () = assert!(URING_BUFFERS.is_power_of_two() && URING_BUFFERS <= 32768);

/// Bytes received for a connection and not yet read past which its
/// receive pauses until the connection has read them.
pub const URING_RX_PAUSE_BYTES: usize = 4 * READ_BUFFER_BYTES;

/// Bytes written to a connection and not yet sent past which the writer
/// waits for its sends (the kernel's socket buffer holds more).
pub const URING_TX_PAUSE_BYTES: usize = 4 * READ_BUFFER_BYTES;

/// How long a closed connection's last bytes may wait for a peer that does
/// not read them before the socket closes anyway.
pub const URING_CLOSE_SEND_TIMEOUT_MS: u64 = 5_000;

/// Depth of each shard-to-shard forwarding queue. A full queue makes the
/// sending connection wait (back-pressure), never grow memory.
pub const FORWARD_QUEUE_DEPTH: usize = 1024;

/// How long a request forwarded to another shard may take before the client
/// gets `Timeout` instead of waiting forever.
pub const FORWARD_TIMEOUT_MS: u64 = 10_000;

/// Locked memory each shard needs: glommio registers its io_uring rings and
/// I/O buffers as locked memory (it refuses to start below 512 KiB).
pub const MEMLOCK_PER_SHARD_BYTES: u64 = 512 * 1024;

/// io_uring buffer memory registered per shard; kept well below
/// `MEMLOCK_PER_SHARD_BYTES` (the rings need the rest).
pub const IO_MEMORY_PER_SHARD_BYTES: usize = 128 * 1024;

/// Default WAL size (bytes since the last snapshot) that triggers a
/// snapshot; bounds replay work at restart.
pub const SNAPSHOT_WAL_BYTES_DEFAULT: u64 = 64 << 20;

/// Default growth, in percent of the newest snapshot's size, the WAL must
/// also reach before the next snapshot (Redis's `auto-aof-rewrite-percentage`):
/// a snapshot rewrites every key, so at 2M keys one every 64 MiB of WAL wrote
/// 4 bytes of snapshot per byte logged and took a third of a writing shard's
/// time; at 100 it writes at most one, and replay at restart reads at most a
/// snapshot's size of WAL.
pub const SNAPSHOT_WAL_PERCENT_DEFAULT: u64 = 100;

/// A snapshot being taken is written out in chunks of about this size
/// (each one `pwrite` on the shard thread, between parts it encodes).
pub const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 256 << 10;

/// A snapshot being taken encodes parts for about this long at a time,
/// then lets the shard serve.
pub const SNAPSHOT_TURN_US: u64 = 50;

/// A scan of a shard's keys for statistics or an anti-entropy digest
/// (`Shard::scan`) visits slices of buckets for about this long at a time,
/// then lets the shard serve.
pub const SCAN_TURN_US: u64 = 50;

/// Buckets of a part's table a scan visits between looks at the clock
/// (≈ 256 entries at most: tens of µs).
pub const SCAN_SLICE_BUCKETS: usize = 256;

/// Interval between background fdatasyncs under `--fsync batch`.
pub const FSYNC_BATCH_INTERVAL_MS: u64 = 10;

/// After a failed WAL write, a shard retries (probe write, then resume)
/// after this long, doubling up to `STORAGE_RETRY_MS_MAX`.
pub const STORAGE_RETRY_MS_MIN: u64 = 100;
pub const STORAGE_RETRY_MS_MAX: u64 = 5_000;

/// Bytes a shard writes (and removes) to check that the disk takes writes
/// again before resuming: one largest record.
pub const STORAGE_PROBE_BYTES: usize = 2 << 20;

/// How often the main thread looks at the stop flag (set by SIGINT or
/// SIGTERM) before telling the shards; shards themselves run no timer.
pub const STOP_POLL_INTERVAL_MS: u64 = 20;

/// Longest a graceful shutdown waits for in-flight requests before closing
/// connections anyway (their replies are then lost, their writes are not).
pub const SHUTDOWN_DRAIN_TIMEOUT_MS: u64 = 10_000;

/// Virtual nodes per shard on the shard ring (the handshake sends them all:
/// 10 bytes each). 256 keeps the busiest shard within a few percent of the
/// mean.
pub const VNODES_PER_SHARD_DEFAULT: u32 = 256;

/// Most shards one node runs (bounded by the token table in one frame and
/// by locked memory).
pub const SHARDS_MAX: usize = 256;

/// Function steps queued per executor; a full queue fails the call with
/// `Overloaded` at once rather than letting work pile up.
pub const FN_QUEUE_DEPTH: usize = 1024;

/// An executor with more steps than this queued or running is skipped by
/// the scheduler in favour of the least-loaded one (data locality is worth
/// less than waiting behind this much work).
pub const EXECUTOR_LOAD_THRESHOLD: usize = 16;

/// How long a node that refused a function step as overloaded (each of its
/// executors at `EXECUTOR_LOAD_THRESHOLD` or over) is left out of the plans
/// of a shard's calls: its functions run on the calling node meanwhile.
pub const BUSY_NODE_AVOID_MS: u64 = 100;

/// Chains of functions sent node to node whose outcome one node awaits
/// (`ChainDone`) at once; past it a call's functions go one at a time.
pub const CHAINS_IN_FLIGHT_MAX: usize = 16_384;

/// Calls with an output key one shard runs in the background at once; more
/// are refused with `Overloaded`.
pub const BACKGROUND_CALLS_PER_SHARD_MAX: usize = 1024;

/// Most executor threads beside one shard (`--executors-per-shard`).
pub const EXECUTORS_PER_SHARD_MAX: usize = 64;

/// Deadline of a call whose request gives none.
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Longest deadline a call may ask for.
pub const CALL_TIMEOUT_MS_MAX: u64 = 300_000;

/// How long a copy of an atomic call's commit record is kept by default
/// (`--txn-record-ttl-ms`; from when it reached the shard, or the shard
/// started): a re-run or re-send of the call within it takes no effect
/// again. Two runs at the longest deadline fit.
pub const TXN_RECORD_TTL_MS: u64 = 2 * CALL_TIMEOUT_MS_MAX;

/// Re-runs of an atomic call's run that read part of another call's write
/// set it could not repair (`Conflict`), besides the call's own retries.
pub const CONFLICT_RERUNS_MAX: u32 = 8;

/// Commit records one shard keeps; past it the oldest go first (logged),
/// before their time: what bounds their memory under a flood of atomic
/// calls.
pub const TXN_RECORDS_PER_SHARD_MAX: usize = 100_000;

/// Store requests from executors queued per shard (bounded; executors wait
/// with back-off when it is full).
pub const STORE_QUEUE_DEPTH: usize = 1024;

/// How long a function's store operation may take before it fails.
pub const STORE_TIMEOUT_MS: u64 = 10_000;

/// Largest membership packet a node sends (the authentication tag, when
/// there is one, comes on top).
pub use cluster::membership::PACKET_BYTES_MAX as MEMBERSHIP_PACKET_BYTES_MAX;

/// How often a node that has not been let in yet announces itself to its
/// `--join` seeds again.
pub const JOIN_RETRY_MS: u64 = 1000;

/// Virtual nodes per node on the cluster's node ring.
pub const NODE_VNODES: u32 = 64;

/// Links (connections) one shard keeps open to one other node at most;
/// more requests to it wait for one.
pub const LINKS_PER_PEER_MAX: usize = 16;

/// How long a request to another node (forwarded, or a hand-off batch)
/// may take before it fails with `unavailable`.
pub const NODE_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Keys per hand-off batch (one `Merge` request, acknowledged once
/// durable on the receiver).
pub const HANDOFF_BATCH_KEYS: usize = 512;

/// How long a leaving node waits for its hand-off before it stops anyway
/// (what it could not hand over stays in its data directory).
pub const LEAVE_HANDOFF_TIMEOUT_MS: u64 = 60_000;

/// How long a leaving node still serves after it has handed its keys over
/// (forwarding what arrives), so that the clients routing to it move on
/// before it stops accepting connections.
pub const LEAVE_GRACE_MS: u64 = 500;

/// How long a replication push waits for more writes to join its batch.
pub const PUSH_INTERVAL_MS: u64 = 2;

/// How long another node's cache may keep a key of this node's without
/// reading it again: pushes keep it fresh meanwhile; a lost push leaves it
/// stale this long at most.
pub const CACHE_LEASE_MS: u32 = 5_000;

/// (key, node) leases a node grants at most; past it, reads for other
/// nodes' caches are answered without a lease (not cached there).
pub const LEASES_PER_NODE_MAX: usize = 262_144;

/// The cache of other nodes' keys a node's functions read
/// (`--cache-mb`; 0: none).
pub const CACHE_MB_DEFAULT: usize = 64;

/// How often each shard compares the keys it shares with each other node
/// (`--anti-entropy-ms`, 0 turns it off).
pub const ANTI_ENTROPY_INTERVAL_MS: u64 = 5_000;

/// Most copies of a key (`--replication`).
pub const REPLICATION_MAX: usize = 7;
