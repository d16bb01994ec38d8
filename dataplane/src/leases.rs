//! Leases on this node's keys held by other nodes' caches (`cache.rs`),
//! and the pushes that keep those caches fresh.
//!
//! * **Granting**: a `Subscribe` for keys this node holds grants the
//!   asking member a lease of `CACHE_LEASE_MS` on each ([`Leases`], one
//!   table per node: a read may arrive on any shard). Past
//!   `LEASES_PER_NODE_MAX` (key, node) pairs, expired ones are swept; if
//!   none is, the read is answered without a lease (`lease_ms` 0: the
//!   asker does not cache it).
//! * **Pushing**: every change of a leased key on its shard (a write, a
//!   push from another copy, a hand-off) queues it for its subscribers
//!   ([`LeasePusher`], the shard's `WriteObserver`); every
//!   `PUSH_INTERVAL_MS` the shard sends each subscriber the keys' current
//!   state as `CacheUpdate`, one batch in flight per subscriber. A batch
//!   that fails is not sent again: the lease bounds how long the cache
//!   may miss it.
//! * **Ending**: a lease ends at its time (the asker renews it by reading
//!   again after that), or when the asker's cache answers a push with
//!   `Evicted`: it no longer holds the key. Nothing is logged: leases are
//!   memory only, and a restarted node has none. Its subscribers are not
//!   left stale: it comes back as a new incarnation, a new view, and every
//!   member's cache starts over at a new view (`cache.rs`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvs_core::lattice::ValueRef;
use kvs_core::partition::Partition;
use wire::message as w;

use crate::event::Event;
use crate::limits::{CACHE_LEASE_MS, LEASES_PER_NODE_MAX, PUSH_INTERVAL_MS};
use crate::links::Links;
use crate::shard::{Shard, WriteObserver};

/// Per key, the members whose caches hold it, and until when.
type Table = HashMap<Vec<u8>, Vec<(SocketAddr, Instant)>>;

/// The node's leases.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    table: Mutex<Table>,
    /// (key, member) pairs in `table`, readable without the lock.
    pairs: AtomicUsize,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases `key` to the member at `to`; returns the lease's length in
    /// ms (0: the table is full of live leases).
    pub fn grant(&self, key: &[u8], to: SocketAddr) -> u32 {
        let now = Instant::now();
        let until = now + Duration::from_millis(u64::from(CACHE_LEASE_MS));
        let mut table = self.lock();
        if let Some(l) = table
            .get_mut(key)
            .and_then(|subs| subs.iter_mut().find(|(a, _)| *a == to))
        {
            l.1 = until;
            return CACHE_LEASE_MS;
        }
        if self.pairs.load(Ordering::Relaxed) >= LEASES_PER_NODE_MAX {
            let mut left = 0;
            table.retain(|_, subs| {
                subs.retain(|(_, t)| *t > now);
                left += subs.len();
                !subs.is_empty()
            });
            self.pairs.store(left, Ordering::Relaxed);
            if left >= LEASES_PER_NODE_MAX {
                return 0;
            }
        }
        table.entry(key.to_vec()).or_default().push((to, until));
        self.pairs.fetch_add(1, Ordering::Relaxed);
        CACHE_LEASE_MS
    }

    /// Whether any member holds a lease on `key` (cheap while none holds
    /// any).
    fn leased(&self, key: &[u8]) -> bool {
        self.pairs.load(Ordering::Relaxed) > 0 && self.lock().contains_key(key)
    }

    /// Ends the lease of the member at `to` on `key`.
    fn end(&self, key: &[u8], to: SocketAddr) {
        let mut table = self.lock();
        let Some(subs) = table.get_mut(key) else {
            return;
        };
        let before = subs.len();
        subs.retain(|(a, _)| *a != to);
        self.pairs.fetch_sub(before - subs.len(), Ordering::Relaxed);
        if subs.is_empty() {
            table.remove(key);
        }
    }

    /// The members whose lease on `key` runs now (expired ones go).
    fn subscribers(&self, key: &[u8]) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut table = self.lock();
        let Some(subs) = table.get_mut(key) else {
            return Vec::new();
        };
        let before = subs.len();
        subs.retain(|(_, t)| *t > now);
        let live: Vec<SocketAddr> = subs.iter().map(|(a, _)| *a).collect();
        self.pairs.fetch_sub(before - live.len(), Ordering::Relaxed);
        if live.is_empty() {
            table.remove(key);
        }
        live
    }
}

/// One shard's queue of leased keys that changed, per subscriber.
#[derive(Debug)]
pub(crate) struct LeasePusher {
    leases: Arc<Leases>,
    pending: RefCell<HashMap<SocketAddr, BTreeSet<Vec<u8>>>>,
    in_flight: RefCell<HashSet<SocketAddr>>,
    wake: Event,
}

impl LeasePusher {
    pub fn new(leases: Arc<Leases>) -> LeasePusher {
        LeasePusher {
            leases,
            pending: RefCell::default(),
            in_flight: RefCell::default(),
            wake: Event::default(),
        }
    }
}

impl WriteObserver for LeasePusher {
    fn watches(&self, key: &[u8]) -> bool {
        self.leases.leased(key)
    }

    fn written(&self, key: &[u8], _now: Option<ValueRef<'_>>) {
        let subs = self.leases.subscribers(key);
        if subs.is_empty() {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        for s in subs {
            pending.entry(s).or_default().insert(key.to_vec());
        }
        self.wake.pulse();
    }

    fn rebuilt(&self, _partition: &Partition) {}
}

/// Sends the changed keys to their subscribers, for as long as the shard
/// runs.
pub(crate) async fn run(shard: Rc<Shard>, links: Rc<Links>, pusher: Rc<LeasePusher>) {
    loop {
        while pusher.pending.borrow().is_empty() {
            pusher.wake.wait().await;
        }
        // Let a few more writes join the batch.
        glommio::timer::sleep(Duration::from_millis(PUSH_INTERVAL_MS)).await;
        let ready: Vec<(SocketAddr, BTreeSet<Vec<u8>>)> = {
            let in_flight = pusher.in_flight.borrow();
            let mut pending = pusher.pending.borrow_mut();
            let to: Vec<SocketAddr> = (pending.keys())
                .filter(|a| !in_flight.contains(a))
                .copied()
                .collect();
            to.into_iter()
                .filter_map(|a| pending.remove(&a).map(|keys| (a, keys)))
                .collect()
        };
        for (to, keys) in ready {
            pusher.in_flight.borrow_mut().insert(to);
            let (shard, links, pusher) = (shard.clone(), links.clone(), pusher.clone());
            glommio::spawn_local(async move {
                if let Err(why) = push(&shard, &links, &pusher.leases, to, &keys).await {
                    log::debug!("{}: cache update to {to} failed: {why}", shard.id());
                }
                pusher.in_flight.borrow_mut().remove(&to);
                pusher.wake.pulse();
            })
            .detach();
        }
        if !pusher.pending.borrow().is_empty() {
            // Only subscribers with a batch in flight are left: wait for one.
            pusher.wake.wait().await;
        }
    }
}

/// Sends the current state of `keys` to the cache at `to`, in batches.
async fn push(
    shard: &Shard,
    links: &Links,
    leases: &Leases,
    to: SocketAddr,
    keys: &BTreeSet<Vec<u8>>,
) -> Result<(), String> {
    for entries in crate::replicate::batches(shard, keys) {
        let req = w::Request::CacheUpdate(w::MergeBatch { entries });
        match links.call(to, &req).await {
            w::Response::Stored => {}
            w::Response::Evicted(gone) => {
                for key in gone {
                    leases.end(&key, to);
                }
            }
            w::Response::Error(e) => return Err(String::from_utf8_lossy(&e.message).into_owned()),
            other => return Err(format!("unexpected reply {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_not_doubled_and_ends_on_time() {
        let leases = Leases::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(!leases.leased(b"k"));
        assert_eq!(leases.grant(b"k", a), CACHE_LEASE_MS);
        assert_eq!(leases.grant(b"k", a), CACHE_LEASE_MS);
        assert_eq!(leases.grant(b"k", b), CACHE_LEASE_MS);
        assert!(leases.leased(b"k"));
        assert_eq!(leases.subscribers(b"k"), vec![a, b]);
        assert_eq!(leases.pairs.load(Ordering::Relaxed), 2);
        // Evicted at `a`: its lease ends, `b`'s runs on.
        leases.end(b"k", a);
        assert_eq!(leases.subscribers(b"k"), vec![b]);
        assert_eq!(leases.grant(b"k", a), CACHE_LEASE_MS);
        // Expired: gone at the next look.
        for subs in leases.lock().values_mut() {
            for s in subs.iter_mut() {
                s.1 = Instant::now();
            }
        }
        assert!(leases.subscribers(b"k").is_empty());
        assert!(!leases.leased(b"k"));
        assert_eq!(leases.pairs.load(Ordering::Relaxed), 0);
    }
}
