//! Replication (`--replication R > 1`): every write a shard applies is
//! pushed to the key's other holders. The key goes into one queue per
//! holder (a set: a key written many times is pushed once, with the value
//! merged here at the moment of sending); every `PUSH_INTERVAL_MS` the
//! shard's pusher sends each queue as `Merge` batches, sequence-numbered
//! per holder (`seq`: writes queued so far; `acked`: writes covered by an
//! answered batch), one batch in flight per holder. A batch that fails is
//! queued again and retried after a pause; a holder that left the
//! placement loses its queue (the hand-off's next round gives the new
//! holders everything). A write with a write concern above 1 waits for
//! its holders' `acked` to pass the `seq` it was queued under.
//!
//! Pushes start only from writes (`Shard::write`), never from what a push
//! or a hand-off merged in: replicas do not echo each other.
//! What a restart loses from the queues, the hand-off's first round after
//! the start sends again (it pushes every key to its other holders).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use kvs_core::partition::Partition;
use kvs_core::Value;
use wire::message as w;

use crate::event::Event;
use crate::limits::{HANDOFF_BATCH_KEYS, PUSH_INTERVAL_MS};
use crate::links::Links;
use crate::members::Members;
use crate::shard::{Shard, WriteObserver};

/// One shard's queues of keys to push.
pub(crate) struct Pushes {
    members: Arc<Members>,
    queues: RefCell<HashMap<SocketAddr, Queue>>,
    wake: Event,
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pushes({} holders)", self.queues.borrow().len())
    }
}

#[derive(Default)]
struct Queue {
    keys: BTreeSet<Vec<u8>>,
    /// Writes queued for this holder so far.
    seq: u64,
    /// Writes covered by an acknowledged batch.
    acked: u64,
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// No sends before this (after a failure).
    paused_until: Option<Instant>,
    pause_ms: u64,
}

impl Pushes {
    pub fn new(members: Arc<Members>) -> Pushes {
        Pushes {
            members,
            queues: RefCell::new(HashMap::new()),
            wake: Event::default(),
        }
    }

    /// Resolves once every write queued for `holder` so far is
    /// acknowledged by it (at once if nothing is queued).
    pub fn barrier(&self, holder: SocketAddr) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut queues = self.queues.borrow_mut();
        match queues.get_mut(&holder) {
            Some(q) if q.acked < q.seq => q.waiters.push((q.seq, tx)),
            _ => {
                let _ = tx.send(());
            }
        }
        rx
    }
}

impl WriteObserver for Pushes {
    fn watches(&self, key: &[u8]) -> bool {
        !key.starts_with(b"squall:")
    }

    fn written(&self, key: &[u8], _now: Option<&Value>) {
        let placement = self.members.placement();
        if placement.replication() < 2 {
            return;
        }
        let me = placement.my_addr();
        let mut queued = false;
        let mut queues = self.queues.borrow_mut();
        for holder in placement.holders(key) {
            if Some(holder) == me {
                continue;
            }
            let q = queues.entry(holder).or_default();
            q.keys.insert(key.to_vec());
            q.seq += 1;
            queued = true;
        }
        if queued {
            self.wake.pulse();
        }
    }

    fn rebuilt(&self, _partition: &Partition) {}
}

/// Sends the queues, for as long as the shard runs.
pub(crate) async fn run(shard: Rc<Shard>, links: Rc<Links>, pushes: Rc<Pushes>) {
    loop {
        while !pushes.queues.borrow().values().any(|q| !q.keys.is_empty()) {
            pushes.wake.wait().await;
        }
        // Let a few more writes join the batch.
        glommio::timer::sleep(Duration::from_millis(PUSH_INTERVAL_MS)).await;
        let holders: Vec<SocketAddr> = pushes.queues.borrow().keys().copied().collect();
        let placement = pushes.members.placement();
        let mut any_paused = false;
        for holder in holders {
            if !placement.holds_node(holder) {
                // Gone from the view: the hand-off covers its keys now.
                pushes.queues.borrow_mut().remove(&holder);
                continue;
            }
            let (keys, seq) = {
                let mut queues = pushes.queues.borrow_mut();
                let Some(q) = queues.get_mut(&holder) else {
                    continue;
                };
                if q.paused_until.is_some_and(|t| Instant::now() < t) {
                    any_paused = true;
                    continue;
                }
                (std::mem::take(&mut q.keys), q.seq)
            };
            if keys.is_empty() {
                continue;
            }
            let sent = push(&shard, &links, holder, &keys).await;
            let mut queues = pushes.queues.borrow_mut();
            let Some(q) = queues.get_mut(&holder) else {
                continue;
            };
            match sent {
                Ok(()) => {
                    q.acked = q.acked.max(seq);
                    q.pause_ms = 0;
                    q.paused_until = None;
                    let acked = q.acked;
                    let (done, waiting) = std::mem::take(&mut q.waiters)
                        .into_iter()
                        .partition(|(s, _)| *s <= acked);
                    q.waiters = waiting;
                    for (_, tx) in done {
                        let _ = tx.send(());
                    }
                }
                Err(why) => {
                    q.keys.extend(keys);
                    q.pause_ms = (q.pause_ms * 2).clamp(PUSH_INTERVAL_MS * 50, 5_000);
                    q.paused_until = Some(Instant::now() + Duration::from_millis(q.pause_ms));
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
    let keys: Vec<&Vec<u8>> = keys.iter().collect();
    for chunk in keys.chunks(HANDOFF_BATCH_KEYS) {
        let entries: Vec<w::MergeEntry> = chunk
            .iter()
            .filter_map(|k| {
                let entry = shard.entry(k)?;
                Some(crate::convert::entry_to_wire(k, &entry))
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        links.merge(holder, entries).await.map_err(|e| e.message)?;
    }
    Ok(())
}

/// Counts acknowledgements for a write concern: resolves once `need` of
/// `barriers` resolved, or fails at `deadline` with how many did.
pub(crate) async fn acknowledged(
    barriers: Vec<oneshot::Receiver<()>>,
    need: usize,
    timeout: Duration,
) -> Result<(), usize> {
    let got = Rc::new(Cell::new(0usize));
    let done = Rc::new(Event::default());
    for b in barriers {
        let (got, done) = (got.clone(), done.clone());
        glommio::spawn_local(async move {
            if b.await.is_ok() {
                got.set(got.get() + 1);
                done.pulse();
            }
        })
        .detach();
    }
    let deadline = Instant::now() + timeout;
    while got.get() < need {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(got.get());
        }
        let wait = done.wait();
        futures_lite::future::or(wait, glommio::timer::sleep(left)).await;
    }
    Ok(())
}
