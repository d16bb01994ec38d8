//! # dataplane — the Squall node
//!
//! The composition root: it owns the runtime (glommio), the sockets, the
//! files, and the `squall` binary, and wires `kvs-core` (state), `wire`
//! (protocol) and `client` (for the CLI) together.
//!
//! ## Life of a put
//! 1. A client frame arrives on the shard's socket; [`conn`] validates the
//!    rkyv archive in place ([`wire::frame::decode_request`]).
//! 2. The key's owner comes from the shard ring. If it is another shard the
//!    request is forwarded over a `shared_channel` ([`forward`]).
//! 3. The owner ([`shard::Shard::write`]) stamps LWW timestamps, checks the
//!    mutation against the partition, queues its WAL record
//!    ([`storage::Storage::append`]) and merges it into the partition.
//! 4. After the connection has handled every frame it has buffered, it
//!    waits once for the batch's highest LSN to be durable (group commit:
//!    one write, plus one fdatasync under `--fsync always`, covers every
//!    connection's records) and writes all replies at once.
//!
//! ## Functions
//! Each shard has an executor thread pinned to its core ([`functions`]);
//! `Call` requests run there, and functions reach the store through
//! [`functions::NodeStore`], this crate's implementation of
//! `executor::store::Store`. The model functions of the prediction
//! pipeline ([`model_fns`]) wrap the `models` crate the same way.
//!
//! ## Boundary
//! Nothing else depends on `dataplane`.

pub mod auth;
pub mod cli;
pub mod conn;
pub mod convert;
pub mod event;
pub mod forward;
pub mod functions;
pub mod limits;
pub mod memlock;
pub mod model_fns;
pub mod node;
pub mod shard;
pub mod storage;
