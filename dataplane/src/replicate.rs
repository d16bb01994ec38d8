//! Replication (`--replication R > 1`): every write a shard applies is
//! pushed to the key's other holders. The queues, their sequence numbers
//! and pauses are `cluster::push`'s (its doc says how); here, every
//! `PUSH_INTERVAL_MS` the shard's pusher sends each holder's queue as
//! `Merge` batches of the keys' current state, one batch in flight per
//! holder, and a write with a write concern above 1 waits on barriers.
//! Pushes run for keys with copies of their own (`squall:replicas:<key>`,
//! mirrored into the placement by [`CopiesMirror`]) even with
//! `--replication 1`, and for the keys every member holds (those settings,
//! function and DAG registrations: `members::on_every_member`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::push::{PushQueues, Take};
use futures_channel::oneshot;
use kvs_core::lattice::ValueRef;
use kvs_core::partition::Partition;
use wire::message as w;

use crate::concern::WriteConcern;
use crate::event::Event;
use crate::limits::{HANDOFF_BATCH_KEYS, PUSH_INTERVAL_MS};
use crate::links::Links;
use crate::members::{copies_of, is_replicas_key, Members, Placement};
use crate::shard::{Acks, Shard, WriteObserver};

/// One shard's queues of keys to push.
pub(crate) struct Pushes {
    members: Arc<Members>,
    /// The placement as of the last write (refreshed when the node's moved
    /// on: one atomic load per write otherwise).
    placement: RefCell<Arc<Placement>>,
    queues: RefCell<PushQueues<SocketAddr, oneshot::Sender<()>>>,
    wake: Event,
    /// The queues' clock starts here.
    started: Instant,
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pushes({} holders)",
            self.queues.borrow().holders().len()
        )
    }
}

impl Pushes {
    pub fn new(members: Arc<Members>) -> Pushes {
        Pushes {
            placement: RefCell::new(members.placement()),
            members,
            queues: RefCell::new(PushQueues::default()),
            wake: Event::default(),
            started: Instant::now(),
        }
    }

    /// Resolves once every write queued for `holder` so far is
    /// acknowledged by it (at once if nothing is queued).
    pub fn barrier(&self, holder: SocketAddr) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Some(tx) = self.queues.borrow_mut().barrier(holder, tx) {
            let _ = tx.send(());
        }
        rx
    }

    /// The placement now (this shard's copy, refreshed when the node's has
    /// moved on).
    fn current(&self) -> std::cell::Ref<'_, Arc<Placement>> {
        if self.placement.borrow().version != self.members.version() {
            *self.placement.borrow_mut() = self.members.placement();
        }
        self.placement.borrow()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl WriteObserver for Pushes {
    /// Cheap where nothing is replicated (a lone node, one copy of every
    /// key): one atomic load, no ring lookup.
    fn watches(&self, key: &[u8]) -> bool {
        self.current().may_push(key)
    }

    fn copies_needed(&self, key: &[u8], concern: WriteConcern) -> Option<Acks> {
        if concern == WriteConcern::One {
            return None;
        }
        let placement = self.current();
        let holders = placement.holders(key);
        let need = concern.needed(holders.len()).saturating_sub(1);
        if need == 0 {
            return None;
        }
        let me = placement.my_addr();
        let barriers = holders
            .into_iter()
            .filter(|h| Some(*h) != me)
            .map(|h| self.barrier(h))
            .collect();
        Some((barriers, need))
    }

    fn written(&self, key: &[u8], _now: Option<ValueRef<'_>>) {
        let placement = self.placement.borrow();
        let holders = placement.holders(key);
        if self
            .queues
            .borrow_mut()
            .written(key, &holders, placement.my_addr())
        {
            self.wake.pulse();
        }
    }

    fn rebuilt(&self, _partition: &Partition) {}
}

/// Keeps the node's per-key copies (`Members::set_copies`) equal to the
/// `squall:replicas:<key>` keys this shard stores, however they were
/// written (a request here, a push or a hand-off from another node).
#[derive(Debug)]
pub(crate) struct CopiesMirror {
    pub members: Arc<Members>,
}

impl CopiesMirror {
    /// At start-up: the settings the shard recovered.
    pub fn load(&self, partition: &Partition) {
        let prefix = wire::REPLICAS_KEY_PREFIX.as_bytes();
        for key in partition.live_keys_with_prefix(prefix) {
            self.written(key, partition.get(key));
        }
    }
}

impl WriteObserver for CopiesMirror {
    fn watches(&self, key: &[u8]) -> bool {
        is_replicas_key(key)
    }

    fn written(&self, key: &[u8], now: Option<ValueRef<'_>>) {
        let target = &key[wire::REPLICAS_KEY_PREFIX.len()..];
        match now.map(|v| copies_of(key, &v.to_value())) {
            None => self.members.set_copies(target, None),
            Some(Ok((_, n))) => self.members.set_copies(target, Some(n)),
            Some(Err(why)) => log::warn!("per-key copies ignored: {why}"),
        }
    }

    fn rebuilt(&self, partition: &Partition) {
        self.load(partition);
    }
}

/// Sends the queues, for as long as the shard runs.
pub(crate) async fn run(shard: Rc<Shard>, links: Rc<Links>, pushes: Rc<Pushes>) {
    loop {
        while !pushes.queues.borrow().has_work() {
            pushes.wake.wait().await;
        }
        // Let a few more writes join the batch.
        glommio::timer::sleep(Duration::from_millis(PUSH_INTERVAL_MS)).await;
        let holders = pushes.queues.borrow().holders();
        let placement = pushes.members.placement();
        let mut any_paused = false;
        for holder in holders {
            if !placement.holds_node(holder) {
                // Gone from the view: the hand-off covers its keys now.
                pushes.queues.borrow_mut().forget(holder);
                continue;
            }
            let taken = pushes.queues.borrow_mut().take(holder, pushes.now_ms());
            let (keys, seq) = match taken {
                Take::Idle => continue,
                Take::Paused => {
                    any_paused = true;
                    continue;
                }
                Take::Send { keys, seq } => (keys, seq),
            };
            let sent = push(&shard, &links, holder, &keys).await;
            let mut queues = pushes.queues.borrow_mut();
            match sent {
                Ok(()) => {
                    for tx in queues.sent(holder, seq) {
                        let _ = tx.send(());
                    }
                }
                Err(why) => {
                    queues.failed(holder, keys, pushes.now_ms());
                    any_paused = true;
                    log::debug!("{}: push to {holder} failed: {why}", shard.id());
                }
            }
        }
        if any_paused {
            glommio::timer::sleep(Duration::from_millis(PUSH_INTERVAL_MS * 10)).await;
        }
    }
}

/// Sends the current state of `keys` to `holder`, in batches.
async fn push(
    shard: &Shard,
    links: &Links,
    holder: SocketAddr,
    keys: &BTreeSet<Vec<u8>>,
) -> Result<(), String> {
    for entries in batches(shard, keys) {
        links.merge(holder, entries).await.map_err(|e| e.message)?;
    }
    Ok(())
}

/// The current state of `keys` on `shard` (those it has an entry for), as
/// batches of at most `HANDOFF_BATCH_KEYS` entries.
pub(crate) fn batches(shard: &Shard, keys: &BTreeSet<Vec<u8>>) -> Vec<Vec<w::MergeEntry>> {
    let keys: Vec<&Vec<u8>> = keys.iter().collect();
    keys.chunks(HANDOFF_BATCH_KEYS)
        .map(|chunk| {
            (chunk.iter())
                .filter_map(|k| Some(crate::convert::entry_to_wire(k, &shard.entry(k)?)))
                .collect::<Vec<_>>()
        })
        .filter(|entries| !entries.is_empty())
        .collect()
}
