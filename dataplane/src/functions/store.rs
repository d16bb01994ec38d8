//! The store as executor threads see it ([`NodeStore`], this crate's
//! `executor::store::Store`): each operation goes to the key's owning shard
//! over a bounded futures channel, served there by [`serve_store`], and the
//! executor thread waits for the answer on a crossbeam channel, with a
//! deadline. Puts are answered once durable under the node's `--fsync`
//! policy, like client puts. Functions may not write the keys that hold
//! code and models.
//!
//! In a cluster, a key no copy of which is on this node is read and written
//! at its holder ([`Remote`]: over the shard's links, like a client request
//! the node forwards); the shard's serving loop never waits for it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use executor::store::{Store, StoreError};
use futures_channel::mpsc;
use kvs_core::partition::{Applied, Entry};
use kvs_core::ring::HashRing;
use kvs_core::{ShardId, Value};
use wire::message as w;
use wire::Status;

use crate::cache::NodeCache;
use crate::convert::{value_from_wire, value_to_wire};
use crate::error::NodeError;
use crate::leases::Leases;
use crate::limits::{NODE_REQUEST_TIMEOUT_MS, STORE_TIMEOUT_MS};
use crate::links::Links;
use crate::members::Members;
use crate::shard::Shard;

/// A store operation from an executor thread.
#[derive(Debug)]
enum StoreOp {
    Get(Vec<u8>),
    Put(Vec<u8>, Value),
    Delete(Vec<u8>),
    /// Get then delete, with nothing in between (inbox draining).
    Take(Vec<u8>),
}

impl StoreOp {
    fn key(&self) -> &[u8] {
        match self {
            StoreOp::Get(k) | StoreOp::Put(k, _) | StoreOp::Delete(k) | StoreOp::Take(k) => k,
        }
    }
}

#[derive(Debug)]
enum StoreReply {
    Value(Option<Value>),
    Done(bool),
    /// Refused (bad input, a key functions may not write).
    Failed(String),
    /// Not reached (a holder down, a deadline): a re-run may succeed.
    Unreachable(String),
}

impl StoreReply {
    fn into_error(self) -> StoreError {
        match self {
            StoreReply::Failed(e) => StoreError::Refused(e),
            StoreReply::Unreachable(e) => StoreError::Unavailable(e),
            other => StoreError::Unavailable(format!("unexpected reply {other:?}")),
        }
    }
}

#[derive(Debug)]
pub(crate) struct StoreRequest {
    op: StoreOp,
    reply: cb::Sender<StoreReply>,
}

/// The node's store, as executor threads see it.
#[derive(Debug)]
pub(super) struct NodeStore {
    shards: Vec<mpsc::Sender<StoreRequest>>,
    ring: HashRing<ShardId>,
    /// Other nodes' keys, read here without a shard hop.
    cache: Arc<NodeCache>,
}

impl NodeStore {
    /// A store over `shards` request queues (index = shard id).
    pub(super) fn new(
        shards: Vec<mpsc::Sender<StoreRequest>>,
        ring: HashRing<ShardId>,
        cache: Arc<NodeCache>,
    ) -> NodeStore {
        NodeStore {
            shards,
            ring,
            cache,
        }
    }

    fn request(&self, key: &[u8], op: StoreOp) -> Result<StoreReply, StoreError> {
        let owner = usize::from(self.ring.owner(key).unwrap_or_default().0);
        let mut sender = self
            .shards
            .get(owner)
            .cloned()
            .ok_or_else(|| StoreError::Unavailable("no shard".into()))?;
        let (tx, rx) = cb::bounded(1);
        let deadline = Instant::now() + Duration::from_millis(STORE_TIMEOUT_MS);
        let mut req = StoreRequest { op, reply: tx };
        loop {
            match sender.try_send(req) {
                Ok(()) => break,
                Err(e) if e.is_full() && Instant::now() < deadline => {
                    req = e.into_inner();
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) if e.is_full() => {
                    return Err(StoreError::Unavailable(
                        "the shard's queue stayed full".into(),
                    ))
                }
                Err(_) => return Err(StoreError::Unavailable("the shard has stopped".into())),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .map_err(|_| StoreError::Unavailable(format!("no answer within {STORE_TIMEOUT_MS} ms")))
    }
}

impl Store for NodeStore {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        if let Some(cached) = self.cache.get(key) {
            return Ok(cached);
        }
        match self.request(key, StoreOp::Get(key.to_vec()))? {
            StoreReply::Value(v) => Ok(v),
            other => Err(other.into_error()),
        }
    }
    fn put(&self, key: &[u8], value: Value) -> Result<(), StoreError> {
        match self.request(key, StoreOp::Put(key.to_vec(), value))? {
            StoreReply::Done(_) => Ok(()),
            other => Err(other.into_error()),
        }
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        match self.request(key, StoreOp::Delete(key.to_vec()))? {
            StoreReply::Done(removed) => Ok(removed),
            other => Err(other.into_error()),
        }
    }
    fn take(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        match self.request(key, StoreOp::Take(key.to_vec()))? {
            StoreReply::Value(v) => Ok(v),
            other => Err(other.into_error()),
        }
    }
}

/// How a shard reaches the keys other nodes hold, and serves other
/// nodes' caches.
#[derive(Debug)]
pub(crate) struct Remote {
    pub links: Rc<Links>,
    pub members: Arc<Members>,
    /// This node's cache of other nodes' keys.
    pub cache: Arc<NodeCache>,
    /// Other nodes' leases on this node's keys.
    pub leases: Arc<Leases>,
}

impl Remote {
    /// The node to ask for `key`, when no copy of it is on this one.
    pub fn holder(&self, key: &[u8]) -> Option<SocketAddr> {
        self.members.placement().remote_owner(key).map(|(_, a)| a)
    }

    /// Carries `op` out at the node `to`, or, if it cannot be reached, at
    /// the key's next holder (`--replication` above 1): a read fills the
    /// cache (under a lease); a write of a cached key, once stored, is
    /// merged into the cached copy; a delete, or a write that failed, makes
    /// the cache forget the key.
    async fn call(&self, to: SocketAddr, op: StoreOp) -> StoreReply {
        let key = op.key().to_vec();
        let mut written = None;
        let req = match op {
            StoreOp::Get(key) => match self.members.placement().my_addr() {
                Some(me) if self.cache.enabled() => {
                    self.cache.missed();
                    self.cache.expect(&key, NODE_REQUEST_TIMEOUT_MS);
                    w::Request::Subscribe(w::KvSubscribe {
                        keys: vec![key],
                        subscriber: me.to_string().into_bytes(),
                    })
                }
                _ => w::Request::Get(w::KvGet { keys: vec![key] }),
            },
            StoreOp::Put(key, v) => {
                written = self.cache.holds(&key).then(|| v.clone());
                w::Request::Put(w::KvPut {
                    key,
                    value: value_to_wire(&v),
                })
            }
            StoreOp::Delete(key) => w::Request::Delete(w::KvDelete { key }),
            StoreOp::Take(_) => return StoreReply::Failed("take is for this node's keys".into()),
        };
        let reply = self.ask(to, &key, &req).await;
        match (written, &reply) {
            // Stored at the holder: merged into the cached copy too, which
            // stays a state the holder's has passed.
            (Some(v), w::Response::Stored) => {
                self.cache.update(&key, Entry::Live(v));
            }
            _ if !matches!(req, w::Request::Get(_) | w::Request::Subscribe(_)) => {
                self.cache.forget(&key);
            }
            _ => {}
        }
        match reply {
            w::Response::Values(mut vs) if vs.len() == 1 => {
                StoreReply::Value(vs.pop().flatten().map(value_from_wire))
            }
            w::Response::Leased(mut l) if l.values.len() == 1 => {
                let value = l.values.pop().flatten().map(value_from_wire);
                self.cache.insert(key, value.clone(), l.lease_ms);
                StoreReply::Value(value)
            }
            w::Response::Stored => StoreReply::Done(false),
            w::Response::Deleted(d) => StoreReply::Done(d.removed),
            w::Response::Error(e) => {
                let why = format!("at {to}: {}", String::from_utf8_lossy(&e.message));
                match Status::from_code(e.code) {
                    Some(Status::InvalidArgument | Status::ClockSkew) => StoreReply::Failed(why),
                    _ => StoreReply::Unreachable(why),
                }
            }
            other => StoreReply::Unreachable(format!("at {to}: unexpected reply {other:?}")),
        }
    }

    /// Sends `req` about `key` to the node `to`, or, if it cannot be
    /// reached, to the key's next holders in turn.
    async fn ask(&self, to: SocketAddr, key: &[u8], req: &w::Request) -> w::Response {
        let placement = self.members.placement();
        let others = (placement.holders(key).into_iter())
            .filter(|h| *h != to && Some(*h) != placement.my_addr());
        let mut reply = self.links.call(to, req).await;
        for next in others {
            match &reply {
                w::Response::Error(e) if e.code == Status::Unavailable.code() => {
                    reply = self.links.call(next, req).await;
                }
                _ => break,
            }
        }
        reply
    }

    /// `PutIfAbsent` at the node `to` (or the key's next holder): what the
    /// key held, `None` when `value` was stored.
    pub async fn put_if_absent(
        &self,
        to: SocketAddr,
        key: Vec<u8>,
        value: Value,
    ) -> Result<Option<Value>, NodeError> {
        let req = w::Request::PutIfAbsent(w::KvPut {
            key: key.clone(),
            value: value_to_wire(&value),
        });
        match self.ask(to, &key, &req).await {
            w::Response::Values(mut vs) if vs.len() == 1 => {
                Ok(vs.pop().flatten().map(value_from_wire))
            }
            w::Response::Error(e) => {
                let status = Status::from_code(e.code).unwrap_or(Status::Internal);
                let why = format!("at {to}: {}", String::from_utf8_lossy(&e.message));
                Err(NodeError::new(status, why))
            }
            other => Err(NodeError::new(
                Status::Unavailable,
                format!("at {to}: unexpected reply {other:?}"),
            )),
        }
    }

    /// Stores `value` under `key` at the node `to`, once durable there.
    pub async fn put(&self, to: SocketAddr, key: Vec<u8>, value: Value) -> Result<(), String> {
        match self.call(to, StoreOp::Put(key, value)).await {
            StoreReply::Done(_) => Ok(()),
            other => Err(other.into_error().to_string()),
        }
    }
}

/// Serves executors' store requests on the owning shard (keys with no
/// copy on this node: at their holder, through `remote`).
pub(crate) async fn serve_store(
    shard: Rc<Shard>,
    remote: Rc<Remote>,
    mut rx: mpsc::Receiver<StoreRequest>,
) {
    use futures_lite::StreamExt;
    while let Some(StoreRequest { op, reply }) = rx.next().await {
        if !matches!(op, StoreOp::Get(_)) && crate::auth::is_reserved_key(op.key()) {
            // Registration goes through the node's checks (and, with
            // authentication, its admin role), never a function's store.
            let msg = format!(
                "functions may not write {:?}: keys under squall:fn:, squall:dag:, squall:model, \
                 squall:labels:, squall:replicas: and squall:txn: change only through the \
                 node's own requests",
                String::from_utf8_lossy(op.key())
            );
            let _ = reply.send(StoreReply::Failed(msg));
            continue;
        }
        // Inboxes (`Take`) are this node's own keys.
        if let Some(to) = (!matches!(op, StoreOp::Take(_)))
            .then(|| remote.holder(op.key()))
            .flatten()
        {
            // Stamped here (this node's hybrid clock), not at the holder:
            // the cache merges the very value the holder stores.
            let op = match op {
                StoreOp::Put(key, v) => StoreOp::Put(key, shard.stamped(v)),
                op => op,
            };
            let remote = remote.clone();
            glommio::spawn_local(async move {
                let _ = reply.send(remote.call(to, op).await);
            })
            .detach();
            continue;
        }
        let mut taken = None;
        let (key, value) = match op {
            StoreOp::Get(key) => {
                let _ = reply.send(StoreReply::Value(shard.get(&key)));
                continue;
            }
            StoreOp::Take(key) => {
                let v = shard.get(&key);
                if v.is_none() {
                    let _ = reply.send(StoreReply::Value(None));
                    continue;
                }
                // Same thread, no await since the read: nothing merged in.
                taken = Some(v);
                (key, None)
            }
            StoreOp::Put(key, value) => (key, Some(value)),
            StoreOp::Delete(key) => (key, None),
        };
        match shard.write(key, value) {
            Ok((applied, lsn)) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let answer = match (shard.wait_durable(lsn).await, taken) {
                        (Ok(()), Some(v)) => StoreReply::Value(v),
                        (Ok(()), None) => {
                            StoreReply::Done(matches!(applied, Applied::Deleted { removed: true }))
                        }
                        (Err(e), _) => StoreReply::Failed(e.message),
                    };
                    let _ = reply.send(answer);
                })
                .detach();
            }
            Err(e) => {
                let _ = reply.send(StoreReply::Failed(e.message));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_prefixes_are_the_protocols() {
        assert_eq!(executor::dag::stored::KEY_PREFIX, wire::DAG_KEY_PREFIX);
        assert_eq!(
            executor::registry::stored::KEY_PREFIX,
            wire::FUNCTION_KEY_PREFIX
        );
        assert_eq!(executor::message::INBOX_KEY_PREFIX, wire::INBOX_KEY_PREFIX);
        assert_eq!(executor::txn::RECORD_KEY_PREFIX, wire::TXN_KEY_PREFIX);
    }
}
