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

/// Re-runs of a failed or timed-out DAG one call may ask for.
pub const RETRIES_MAX: u32 = 5;
