//! Where a client's read or write goes — this shard, another shard of this
//! node, or another node over a link — and what it answers, shared by the
//! native protocol's connections (`kv.rs`) and RESP's (`resp.rs`). A
//! request that came from another node is never sent on to a third (but
//! by a leaving node): `forward` false makes a key this node does not own
//! [`Routed::WrongOwner`].

use std::net::SocketAddr;
use std::rc::Rc;

use futures_channel::oneshot;
use kvs_core::{Lsn, NodeId, ShardId};
use wire::message as w;

use super::outbox::PendingReply;
use crate::concern::WriteConcern;
use crate::convert::value_to_wire;
use crate::error::NodeError;
use crate::limits::NODE_REQUEST_TIMEOUT_MS;
use crate::members::{copies_of, is_replicas_key};
use crate::server::Server;
use crate::shard::{bump, WriteObserver as _};
use crate::transport::{error_response, ShardOp};
use wire::Status;

/// A routed request's answer.
pub(super) enum Routed {
    /// Answered by this shard. A write's reply goes out only once `lsn` is
    /// durable (the connection waits once per batch).
    Now(w::Response, Option<Lsn>),
    /// Answered by another owner, or once other copies acknowledge.
    Later(PendingReply),
    /// Another node owns this key, and the request may not go on there.
    WrongOwner(NodeId, SocketAddr),
}

/// Where one key of a request goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Shard(ShardId),
    Node(SocketAddr),
}

/// The other node that owns `key` now; `None` if this node does.
pub(super) fn remote_owner(server: &Server, key: &[u8]) -> Option<(NodeId, SocketAddr)> {
    server.with_placement(|p| p.remote_owner(key))
}

/// Reads `keys` (`local`: this node's own copies, never another node's):
/// `Now(Values)` when this shard owns them all; else each group of keys
/// goes to its owner and the values are put back in order.
pub(super) async fn read<K: AsRef<[u8]>>(
    server: &Rc<Server>,
    keys: &[K],
    local: bool,
    forward: bool,
) -> Routed {
    let shard = &server.shard;
    let me = shard.id();
    let mut values: Vec<Option<w::Value>> = vec![None; keys.len()];
    let mut groups: Vec<(Dest, Vec<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let k = k.as_ref();
        let remote = if local { None } else { remote_owner(server, k) };
        let d = match remote {
            Some((node, addr)) if !forward => return Routed::WrongOwner(node, addr),
            Some((_, addr)) => Dest::Node(addr),
            None => Dest::Shard(shard.owner(k)),
        };
        if d == Dest::Shard(me) {
            values[i] = shard.get_local(k);
        } else if let Some(g) = groups.iter_mut().find(|(x, _)| *x == d) {
            g.1.push(i);
        } else {
            groups.push((d, vec![i]));
        }
    }
    if groups.is_empty() {
        return Routed::Now(w::Response::Values(values), None);
    }
    let mut parts = Vec::with_capacity(groups.len());
    for (dest, idx) in groups {
        let keys: Vec<Vec<u8>> = idx.iter().map(|&i| keys[i].as_ref().to_vec()).collect();
        let reply: PendingReply = match dest {
            Dest::Shard(owner) => {
                let reply = shard.forward(owner, ShardOp::Get(keys)).await;
                Box::pin(async move { reply.await.into_response() })
            }
            Dest::Node(addr) => {
                bump(&shard.stats().node_forwards);
                let server = server.clone();
                let req = w::Request::Get(w::KvGet { keys });
                Box::pin(async move { server.links.call(addr, &req).await })
            }
        };
        parts.push((idx, reply));
    }
    Routed::Later(Box::pin(async move {
        for (idx, reply) in parts {
            match reply.await {
                w::Response::Values(vs) if vs.len() == idx.len() => {
                    for (i, v) in idx.into_iter().zip(vs) {
                        values[i] = v;
                    }
                }
                other => return other,
            }
        }
        w::Response::Values(values)
    }))
}

/// A put (`value`) or delete (`None`) at the key's owner, acknowledged
/// under `concern` (the node's `--write-concern` when `None`).
pub(super) async fn write(
    server: &Rc<Server>,
    key: &[u8],
    value: Option<kvs_core::Value>,
    concern: Option<WriteConcern>,
    forward: bool,
) -> Routed {
    if let Some(v) = value.as_ref().filter(|_| is_replicas_key(key)) {
        if let Err(why) = copies_of(key, v) {
            return now_error(server, &NodeError::new(Status::InvalidArgument, why));
        }
    }
    let shard = &server.shard;
    if let Some((node, addr)) = remote_owner(server, key) {
        if !forward {
            return Routed::WrongOwner(node, addr);
        }
        let req = match (value, concern) {
            (Some(v), Some(c)) => w::Request::PutConcern(w::KvPutConcern {
                key: key.to_vec(),
                value: value_to_wire(&v),
                concern: c.code(),
            }),
            (Some(v), None) => w::Request::Put(w::KvPut {
                key: key.to_vec(),
                value: value_to_wire(&v),
            }),
            (None, _) => w::Request::Delete(w::KvDelete { key: key.to_vec() }),
        };
        return to_node(server, addr, req);
    }
    let owner = shard.owner(key);
    let concern_or_default = concern.unwrap_or(server.settings.write_concern);
    if owner != shard.id() {
        let op = match value {
            _ if concern_or_default != WriteConcern::One => ShardOp::Write {
                key: key.to_vec(),
                value,
                concern: concern_or_default,
            },
            Some(v) => ShardOp::Put(key.to_vec(), v),
            None => ShardOp::Delete(key.to_vec()),
        };
        let reply = shard.forward(owner, op).await;
        return Routed::Later(Box::pin(async move { reply.await.into_response() }));
    }
    match shard.write(key.to_vec(), value) {
        Ok((applied, lsn)) => {
            use kvs_core::partition::Applied;
            let resp = match applied {
                Applied::Stored => w::Response::Stored,
                Applied::Deleted { removed } | Applied::Dropped { removed } => {
                    w::Response::Deleted(w::Deleted { removed })
                }
            };
            match server.pushes.copies_needed(key, concern_or_default) {
                Some((barriers, need)) => Routed::Later(Box::pin(acknowledged_by(
                    shard.clone(),
                    lsn,
                    barriers,
                    need,
                    resp,
                ))),
                None => Routed::Now(resp, Some(lsn)),
            }
        }
        Err(e) => now_error(server, &e),
    }
}

/// Sends `req` on to the node at `addr`; its reply is this request's.
pub(super) fn to_node(server: &Rc<Server>, addr: SocketAddr, req: w::Request) -> Routed {
    bump(&server.shard.stats().node_forwards);
    let server = server.clone();
    Routed::Later(Box::pin(async move { server.links.call(addr, &req).await }))
}

fn now_error(server: &Server, e: &NodeError) -> Routed {
    bump(&server.shard.stats().errors);
    Routed::Now(error_response(e), None)
}

/// `resp` once the write at `lsn` is durable here and `need` other holders
/// have acknowledged it; `unavailable` if they do not within
/// `NODE_REQUEST_TIMEOUT_MS` (the write stands here and still spreads).
pub(super) async fn acknowledged_by(
    shard: Rc<crate::shard::Shard>,
    lsn: Lsn,
    barriers: Vec<oneshot::Receiver<()>>,
    need: usize,
    resp: w::Response,
) -> w::Response {
    if let Err(e) = shard.wait_durable(lsn).await {
        return error_response(&e);
    }
    let timeout = std::time::Duration::from_millis(NODE_REQUEST_TIMEOUT_MS);
    match crate::event::acknowledged(barriers, need, timeout).await {
        Ok(()) => resp,
        Err(got) => error_response(&NodeError::copies_missing(
            got,
            need,
            NODE_REQUEST_TIMEOUT_MS,
        )),
    }
}
