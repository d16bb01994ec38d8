//! How a shard reaches the other shards: the seam every request to another
//! owner crosses. Today the only implementation is the in-process channel
//! mesh between the node's shards ([`channels`]); the cluster adds one to
//! other nodes behind the same trait, and tests wrap either in
//! [`faults::Faulty`] to drop, delay, duplicate or reorder messages.
//!
//! The contract a [`Transport`] keeps: `send` resolves once the message is
//! queued, in call order (a connection's forwarded writes to one key stay
//! in its order unless a fault wrapper reorders them); the reply future
//! resolves exactly once, to the owner's reply or to an error (`timeout`
//! after [`FORWARD_TIMEOUT_MS`](crate::limits::FORWARD_TIMEOUT_MS),
//! `shutting_down`, or `internal` for a shard with no route).

pub(crate) mod channels;
pub(crate) mod faults;

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use kvs_core::digest::RangeDigest;
use kvs_core::partition::Entry;
use kvs_core::{ShardId, Value};
use wire::message as w;

use crate::concern::WriteConcern;
use crate::error::NodeError;

/// What a shard asks of a key's owner.
#[derive(Clone, Debug)]
pub(crate) enum ShardOp {
    Get(Vec<Vec<u8>>),
    Put(Vec<u8>, Value),
    Delete(Vec<u8>),
    /// A put (or, without a value, a delete) answered once `concern`
    /// copies have it.
    Write {
        key: Vec<u8>,
        value: Option<Value>,
        concern: WriteConcern,
    },
    /// A key's state handed over by another node (`Shard::merge`).
    Merge(Vec<u8>, Entry),
    /// `Shard::put_if_absent`; answered `Values([held])`.
    PutIfAbsent(Vec<u8>, Value),
    /// The range digest of the shard's keys in a scope (its part of a
    /// `Digest`).
    Digest(DigestScope),
}

/// Which keys a digest covers (built by the connection that answers a
/// `Digest`, from its placement).
#[derive(Clone)]
pub(crate) struct DigestScope(pub Arc<KeyFilter>);

/// Whether a key is in.
pub(crate) type KeyFilter = dyn Fn(&[u8]) -> bool + Send + Sync;

impl std::fmt::Debug for DigestScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestScope")
    }
}

/// The owner's answer.
#[derive(Debug)]
pub(crate) enum ShardReply {
    Values(Vec<Option<w::Value>>),
    Stored,
    Deleted(bool),
    Digest(Box<RangeDigest>),
    Error(NodeError),
}

impl ShardReply {
    /// The response a client gets for it.
    pub fn into_response(self) -> w::Response {
        match self {
            ShardReply::Values(v) => w::Response::Values(v),
            ShardReply::Stored => w::Response::Stored,
            ShardReply::Deleted(removed) => w::Response::Deleted(w::Deleted { removed }),
            ShardReply::Digest(d) => w::Response::Digest(d.buckets().to_vec()),
            ShardReply::Error(e) => error_response(&e),
        }
    }
}

/// The error response for `e`.
pub(crate) fn error_response(e: &NodeError) -> w::Response {
    w::Response::Error(error_body(e))
}

/// `e` as the wire carries errors.
pub(crate) fn error_body(e: &NodeError) -> w::ErrorBody {
    w::ErrorBody {
        code: e.status.code(),
        message: e.message.clone().into_bytes(),
    }
}

/// A reply on its way.
pub(crate) type ReplyFuture = Pin<Box<dyn Future<Output = ShardReply>>>;

/// A message being queued; resolves to the future of its reply.
pub(crate) type Sending<'a> = Pin<Box<dyn Future<Output = ReplyFuture> + 'a>>;

/// The way to the other shards.
pub(crate) trait Transport {
    /// Queues `op` for shard `to` (waiting while its queue is full) and
    /// resolves to the future of the reply.
    fn send(&self, to: ShardId, op: ShardOp) -> Sending<'_>;
}

/// A reply that is already known.
pub(crate) fn ready(reply: ShardReply) -> ReplyFuture {
    Box::pin(std::future::ready(reply))
}
