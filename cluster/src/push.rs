//! Replication pushes (`--replication R > 1`): the queues of keys a shard
//! owes each other holder, and the sequence numbers a write concern waits
//! on. A written key goes into one queue per other holder — a set: a key
//! written many times is pushed once, with its state read at the moment of
//! sending. Per holder, `seq` counts the writes queued so far and `acked`
//! the writes covered by an acknowledged batch; a write waits for its
//! holders' `acked` to pass the `seq` it was queued under.
//!
//! The caller sends a queue ([`PushQueues::take`]) as acknowledged batches,
//! one send in flight per holder, and reports [`PushQueues::sent`] or
//! [`PushQueues::failed`]; a failed queue is queued again and paused
//! (`PUSH_PAUSE_MIN_MS` doubling to `PUSH_PAUSE_MAX_MS`). A holder that
//! left the placement is [`forgotten`](PushQueues::forget): the hand-off's
//! next round gives the new holders everything, and its waiters are
//! dropped (their writes do not count it). Time is passed in (`now_ms`,
//! any monotonic clock).
//!
//! Pushes start only from writes, never from what a push or a hand-off
//! merged in: replicas do not echo each other. What a restart loses from
//! the queues, the hand-off's first round after the start sends again.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// The first pause after a failed push; it doubles at each failure.
pub const PUSH_PAUSE_MIN_MS: u64 = 100;
/// The longest pause after failed pushes.
pub const PUSH_PAUSE_MAX_MS: u64 = 5_000;

/// Per holder `H`, the keys to push and the waiters `W` of write concerns.
#[derive(Debug)]
pub struct PushQueues<H, W> {
    queues: HashMap<H, Queue<W>>,
}

#[derive(Debug)]
struct Queue<W> {
    keys: BTreeSet<Vec<u8>>,
    seq: u64,
    acked: u64,
    waiters: Vec<(u64, W)>,
    paused_until_ms: Option<u64>,
    pause_ms: u64,
}

impl<W> Default for Queue<W> {
    fn default() -> Self {
        Queue {
            keys: BTreeSet::new(),
            seq: 0,
            acked: 0,
            waiters: Vec::new(),
            paused_until_ms: None,
            pause_ms: 0,
        }
    }
}

/// What to do with one holder's queue now.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Nothing queued.
    Idle,
    /// Paused after a failure.
    Paused,
    /// Send these keys; report `seq` back.
    Send { keys: BTreeSet<Vec<u8>>, seq: u64 },
}

impl<H: Copy + Eq + Hash, W> Default for PushQueues<H, W> {
    fn default() -> Self {
        PushQueues {
            queues: HashMap::new(),
        }
    }
}

impl<H: Copy + Eq + Hash, W> PushQueues<H, W> {
    /// Queues `key`, just written here, for each of its `holders` but
    /// `me`. Whether anything was queued.
    pub fn written(&mut self, key: &[u8], holders: &[H], me: Option<H>) -> bool {
        let mut queued = false;
        for &h in holders {
            if Some(h) == me {
                continue;
            }
            let q = self.queues.entry(h).or_default();
            q.keys.insert(key.to_vec());
            q.seq += 1;
            queued = true;
        }
        queued
    }

    /// Registers `waiter` for every write queued for `holder` so far to be
    /// acknowledged; gives it back when they already are.
    pub fn barrier(&mut self, holder: H, waiter: W) -> Option<W> {
        match self.queues.get_mut(&holder) {
            Some(q) if q.acked < q.seq => {
                q.waiters.push((q.seq, waiter));
                None
            }
            _ => Some(waiter),
        }
    }

    /// Whether any queue holds keys.
    #[must_use]
    pub fn has_work(&self) -> bool {
        self.queues.values().any(|q| !q.keys.is_empty())
    }

    /// The holders with a queue.
    #[must_use]
    pub fn holders(&self) -> Vec<H> {
        self.queues.keys().copied().collect()
    }

    /// Drops `holder`'s queue (it left the placement).
    pub fn forget(&mut self, holder: H) {
        self.queues.remove(&holder);
    }

    /// Takes `holder`'s queue to send, unless it is empty or paused.
    pub fn take(&mut self, holder: H, now_ms: u64) -> Take {
        let Some(q) = self.queues.get_mut(&holder) else {
            return Take::Idle;
        };
        if q.paused_until_ms.is_some_and(|t| now_ms < t) {
            return Take::Paused;
        }
        if q.keys.is_empty() {
            return Take::Idle;
        }
        Take::Send {
            keys: std::mem::take(&mut q.keys),
            seq: q.seq,
        }
    }

    /// A send taken at `seq` was acknowledged: the waiters it satisfies.
    pub fn sent(&mut self, holder: H, seq: u64) -> Vec<W> {
        let Some(q) = self.queues.get_mut(&holder) else {
            return Vec::new();
        };
        q.acked = q.acked.max(seq);
        q.pause_ms = 0;
        q.paused_until_ms = None;
        let acked = q.acked;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut q.waiters)
            .into_iter()
            .partition(|(s, _)| *s <= acked);
        q.waiters = waiting;
        done.into_iter().map(|(_, w)| w).collect()
    }

    /// A send of `keys` failed: they are queued again, and the queue
    /// pauses.
    pub fn failed(&mut self, holder: H, keys: BTreeSet<Vec<u8>>, now_ms: u64) {
        let Some(q) = self.queues.get_mut(&holder) else {
            return;
        };
        q.keys.extend(keys);
        q.pause_ms = (q.pause_ms * 2).clamp(PUSH_PAUSE_MIN_MS, PUSH_PAUSE_MAX_MS);
        q.paused_until_ms = Some(now_ms + q.pause_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> BTreeSet<Vec<u8>> {
        ks.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_key_written_twice_is_pushed_once_and_waiters_wait_for_their_seq() {
        let mut q: PushQueues<u8, &str> = PushQueues::default();
        assert!(q.written(b"a", &[1, 2], Some(1)));
        assert!(q.written(b"a", &[1, 2], Some(1)));
        assert!(!q.written(b"b", &[1], Some(1)), "only this node holds b");
        assert_eq!(q.barrier(2, "first"), None);
        let Take::Send { keys: sent, seq } = q.take(2, 0) else {
            panic!("nothing to send");
        };
        assert_eq!((sent, seq), (keys(&["a"]), 2));
        // A write after the take needs a later acknowledgement.
        q.written(b"c", &[2], Some(1));
        assert_eq!(q.barrier(2, "second"), None);
        assert_eq!(q.sent(2, seq), vec!["first"]);
        assert_eq!(
            q.take(2, 0),
            Take::Send {
                keys: keys(&["c"]),
                seq: 3
            }
        );
        assert_eq!(q.sent(2, 3), vec!["second"]);
        assert_eq!(q.barrier(2, "acked"), Some("acked"));
        assert_eq!(q.barrier(9, "unknown"), Some("unknown"));
    }

    #[test]
    fn a_failed_send_is_queued_again_and_pauses_longer_each_time() {
        let mut q: PushQueues<u8, ()> = PushQueues::default();
        q.written(b"a", &[2], None);
        let Take::Send { keys: sent, .. } = q.take(2, 0) else {
            panic!("nothing to send");
        };
        q.failed(2, sent, 1_000);
        assert_eq!(q.take(2, 1_000 + PUSH_PAUSE_MIN_MS - 1), Take::Paused);
        let Take::Send { keys: again, .. } = q.take(2, 1_000 + PUSH_PAUSE_MIN_MS) else {
            panic!("not queued again");
        };
        q.failed(2, again, 2_000);
        assert_eq!(q.take(2, 2_000 + PUSH_PAUSE_MIN_MS), Take::Paused);
        assert!(matches!(
            q.take(2, 2_000 + 2 * PUSH_PAUSE_MIN_MS),
            Take::Send { .. }
        ));
    }

    #[test]
    fn a_forgotten_holder_drops_its_waiters() {
        let mut q: PushQueues<u8, u32> = PushQueues::default();
        q.written(b"a", &[2, 3], None);
        assert_eq!(q.barrier(2, 7), None);
        q.forget(2);
        assert_eq!(q.holders(), vec![3]);
        assert!(q.sent(2, 1).is_empty());
        assert_eq!(q.take(2, 0), Take::Idle);
    }
}
