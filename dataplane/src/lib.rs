//! # dataplane — the Squall node
//!
//! The composition root: it owns the runtime (glommio), the sockets, the
//! files, and the `squall` binary, and wires `kvs-core` (state), `wire`
//! (protocol), `executor` (functions) and `client` (for the CLI) together.
//!
//! The node's rooms, each with one job:
//! - the store: [`shard`] (a partition, its clock and counters), [`storage`]
//!   (its WAL, snapshots, recovery), [`transport`] (the way to other
//!   shards, and the fault-injecting wrapper tests use);
//! - the function platform on top of it: [`functions`] (executors, calls,
//!   DAGs, the store executors see) and [`model_fns`];
//! - serving: [`server`] (a shard's accept loop and what its connections
//!   share), [`conn`] (one connection), [`auth`];
//! - the process: [`node`] (start-up and shutdown), [`cli`] (the binary).
//!
//! Life of a put and of a DAG call, file by file: `ARCHITECTURE.md`.
//!
//! ## Boundary
//! Nothing else depends on `dataplane` but its own binary: everything but
//! [`cli`] is crate-private.

#![allow(rustdoc::private_intra_doc_links)]

mod auth;
pub mod cli;
mod conn;
mod convert;
mod error;
mod event;
mod functions;
mod limits;
mod memlock;
mod model_fns;
mod node;
mod server;
mod shard;
mod storage;
mod transport;
