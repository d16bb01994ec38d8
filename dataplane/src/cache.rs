//! The node's cache of keys other nodes hold, read by its functions
//! (Cloudburst's executor cache, kept fresh by push instead of Anna's
//! periodic refresh).
//!
//! * **Filling**: a function's read of a key with no copy on this node
//!   goes to its holder as `Subscribe`; the holder answers with the value
//!   and a lease (`Leased`), and pushes the key's changes (`CacheUpdate`)
//!   until the lease ends (`leases.rs`). The value is cached for the
//!   lease, never longer: a lost push leaves a key stale for one lease at
//!   most.
//! * **Reading**: executor threads read it directly ([`NodeCache::get`]),
//!   no shard hop. A miss, an expired lease, or a value the holder would
//!   not lease goes to the holder.
//! * **Merging**: cached entries are lattice state (a `Partition`): a
//!   pushed change merges in whatever order changes and the first read
//!   arrive. A function's own write of a cached key is sent to the holder
//!   and, once stored there, merged into the cached copy (write-through:
//!   the next read stays here); a delete, or a write that failed, makes
//!   the cache forget the key (the next read fetches it again).
//! * **Bounds**: at most `--cache-mb` of keys and values (approximate:
//!   key, content and `ENTRY_OVERHEAD_BYTES` per key); past it, keys are
//!   evicted by CLOCK (second chance: a key read since it was last
//!   passed stays one more round). The holder's next push of an evicted
//!   key is answered `Evicted`, which ends its lease there.
//! * **Placement changes** empty the cache: keys may have moved, or be
//!   this node's now.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvs_core::lattice::ValueRef;
use kvs_core::partition::{value_len, Entry, EntryRef, Mutation, Partition};
use kvs_core::Value;

/// Bookkeeping counted per cached key, beyond its key and content bytes.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// The node's cache of other nodes' keys.
#[derive(Debug)]
pub(crate) struct NodeCache {
    inner: Mutex<Inner>,
    bytes_max: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Partition,
    meta: HashMap<Vec<u8>, Meta>,
    /// CLOCK's hand goes round this queue (each cached key once).
    clock: VecDeque<Vec<u8>>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

#[derive(Debug)]
struct Meta {
    expires: Instant,
    bytes: usize,
    /// Read since CLOCK's hand last passed.
    referenced: bool,
    /// Asked for, not answered yet: pushes merge in (one may overtake the
    /// answer), reads miss.
    pending: bool,
}

/// What a cache holds, and how its reads went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheStats {
    pub keys: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

fn size_of(key: &[u8], entry: Option<EntryRef<'_>>) -> usize {
    let content = match entry {
        Some(EntryRef::Live(ValueRef::Lww(_, bytes))) => bytes.len(),
        Some(EntryRef::Live(ValueRef::Other(v))) => value_len(v),
        _ => 0,
    };
    key.len() + content + ENTRY_OVERHEAD_BYTES
}

impl NodeCache {
    pub fn new(bytes_max: usize) -> NodeCache {
        NodeCache {
            inner: Mutex::new(Inner::default()),
            bytes_max,
        }
    }

    /// Whether it caches anything (`--cache-mb` above 0).
    pub fn enabled(&self) -> bool {
        self.bytes_max > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Some(value)` (`None` inside: known absent) while `key` is cached
    /// under a live lease; `None`: ask its holder.
    pub fn get(&self, key: &[u8]) -> Option<Option<Value>> {
        let mut inner = self.lock();
        let now = Instant::now();
        let live = match inner.meta.get_mut(key) {
            Some(m) if m.expires <= now => {
                inner.remove(key);
                false
            }
            Some(m) if !m.pending => {
                m.referenced = true;
                true
            }
            _ => false,
        };
        if !live {
            return None;
        }
        inner.hits += 1;
        Some(inner.entries.get(key).map(ValueRef::to_value))
    }

    /// A function's read of another node's key was not answered here: it
    /// goes to the key's holder. (Reads of this node's own keys are not
    /// misses.)
    pub fn missed(&self) {
        self.lock().misses += 1;
    }

    /// `key` is being read from its holder, who may push a change before
    /// its answer arrives: that change is kept for the answer (for
    /// `wait_ms` at most).
    pub fn expect(&self, key: &[u8], wait_ms: u64) {
        let mut inner = self.lock();
        if !inner.meta.contains_key(key) {
            let expires = Instant::now() + Duration::from_millis(wait_ms);
            inner.add(key, expires, true);
        }
    }

    /// Whether `key` is cached under a live lease (not counted as a read).
    pub fn holds(&self, key: &[u8]) -> bool {
        let now = Instant::now();
        (self.lock().meta.get(key)).is_some_and(|m| !m.pending && m.expires > now)
    }

    /// Caches what the holder answered for `key` (`None`: absent) for
    /// `lease_ms` (0: not leased, not cached), merged with whatever a push
    /// already brought.
    pub fn insert(&self, key: Vec<u8>, value: Option<Value>, lease_ms: u32) {
        let mut inner = self.lock();
        if lease_ms == 0 {
            inner.remove(&key);
            return;
        }
        let expires = Instant::now() + Duration::from_millis(u64::from(lease_ms));
        match inner.meta.get_mut(&key) {
            Some(m) => {
                m.expires = expires;
                m.pending = false;
            }
            None => inner.add(&key, expires, false),
        }
        if let Some(value) = value {
            inner.merge(&key, Entry::Live(value));
        }
        inner.resize(&key);
        inner.evict(self.bytes_max);
    }

    /// Merges a change the holder pushed, if `key` is cached; `false`: it
    /// is not (evicted, expired, never read).
    pub fn update(&self, key: &[u8], entry: Entry) -> bool {
        let mut inner = self.lock();
        if !inner.meta.contains_key(key) {
            return false;
        }
        inner.merge(key, entry);
        inner.resize(key);
        inner.evict(self.bytes_max);
        true
    }

    /// Drops `key` (this node just deleted it at its holder, or failed to
    /// write it).
    pub fn forget(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// Drops everything (the placement changed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        let (hits, misses) = (inner.hits, inner.misses);
        *inner = Inner {
            hits,
            misses,
            ..Inner::default()
        };
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            keys: inner.meta.len(),
            bytes: inner.bytes,
            hits: inner.hits,
            misses: inner.misses,
        }
    }
}

impl Inner {
    fn add(&mut self, key: &[u8], expires: Instant, pending: bool) {
        let meta = Meta {
            expires,
            bytes: 0,
            referenced: false,
            pending,
        };
        self.meta.insert(key.to_vec(), meta);
        self.clock.push_back(key.to_vec());
    }

    fn merge(&mut self, key: &[u8], entry: Entry) {
        let m = match entry {
            Entry::Live(value) => Mutation::Put {
                key: key.to_vec(),
                value,
            },
            Entry::Tombstone(ts) => Mutation::Delete {
                key: key.to_vec(),
                ts,
            },
        };
        // A value of another lattice type than the cached one: the
        // holder's is what counts.
        if self.entries.check(&m).is_err() {
            let _ = self.entries.apply(Mutation::Drop { key: key.to_vec() });
        }
        let _ = self.entries.apply(m);
    }

    /// Recounts `key`'s bytes.
    fn resize(&mut self, key: &[u8]) {
        let now = size_of(key, self.entries.entry(key));
        if let Some(m) = self.meta.get_mut(key) {
            self.bytes = self.bytes - m.bytes + now;
            m.bytes = now;
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(m) = self.meta.remove(key) {
            self.bytes -= m.bytes;
            let _ = self.entries.apply(Mutation::Drop { key: key.to_vec() });
        }
        // Its place in `clock` goes when the hand reaches it.
    }

    /// CLOCK: evicts until within `bytes_max`.
    fn evict(&mut self, bytes_max: usize) {
        while self.bytes > bytes_max {
            let Some(key) = self.clock.pop_front() else {
                return;
            };
            match self.meta.get_mut(&key) {
                None => {} // removed already
                Some(m) if m.referenced => {
                    m.referenced = false;
                    self.clock.push_back(key);
                }
                Some(_) => self.remove(&key),
            }
        }
        // Keys removed otherwise leave their place behind: keep the queue
        // within twice the keys.
        if self.clock.len() > 2 * self.meta.len() + 64 {
            let meta = &self.meta;
            self.clock.retain(|k| meta.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_core::lattice::{Lww, Timestamp};

    fn lww(clock: u64, v: &str) -> Value {
        Value::Lww(Lww::new(
            Timestamp { clock, writer: 1 },
            v.as_bytes().to_vec(),
        ))
    }

    fn text(v: Option<Option<Value>>) -> Option<Option<String>> {
        v.map(|v| {
            v.map(|v| match v {
                Value::Lww(l) => String::from_utf8(l.value().to_vec()).unwrap(),
                other => panic!("{other:?}"),
            })
        })
    }

    #[test]
    fn pushes_merge_in_any_order_with_the_first_read() {
        let c = NodeCache::new(1 << 20);
        assert_eq!(c.get(b"k"), None, "nothing cached yet");
        // A push for a key not cached is not taken.
        assert!(!c.update(b"k", Entry::Live(lww(5, "new"))));
        c.insert(b"k".to_vec(), Some(lww(3, "old")), 1000);
        assert!(c.holds(b"k") && !c.holds(b"j"));
        assert_eq!(text(c.get(b"k")), Some(Some("old".into())));
        // A push that overtakes the answer to a read is kept for it.
        c.expect(b"j", 1000);
        assert_eq!(c.get(b"j"), None, "asked, not answered: a miss");
        assert!(c.update(b"j", Entry::Live(lww(5, "pushed"))));
        c.insert(b"j".to_vec(), Some(lww(3, "answered")), 1000);
        assert_eq!(text(c.get(b"j")), Some(Some("pushed".into())));
        c.forget(b"j");
        assert!(c.update(b"k", Entry::Live(lww(5, "new"))));
        // A read that raced the push and answers later merges, not
        // replaces.
        c.insert(b"k".to_vec(), Some(lww(3, "old")), 1000);
        assert_eq!(text(c.get(b"k")), Some(Some("new".into())));
        // A delete pushed: known absent.
        assert!(c.update(
            b"k",
            Entry::Tombstone(Timestamp {
                clock: 9,
                writer: 1
            })
        ));
        assert_eq!(text(c.get(b"k")), Some(None));
        // Absent keys are cached too.
        c.insert(b"gone".to_vec(), None, 1000);
        assert_eq!(text(c.get(b"gone")), Some(None));
        c.forget(b"gone");
        assert_eq!(c.get(b"gone"), None);
        let s = c.stats();
        assert_eq!((s.keys, s.hits), (1, 5));
    }

    #[test]
    fn a_lease_ends_the_cached_value_and_no_lease_caches_nothing() {
        let c = NodeCache::new(1 << 20);
        c.insert(b"k".to_vec(), Some(lww(1, "v")), 0);
        assert_eq!(c.get(b"k"), None, "not leased: not cached");
        c.insert(b"k".to_vec(), Some(lww(1, "v")), 20);
        assert!(c.get(b"k").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.get(b"k"), None, "expired");
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn the_cache_stays_within_its_bytes_and_keeps_what_is_read() {
        let value = "x".repeat(1000);
        let per_key = size_of(b"k-00", Some(Entry::Live(lww(1, &value)).view()));
        let c = NodeCache::new(10 * per_key);
        c.insert(b"hot".to_vec(), Some(lww(1, &value)), 60_000);
        for i in 0..100 {
            let _ = c.get(b"hot");
            c.insert(
                format!("k-{i:02}").into_bytes(),
                Some(lww(1, &value)),
                60_000,
            );
            assert!(c.stats().bytes <= 10 * per_key, "over its bound at {i}");
        }
        assert!(c.get(b"hot").is_some(), "a key read every round stays");
        assert!(c.get(b"k-00").is_none(), "an old key unread went");
        assert!(c.get(b"k-99").is_some(), "the newest stays");
        c.clear();
        assert_eq!(c.stats().keys, 0);
    }
}
