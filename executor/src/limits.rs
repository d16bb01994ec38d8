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
