//! # benches — micro-benchmarks of Squall's hot paths
//!
//! `cargo bench -p benches` measures; `cargo test --benches` (part of
//! `scripts/test.sh`) runs every benchmark once so they cannot rot.
//! End-to-end numbers come from `loadgen` and `scripts/bench.sh`.
//!
//! This library only holds shared inputs.

use kvs_core::lattice::{Lww, Timestamp, Value};

/// An LWW value of `len` bytes at `clock`.
#[must_use]
pub fn lww(clock: u64, len: usize) -> Value {
    Value::Lww(Lww::new(Timestamp { clock, writer: 1 }, vec![b'v'; len]))
}

/// The key for index `i`, as loadgen names them.
#[must_use]
pub fn key(i: u64) -> Vec<u8> {
    format!("key:{i:010}").into_bytes()
}
