//! Limits enforced by the store core. Every constant says why it is what it is.

/// Largest key, in bytes. Keys are hashed and compared on every request and
/// copied into WAL records; 1 KiB is far above any sane key and keeps the
/// per-key overhead bounded.
pub const KEY_BYTES_MAX: usize = 1024;

/// Largest encoded value, in bytes (the payload of one put). 1 MiB keeps one
/// put well inside one frame (`wire::limits::FRAME_BYTES_MAX`) and one WAL
/// record, and bounds the memory one request can pin.
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// Largest WAL record payload accepted when reading a log back. A length
/// prefix above this is corruption, not a record (a key plus a value plus
/// headers always fit in far less).
pub const WAL_RECORD_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + 4096;

/// Most elements in one set / ordered-set value, and most concurrent versions
/// or vector-clock entries in one causal value. Bounds decode work for
/// hostile input.
pub const COLLECTION_LEN_MAX: usize = 1 << 16;
