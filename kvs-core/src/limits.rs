//! Limits enforced by the store core. Every constant says why it is what it is.

/// Largest key, in bytes. Keys are hashed and compared on every request and
/// copied into WAL records; 1 KiB is far above any sane key and keeps the
/// per-key overhead bounded.
pub const KEY_BYTES_MAX: usize = 1024;

/// Largest value, in the bytes a client sends as its content
/// ([`crate::partition::value_len`]): an LWW or priority value's bytes, the
/// sum of a set's elements, the sum of a causal value's version bytes. What
/// the handshake reports as `value_bytes_max`, exactly: an LWW value of this
/// many bytes is accepted, one more is refused. 1 MiB keeps one put well
/// inside one frame (`wire::limits::FRAME_BODY_BYTES_MAX`) and bounds the
/// memory one request can pin.
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// Largest value encoding (content plus length prefixes, timestamps, vector
/// clocks, dependencies). Bounds the metadata a value may carry beside its
/// content: at most as much again.
pub const VALUE_ENCODED_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX;

/// Largest WAL record payload accepted when reading a log back. A length
/// prefix above this is corruption, not a record (a key plus a value plus
/// headers always fit in far less).
pub const WAL_RECORD_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_ENCODED_BYTES_MAX + 4096;

/// How far a client-supplied LWW timestamp may lead the node's wall clock,
/// in microseconds. Beyond it the write is refused (`clock_skew`): one
/// client with a bad clock must not drag a shard's hybrid clock into the
/// future, where every later write would lose to it. Ten seconds is far
/// above the skew of NTP-synchronised machines; a timestamp within the
/// bound can move the shard's clock ahead by at most this much, and only
/// until wall time catches up.
pub const CLOCK_LEAD_MAX_US: u64 = 10_000_000;

/// How far one write may advance a causal value's vector-clock entry for a
/// writer beyond what the key already holds (from 0 for a new key). Stops
/// one request from setting a counter near `u64::MAX`, after which that
/// writer could never again write a version that dominates.
pub const VECTOR_CLOCK_STEP_MAX: u64 = 1 << 32;

/// Most elements in one set / ordered-set value, and most concurrent versions
/// or vector-clock entries in one causal value. Bounds decode work for
/// hostile input.
pub const COLLECTION_LEN_MAX: usize = 1 << 16;
