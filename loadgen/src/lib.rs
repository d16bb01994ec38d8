//! # loadgen — Squall's load generator
//!
//! Drives a target with a fixed number of closed-loop clients and reports
//! throughput and latency percentiles (hdrhistogram). Every mode prints the
//! same field names (`ops_per_sec`, `p50_us`, `p99_us`, `p999_us`) so that
//! scripts can compare runs.
//!
//! ## Boundary
//! Speaks to Squall only through `client`/`wire` (what any user has); it
//! never links the node. Redis is driven through the `redis` crate, a
//! well-known client, with the same request mix, pipelining and timing.
//! It uses glommio only to run the runtime's own echo floor (`loadgen call`
//! and `compose` measure a bare echo on a blocking thread and on a glommio
//! executor beside every run), never to talk to the node. It links the
//! `models` crate (inference only, no Squall runtime) for the in-process
//! floors of `loadgen squeezenet`: the same code the node's functions run.
//! And `anomaly`, for `loadgen consistency`: the formats its probe
//! functions write, and the checker of their reads.

pub mod call;
pub mod consistency;
pub mod kv;
pub mod report;
pub mod squeezenet;
pub mod workload;
