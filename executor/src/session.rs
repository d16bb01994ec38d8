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
//! * [`Consistency::SingleKeyCausal`]: each read of a key returns the merge
//!   of every version of it the run has seen (for LWW the newest; for a
//!   causal value its concurrent versions all kept), or the run's own write:
//!   never older than what the run saw, whichever copy answers.
//! * [`Consistency::MultiKeyCausal`], [`Consistency::DistributedSessionCausal`]
//!   (one mechanism, across the whole run; always atomic runs, below: a
//!   call in these modes without an id of its own runs under one the node
//!   draws):
//!   read-atomic, and never older than the dependencies of any version the
//!   run read.
//!
//! An atomic call's session (`Session::new(..).atomic()`, any mode) also
//! keeps the run's writes ([`crate::txn`]): nothing reaches the store until
//! the run commits; the run's own reads see them (an LWW write as
//! written, a merge lattice's merged over what the store or the pin has).
//! Deletes (and `take`) are refused in an atomic run.
//!
//! An atomic run's reads are also *read-atomic*: they never show part of
//! another atomic call's write set. A version an atomic commit wrote names
//! its record ([`crate::txn::origin`]); the first time the run reads one,
//! it reads that record and notes, for each key of its write set, the
//! version written (the key's *floor*). A later read of such a key that
//! finds an older version — the commit is still being applied, or a cache
//! lags — returns the record's version instead. A key the run had already
//! read older than a floor it learns later cannot be repaired: the run
//! fails with [`StoreError::Conflict`] and is run again (it wrote nothing).
//! Under `mk`/`dsc` the record's read set — what its run read, the write
//! set's dependencies — sets floors too; a floor no record can supply (a
//! plain write, an expired record) is a conflict as well. Floors count in
//! the session metadata like pins.
//!
//! A session's metadata — each pinned key and its version, `key bytes +
//! VERSION_BYTES` per key — is bounded by [`SESSION_BYTES_MAX`]: a read or
//! write past it fails with [`StoreError::LimitExceeded`], which the call
//! reports as `LimitExceeded`.
//!
//! **Across nodes.** A function planned on another node gets the session
//! with its trigger ([`Session::encode`], at most
//! [`TRIGGER_SESSION_BYTES_MAX`] bytes), runs under it there
//! ([`Session::decode`]), and sends back what its run added
//! ([`Session::encode`] again: the pins, merges and writes that differ from
//! what it was brought, and every floor), which the run's node takes in
//! ([`Session::absorb`]): a version the step wrote replaces the run's, a
//! pin it made is added (a merge under `sk`), kept writes merge as writes
//! do, floors rise. Two parallel branches may each pin a key first, on
//! two nodes: if at two versions, or if a floor either learnt is above a
//! version the other returned, the functions saw what the mode forbids —
//! [`StoreError::Conflict`]: the run fails, and the call runs again (the
//! node runs it on itself alone then).
//!
//! Encoding (`kvs_core::codec`, little-endian):
//! ```text
//! session = magic:u32 mode:u8 atomic:u8
//!           n:u32 (key:bytes flags:u8 value?){n}      what the run sees
//!                                      (flags: 1 has a value, 2 written)
//!           w:u32 (key:bytes value){w}                kept writes
//!           f:u32 (key:bytes clock:u64 writer:u64){f} floors
//!           r:u32 (txn:u64 stage:u32){r}              records read
//!           t:u32 (key:bytes clock:u64 writer:u64){t} versions returned
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kvs_core::codec::{Decoder, Encoder};
use kvs_core::lattice::{Timestamp, Value};
use kvs_core::limits::KEY_BYTES_MAX;

use crate::limits::{SESSION_BYTES_MAX, TRIGGER_SESSION_BYTES_MAX};
use crate::store::{Store, StoreError};
use crate::txn::{self, Record, WRITE_SET_BYTES_MAX};

/// What one pinned key costs in session metadata besides its key: an LWW
/// timestamp (clock and writer, 8 bytes each).
pub const VERSION_BYTES: usize = 16;

/// The consistency modes a run can have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Lww,
    Dsrr,
    /// Single-key causal: each read of a key returns the merge of every
    /// version of it the run has seen (never older; concurrent versions of
    /// a causal value kept), or its own write.
    SingleKeyCausal,
    /// Multi-key and distributed-session causal: read-atomic reads (an
    /// atomic call's) that are also never older than the dependencies —
    /// the versions its writer read — of any version the run read. Runs are
    /// always atomic (the node draws an id for a call without one): the
    /// dependencies travel in commit records.
    MultiKeyCausal,
    DistributedSessionCausal,
}

/// One run's session (see the module doc).
#[derive(Debug, Default)]
pub struct Session {
    consistency: Consistency,
    /// Writes are kept for the commit (an atomic call).
    atomic: bool,
    pins: Mutex<Pins>,
    /// A session brought by a trigger from another node: what it brought,
    /// which its encoding leaves out.
    brought: Option<Box<Brought>>,
}

/// What a session brought by a trigger held: what the run sees, its kept
/// writes.
#[derive(Debug)]
struct Brought {
    seen: HashMap<Vec<u8>, Option<Value>>,
    writes: BTreeMap<Vec<u8>, Value>,
}

const MAGIC: u32 = 0x5353_5131; // "1QSS"

#[derive(Debug, Default)]
struct Pins {
    /// Key → the version the run sees (`None`: no value).
    seen: HashMap<Vec<u8>, Option<Value>>,
    /// Keys of `seen` the run wrote (not pinned by a read).
    written: HashSet<Vec<u8>>,
    metadata_bytes: usize,
    /// An atomic run's write set, merged per key, and its encoded bytes.
    writes: BTreeMap<Vec<u8>, Value>,
    write_bytes: usize,
    /// Read-atomic state of an atomic run: per key, the newest version a
    /// write set it saw part of wrote; the records read; per key, the
    /// oldest LWW version returned.
    floors: HashMap<Vec<u8>, Timestamp>,
    records: HashSet<(u64, usize)>,
    returned: HashMap<Vec<u8>, Timestamp>,
}

/// An LWW value's version.
fn version(v: Option<&Value>) -> Option<Timestamp> {
    match v {
        Some(Value::Lww(l)) => Some(l.timestamp()),
        _ => None,
    }
}

/// Bytes of a key and its value in a commit record.
fn record_bytes(key: &[u8], value: &Value) -> usize {
    let mut out = Vec::new();
    Encoder::new(&mut out).value(value);
    4 + key.len() + out.len()
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
    /// pin (a concurrent first read that pinned first wins); without `pin`
    /// (single-key causal), the merge of what the run saw and `found`.
    fn read(
        &mut self,
        key: &[u8],
        found: Option<Value>,
        pin: bool,
    ) -> Result<Option<Value>, StoreError> {
        if let Some(seen) = self.seen.get_mut(key) {
            if !pin {
                *seen = match (seen.take(), found) {
                    (Some(mut old), Some(new)) => match old.merge(new.clone()) {
                        Ok(()) => Some(old),
                        Err(_) => Some(new),
                    },
                    (old, new) => old.or(new),
                };
            }
            return Ok(seen.clone());
        }
        self.room_for(key)?;
        self.metadata_bytes += key.len() + VERSION_BYTES;
        self.seen.insert(key.to_vec(), found.clone());
        Ok(found)
    }

    /// Notes the write set of a record the run saw part of: each LWW
    /// write's version becomes its key's floor — and with `dependencies`,
    /// each version its run read. A key already read older than its floor
    /// is a conflict.
    fn learn(&mut self, txn: u64, record: &Record, dependencies: bool) -> Result<(), StoreError> {
        let written = (record.writes.iter()).filter_map(|(k, v)| Some((k, version(Some(v))?)));
        let read = (record.reads.iter())
            .filter(|_| dependencies)
            .map(|(k, ts)| (k, *ts));
        for (key, ts) in written.chain(read) {
            if self.returned.get(key).is_some_and(|seen| *seen < ts) {
                return Err(StoreError::Conflict(format!(
                    "an atomic call read {:?} older than the write set of transaction \
                     {txn:x} (or what that transaction read), which it saw part of later; \
                     the run fails, writing nothing",
                    String::from_utf8_lossy(key)
                )));
            }
            match self.floors.get_mut(key) {
                Some(floor) => *floor = (*floor).max(ts),
                None => {
                    if !self.seen.contains_key(key.as_slice()) {
                        self.room_for(key)?;
                        self.metadata_bytes += key.len() + VERSION_BYTES;
                    }
                    self.floors.insert(key.clone(), ts);
                }
            }
        }
        Ok(())
    }

    /// Notes what the run was given for `key`: an LWW version, or no
    /// value (older than any version); other lattices are not versioned.
    /// The oldest given counts.
    fn returned_at(&mut self, key: &[u8], value: Option<&Value>) {
        let ts = match value {
            None => Timestamp::default(),
            Some(Value::Lww(l)) => l.timestamp(),
            Some(_) => return,
        };
        let seen = self.returned.entry(key.to_vec()).or_insert(ts);
        *seen = (*seen).min(ts);
    }

    /// An atomic run's write: merged into its write set (an LWW write
    /// replaces the key's earlier one), within [`WRITE_SET_BYTES_MAX`].
    fn keep(&mut self, key: &[u8], value: Value) -> Result<(), StoreError> {
        let old = self.writes.get(key);
        if let Some(old) = old.filter(|old| old.kind() != value.kind()) {
            return Err(StoreError::Refused(format!(
                "this call wrote a {} value under this key; a {} value cannot be merged into it",
                old.kind(),
                value.kind()
            )));
        }
        let merged = match (old, &value) {
            (Some(old), new) if !matches!(new, Value::Lww(_)) => {
                let mut m = old.clone();
                m.merge(value.clone())
                    .map_err(|e| StoreError::Refused(e.to_string()))?;
                m
            }
            _ => value,
        };
        let before = old.map_or(0, |v| record_bytes(key, v));
        let after = record_bytes(key, &merged);
        let total = self.write_bytes - before + after;
        if total > WRITE_SET_BYTES_MAX {
            return Err(StoreError::LimitExceeded(format!(
                "an atomic call's writes (each key and value) are limited to \
                 {WRITE_SET_BYTES_MAX} bytes per run; this write would make them {total}"
            )));
        }
        self.write_bytes = total;
        self.writes.insert(key.to_vec(), merged);
        Ok(())
    }

    /// What the run reads for `key`, given what the store or its pin had:
    /// its own kept write over it.
    fn overlay(&self, key: &[u8], base: Option<Value>) -> Option<Value> {
        let Some(mine) = self.writes.get(key) else {
            return base;
        };
        match base {
            Some(mut base) if !matches!(mine, Value::Lww(_)) => match base.merge(mine.clone()) {
                Ok(()) => Some(base),
                Err(_) => Some(mine.clone()),
            },
            _ => Some(mine.clone()),
        }
    }

    /// The run wrote `value` (`None`: deleted) under `key`.
    fn wrote(&mut self, key: &[u8], value: Option<Value>) {
        if !self.seen.contains_key(key) {
            self.metadata_bytes += key.len() + VERSION_BYTES;
        }
        self.written.insert(key.to_vec());
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
            atomic: false,
            pins: Mutex::default(),
            brought: None,
        }
    }

    /// The session for a trigger to another node; for a session a trigger
    /// brought, what its run added (see the module doc). Fails past
    /// [`TRIGGER_SESSION_BYTES_MAX`].
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let p = self.lock();
        let b = self.brought.as_deref();
        let seen: Vec<_> = (p.seen.iter())
            .filter(|(k, v)| b.and_then(|b| b.seen.get(*k)) != Some(*v))
            .collect();
        let writes: Vec<_> = (p.writes.iter())
            .filter(|(k, v)| b.and_then(|b| b.writes.get(*k)) != Some(*v))
            .collect();
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        e.u32(MAGIC);
        e.u8(self.consistency as u8);
        e.u8(u8::from(self.atomic));
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        e.u32(count(seen.len()));
        for (k, v) in seen {
            e.bytes(k);
            e.u8(u8::from(v.is_some()) | (u8::from(p.written.contains(k)) << 1));
            if let Some(v) = v {
                e.value(v);
            }
        }
        e.u32(count(writes.len()));
        for (k, v) in writes {
            e.bytes(k);
            e.value(v);
        }
        let stamps = |e: &mut Encoder<'_>, stamps: &HashMap<Vec<u8>, Timestamp>| {
            e.u32(count(stamps.len()));
            for (k, ts) in stamps {
                e.bytes(k);
                e.u64(ts.clock);
                e.u64(ts.writer);
            }
        };
        stamps(&mut e, &p.floors);
        e.u32(count(p.records.len()));
        for (txn, stage) in &p.records {
            e.u64(*txn);
            e.u32(count(*stage));
        }
        stamps(&mut e, &p.returned);
        if out.len() > TRIGGER_SESSION_BYTES_MAX {
            return Err(StoreError::LimitExceeded(format!(
                "a function planned on another node takes its call's session with it, at most \
                 {TRIGGER_SESSION_BYTES_MAX} bytes (pinned values, kept writes); this call's \
                 session is {} bytes",
                out.len()
            )));
        }
        Ok(out)
    }

    /// The session a trigger brought from another node; corrupt input is
    /// an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Session, String> {
        let corrupt = |e: kvs_core::codec::DecodeError| format!("corrupt session: {e}");
        let mut d = Decoder::new(bytes);
        if d.u32().map_err(corrupt)? != MAGIC {
            return Err("the bytes are not a session".into());
        }
        let consistency = match d.u8().map_err(corrupt)? {
            0 => Consistency::Lww,
            1 => Consistency::Dsrr,
            2 => Consistency::SingleKeyCausal,
            3 => Consistency::MultiKeyCausal,
            4 => Consistency::DistributedSessionCausal,
            m => return Err(format!("corrupt session: consistency mode {m}")),
        };
        let atomic = d.u8().map_err(corrupt)? != 0;
        let mut p = Pins::default();
        let key = |d: &mut Decoder<'_>| d.bytes("key", KEY_BYTES_MAX);
        let stamp = |d: &mut Decoder<'_>| -> Result<Timestamp, kvs_core::codec::DecodeError> {
            Ok(Timestamp {
                clock: d.u64()?,
                writer: d.u64()?,
            })
        };
        let mut read = || -> Result<(), kvs_core::codec::DecodeError> {
            for _ in 0..d.u32()? {
                let k = key(&mut d)?;
                let flags = d.u8()?;
                let v = match flags & 1 {
                    0 => None,
                    _ => Some(d.value()?),
                };
                if flags & 2 != 0 {
                    p.written.insert(k.clone());
                }
                p.metadata_bytes += k.len() + VERSION_BYTES;
                p.seen.insert(k, v);
            }
            for _ in 0..d.u32()? {
                let k = key(&mut d)?;
                let v = d.value()?;
                p.write_bytes += record_bytes(&k, &v);
                p.writes.insert(k, v);
            }
            for _ in 0..d.u32()? {
                let k = key(&mut d)?;
                let ts = stamp(&mut d)?;
                if !p.seen.contains_key(&k) {
                    p.metadata_bytes += k.len() + VERSION_BYTES;
                }
                p.floors.insert(k, ts);
            }
            for _ in 0..d.u32()? {
                let txn = d.u64()?;
                p.records.insert((txn, d.u32()? as usize));
            }
            for _ in 0..d.u32()? {
                let k = key(&mut d)?;
                p.returned.insert(k, stamp(&mut d)?);
            }
            d.finish()
        };
        read().map_err(corrupt)?;
        Ok(Session {
            consistency,
            atomic,
            brought: Some(Box::new(Brought {
                seen: p.seen.clone(),
                writes: p.writes.clone(),
            })),
            pins: Mutex::new(p),
        })
    }

    /// Takes in what a step on another node added to this session
    /// (`bytes`: that step's [`Session::encode`]); see the module doc.
    pub fn absorb(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let theirs = Session::decode(bytes).map_err(StoreError::Refused)?;
        let theirs = theirs
            .pins
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut p = self.lock();
        for (k, v) in theirs.seen {
            if self.merges() {
                p.read(&k, v, false)?;
                continue;
            }
            if theirs.written.contains(&k) {
                p.wrote(&k, v);
                continue;
            }
            match p.seen.get(&k) {
                // Pinned here meanwhile (a parallel branch) at another
                // version: the run's functions saw two.
                Some(mine) if *mine != v && self.pins() => {
                    return Err(StoreError::Conflict(format!(
                        "two functions of this call on different nodes read {:?} first at \
                         different versions (repeatable read); the run fails and runs again",
                        String::from_utf8_lossy(&k)
                    )));
                }
                Some(_) => {}
                None => {
                    p.room_for(&k)?;
                    p.metadata_bytes += k.len() + VERSION_BYTES;
                    p.seen.insert(k, v);
                }
            }
        }
        for (k, v) in theirs.writes {
            p.keep(&k, v)?;
        }
        p.records.extend(theirs.records);
        for (k, ts) in theirs.returned {
            let mine = p.returned.entry(k).or_insert(ts);
            *mine = (*mine).min(ts);
        }
        for (k, ts) in theirs.floors {
            match p.floors.get_mut(&k) {
                Some(f) => *f = (*f).max(ts),
                None => {
                    if !p.seen.contains_key(&k) {
                        p.room_for(&k)?;
                        p.metadata_bytes += k.len() + VERSION_BYTES;
                    }
                    p.floors.insert(k, ts);
                }
            }
        }
        // What the run was given is never older than a floor it knew of
        // (`Pins::learn`); the two halves of the run may each break that
        // for the other.
        let broken = (p.floors.iter()).find(|(k, f)| p.returned.get(*k).is_some_and(|r| r < *f));
        if let Some((k, _)) = broken {
            return Err(StoreError::Conflict(format!(
                "functions of this atomic call on two nodes read {:?} at a version older than \
                 a write set the call saw part of; the run fails, writing nothing",
                String::from_utf8_lossy(k)
            )));
        }
        Ok(())
    }

    /// The same session for an atomic call: it keeps the run's writes.
    #[must_use]
    pub fn atomic(mut self) -> Session {
        self.atomic = true;
        self
    }

    #[must_use]
    pub fn is_atomic(&self) -> bool {
        self.atomic
    }

    /// What an atomic run read, for its commit record: each key it was
    /// given an LWW version of, at the oldest such version (its writes'
    /// dependencies), sorted by key.
    #[must_use]
    pub fn reads(&self) -> Vec<(Vec<u8>, Timestamp)> {
        let p = self.lock();
        let mut reads: Vec<_> = (p.returned.iter())
            .filter(|(_, ts)| **ts != Timestamp::default())
            .map(|(k, ts)| (k.clone(), *ts))
            .collect();
        reads.sort_unstable();
        reads
    }

    /// An atomic run's write set, taken for its commit (sorted by key).
    #[must_use]
    pub fn take_writes(&self) -> Vec<(Vec<u8>, Value)> {
        let mut p = self.lock();
        p.write_bytes = 0;
        std::mem::take(&mut p.writes).into_iter().collect()
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

    /// Single-key causal: reads merge what the run saw.
    fn merges(&self) -> bool {
        self.consistency == Consistency::SingleKeyCausal
    }

    /// Reads are never older than the dependencies of what the run read.
    fn follows_dependencies(&self) -> bool {
        matches!(
            self.consistency,
            Consistency::MultiKeyCausal | Consistency::DistributedSessionCausal
        )
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

impl SessionStore<'_> {
    /// The run's own kept writes over what was read (atomic runs).
    fn overlay(&self, key: &[u8], base: Option<Value>) -> Option<Value> {
        if !self.session.atomic {
            return base;
        }
        self.session.lock().overlay(key, base)
    }

    /// A commit record, if it is still kept.
    fn record(&self, txn: u64, stage: usize) -> Result<Option<Record>, StoreError> {
        match self.inner.get(&txn::record_key(txn, stage))? {
            Some(Value::Lww(l)) => Record::decode(l.value())
                .map(Some)
                .map_err(|e| StoreError::Refused(format!("transaction {txn:x}: {e}"))),
            _ => Ok(None),
        }
    }

    /// What an atomic run's read of `key` returns, given what the store
    /// (or the pin) had: the version of a write set the run saw part of,
    /// if `found` is older (see the module doc).
    fn read_atomic(&self, key: &[u8], found: Option<Value>) -> Result<Option<Value>, StoreError> {
        if !self.session.atomic {
            return Ok(found);
        }
        let mut value = found;
        // Checking the floor and noting the version returned happen under
        // one lock, as does `learn`: a floor learnt concurrently (another
        // function of the run) either repairs this read or finds it.
        let floor = {
            let mut pins = self.session.lock();
            match pins.floors.get(key).copied() {
                Some(f) if version(value.as_ref()).is_none_or(|v| v < f) => Some(f),
                _ => {
                    pins.returned_at(key, value.as_ref());
                    None
                }
            }
        };
        if let Some(floor) = floor {
            if value.as_ref().is_none_or(|v| matches!(v, Value::Lww(_))) {
                // The version the floor names, from the record that wrote
                // it; without one (a plain write, an expired record) the
                // run cannot read what it must.
                let record = match txn::origin(floor) {
                    Some((txn, stage)) => self.record(txn, stage)?,
                    None => None,
                };
                let repaired = record.and_then(|r| {
                    (r.writes.into_iter())
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v)
                });
                if repaired.is_none() {
                    return Err(StoreError::Conflict(format!(
                        "an atomic call must read {:?} at a version at least {}.{} (what it \
                         read depends on it), which is neither here yet nor in a commit \
                         record; the run fails, writing nothing",
                        String::from_utf8_lossy(key),
                        floor.clock,
                        floor.writer
                    )));
                }
                value = repaired;
            }
            let mut pins = self.session.lock();
            pins.returned_at(key, value.as_ref());
            if let Some(pin) = pins.seen.get_mut(key) {
                pin.clone_from(&value);
            }
        }
        let origin = version(value.as_ref()).and_then(txn::origin);
        if let Some((txn, stage)) = origin {
            if self.session.lock().records.insert((txn, stage)) {
                if let Some(record) = self.record(txn, stage)? {
                    let deps = self.session.follows_dependencies();
                    self.session.lock().learn(txn, &record, deps)?;
                }
            }
        }
        Ok(value)
    }

    fn refused_in_atomic(&self, what: &str) -> Result<(), StoreError> {
        match self.session.atomic {
            true => Err(StoreError::Refused(format!(
                "an atomic call (--atomic, or mode mk or dsc) cannot {what} keys: a \
                 re-applied delete could erase a later write (call it without --atomic in \
                 lww, dsrr or sk, or write a value that means deleted)"
            ))),
            false => Ok(()),
        }
    }

    fn read(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        let pin = self.session.pins();
        if !pin && !self.session.merges() {
            return self.inner.get(key);
        }
        if let Some(pinned) = self.session.lock().seen.get(key).filter(|_| pin) {
            return Ok(pinned.clone());
        }
        let found = self.inner.get(key)?;
        self.session.lock().read(key, found, pin)
    }

    fn read_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, StoreError> {
        let pin = self.session.pins();
        if !pin && !self.session.merges() {
            return self.inner.get_many(keys);
        }
        let missing: Vec<&[u8]> = {
            let pins = self.session.lock();
            keys.iter()
                .copied()
                .filter(|k| !pin || !pins.seen.contains_key(*k))
                .collect()
        };
        let found = if missing.is_empty() {
            Vec::new()
        } else {
            self.inner.get_many(&missing)?
        };
        let mut pins = self.session.lock();
        for (k, v) in missing.into_iter().zip(found) {
            pins.read(k, v, pin)?;
        }
        keys.iter().map(|k| pins.read(k, None, pin)).collect()
    }
}

impl Store for SessionStore<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        let base = self.read(key)?;
        let base = self.read_atomic(key, base)?;
        Ok(self.overlay(key, base))
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, StoreError> {
        let base = self.read_many(keys)?;
        keys.iter()
            .zip(base)
            .map(|(k, v)| Ok(self.overlay(k, self.read_atomic(k, v)?)))
            .collect()
    }

    fn put(&self, key: &[u8], value: Value) -> Result<(), StoreError> {
        if self.session.atomic {
            let mut pins = self.session.lock();
            if self.session.pins() {
                pins.room_for(key)?;
            }
            return pins.keep(key, value);
        }
        if !self.session.pins() && !self.session.merges() {
            return self.inner.put(key, value);
        }
        self.session.lock().room_for(key)?;
        self.inner.put(key, value.clone())?;
        self.session.lock().wrote(key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.refused_in_atomic("delete")?;
        if !self.session.pins() && !self.session.merges() {
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
        self.refused_in_atomic("take (read and delete)")?;
        self.inner.take(key)
    }
}

#[cfg(test)]
mod tests {
    use kvs_core::lattice::Lww;

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

    #[test]
    fn an_atomic_run_keeps_its_writes_and_reads_them_back() {
        let store = LocalStore::default();
        let set =
            |items: &[&str]| Value::Set(items.iter().map(|s| s.as_bytes().to_vec()).collect());
        store.put(b"k", lww(1, "old")).unwrap();
        store.put(b"s", set(&["a"])).unwrap();
        for mode in [Consistency::Lww, Consistency::Dsrr] {
            let session = Session::new(mode).atomic();
            let r = session.over(&store);
            r.put(b"k", lww(0, "first")).unwrap();
            r.put(b"k", lww(0, "mine")).unwrap();
            r.put(b"s", set(&["b"])).unwrap();
            r.put(b"s", set(&["c"])).unwrap();
            assert_eq!(bytes(r.get(b"k").unwrap()).unwrap(), b"mine");
            assert_eq!(r.get(b"s").unwrap(), Some(set(&["a", "b", "c"])));
            let many = r.get_many(&[b"s", b"k"]).unwrap();
            assert_eq!(many[0], Some(set(&["a", "b", "c"])));
            // Nothing reached the store.
            assert_eq!(bytes(store.get(b"k").unwrap()).unwrap(), b"old");
            assert_eq!(store.get(b"s").unwrap(), Some(set(&["a"])));
            assert!(matches!(r.delete(b"k"), Err(StoreError::Refused(_))));
            assert!(matches!(r.take(b"k"), Err(StoreError::Refused(_))));
            assert!(matches!(
                r.put(b"s", lww(0, "x")),
                Err(StoreError::Refused(_))
            ));
            let writes = session.take_writes();
            assert_eq!(
                writes,
                vec![
                    (b"k".to_vec(), lww(0, "mine")),
                    (b"s".to_vec(), set(&["b", "c"]))
                ]
            );
            assert!(session.take_writes().is_empty());
        }
    }

    #[test]
    fn an_atomic_write_set_past_its_limit_is_refused() {
        let store = LocalStore::default();
        let session = Session::new(Consistency::Lww).atomic();
        let r = session.over(&store);
        let big = "x".repeat(100_000);
        let fits = WRITE_SET_BYTES_MAX / 100_100;
        for i in 0..fits {
            r.put(format!("k{i}").as_bytes(), lww(0, &big)).unwrap();
        }
        // Rewriting a kept key replaces its bytes: still fits.
        r.put(b"k0", lww(0, &big)).unwrap();
        let err = r.put(b"one-more", lww(0, &big)).unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded(_)), "{err}");
        assert!(err.to_string().contains(&WRITE_SET_BYTES_MAX.to_string()));
        assert_eq!(session.take_writes().len(), fits);
    }

    #[test]
    fn a_session_travels_to_another_node_and_back_with_what_its_step_added() {
        // Two nodes' copies of the store; the step's node has moved on.
        let (here, there) = (LocalStore::default(), LocalStore::default());
        here.put(b"k", lww(1, "one")).unwrap();
        there.put(b"k", lww(2, "two")).unwrap();
        there.put(b"j", lww(2, "jay")).unwrap();
        let run = Session::new(Consistency::Dsrr);
        assert_eq!(bytes(run.over(&here).get(b"k").unwrap()).unwrap(), b"one");
        let step = Session::decode(&run.encode().unwrap()).unwrap();
        assert_eq!(step.consistency(), Consistency::Dsrr);
        let r = step.over(&there);
        assert_eq!(
            bytes(r.get(b"k").unwrap()).unwrap(),
            b"one",
            "the pin came along"
        );
        assert_eq!(bytes(r.get(b"j").unwrap()).unwrap(), b"jay");
        r.put(b"w", lww(3, "written")).unwrap();
        // Only what the step added goes back: not the pin it was brought.
        let back = step.encode().unwrap();
        let added = Session::decode(&back).unwrap();
        assert_eq!(added.pinned().0, 2, "j and w, not k");
        run.absorb(&back).unwrap();
        assert_eq!(run.pinned(), step.pinned());
        // Later functions here see what the step pinned and wrote.
        here.put(b"j", lww(5, "newer")).unwrap();
        let r = run.over(&here);
        assert_eq!(bytes(r.get(b"j").unwrap()).unwrap(), b"jay");
        assert_eq!(bytes(r.get(b"w").unwrap()).unwrap(), b"written");
        // Two parallel branches, here and there, pin one key first at two
        // versions: the run's functions saw two.
        let run = Session::new(Consistency::Dsrr);
        let step = Session::decode(&run.encode().unwrap()).unwrap();
        step.over(&there).get(b"k").unwrap();
        run.over(&here).get(b"k").unwrap();
        let err = run.absorb(&step.encode().unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        // Corrupt bytes are an error, not a panic.
        assert!(Session::decode(&back[..back.len() - 3]).is_err());
        assert!(Session::decode(b"nope").is_err());
    }

    #[test]
    fn an_atomic_step_elsewhere_brings_back_its_writes_and_floors() {
        let store = half_applied();
        let run = Session::new(Consistency::Lww).atomic();
        run.over(&store).put(b"mine", lww(0, "1")).unwrap();
        let step = Session::decode(&run.encode().unwrap()).unwrap();
        assert!(step.is_atomic());
        let r = step.over(&store);
        assert_eq!(
            bytes(r.get(b"mine").unwrap()).unwrap(),
            b"1",
            "its kept write"
        );
        r.put(b"theirs", lww(0, "2")).unwrap();
        assert_eq!(bytes(r.get(b"a").unwrap()).unwrap(), b"a1");
        run.absorb(&step.encode().unwrap()).unwrap();
        // The floor the step learnt repairs a read here.
        assert_eq!(bytes(run.over(&store).get(b"b").unwrap()).unwrap(), b"b1");
        let writes: Vec<Vec<u8>> = run.take_writes().into_iter().map(|(k, _)| k).collect();
        assert_eq!(writes, [b"mine".to_vec(), b"theirs".to_vec()]);

        // The run read b old here while its step saw the write set: the
        // two halves cannot both stand.
        let run = Session::new(Consistency::Lww).atomic();
        let step = Session::decode(&run.encode().unwrap()).unwrap();
        assert_eq!(bytes(run.over(&store).get(b"b").unwrap()).unwrap(), b"b0");
        step.over(&store).get(b"a").unwrap();
        let err = run.absorb(&step.encode().unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    }

    #[test]
    fn a_session_too_large_to_travel_is_refused_with_the_limit_named() {
        let store = LocalStore::default();
        let big = "x".repeat(200_000);
        for i in 0..6 {
            store.put(format!("k{i}").as_bytes(), lww(1, &big)).unwrap();
        }
        let run = Session::new(Consistency::Dsrr);
        for i in 0..6 {
            run.over(&store).get(format!("k{i}").as_bytes()).unwrap();
        }
        let err = run.encode().unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded(_)), "{err}");
        assert!(err
            .to_string()
            .contains(&TRIGGER_SESSION_BYTES_MAX.to_string()));
    }

    /// A store where transaction 1 wrote `a` and `b` at clock 50, and only
    /// `a` is applied yet (`b` still holds its clock-10 version).
    fn half_applied() -> LocalStore {
        let store = LocalStore::default();
        let t = Timestamp {
            clock: 50,
            writer: kvs_core::ids::txn_writer(1, 0),
        };
        let new = |s: &str| Value::Lww(Lww::new(t, s.as_bytes().to_vec()));
        let record = Record {
            created_us: 50,
            result: Vec::new(),
            writes: vec![(b"a".to_vec(), new("a1")), (b"b".to_vec(), new("b1"))],
            reads: Vec::new(),
        };
        let record = Value::Lww(Lww::new(
            Timestamp {
                clock: 50,
                writer: 1,
            },
            record.encode(),
        ));
        store.put(&txn::record_key(1, 0), record).unwrap();
        store.put(b"a", new("a1")).unwrap();
        store.put(b"b", lww(10, "b0")).unwrap();
        store
    }

    #[test]
    fn an_atomic_run_never_sees_part_of_a_write_set() {
        let store = half_applied();
        for mode in [Consistency::Lww, Consistency::Dsrr] {
            let session = Session::new(mode).atomic();
            let r = session.over(&store);
            assert_eq!(bytes(r.get(b"a").unwrap()).unwrap(), b"a1");
            assert_eq!(bytes(r.get(b"b").unwrap()).unwrap(), b"b1", "repaired");
            let many = r.get_many(&[b"b", b"a"]).unwrap();
            assert_eq!(bytes(many[0].clone()).unwrap(), b"b1");
        }
        // A plain run sees the store as it is: fractured.
        let plain = Session::new(Consistency::Lww);
        let r = plain.over(&store);
        assert_eq!(bytes(r.get(b"a").unwrap()).unwrap(), b"a1");
        assert_eq!(bytes(r.get(b"b").unwrap()).unwrap(), b"b0");
    }

    #[test]
    fn an_older_version_read_before_the_write_set_was_seen_is_a_conflict() {
        let store = half_applied();
        let session = Session::new(Consistency::Lww).atomic();
        let r = session.over(&store);
        assert_eq!(bytes(r.get(b"b").unwrap()).unwrap(), b"b0");
        let err = r.get(b"a").unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("\"b\""), "{err}");
        // A key read while it held nothing (here: from an empty store) is
        // older than any version.
        let session = Session::new(Consistency::Lww).atomic();
        assert_eq!(
            session.over(&LocalStore::default()).get(b"b").unwrap(),
            None
        );
        let err = session.over(&store).get(b"a").unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    }

    #[test]
    fn a_repaired_version_is_the_pin_under_dsrr() {
        let store = half_applied();
        let session = Session::new(Consistency::Dsrr).atomic();
        let r = session.over(&store);
        r.get(b"a").unwrap();
        assert_eq!(bytes(r.get(b"b").unwrap()).unwrap(), b"b1");
        store.put(b"b", lww(90, "b2")).unwrap();
        assert_eq!(bytes(r.get(b"b").unwrap()).unwrap(), b"b1", "pinned");
    }

    #[test]
    fn single_key_causal_never_reads_older_and_keeps_concurrent_versions() {
        use kvs_core::lattice::{Causal, CausalVersion, VectorClock};
        // Two copies of the store: `fresh` has moved on, `stale` has not.
        let (fresh, stale) = (LocalStore::default(), LocalStore::default());
        fresh.put(b"k", lww(9, "new")).unwrap();
        stale.put(b"k", lww(1, "old")).unwrap();
        let session = Session::new(Consistency::SingleKeyCausal);
        assert_eq!(
            bytes(session.over(&fresh).get(b"k").unwrap()).unwrap(),
            b"new"
        );
        assert_eq!(
            bytes(session.over(&stale).get(b"k").unwrap()).unwrap(),
            b"new"
        );
        let lww_run = Session::new(Consistency::Lww);
        lww_run.over(&fresh).get(b"k").unwrap();
        assert_eq!(
            bytes(lww_run.over(&stale).get(b"k").unwrap()).unwrap(),
            b"old"
        );
        // Concurrent versions of a causal value: the run sees both.
        let version = |node: u64, v: &str| {
            Value::SingleKeyCausal(Causal::from_versions([CausalVersion {
                clock: VectorClock::from_entries([(node, 1)]),
                deps: Default::default(),
                value: v.as_bytes().to_vec(),
            }]))
        };
        fresh.put(b"c", version(1, "a")).unwrap();
        stale.put(b"c", version(2, "b")).unwrap();
        session.over(&fresh).get(b"c").unwrap();
        let Some(Value::SingleKeyCausal(both)) = session.over(&stale).get(b"c").unwrap() else {
            panic!("not a causal value")
        };
        assert_eq!(both.version_count(), 2);
        // Its own write is what it reads next, even from a copy that does
        // not have it yet.
        session.over(&fresh).put(b"w", lww(0, "mine")).unwrap();
        assert_eq!(
            bytes(session.over(&stale).get(b"w").unwrap()).unwrap(),
            b"mine"
        );
    }

    /// Transaction 2 wrote `x` having read `d` at clock 40, which
    /// transaction 3 wrote; the store has `x` but `d` still at clock 5.
    fn a_dependency_not_applied() -> LocalStore {
        let store = LocalStore::default();
        let ts = |clock, txn| Timestamp {
            clock,
            writer: kvs_core::ids::txn_writer(txn, 0),
        };
        let value = |t, s: &str| Value::Lww(Lww::new(t, s.as_bytes().to_vec()));
        let record = |writes, reads| {
            let r = Record {
                created_us: 1,
                result: Vec::new(),
                writes,
                reads,
            };
            Value::Lww(Lww::new(
                Timestamp {
                    clock: 1,
                    writer: 1,
                },
                r.encode(),
            ))
        };
        let d3 = value(ts(40, 3), "d3");
        store
            .put(
                &txn::record_key(3, 0),
                record(vec![(b"d".to_vec(), d3)], vec![]),
            )
            .unwrap();
        let x2 = value(ts(50, 2), "x2");
        let reads = vec![(b"d".to_vec(), ts(40, 3))];
        store
            .put(
                &txn::record_key(2, 0),
                record(vec![(b"x".to_vec(), x2.clone())], reads),
            )
            .unwrap();
        store.put(b"x", x2).unwrap();
        store.put(b"d", lww(5, "d0")).unwrap();
        store
    }

    #[test]
    fn causal_atomic_reads_follow_the_dependencies_of_what_they_read() {
        let store = a_dependency_not_applied();
        for mode in [
            Consistency::MultiKeyCausal,
            Consistency::DistributedSessionCausal,
        ] {
            let session = Session::new(mode).atomic();
            let r = session.over(&store);
            assert_eq!(bytes(r.get(b"x").unwrap()).unwrap(), b"x2");
            assert_eq!(bytes(r.get(b"d").unwrap()).unwrap(), b"d3", "repaired");
            // Its record will name both as what it read.
            let reads: Vec<_> = session.reads().into_iter().map(|(k, _)| k).collect();
            assert_eq!(reads, [b"d".to_vec(), b"x".to_vec()]);
        }
        // Read-atomic alone does not follow dependencies.
        let session = Session::new(Consistency::Lww).atomic();
        session.over(&store).get(b"x").unwrap();
        assert_eq!(
            bytes(session.over(&store).get(b"d").unwrap()).unwrap(),
            b"d0"
        );
        // Read older first: a conflict (the run goes again).
        let session = Session::new(Consistency::DistributedSessionCausal).atomic();
        session.over(&store).get(b"d").unwrap();
        let err = session.over(&store).get(b"x").unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    }

    #[test]
    fn a_dependency_no_record_holds_is_a_conflict() {
        let store = a_dependency_not_applied();
        store.delete(&txn::record_key(3, 0)).unwrap();
        let session = Session::new(Consistency::DistributedSessionCausal).atomic();
        let r = session.over(&store);
        r.get(b"x").unwrap();
        let err = r.get(b"d").unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("\"d\""), "{err}");
    }
}
