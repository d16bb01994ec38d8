//! Reads and writes: answered in the batch when this shard owns the keys,
//! else sent to their owner — another shard of this node, or another node
//! (over a link) — and answered from the outbox. Requests that came from
//! another node are never sent on to a third (but by a leaving node): a
//! key this node does not own is `wrong_owner` there. `GetLocal` reads this node's own copy only;
//! `Merge` takes keys another node hands over.

use std::net::SocketAddr;

use kvs_core::partition::{check_key, check_shape, Applied, Entry};
use kvs_core::{NodeId, ShardId};
use wire::limits::KEYS_PER_GET_MAX;
use wire::message as w;
use wire::Status;

use futures_channel::oneshot;

use super::Conn;
use crate::concern::WriteConcern;
use crate::convert::{value_from_archived, value_to_wire};
use crate::error::NodeError;
use crate::limits::NODE_REQUEST_TIMEOUT_MS;
use crate::members::{copies_of, is_replicas_key};
use crate::shard::{Acks, WriteObserver as _};
use crate::transport::{DigestScope, ShardOp, ShardReply};

/// The keys of a `Get`.
type Keys = wire::rkyv::vec::ArchivedVec<wire::rkyv::vec::ArchivedVec<u8>>;

/// A read's reply: `Values`, or `Leased` for another node's cache.
fn values_reply(values: Vec<Option<w::Value>>, lease_ms: Option<u32>) -> w::Response {
    match lease_ms {
        None => w::Response::Values(values),
        Some(lease_ms) => w::Response::Leased(w::Leased { values, lease_ms }),
    }
}

/// Where one key of a request goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Shard(ShardId),
    Node(SocketAddr),
}

impl Conn {
    /// `local`: this node's own copy (`GetLocal`), never another node's.
    /// `lease_ms`: for another node's cache (`Subscribe`), answered as
    /// `Leased`.
    pub(super) async fn get(
        &mut self,
        request_id: u64,
        keys: &Keys,
        local: bool,
        lease_ms: Option<u32>,
    ) {
        let n = keys.len();
        if n == 0 || n > KEYS_PER_GET_MAX {
            let msg = format!("a Get names 1 to {KEYS_PER_GET_MAX} keys, not {n}");
            return self.error(request_id, Status::InvalidArgument, &msg);
        }
        let me = self.shard.id();
        let mut dests = Vec::with_capacity(n);
        for k in keys.iter() {
            let k = k.as_slice();
            let remote = if local { None } else { self.remote_owner(k) };
            dests.push(match remote {
                Some((node, addr)) if self.no_forwarding() => {
                    return self.wrong_owner(request_id, k, node, addr);
                }
                Some((_, addr)) => Dest::Node(addr),
                None => Dest::Shard(self.shard.owner(k)),
            });
        }
        // Fast path: every key is this shard's.
        if dests.iter().all(|d| *d == Dest::Shard(me)) {
            let values = keys
                .iter()
                .map(|k| self.shard.get_local(k.as_slice()))
                .collect();
            return self.reply(request_id, &values_reply(values, lease_ms));
        }
        let mut values: Vec<Option<w::Value>> = vec![None; n];
        let mut groups: Vec<(Dest, Vec<usize>)> = Vec::new();
        for (i, d) in dests.into_iter().enumerate() {
            if d == Dest::Shard(me) {
                values[i] = self.shard.get_local(keys[i].as_slice());
            } else if let Some(g) = groups.iter_mut().find(|(x, _)| *x == d) {
                g.1.push(i);
            } else {
                groups.push((d, vec![i]));
            }
        }
        let mut parts = Vec::with_capacity(groups.len());
        for (dest, idx) in groups {
            let keys: Vec<Vec<u8>> = idx.iter().map(|&i| keys[i].to_vec()).collect();
            let reply: super::outbox::PendingReply = match dest {
                Dest::Shard(owner) => {
                    let reply = self.shard.forward(owner, ShardOp::Get(keys)).await;
                    Box::pin(async move { reply.await.into_response() })
                }
                Dest::Node(addr) => {
                    crate::shard::bump(&self.shard.stats().node_forwards);
                    let server = self.server.clone();
                    let req = w::Request::Get(w::KvGet { keys });
                    Box::pin(async move { server.links.call(addr, &req).await })
                }
            };
            parts.push((idx, reply));
        }
        self.outbox.push(request_id, async move {
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
            values_reply(values, lease_ms)
        });
    }

    /// Reads keys for another node's cache and leases them to it
    /// (`leases.rs`): `Leased`, with no lease when a key is not this
    /// node's or the leases are full.
    pub(super) async fn subscribe(&mut self, request_id: u64, sub: &w::ArchivedKvSubscribe) {
        let member = std::str::from_utf8(sub.subscriber.as_slice())
            .ok()
            .and_then(|s| s.parse::<SocketAddr>().ok())
            .filter(|a| self.server.with_placement(|p| p.holds_node(*a)));
        let Some(to) = member else {
            let msg = format!(
                "a cache subscribes by its node's address in this node's view, not {:?}",
                String::from_utf8_lossy(sub.subscriber.as_slice())
            );
            return self.error(request_id, Status::InvalidArgument, &msg);
        };
        let held = sub
            .keys
            .iter()
            .all(|k| self.remote_owner(k.as_slice()).is_none());
        let lease_ms = if held && (1..=KEYS_PER_GET_MAX).contains(&sub.keys.len()) {
            let leases = &self.server.leases;
            (sub.keys.iter())
                .map(|k| leases.grant(k.as_slice(), to))
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        self.get(request_id, &sub.keys, false, Some(lease_ms)).await;
    }

    /// Changes of keys this node's cache subscribed to: merged into the
    /// cache where it still holds them; `Stored`, or `Evicted` with the
    /// keys it no longer holds (their leases end).
    pub(super) fn cache_update(&mut self, request_id: u64, batch: &w::ArchivedMergeBatch) {
        let mut evicted = Vec::new();
        for e in batch.entries.iter() {
            match entry_of(e) {
                Ok(entry) => {
                    if !self.server.cache.update(e.key.as_slice(), entry) {
                        evicted.push(e.key.to_vec());
                    }
                }
                Err(err) => return self.fail(request_id, &err),
            }
        }
        let reply = match evicted.is_empty() {
            true => w::Response::Stored,
            false => w::Response::Evicted(evicted),
        };
        self.reply(request_id, &reply);
    }

    pub(super) async fn write(
        &mut self,
        request_id: u64,
        key: &[u8],
        value: Option<kvs_core::Value>,
        concern: Option<WriteConcern>,
    ) {
        if let Some(v) = value.as_ref().filter(|_| is_replicas_key(key)) {
            if let Err(why) = copies_of(key, v) {
                return self.error(request_id, Status::InvalidArgument, &why);
            }
        }
        if let Some((node, addr)) = self.remote_owner(key) {
            if self.no_forwarding() {
                return self.wrong_owner(request_id, key, node, addr);
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
            return self.send_to_node(request_id, addr, req);
        }
        let owner = self.shard.owner(key);
        if owner != self.shard.id() {
            let concern = concern.unwrap_or(self.server.settings.write_concern);
            let op = match value {
                _ if concern != WriteConcern::One => ShardOp::Write {
                    key: key.to_vec(),
                    value,
                    concern,
                },
                Some(v) => ShardOp::Put(key.to_vec(), v),
                None => ShardOp::Delete(key.to_vec()),
            };
            let reply = self.shard.forward(owner, op).await;
            self.outbox
                .push(request_id, async move { reply.await.into_response() });
            return;
        }
        match self.shard.write(key.to_vec(), value) {
            Ok((applied, lsn)) => {
                self.batch_lsn = Some(lsn);
                let resp = match applied {
                    Applied::Stored => w::Response::Stored,
                    Applied::Deleted { removed } | Applied::Dropped { removed } => {
                        w::Response::Deleted(w::Deleted { removed })
                    }
                };
                match self.other_copies(key, concern) {
                    Some((barriers, need)) => self.outbox.push(
                        request_id,
                        acknowledged_by(self.shard.clone(), lsn, barriers, need, resp),
                    ),
                    None => self.reply(request_id, &resp),
                }
            }
            Err(e) => self.fail(request_id, &e),
        }
    }

    /// Stores `value` under `key` unless it holds a value, at the key's
    /// owner (this shard, another, or another node): `Values([held])`,
    /// `None` when this value was stored (then acknowledged by every
    /// holder, as under write concern `all`).
    pub(super) async fn put_if_absent(
        &mut self,
        request_id: u64,
        key: &[u8],
        value: kvs_core::Value,
    ) {
        if let Some((node, addr)) = self.remote_owner(key) {
            if self.no_forwarding() {
                return self.wrong_owner(request_id, key, node, addr);
            }
            let req = w::Request::PutIfAbsent(w::KvPut {
                key: key.to_vec(),
                value: value_to_wire(&value),
            });
            return self.send_to_node(request_id, addr, req);
        }
        let owner = self.shard.owner(key);
        if owner != self.shard.id() {
            let op = ShardOp::PutIfAbsent(key.to_vec(), value);
            let reply = self.shard.forward(owner, op).await;
            self.outbox
                .push(request_id, async move { reply.await.into_response() });
            return;
        }
        match self.shard.put_if_absent(key.to_vec(), value) {
            Ok((held, lsn, acks)) => {
                self.batch_lsn = Some(lsn);
                let resp = w::Response::Values(vec![held.as_ref().map(value_to_wire)]);
                match acks {
                    Some((barriers, need)) => self.outbox.push(
                        request_id,
                        acknowledged_by(self.shard.clone(), lsn, barriers, need, resp),
                    ),
                    None => self.reply(request_id, &resp),
                }
            }
            Err(e) => self.fail(request_id, &e),
        }
    }

    /// Sends `req` on to the node at `addr`; its reply is this request's.
    fn send_to_node(&mut self, request_id: u64, addr: SocketAddr, req: w::Request) {
        crate::shard::bump(&self.shard.stats().node_forwards);
        let server = self.server.clone();
        self.outbox.push(
            request_id,
            async move { server.links.call(addr, &req).await },
        );
    }

    /// With a write concern above 1: the acknowledgements of the other
    /// holders of `key` a write just queued for them, and how many of them
    /// it needs. `None`: this node's copy is enough.
    fn other_copies(&self, key: &[u8], concern: Option<WriteConcern>) -> Option<Acks> {
        let concern = concern.unwrap_or(self.server.settings.write_concern);
        self.server.pushes.copies_needed(key, concern)
    }

    /// Keys another node hands over: the batch is checked whole first
    /// (nothing is applied if an entry is malformed), then each entry is
    /// merged into the shard that owns it here; `Stored` once all are
    /// durable. They are taken whether or not this node's view places them
    /// here: a lattice merge is safe, and this node's own hand-off moves
    /// them on if they belong elsewhere. A leaving node takes none, and
    /// does not acknowledge a batch during which its leave began.
    pub(super) async fn merge(&mut self, request_id: u64, batch: &w::ArchivedMergeBatch) {
        if self.server.members.is_leaving() {
            // What it took now would leave with it.
            let msg = "this node is leaving the cluster: it takes no keys";
            return self.error(request_id, Status::WrongOwner, msg);
        }
        let mut entries = Vec::with_capacity(batch.entries.len());
        for e in batch.entries.iter() {
            match entry_of(e) {
                Ok(entry) => entries.push((e.key.to_vec(), entry)),
                Err(err) => return self.fail(request_id, &err),
            }
        }
        crash_point!("merge::before-apply");
        let me = self.shard.id();
        let mut forwarded = Vec::new();
        for (key, entry) in entries {
            let owner = self.shard.owner(&key);
            if owner == me {
                match self.shard.merge(key, entry) {
                    Ok((_, lsn)) => self.batch_lsn = Some(lsn),
                    Err(e) => return self.fail(request_id, &e),
                }
            } else {
                forwarded.push(self.shard.forward(owner, ShardOp::Merge(key, entry)).await);
            }
        }
        crash_point!("merge::before-reply");
        // A leave that began while the keys went in may have scanned past
        // them: then they are not acknowledged (the sender keeps its copy
        // and sends it to the holders of its next view).
        let began_leaving = || {
            let msg = "this node began leaving the cluster while it took these keys";
            NodeError::new(Status::WrongOwner, msg)
        };
        if forwarded.is_empty() {
            if self.server.members.is_leaving() {
                return self.fail(request_id, &began_leaving());
            }
            return self.reply(request_id, &w::Response::Stored);
        }
        // This shard's own entries are durable with the batch, before the
        // outbox writes the reply.
        let lsn = self.batch_lsn;
        let shard = self.shard.clone();
        let members = self.server.members.clone();
        self.outbox.push(request_id, async move {
            for reply in forwarded {
                if let ShardReply::Error(e) = reply.await {
                    return crate::transport::error_response(&e);
                }
            }
            if members.is_leaving() {
                return crate::transport::error_response(&began_leaving());
            }
            if let Some(lsn) = lsn {
                if let Err(e) = shard.wait_durable(lsn).await {
                    return crate::transport::error_response(&e);
                }
            }
            w::Response::Stored
        });
    }

    /// Another node's anti-entropy asks for the digest of the keys both
    /// hold on one of its shards: this shard's part and every other
    /// shard's, summed (`crate::antientropy`).
    pub(super) async fn digest(&mut self, request_id: u64, d: &w::ArchivedDigestRequest) {
        let placement = self.server.members.placement();
        let (node, epoch) = (NodeId(d.node.to_native()), d.epoch.to_native());
        let shard = ShardId(d.shard.to_native());
        if epoch != placement.epoch() {
            let msg = format!(
                "the views differ (epoch {epoch:016x} there, {:016x} here): ask again once they agree",
                placement.epoch()
            );
            return self.error(request_id, Status::Unavailable, &msg);
        }
        if placement.addr_of(node).is_none() || placement.me() == Some(node) {
            let msg = format!("{node} is not another member in this node's view");
            return self.error(request_id, Status::InvalidArgument, &msg);
        }
        let scope = DigestScope(std::sync::Arc::new(move |k: &[u8]| {
            placement.shared_on(k, node, shard)
        }));
        let mut sum = self.shard.digest(|k| (scope.0)(k));
        let mut parts = Vec::new();
        for s in self.shard.siblings() {
            if s != self.shard.id() {
                let op = ShardOp::Digest(scope.clone());
                parts.push(self.shard.forward(s, op).await);
            }
        }
        self.outbox.push(request_id, async move {
            for part in parts {
                match part.await {
                    ShardReply::Digest(d) => sum.absorb(&d),
                    other => return other.into_response(),
                }
            }
            w::Response::Digest(sum.buckets().to_vec())
        });
    }

    /// Whether a request for a key another node holds must be refused
    /// (`wrong_owner`) rather than sent on: one that came from another
    /// node, unless this node is leaving (its peers still send it what it
    /// no longer holds until they see it go; one more hop, which never
    /// comes back to a leaving node).
    fn no_forwarding(&self) -> bool {
        self.from_node && !self.server.members.is_leaving()
    }

    /// The other node that owns `key` now; `None` if this node does.
    fn remote_owner(&self, key: &[u8]) -> Option<(NodeId, SocketAddr)> {
        self.server.with_placement(|p| p.remote_owner(key))
    }

    fn wrong_owner(&mut self, request_id: u64, key: &[u8], node: NodeId, addr: SocketAddr) {
        let msg = format!(
            "this node does not own key {:?}: {node} at {addr} does in its view (epoch {:016x})",
            String::from_utf8_lossy(key),
            self.epoch
        );
        self.error(request_id, Status::WrongOwner, &msg);
    }
}

/// `resp` once the write at `lsn` is durable here and `need` other holders
/// have acknowledged it; `unavailable` if they do not within
/// `NODE_REQUEST_TIMEOUT_MS` (the write stands here and still spreads).
async fn acknowledged_by(
    shard: std::rc::Rc<crate::shard::Shard>,
    lsn: kvs_core::Lsn,
    barriers: Vec<oneshot::Receiver<()>>,
    need: usize,
    resp: w::Response,
) -> w::Response {
    if let Err(e) = shard.wait_durable(lsn).await {
        return crate::transport::error_response(&e);
    }
    let timeout = std::time::Duration::from_millis(NODE_REQUEST_TIMEOUT_MS);
    match crate::event::acknowledged(barriers, need, timeout).await {
        Ok(()) => resp,
        Err(got) => crate::transport::error_response(&NodeError::copies_missing(
            got,
            need,
            NODE_REQUEST_TIMEOUT_MS,
        )),
    }
}

/// A hand-over entry, checked: a well-formed key with exactly one of a
/// value (within the limits) or a tombstone.
fn entry_of(e: &w::ArchivedMergeEntry) -> Result<Entry, NodeError> {
    let key = e.key.as_slice();
    match (e.value.as_ref(), e.deleted.as_ref()) {
        (Some(v), None) => {
            let value = value_from_archived(v);
            check_shape(key, &value)?;
            Ok(Entry::Live(value))
        }
        (None, Some(d)) => {
            check_key(key)?;
            Ok(Entry::Tombstone(kvs_core::lattice::Timestamp {
                clock: d.clock.to_native(),
                writer: d.writer.to_native(),
            }))
        }
        _ => Err(NodeError::new(
            Status::InvalidArgument,
            format!(
                "hand-over entry {:?} must carry a value or a tombstone, not both or neither",
                String::from_utf8_lossy(key)
            ),
        )),
    }
}
