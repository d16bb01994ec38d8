//! Reads and writes: answered in the batch when this shard owns the keys,
//! else sent to their owner — another shard of this node, or another node
//! (over a link) — and answered from the outbox. Requests that came from
//! another node are never sent on to a third (but by a leaving node): a
//! key this node does not own is `wrong_owner` there. `GetLocal` reads this node's own copy only;
//! `Merge` takes keys another node hands over.

use std::net::SocketAddr;

use kvs_core::partition::{check_key, check_shape, Entry};
use kvs_core::{NodeId, ShardId};
use wire::limits::KEYS_PER_GET_MAX;
use wire::message as w;
use wire::Status;

use super::route::{self, Routed};
use super::Conn;
use crate::concern::WriteConcern;
use crate::convert::{value_from_archived, value_to_wire};
use crate::error::NodeError;
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
        match route::read(&self.server, keys.as_slice(), local, !self.no_forwarding()).await {
            Routed::Now(w::Response::Values(values), _) => {
                self.reply(request_id, &values_reply(values, lease_ms));
            }
            Routed::Now(other, _) => self.reply(request_id, &other),
            Routed::Later(reply) => self.outbox.push(request_id, async move {
                match reply.await {
                    w::Response::Values(values) => values_reply(values, lease_ms),
                    other => other,
                }
            }),
            Routed::WrongOwner(node, addr) => {
                let key = keys.iter().map(|k| k.as_slice());
                let key = key
                    .clone()
                    .find(|k| route::remote_owner(&self.server, k).is_some());
                self.wrong_owner(request_id, key.unwrap_or_default(), node, addr);
            }
        }
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
            .all(|k| route::remote_owner(&self.server, k.as_slice()).is_none());
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
        let forward = !self.no_forwarding();
        match route::write(&self.server, key, value, concern, forward).await {
            Routed::Now(resp, lsn) => {
                if lsn.is_some() {
                    self.batch_lsn = lsn;
                }
                self.reply(request_id, &resp);
            }
            Routed::Later(reply) => self.outbox.push(request_id, reply),
            Routed::WrongOwner(node, addr) => self.wrong_owner(request_id, key, node, addr),
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
        if let Some((node, addr)) = route::remote_owner(&self.server, key) {
            if self.no_forwarding() {
                return self.wrong_owner(request_id, key, node, addr);
            }
            let req = w::Request::PutIfAbsent(w::KvPut {
                key: key.to_vec(),
                value: value_to_wire(&value),
            });
            if let Routed::Later(reply) = route::to_node(&self.server, addr, req) {
                self.outbox.push(request_id, reply);
            }
            return;
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
                        route::acknowledged_by(self.shard.clone(), lsn, barriers, need, resp),
                    ),
                    None => self.reply(request_id, &resp),
                }
            }
            Err(e) => self.fail(request_id, &e),
        }
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
        let mut parts = Vec::new();
        for s in self.shard.siblings() {
            if s != self.shard.id() {
                let op = ShardOp::Digest(scope.clone());
                parts.push(self.shard.forward(s, op).await);
            }
        }
        let shard = self.shard.clone();
        self.outbox.push(request_id, async move {
            let mut sum = shard.digest(|k| (scope.0)(k)).await;
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

    fn wrong_owner(&mut self, request_id: u64, key: &[u8], node: NodeId, addr: SocketAddr) {
        let msg = format!(
            "this node does not own key {:?}: {node} at {addr} does in its view (epoch {:016x})",
            String::from_utf8_lossy(key),
            self.epoch
        );
        self.error(request_id, Status::WrongOwner, &msg);
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
