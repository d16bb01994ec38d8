//! # anomaly — the consistency experiment's records and its checker
//!
//! Cloudburst's consistency experiment: random DAGs of functions read
//! shared keys and the sink writes; afterwards a checker tells, per call,
//! which guarantees the reads broke. For the checker to know which version
//! of a key a function saw, every value the experiment writes carries its
//! own version and what its writer depended on ([`Written`]).
//!
//! * [`record`] — the text formats: the [`Plan`] a call starts with, the
//!   [`Log`] each function hands downstream (the plan plus every read so
//!   far), the [`Written`] payload of the sink's values;
//! * [`probe`] — one function of the experiment, as a pure step over a
//!   read and a write callback: the node's built-in `consistency_probe`
//!   is a thin adapter over it;
//! * [`mod@check`] — the anomaly checker: a call's log in, one verdict per
//!   guarantee out (DSRR, single-key causal, multi-key causal, distributed
//!   session causal, read atomic).
//!
//! ## Boundary
//! Pure code: no I/O, no runtime, no Squall crate. Both the node (through
//! `executor`'s built-in) and `loadgen` (which plans calls and checks
//! their logs) link it, so the format has one definition.

pub mod check;
pub mod probe;
pub mod record;

pub use check::{check, Anomalies, Guarantee, Tally};
pub use record::{Log, Plan, Read, RecordError, Version, Written};
