//! The node's limits, in one place. Each is named, enforced, and reported to
//! clients where they can act on it (`wire::message::Limits`).

/// Connections one shard serves at once (the default and the cap of
/// `--connections-max`); more are answered with `Overloaded` and closed.
/// Bounds per-connection buffers × count.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 1024;

/// Requests one connection may have read but not yet answered. A client
/// that pipelines deeper is not refused: the node simply stops reading its
/// socket until replies are written (TCP back-pressure), so memory per
/// connection stays bounded by this many requests plus one frame.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;

/// Default time a connection may take to finish sending a frame it has
/// started (the default of `--partial-frame-timeout-ms`). A client that stalls
/// mid-frame is disconnected instead of holding a slot and a buffer forever.
/// Idle connections between frames are not timed out.
pub const PARTIAL_FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Initial read buffer of a connection; grows to one maximal frame only when
/// a large frame arrives, and shrinks back after.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

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

/// Interval between background fdatasyncs under `--fsync batch`.
pub const FSYNC_BATCH_INTERVAL_MS: u64 = 10;

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

/// Calls with an output key one shard runs in the background at once; more
/// are refused with `Overloaded`.
pub const BACKGROUND_CALLS_PER_SHARD_MAX: usize = 1024;

/// Most executor threads beside one shard (`--executors-per-shard`).
pub const EXECUTORS_PER_SHARD_MAX: usize = 64;

/// Deadline of a call whose request gives none.
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Longest deadline a call may ask for.
pub const CALL_TIMEOUT_MS_MAX: u64 = 300_000;

/// Store requests from executors queued per shard (bounded; executors wait
/// with back-off when it is full).
pub const STORE_QUEUE_DEPTH: usize = 1024;

/// How long a function's store operation may take before it fails.
pub const STORE_TIMEOUT_MS: u64 = 10_000;
