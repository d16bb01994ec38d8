//! A DAG run's session: its consistency mode, and what the mode keeps.
//!
//! Every store operation of a run — reading its `Ref` arguments, and each
//! `get`/`put` its functions make — goes through its session's store
//! ([`Session::over`]):
//!
//! * [`Consistency::Lww`] (the default): straight to the node's store; each
//!   read sees the newest version the node's copy or cache has.
//! * [`Consistency::Dsrr`] (distributed-session repeatable read): the first
//!   read of a key in the run pins the version found (no value included);
//!   every later read of that key by any function of the run returns the
//!   pinned version — unless the run itself wrote the key since: then its
//!   own latest write (merged into the pin for merge lattices; an LWW write
//!   replaces it). Writes still go to the store at once. Pins live as long
//!   as the run (a re-run or a continuation starts a new session).
//!
//! A session's metadata — what would travel with its triggers: each pinned
//! key and its version, `key bytes + VERSION_BYTES` per key — is bounded by
//! [`SESSION_BYTES_MAX`]: a read or write past it fails with
//! [`StoreError::LimitExceeded`], which the call reports as
//! `LimitExceeded`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kvs_core::lattice::Value;

use crate::limits::SESSION_BYTES_MAX;
use crate::store::{Store, StoreError};

/// What one pinned key costs in session metadata besides its key: an LWW
/// timestamp (clock and writer, 8 bytes each).
pub const VERSION_BYTES: usize = 16;

/// The consistency modes a run can have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Lww,
    Dsrr,
}

/// One run's session (see the module doc).
#[derive(Debug, Default)]
pub struct Session {
    consistency: Consistency,
    pins: Mutex<Pins>,
}

#[derive(Debug, Default)]
struct Pins {
    /// Key → the version the run sees (`None`: no value).
    seen: HashMap<Vec<u8>, Option<Value>>,
    metadata_bytes: usize,
}

impl Pins {
    /// Fails when pinning `key` would pass the metadata limit.
    fn room_for(&self, key: &[u8]) -> Result<(), StoreError> {
        let need = self.metadata_bytes + key.len() + VERSION_BYTES;
        if self.seen.contains_key(key) || need <= SESSION_BYTES_MAX {
            return Ok(());
        }
        Err(StoreError::LimitExceeded(format!(
            "a call's session metadata (each key it read or wrote, plus {VERSION_BYTES} bytes \
             for its version) is limited to {SESSION_BYTES_MAX} bytes; this call's {} keys \
             ({} bytes) leave no room for another",
            self.seen.len(),
            self.metadata_bytes
        )))
    }

    /// What a read of `key` returns: its pin, or `found`, which becomes the
    /// pin (a concurrent first read that pinned first wins).
    fn read(&mut self, key: &[u8], found: Option<Value>) -> Result<Option<Value>, StoreError> {
        if let Some(pinned) = self.seen.get(key) {
            return Ok(pinned.clone());
        }
        self.room_for(key)?;
        self.metadata_bytes += key.len() + VERSION_BYTES;
        self.seen.insert(key.to_vec(), found.clone());
        Ok(found)
    }

    /// The run wrote `value` (`None`: deleted) under `key`.
    fn wrote(&mut self, key: &[u8], value: Option<Value>) {
        if !self.seen.contains_key(key) {
            self.metadata_bytes += key.len() + VERSION_BYTES;
        }
        let pin = self.seen.entry(key.to_vec()).or_default();
        *pin = match (pin.take(), value) {
            (Some(mut old), Some(new)) if !matches!(new, Value::Lww(_)) => {
                match old.merge(new.clone()) {
                    Ok(()) => Some(old),
                    Err(_) => Some(new),
                }
            }
            (_, new) => new,
        };
    }
}

impl Session {
    #[must_use]
    pub fn new(consistency: Consistency) -> Session {
        Session {
            consistency,
            pins: Mutex::default(),
        }
    }

    #[must_use]
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// Keys pinned so far, and their metadata bytes.
    #[must_use]
    pub fn pinned(&self) -> (usize, usize) {
        let p = self.lock();
        (p.seen.len(), p.metadata_bytes)
    }

    /// `store` as this session's functions see it.
    #[must_use]
    pub fn over<'a>(&'a self, store: &'a dyn Store) -> SessionStore<'a> {
        SessionStore {
            session: self,
            inner: store,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pins> {
        // Pins' methods leave it consistent at every step.
        self.pins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pins(&self) -> bool {
        self.consistency == Consistency::Dsrr
    }
}

/// A store seen through a session (see the module doc).
pub struct SessionStore<'a> {
    session: &'a Session,
    inner: &'a dyn Store,
}

impl std::fmt::Debug for SessionStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("session", self.session)
            .finish_non_exhaustive()
    }
}

impl Store for SessionStore<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        if !self.session.pins() {
            return self.inner.get(key);
        }
        if let Some(pinned) = self.session.lock().seen.get(key) {
            return Ok(pinned.clone());
        }
        let found = self.inner.get(key)?;
        self.session.lock().read(key, found)
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, StoreError> {
        if !self.session.pins() {
            return self.inner.get_many(keys);
        }
        let missing: Vec<&[u8]> = {
            let pins = self.session.lock();
            keys.iter()
                .copied()
                .filter(|k| !pins.seen.contains_key(*k))
                .collect()
        };
        let found = if missing.is_empty() {
            Vec::new()
        } else {
            self.inner.get_many(&missing)?
        };
        let mut pins = self.session.lock();
        for (k, v) in missing.into_iter().zip(found) {
            pins.read(k, v)?;
        }
        keys.iter().map(|k| pins.read(k, None)).collect()
    }

    fn put(&self, key: &[u8], value: Value) -> Result<(), StoreError> {
        if !self.session.pins() {
            return self.inner.put(key, value);
        }
        self.session.lock().room_for(key)?;
        self.inner.put(key, value.clone())?;
        self.session.lock().wrote(key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        if !self.session.pins() {
            return self.inner.delete(key);
        }
        self.session.lock().room_for(key)?;
        let removed = self.inner.delete(key)?;
        self.session.lock().wrote(key, None);
        Ok(removed)
    }

    /// Not pinned: `take` serves message inboxes, which must see new
    /// messages during the run.
    fn take(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        self.inner.take(key)
    }
}

#[cfg(test)]
mod tests {
    use kvs_core::lattice::{Lww, Timestamp};

    use super::*;
    use crate::store::LocalStore;

    fn lww(clock: u64, s: &str) -> Value {
        Value::Lww(Lww::new(
            Timestamp { clock, writer: 9 },
            s.as_bytes().to_vec(),
        ))
    }

    fn bytes(v: Option<Value>) -> Option<Vec<u8>> {
        v.map(|v| match v {
            Value::Lww(l) => l.value().to_vec(),
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn dsrr_repeats_the_first_read_until_the_run_writes_lww_does_not() {
        let store = LocalStore::default();
        store.put(b"k", lww(1, "one")).unwrap();
        let dsrr = Session::new(Consistency::Dsrr);
        let lww_run = Session::new(Consistency::Lww);
        let (r, l) = (dsrr.over(&store), lww_run.over(&store));
        assert_eq!(bytes(r.get(b"k").unwrap()).unwrap(), b"one");
        assert_eq!(bytes(r.get(b"absent").unwrap()), None);
        // Another call writes both keys.
        store.put(b"k", lww(2, "two")).unwrap();
        store.put(b"absent", lww(2, "now")).unwrap();
        assert_eq!(bytes(r.get(b"k").unwrap()).unwrap(), b"one");
        assert_eq!(bytes(r.get(b"absent").unwrap()), None);
        let many = r.get_many(&[b"absent", b"k", b"new"]).unwrap();
        let many: Vec<_> = many.into_iter().map(bytes).collect();
        assert_eq!(many, [None, Some(b"one".to_vec()), None]);
        assert_eq!(bytes(l.get(b"k").unwrap()).unwrap(), b"two");
        // The run's own write is what it reads next; a delete, nothing.
        r.put(b"k", lww(3, "mine")).unwrap();
        assert_eq!(bytes(r.get(b"k").unwrap()).unwrap(), b"mine");
        assert_eq!(bytes(store.get(b"k").unwrap()).unwrap(), b"mine");
        r.delete(b"k").unwrap();
        assert_eq!(r.get(b"k").unwrap(), None, "its own delete");
        assert_eq!(dsrr.pinned(), (3, 3 * VERSION_BYTES + 1 + 6 + 3));
        assert_eq!(lww_run.pinned(), (0, 0));
    }

    #[test]
    fn a_merge_lattice_write_merges_into_the_pin() {
        let store = LocalStore::default();
        let set =
            |items: &[&str]| Value::Set(items.iter().map(|s| s.as_bytes().to_vec()).collect());
        store.put(b"s", set(&["a"])).unwrap();
        let dsrr = Session::new(Consistency::Dsrr);
        let r = dsrr.over(&store);
        assert_eq!(r.get(b"s").unwrap(), Some(set(&["a"])));
        store.put(b"s", set(&["other"])).unwrap();
        r.put(b"s", set(&["b"])).unwrap();
        assert_eq!(r.get(b"s").unwrap(), Some(set(&["a", "b"])));
    }

    #[test]
    fn metadata_past_the_limit_is_refused_with_the_limit_named() {
        let store = LocalStore::default();
        let dsrr = Session::new(Consistency::Dsrr);
        let r = dsrr.over(&store);
        let key_bytes = 100;
        let fits = SESSION_BYTES_MAX / (key_bytes + VERSION_BYTES);
        for i in 0..fits {
            let key = format!("{i:0>width$}", width = key_bytes);
            r.get(key.as_bytes()).unwrap();
        }
        // A pinned key is still readable; a new one is not, nor writable.
        r.get(format!("{:0>100}", 0).as_bytes()).unwrap();
        let one_more = format!("one-more{:0>92}", 0);
        let err = r.get(one_more.as_bytes()).unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded(_)), "{err}");
        assert!(
            err.to_string().contains(&SESSION_BYTES_MAX.to_string()),
            "{err}"
        );
        assert!(r.put(one_more.as_bytes(), lww(1, "x")).is_err());
        assert_eq!(
            store.get(one_more.as_bytes()).unwrap(),
            None,
            "refused before writing"
        );
    }
}
