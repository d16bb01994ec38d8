//! Limits of the function runtime, each with its reason.

/// Functions in one DAG. Bounds validation work, per-call scheduling work
/// and the fan-in state a call holds.
pub const DAG_FUNCTIONS_MAX: usize = 64;

/// Bytes in a function or DAG name (they are KVS keys and log fields).
pub const NAME_BYTES_MAX: usize = 128;

/// Triggers one batched function may take per call (Cloudburst: up to 20).
pub const BATCH_TRIGGERS_MAX: u32 = 64;

/// Competing replicas of one function ("first valid result wins").
pub const REPLICAS_MAX: u32 = 8;

/// Bytes in one message between functions (`send`); larger payloads belong
/// in the store, passed by key.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;

/// Messages an executor's mailbox holds; `send` to a full mailbox falls back
/// to the receiver's inbox key in the store.
pub const MAILBOX_DEPTH: usize = 1024;

/// Continuation DAGs one call may chain.
pub const CONTINUATIONS_MAX: usize = 8;

/// Session metadata of one DAG run under a consistency mode that keeps
/// some (DSRR: each key read or written, plus 16 bytes for its version):
/// what would travel with its triggers. 64 KiB is a few thousand keys.
pub const SESSION_BYTES_MAX: usize = 64 * 1024;

/// A run's session as it travels with a trigger to another node and back
/// (`crate::session::Session::encode`: pins with their values, an atomic
/// run's kept writes, floors): at most this many bytes, past it the call
/// fails with `LimitExceeded`. A quarter of a frame, so the trigger's
/// arguments have room beside it.
pub const TRIGGER_SESSION_BYTES_MAX: usize = 1 << 20;

/// Re-runs of a failed or timed-out DAG one call may ask for.
pub const RETRIES_MAX: u32 = 5;

/// Default and largest linear memory of a WebAssembly function (MiB). The
/// node reserves address space for its instance slots at this maximum.
pub const WASM_MEMORY_MB_DEFAULT: u32 = 64;
pub const WASM_MEMORY_MB_MAX: u32 = 256;

/// Default and largest CPU time of one WebAssembly call (ms), enforced by
/// epoch interruption with a `WASM_EPOCH_TICK_MS` granularity.
pub const WASM_TIMEOUT_MS_DEFAULT: u32 = 1_000;
pub const WASM_TIMEOUT_MS_MAX: u32 = 60_000;
pub const WASM_EPOCH_TICK_MS: u64 = 5;

/// A pure guest (no store or messaging imports) whose CPU limit is at most
/// this runs inline on the shard's thread, like the pure built-ins: the
/// limit bounds how long it can hold the shard.
pub const WASM_INLINE_TIMEOUT_MS_MAX: u32 = 10;

/// Default and largest result of one WebAssembly call (bytes).
pub const WASM_RESULT_BYTES_DEFAULT: u32 = 1 << 20;
pub const WASM_RESULT_BYTES_MAX: u32 = 4 << 20;

/// Largest uploaded module: it is stored in one KVS value (1 MiB) with its
/// record header.
pub const WASM_MODULE_BYTES_MAX: usize = (1 << 20) - 64;

/// WebAssembly instances one node keeps at once (one per thread — executor
/// or shard — and function in use); the pooling allocator reserves this
/// many slots.
pub const WASM_INSTANCES_MAX: u32 = 256;
