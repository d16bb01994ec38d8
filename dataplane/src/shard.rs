//! One shard of the store: a partition, its WAL, its clock and counters,
//! owned by one glommio executor on one core, and its way to the other
//! shards ([`Transport`]). It knows nothing of functions: what others
//! derive from its data (the function registry, cached DAGs) they keep up
//! to date through a [`WriteObserver`].
//!
//! Nothing here is shared across threads; the `RefCell`s are never
//! borrowed across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_channel::oneshot;

use executor::txn::RECORD_KEY_PREFIX;
use kvs_core::clock::HybridClock;
use kvs_core::digest::RangeDigest;
use kvs_core::lattice::{Lww, Timestamp, ValueRef};
use kvs_core::limits::CLOCK_LEAD_MAX_US;
use kvs_core::partition::{Applied, Entry, EntryRef, Mutation, Partition, PARTS};
use kvs_core::ring::HashRing;
use kvs_core::{Lsn, ShardId, Value};
use wire::message as w;

use crate::concern::WriteConcern;
use crate::convert::{value_ref_to_wire, value_to_wire};
use crate::error::NodeError;
use crate::limits::{
    NODE_REQUEST_TIMEOUT_MS, SCAN_SLICE_BUCKETS, SCAN_TURN_US, TXN_RECORDS_PER_SHARD_MAX,
};
use crate::storage::{Storage, StorageError};
use crate::transport::channels::Inbound;
use crate::transport::{ReplyFuture, ShardOp, ShardReply, Transport};

/// Monotonic counters reported by `Stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub gets: Cell<u64>,
    pub puts: Cell<u64>,
    pub deletes: Cell<u64>,
    pub errors: Cell<u64>,
    pub forwarded_out: Cell<u64>,
    pub forwarded_in: Cell<u64>,
    pub node_forwards: Cell<u64>,
    pub stale_epoch: Cell<u64>,
    pub connections: Cell<u64>,
    pub connections_refused: Cell<u64>,
}

pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Keeps something derived from a shard's data in step with it. Called on
/// the shard's thread, synchronously with the write (no request sees the
/// write before its observers did).
pub(crate) trait WriteObserver {
    /// Whether writes of `key` concern this observer (asked first, so
    /// the shard does no extra work for the keys nobody watches).
    fn watches(&self, key: &[u8]) -> bool;
    /// `key` was written; `now` is its value after the write.
    fn written(&self, key: &[u8], now: Option<ValueRef<'_>>);
    /// Memory was rebuilt from the log (a failed WAL write was rolled
    /// back): derive everything again from `partition`.
    fn rebuilt(&self, partition: &Partition);
    /// After a write of `key`: the acknowledgements its write concern
    /// needs from the key's other holders (`None`: this copy is enough).
    /// Only replication's pusher has any.
    fn copies_needed(&self, _key: &[u8], _concern: WriteConcern) -> Option<Acks> {
        None
    }
}

/// Acknowledgements a write waits for, and how many of them it needs.
pub(crate) type Acks = (Vec<oneshot::Receiver<()>>, usize);

/// What a shard is made of.
pub(crate) struct ShardParts {
    pub id: ShardId,
    pub partition: Partition,
    /// The highest clock the recovered data holds: the shard's clock
    /// starts past it.
    pub clock_floor_us: u64,
    pub storage: Rc<Storage>,
    pub ring: Rc<HashRing<ShardId>>,
    pub transport: Rc<dyn Transport>,
    pub observers: Vec<Rc<dyn WriteObserver>>,
    /// Told of the writes this shard makes itself (`write`), not of what
    /// it merges in from other nodes: replication's pushes.
    pub writes: Option<Rc<dyn WriteObserver>>,
    /// How long a commit record of an atomic call is kept.
    pub txn_record_ttl_ms: u64,
}

/// A shard's state.
pub(crate) struct Shard {
    id: ShardId,
    partition: Rc<RefCell<Partition>>,
    storage: Rc<Storage>,
    ring: Rc<HashRing<ShardId>>,
    transport: Rc<dyn Transport>,
    observers: Vec<Rc<dyn WriteObserver>>,
    writes: Option<Rc<dyn WriteObserver>>,
    stats: Counters,
    clock: RefCell<HybridClock>,
    /// LWW writer id of timestamps this shard assigns.
    writer: u64,
    started: Instant,
    /// Atomic calls' commit records on this shard, oldest first, with when
    /// they came: each is deleted `record_ttl` later.
    records: RefCell<VecDeque<(Instant, Vec<u8>)>>,
    record_ttl: Duration,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).finish()
    }
}

/// Writer ids the node assigns are `NODE_WRITER_BASE | shard`; clients
/// choosing their own writer ids should stay below it.
pub(crate) const NODE_WRITER_BASE: u64 = 1 << 63;

pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Shard {
    pub fn new(parts: ShardParts) -> Shard {
        let mut clock = HybridClock::default();
        clock.observe(parts.clock_floor_us);
        // Records recovered from disk get a whole TTL from now.
        let now = Instant::now();
        let records = (parts.partition)
            .live_keys_with_prefix(RECORD_KEY_PREFIX.as_bytes())
            .map(|k| (now, k.to_vec()))
            .collect();
        Shard {
            id: parts.id,
            partition: Rc::new(RefCell::new(parts.partition)),
            storage: parts.storage,
            ring: parts.ring,
            transport: parts.transport,
            observers: parts.observers,
            writes: parts.writes,
            stats: Counters::default(),
            clock: RefCell::new(clock),
            writer: NODE_WRITER_BASE | u64::from(parts.id.0),
            started: Instant::now(),
            records: RefCell::new(records),
            record_ttl: Duration::from_millis(parts.txn_record_ttl_ms),
        }
    }

    /// Starts the shard's background work: the WAL's group-commit flusher
    /// (which rolls memory back after a failed write, then tells the
    /// observers) and its batch syncer.
    pub fn start(self: &Rc<Self>) {
        let me = self.clone();
        let rebuilt = Box::new(move || {
            let partition = me.partition.borrow();
            for o in &me.observers {
                o.rebuilt(&partition);
            }
        });
        let storage = self.storage.clone();
        glommio::spawn_local(storage.run_flusher(self.partition.clone(), rebuilt)).detach();
        glommio::spawn_local(self.storage.clone().run_batch_syncer()).detach();
        glommio::spawn_local(self.clone().expire_records()).detach();
    }

    /// Deletes commit records `--txn-record-ttl-ms` after they came, and
    /// the oldest early past `TXN_RECORDS_PER_SHARD_MAX`; once a second.
    async fn expire_records(self: Rc<Self>) {
        let ttl = self.record_ttl;
        loop {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            let mut early = 0;
            loop {
                let key = {
                    let mut records = self.records.borrow_mut();
                    let full = records.len() > TXN_RECORDS_PER_SHARD_MAX;
                    match records.front() {
                        Some((came, _)) if full || came.elapsed() >= ttl => {
                            early += usize::from(full && came.elapsed() < ttl);
                            records.pop_front().map(|(_, k)| k)
                        }
                        _ => None,
                    }
                };
                let Some(key) = key else { break };
                if self.owner(&key) != self.id || self.peek(&key).is_none() {
                    continue;
                }
                if let Err(e) = self.write(key, None) {
                    log::warn!(
                        "{}: a commit record was not deleted: {}",
                        self.id,
                        e.message
                    );
                }
                // Many may expire at once: serve requests in between.
                glommio::yield_if_needed().await;
            }
            if early > 0 {
                log::warn!(
                    "{}: {early} commit records of atomic calls deleted before their {} s: \
                     more than {TXN_RECORDS_PER_SHARD_MAX} on this shard; a re-run of those \
                     calls would take effect again",
                    self.id,
                    ttl.as_secs()
                );
            }
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn stats(&self) -> &Counters {
        &self.stats
    }

    /// The shard owning `key`.
    /// The node's shards (those on its ring).
    pub fn siblings(&self) -> Vec<ShardId> {
        let mut v: Vec<ShardId> = self.ring.tokens().iter().map(|(_, s)| *s).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn owner(&self, key: &[u8]) -> ShardId {
        self.ring.owner(key).unwrap_or(self.id)
    }

    fn stamp(&self) -> Timestamp {
        Timestamp {
            clock: self.tick_us(),
            writer: self.writer,
        }
    }

    /// `value`, stamped from this shard's hybrid clock when it is an LWW
    /// value its writer left unstamped (clock 0), as [`Shard::write`]
    /// would stamp it.
    pub fn stamped(&self, value: Value) -> Value {
        match value {
            Value::Lww(lww) if lww.timestamp().clock == 0 => {
                Value::Lww(Lww::new(self.stamp(), lww.into_parts().1))
            }
            value => value,
        }
    }

    /// A time from this shard's hybrid clock: past every timestamp it
    /// issued or observed (an atomic call's commit stamp).
    pub fn tick_us(&self) -> u64 {
        self.clock.borrow_mut().tick(wall_us())
    }

    /// Reads a local key into its wire form.
    pub fn get_local(&self, key: &[u8]) -> Option<w::Value> {
        debug_assert_eq!(self.owner(key), self.id, "read of a key another shard owns");
        bump(&self.stats.gets);
        self.partition.borrow().get(key).map(value_ref_to_wire)
    }

    /// Reads a local key for a client in place (counted in `gets`): `f`
    /// sees the stored value, so a reply can be encoded from it with no
    /// copy (RESP's `GET`).
    pub fn read_with<R>(&self, key: &[u8], f: impl FnOnce(Option<ValueRef<'_>>) -> R) -> R {
        debug_assert_eq!(self.owner(key), self.id, "read of a key another shard owns");
        bump(&self.stats.gets);
        f(self.partition.borrow().get(key))
    }

    /// Reads a local key for a client (counted in `gets`).
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        bump(&self.stats.gets);
        self.peek(key)
    }

    /// Reads a local key for the node itself (not counted).
    pub fn peek(&self, key: &[u8]) -> Option<Value> {
        debug_assert_eq!(self.owner(key), self.id, "read of a key another shard owns");
        self.partition.borrow().get(key).map(ValueRef::to_value)
    }

    /// The live keys under `prefix` this shard holds, sorted.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self
            .partition
            .borrow()
            .live_keys_with_prefix(prefix)
            .map(<[u8]>::to_vec)
            .collect();
        keys.sort();
        keys
    }

    /// Applies a put or delete to this shard's partition and queues its WAL
    /// record. Returns the LSN to wait for before acknowledging.
    pub fn write(&self, key: Vec<u8>, value: Option<Value>) -> Result<(Applied, Lsn), NodeError> {
        debug_assert_eq!(
            self.owner(&key),
            self.id,
            "write of a key another shard owns"
        );
        self.storage.check_writable()?;
        let m = match value {
            Some(Value::Lww(lww)) if lww.timestamp().clock == 0 => {
                let (_, bytes) = lww.into_parts();
                Mutation::Put {
                    key,
                    value: Value::Lww(Lww::new(self.stamp(), bytes)),
                }
            }
            Some(value) => {
                // A writer's own clock may lead ours only so far: one bad
                // clock must not drag the shard's into the future.
                self.partition
                    .borrow()
                    .check_clocks(&key, &value, wall_us())?;
                if let Value::Lww(lww) = &value {
                    self.clock.borrow_mut().observe(lww.timestamp().clock);
                }
                Mutation::Put { key, value }
            }
            None => Mutation::Delete {
                key,
                ts: self.stamp(),
            },
        };
        let key = m.key().to_vec();
        let done = self.log_and_apply(m)?;
        if let Some(w) = self.writes.as_ref().filter(|w| w.watches(&key)) {
            w.written(&key, self.partition.borrow().get(&key));
        }
        Ok(done)
    }

    /// Stores `value` under `key` unless it holds a live value: returns
    /// what it held (`None`: `value` was stored), the LSN to wait for —
    /// this write's, or, when the key held a value, the last one queued, so
    /// that value is durable before anyone acts on it — and, for a stored
    /// value, the acknowledgements of every other holder to wait for: what
    /// stands must be on every copy (an atomic call's commit record).
    pub fn put_if_absent(
        &self,
        key: Vec<u8>,
        value: Value,
    ) -> Result<(Option<Value>, Lsn, Option<Acks>), NodeError> {
        if let Some(held) = self.peek(&key) {
            return Ok((Some(held), Lsn(self.storage.stats().last_lsn), None));
        }
        let (_, lsn) = self.write(key.clone(), Some(value))?;
        let acks = (self.writes.as_ref()).and_then(|w| w.copies_needed(&key, WriteConcern::All));
        Ok((None, lsn, acks))
    }

    /// What `key` holds (a value or a tombstone), if anything.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.partition.borrow().entry(key).map(EntryRef::to_entry)
    }

    /// Visits every entry in slices, letting the shard serve between them
    /// once `SCAN_TURN_US` have passed: a scan of 2M keys takes no stall
    /// longer than a turn and a slice of `SCAN_SLICE_BUCKETS` buckets. For
    /// statistics, digests and hand-off, which need no single instant: each
    /// part is gathered into its own `A` (from `init`) by `visit`, then
    /// handed to `done`; a part whose table moved its entries meanwhile is
    /// gathered again from the start (`Partition::part_layout`), so an
    /// entry not written during the scan counts exactly once, and one
    /// written may or may not.
    pub async fn scan<A>(
        &self,
        mut init: impl FnMut() -> A,
        mut visit: impl FnMut(&mut A, &[u8], EntryRef<'_>),
        mut done: impl FnMut(A),
    ) {
        let mut turn = Instant::now();
        for part in 0..PARTS {
            'part: loop {
                let layout = self.partition.borrow().part_layout(part);
                let mut acc = init();
                let mut at = 0;
                while at < layout.0 {
                    let end = (at + SCAN_SLICE_BUCKETS).min(layout.0);
                    self.partition
                        .borrow()
                        .visit_buckets(part, at..end, |k, e| {
                            visit(&mut acc, k, e);
                        });
                    at = end;
                    if turn_over(&mut turn).await
                        && self.partition.borrow().part_layout(part) != layout
                    {
                        continue 'part;
                    }
                }
                done(acc);
                break;
            }
        }
    }

    /// How many live keys `keep` keeps ([`Self::scan`]).
    pub async fn count_live(&self, mut keep: impl FnMut(&[u8]) -> bool) -> u64 {
        let mut live = 0;
        self.scan(
            || 0,
            |n: &mut u64, k, e| *n += u64::from(e.is_live() && keep(k)),
            |n| live += n,
        )
        .await;
        live
    }

    /// The range digest (`kvs_core::digest`) of the entries `scope` keeps
    /// ([`Self::scan`]).
    pub async fn digest(&self, mut scope: impl FnMut(&[u8]) -> bool) -> RangeDigest {
        let mut sum = RangeDigest::default();
        self.scan(
            RangeDigest::default,
            |d: &mut RangeDigest, key, entry| {
                if scope(key) {
                    d.add(key, entry);
                }
            },
            |d| sum.absorb(&d),
        )
        .await;
        sum
    }

    /// Merges a key's state handed over by another node: its value or
    /// tombstone as it is, with its own timestamps (nothing re-stamped; a
    /// remote clock moves this shard's only up to the lead bound).
    pub fn merge(&self, key: Vec<u8>, entry: Entry) -> Result<(Applied, Lsn), NodeError> {
        debug_assert_eq!(self.owner(&key), self.id, "merge into another shard's key");
        self.storage.check_writable()?;
        let m = match entry {
            Entry::Live(value) => {
                if let Value::Lww(lww) = &value {
                    let bound = wall_us().saturating_add(CLOCK_LEAD_MAX_US);
                    self.clock
                        .borrow_mut()
                        .observe(lww.timestamp().clock.min(bound));
                }
                Mutation::Put { key, value }
            }
            Entry::Tombstone(ts) => Mutation::Delete { key, ts },
        };
        self.log_and_apply(m)
    }

    /// Drops `key` if it still holds `expected`: it was handed over to its
    /// new owner (a write since then keeps it, for the next hand-off).
    pub fn drop_if_unchanged(
        &self,
        key: &[u8],
        expected: &Entry,
    ) -> Result<Option<Lsn>, NodeError> {
        if self.partition.borrow().entry(key) != Some(expected.view()) {
            return Ok(None);
        }
        self.storage.check_writable()?;
        let m = Mutation::Drop { key: key.to_vec() };
        Ok(Some(self.log_and_apply(m)?.1))
    }

    /// Logs `m` and applies it (checked first: the logged record and the
    /// in-memory state never diverge), then tells the observers.
    fn log_and_apply(&self, m: Mutation) -> Result<(Applied, Lsn), NodeError> {
        let record = matches!(m, Mutation::Put { .. })
            && m.key().starts_with(RECORD_KEY_PREFIX.as_bytes())
            && self.partition.borrow().get(m.key()).is_none();
        if record {
            let key = m.key().to_vec();
            self.records.borrow_mut().push_back((Instant::now(), key));
        }
        let watched = self
            .observers
            .iter()
            .any(|o| o.watches(m.key()))
            .then(|| m.key().to_vec());
        let mut partition = self.partition.borrow_mut();
        partition.check(&m)?;
        let lsn = self.storage.append(&m);
        let counter = match m {
            Mutation::Put { .. } => Some(&self.stats.puts),
            Mutation::Delete { .. } => Some(&self.stats.deletes),
            Mutation::Drop { .. } => None,
        };
        let applied = partition
            .apply(m)
            .map_err(|e| NodeError::internal(format!("checked mutation refused: {e}")))?;
        if let Some(key) = watched {
            let now = partition.get(&key);
            for o in self.observers.iter().filter(|o| o.watches(&key)) {
                o.written(&key, now);
            }
        }
        if let Some(c) = counter {
            bump(c);
        }
        Ok((applied, lsn))
    }

    /// Waits until `lsn` is durable under the node's fsync policy.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), NodeError> {
        Ok(self.storage.wait_durable(lsn).await?)
    }

    /// Sends `op` to `owner` (another shard), in call order; resolves to
    /// the future of its reply.
    pub async fn forward(&self, owner: ShardId, op: ShardOp) -> ReplyFuture {
        debug_assert_ne!(owner, self.id, "forwarding to itself");
        bump(&self.stats.forwarded_out);
        self.transport.send(owner, op).await
    }

    /// Executes an operation another shard sent (this shard owns its
    /// keys): the reply, the LSN it waits for, and the other copies a
    /// write concern waits for.
    fn execute(&self, op: ShardOp) -> (ShardReply, Option<Lsn>, Option<Acks>) {
        let mut acks = None;
        let result = match op {
            ShardOp::Get(keys) => {
                let values = keys.iter().map(|k| self.get_local(k)).collect();
                return (ShardReply::Values(values), None, None);
            }
            ShardOp::Put(key, value) => self.write(key, Some(value)),
            ShardOp::Delete(key) => self.write(key, None),
            ShardOp::Write {
                key,
                value,
                concern,
            } => {
                let done = self.write(key.clone(), value);
                if done.is_ok() {
                    acks = self
                        .writes
                        .as_ref()
                        .and_then(|w| w.copies_needed(&key, concern));
                }
                done
            }
            ShardOp::Merge(key, entry) => self.merge(key, entry),
            ShardOp::PutIfAbsent(key, value) => match self.put_if_absent(key, value) {
                Ok((held, lsn, acks)) => {
                    let held = held.as_ref().map(value_to_wire);
                    return (ShardReply::Values(vec![held]), Some(lsn), acks);
                }
                Err(e) => Err(e),
            },
            ShardOp::Digest(_) => {
                let e = NodeError::internal("a digest is scanned in a task of its own (`serve`)");
                return (ShardReply::Error(e), None, None);
            }
        };
        match result {
            Ok((Applied::Stored, lsn)) => (ShardReply::Stored, Some(lsn), acks),
            Ok((Applied::Deleted { removed } | Applied::Dropped { removed }, lsn)) => {
                (ShardReply::Deleted(removed), Some(lsn), acks)
            }
            Err(e) => {
                bump(&self.stats.errors);
                (ShardReply::Error(e), None, None)
            }
        }
    }

    /// Serves what one peer sends, for the shard's lifetime: each request
    /// is applied on arrival, in order (so one connection's writes to a
    /// key stay ordered); its reply waits for durability in its own task,
    /// so later requests are not held up.
    pub async fn serve(self: Rc<Self>, inbound: Inbound) {
        while let Some((op, responder)) = inbound.next().await {
            bump(&self.stats.forwarded_in);
            let me = self.clone();
            if let ShardOp::Digest(scope) = op {
                // A scan in slices (`scan`), beside what comes next.
                glommio::spawn_local(async move {
                    let d = me.digest(|k| (scope.0)(k)).await;
                    responder.send(ShardReply::Digest(Box::new(d))).await;
                })
                .detach();
                continue;
            }
            let (reply, lsn, acks) = self.execute(op);
            glommio::spawn_local(async move {
                let mut reply = match lsn {
                    Some(lsn) => match me.wait_durable(lsn).await {
                        Ok(()) => reply,
                        Err(e) => ShardReply::Error(e),
                    },
                    None => reply,
                };
                if let Some((barriers, need)) =
                    acks.filter(|_| !matches!(reply, ShardReply::Error(_)))
                {
                    let timeout = Duration::from_millis(NODE_REQUEST_TIMEOUT_MS);
                    if let Err(got) = crate::event::acknowledged(barriers, need, timeout).await {
                        let e = NodeError::copies_missing(got, need, NODE_REQUEST_TIMEOUT_MS);
                        reply = ShardReply::Error(e);
                    }
                }
                responder.send(reply).await;
            })
            .detach();
        }
    }

    /// Flushes and syncs the WAL (at shutdown).
    pub async fn close(&self) -> Result<(), StorageError> {
        self.storage.close().await
    }

    /// This shard's counters.
    pub fn snapshot_stats(&self) -> w::ShardStats {
        let p = self.partition.borrow();
        let st = self.storage.stats();
        let s = &self.stats;
        w::ShardStats {
            shard: self.id.0,
            live_keys: p.live_keys() as u64,
            tombstones: p.tombstones() as u64,
            gets: s.gets.get(),
            puts: s.puts.get(),
            deletes: s.deletes.get(),
            errors: s.errors.get(),
            forwarded_out: s.forwarded_out.get(),
            forwarded_in: s.forwarded_in.get(),
            connections: s.connections.get(),
            connections_refused: s.connections_refused.get(),
            last_lsn: st.last_lsn,
            durable_lsn: st.durable_lsn,
            wal_bytes: st.wal_bytes,
            snapshots: st.snapshots,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            node_forwards: s.node_forwards.get(),
            stale_epoch: s.stale_epoch.get(),
            primary_keys: 0, // the connection counts them (it knows the placement)
            // The connection of shard 0 fills in the node's cache.
            cache_keys: 0,
            cache_bytes: 0,
            cache_hits: 0,
            cache_misses: 0,
        }
    }
}

/// Lets the shard serve if `turn` began `SCAN_TURN_US` ago, then starts a
/// new turn: for long loops on a shard's thread (scans, a hand-off's
/// drops). Whether it did. Through the reactor, as a snapshot's turns
/// are: a plain yield would run the same task again first.
pub async fn turn_over(turn: &mut Instant) -> bool {
    if turn.elapsed() < Duration::from_micros(SCAN_TURN_US) {
        return false;
    }
    glommio::timer::sleep(Duration::from_micros(1)).await;
    *turn = Instant::now();
    true
}
