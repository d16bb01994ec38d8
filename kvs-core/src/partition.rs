//! One shard's data: the deterministic state machine every put and delete
//! goes through. Same mutations in the same order ⇒ same state, which is what
//! WAL replay (and, later, a seeded simulation) relies on.
//!
//! ## Semantics
//! * **Put** merges the value into the key's current value. The first put
//!   fixes the key's lattice type; a put of another type is refused with
//!   [`PartitionError::TypeMismatch`] and changes nothing.
//! * **Delete** leaves a tombstone carrying the delete's timestamp; reads of
//!   a tombstoned key find nothing.
//!   - An LWW value is removed only if the delete is at least as new as the
//!     value (last writer wins, deletes included); a later put with an older
//!     timestamp stays deleted, a newer one brings the key back.
//!   - Any other lattice is merge-only and has no "older" version to order a
//!     delete against, so the delete removes it outright and frees the key's
//!     type: the next put of any type starts the key afresh.
//! * **Drop** removes the key's entry, value or tombstone, leaving nothing:
//!   the key was handed over to the node that owns it now, which holds it
//!   (and its tombstone) from then on.
//! * Tombstones are kept (they order late LWW writes); their number is
//!   reported in stats. Collecting them needs cluster-wide knowledge of what
//!   every replica has seen, which comes with replication.

use std::collections::BTreeSet;

use hashbrown::HashTable;
use std::ops::Bound;

use thiserror::Error;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::ids::Lsn;
use crate::lattice::{LatticeKind, Timestamp, TypeMismatch, Value, ValueRef};
use crate::limits::{
    CLOCK_LEAD_MAX_US, KEY_BYTES_MAX, VALUE_BYTES_MAX, VALUE_ENCODED_BYTES_MAX,
    VECTOR_CLOCK_STEP_MAX,
};
use crate::snapshot::SnapshotEncoder;

mod record;
use record::{Rec, Records, State};

/// What a key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Live(Value),
    /// Deleted at this time.
    Tombstone(Timestamp),
}

impl Entry {
    /// This entry, borrowed as the partition hands entries out.
    #[must_use]
    pub fn view(&self) -> EntryRef<'_> {
        match self {
            Entry::Live(v) => EntryRef::Live(v.view()),
            Entry::Tombstone(ts) => EntryRef::Tombstone(*ts),
        }
    }
}

/// What a key holds, borrowed from the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRef<'a> {
    Live(ValueRef<'a>),
    Tombstone(Timestamp),
}

impl EntryRef<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_entry(self) -> Entry {
        match self {
            EntryRef::Live(v) => Entry::Live(v.to_value()),
            EntryRef::Tombstone(ts) => Entry::Tombstone(ts),
        }
    }

    #[must_use]
    pub fn is_live(self) -> bool {
        matches!(self, EntryRef::Live(_))
    }
}

/// A value read from encoded bytes (a snapshot or a WAL record): LWW bytes
/// borrowed from them, any other lattice decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueIn<'a> {
    Lww(Timestamp, &'a [u8]),
    Other(Value),
}

impl<'a> ValueIn<'a> {
    /// Reads a value as [`Decoder::value`] does, borrowing LWW bytes.
    pub fn decode(d: &mut Decoder<'a>) -> Result<ValueIn<'a>, DecodeError> {
        if d.rest().first() != Some(&(LatticeKind::Lww as u8)) {
            return Ok(ValueIn::Other(d.value()?));
        }
        d.u8()?;
        let ts = Timestamp {
            clock: d.u64()?,
            writer: d.u64()?,
        };
        Ok(ValueIn::Lww(ts, d.slice("value", VALUE_BYTES_MAX)?))
    }

    #[must_use]
    pub fn into_value(self) -> Value {
        match self {
            ValueIn::Lww(ts, bytes) => Value::Lww(crate::lattice::Lww::new(ts, bytes.to_vec())),
            ValueIn::Other(v) => v,
        }
    }

    fn kind(&self) -> LatticeKind {
        match self {
            ValueIn::Lww(..) => LatticeKind::Lww,
            ValueIn::Other(v) => v.kind(),
        }
    }
}

/// An entry as a snapshot holds it, for [`Partition::load`].
#[derive(Debug)]
pub enum Loaded<'a> {
    Live(ValueIn<'a>),
    Tombstone(Timestamp),
}

/// A mutation read from a WAL record, applied by [`Partition::apply_ref`]
/// without copying its key or LWW bytes out first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationRef<'a> {
    Put { key: &'a [u8], value: ValueIn<'a> },
    Delete { key: &'a [u8], ts: Timestamp },
    Drop { key: &'a [u8] },
}

impl<'a> MutationRef<'a> {
    /// Reads one mutation as [`Mutation::encode`] wrote it.
    pub fn decode(d: &mut Decoder<'a>) -> Result<MutationRef<'a>, DecodeError> {
        match d.u8()? {
            1 => Ok(MutationRef::Put {
                key: d.key_slice()?,
                value: ValueIn::decode(d)?,
            }),
            2 => Ok(MutationRef::Delete {
                key: d.key_slice()?,
                ts: Timestamp {
                    clock: d.u64()?,
                    writer: d.u64()?,
                },
            }),
            3 => Ok(MutationRef::Drop {
                key: d.key_slice()?,
            }),
            tag => Err(DecodeError::UnknownTag {
                what: "mutation",
                tag,
            }),
        }
    }

    #[must_use]
    pub fn key(&self) -> &'a [u8] {
        match self {
            MutationRef::Put { key, .. }
            | MutationRef::Delete { key, .. }
            | MutationRef::Drop { key } => key,
        }
    }

    #[must_use]
    pub fn into_owned(self) -> Mutation {
        match self {
            MutationRef::Put { key, value } => Mutation::Put {
                key: key.to_vec(),
                value: value.into_value(),
            },
            MutationRef::Delete { key, ts } => Mutation::Delete {
                key: key.to_vec(),
                ts,
            },
            MutationRef::Drop { key } => Mutation::Drop { key: key.to_vec() },
        }
    }
}

/// A state change, as applied and as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put {
        key: Vec<u8>,
        value: Value,
    },
    Delete {
        key: Vec<u8>,
        ts: Timestamp,
    },
    /// The key was handed over to another node: its entry goes.
    Drop {
        key: Vec<u8>,
    },
}

impl Mutation {
    #[must_use]
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key, .. } | Mutation::Drop { key } => {
                key
            }
        }
    }

    /// Appends this mutation's encoding: `1 key value`, `2 key clock
    /// writer` or `3 key`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        match self {
            Mutation::Put { key, value } => {
                e.u8(1);
                e.bytes(key);
                e.value(value);
            }
            Mutation::Delete { key, ts } => {
                e.u8(2);
                e.bytes(key);
                e.u64(ts.clock);
                e.u64(ts.writer);
            }
            Mutation::Drop { key } => {
                e.u8(3);
                e.bytes(key);
            }
        }
    }

    /// Reads one mutation.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Mutation, DecodeError> {
        MutationRef::decode(d).map(MutationRef::into_owned)
    }
}

/// What applying a mutation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The value was merged in.
    Stored,
    /// A delete; `removed` says whether a live value went away.
    Deleted { removed: bool },
    /// A drop; `removed` says whether the key had an entry.
    Dropped { removed: bool },
}

/// A mutation refused by the partition; the state is unchanged.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error("type mismatch on key {key:?}: {source}")]
    TypeMismatch {
        key: String,
        #[source]
        source: TypeMismatch,
    },
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    #[error("empty keys are not allowed")]
    EmptyKey,
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    #[error("value encoding of {len} bytes (content plus clocks, dependencies and length prefixes) exceeds the limit of {max} bytes")]
    EncodingTooLarge { len: usize, max: usize },
    #[error("timestamp {clock} is more than {lead_max_ms} ms ahead of this node's clock (at most {bound}); check the writer's clock, or send 0 to let the node stamp the write", lead_max_ms = CLOCK_LEAD_MAX_US / 1000)]
    ClockAhead { clock: u64, bound: u64 },
    #[error("vector-clock entry {counter} for writer {writer} is more than {step} ahead of the key's entry (at most {bound})", step = VECTOR_CLOCK_STEP_MAX)]
    VectorClockAhead {
        writer: u64,
        counter: u64,
        bound: u64,
    },
}

/// Checks a key against the limits.
pub fn check_key(key: &[u8]) -> Result<(), PartitionError> {
    if key.is_empty() {
        return Err(PartitionError::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(PartitionError::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Keys under this prefix are the platform's own (functions, DAGs, commit
/// records, settings). A partition also keeps them in an ordered index, so
/// that listing them does not scan every key: at start-up three listings
/// scanned 2M keys for ≈ 0.2 s.
pub const SYSTEM_KEY_PREFIX: &[u8] = b"squall:";

/// How many maps a partition's entries are split over, by a hash of the
/// key: a snapshot is encoded a part at a time
/// ([`Partition::capture_begin`]) and the shard serves requests between
/// parts (100k keys: ≈ 1.6k keys, ≈ 0.2 ms, per part; 2M keys: ≈ 4 ms).
/// More parts cost every lookup: 1024 made a get of 100k random keys
/// ≈ 45% slower in `partition/get_hit_100k_keys`, 64 ≈ 10%.
pub const PARTS: usize = 64;

/// One of a partition's [`PARTS`]: its keys' records (kept in the
/// partition's [`Records`]), and the values of lattices other than LWW,
/// which records point at.
#[derive(Debug, Default)]
struct Part {
    table: HashTable<Rec>,
    hasher: foldhash::fast::RandomState,
    /// Values of kinds other than LWW; `None` where free.
    others: Vec<Option<Value>>,
    /// Free places in `others`.
    free: Vec<u32>,
    /// Times `table` may have moved its entries (an insert into a full
    /// table rehashes it): see [`Partition::part_layout`].
    moved: u32,
}

impl Part {
    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one(key)
    }

    fn find(&self, recs: &Records, key: &[u8]) -> Option<&Rec> {
        self.table.find(self.hash(key), |r| recs.key(r) == key)
    }

    fn view<'a>(&'a self, recs: &'a Records, r: &Rec) -> EntryRef<'a> {
        match recs.state(r) {
            State::Lww(ts, bytes) => EntryRef::Live(ValueRef::Lww(ts, bytes)),
            State::Tombstone(ts) => EntryRef::Tombstone(ts),
            State::Other(at) => EntryRef::Live(ValueRef::Other(self.other(at))),
        }
    }

    fn other(&self, at: u32) -> &Value {
        self.others[at as usize]
            .as_ref()
            .expect("a record points at a value it holds")
    }

    /// A record of `key` holding `value`.
    fn record(&mut self, recs: &mut Records, key: &[u8], value: ValueIn<'_>) -> Rec {
        match value {
            ValueIn::Lww(ts, bytes) => recs.lww(key, ts, bytes),
            ValueIn::Other(other) => {
                let at = match self.free.pop() {
                    Some(at) => {
                        self.others[at as usize] = Some(other);
                        at
                    }
                    None => {
                        self.others.push(Some(other));
                        u32::try_from(self.others.len() - 1).expect("under 4 Gi values a part")
                    }
                };
                recs.other(key, at)
            }
        }
    }

    /// Frees `r` and what it holds outside its record: returns whether it
    /// held a live value.
    fn release(&mut self, recs: &mut Records, r: Rec) -> bool {
        let state = recs.state(&r);
        if let State::Other(at) = state {
            self.others[at as usize] = None;
            self.free.push(at);
        }
        let live = !matches!(state, State::Tombstone(_));
        recs.free(r);
        live
    }

    /// Installs `record`, replacing the key's record if it has one: returns
    /// whether the key held a live value.
    fn install(&mut self, recs: &mut Records, hash: u64, record: Rec) -> bool {
        let Part {
            table,
            hasher,
            moved,
            ..
        } = self;
        // `entry` reserves room for one more first: in a full table that
        // rehashes, in place or into a larger one.
        if table.len() == table.capacity() {
            *moved = moved.wrapping_add(1);
        }
        let old = match table.entry(
            hash,
            |r| recs.key(r) == recs.key(&record),
            |r| {
                use std::hash::BuildHasher as _;
                hasher.hash_one(recs.key(r))
            },
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(o.get_mut(), record))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(record);
                None
            }
        };
        old.is_some_and(|old| self.release(recs, old))
    }

    fn entries<'a>(&'a self, recs: &'a Records) -> impl Iterator<Item = (&'a [u8], EntryRef<'a>)> {
        self.table.iter().map(|r| (recs.key(r), self.view(recs, r)))
    }
}

/// The part of `key`. Its hasher is seeded apart from the maps' own: the
/// keys of one part must not share bits of their maps' hashes.
fn part_of(key: &[u8]) -> usize {
    use std::hash::BuildHasher as _;
    static PICKER: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    (PICKER.get_or_init(Default::default).hash_one(key) % PARTS as u64) as usize
}

/// A shard's key space.
///
/// Hashing uses foldhash (randomly seeded per process): several times
/// cheaper than SipHash on short keys, which showed as ~10% of a shard's CPU
/// in profiles, while keeping hash flooding impractical. Iteration order
/// (snapshots) is therefore unspecified; state equality is not affected.
#[derive(Debug)]
pub struct Partition {
    /// [`PARTS`] parts; a key lives in `parts[part_of(key)]`.
    parts: Vec<Part>,
    /// Every part's records.
    records: Records,
    /// The keys in `parts` under [`SYSTEM_KEY_PREFIX`], in order.
    system: BTreeSet<Box<[u8]>>,
    live: usize,
    /// A snapshot being taken, if any.
    capture: Option<Box<Capture>>,
}

impl Default for Partition {
    fn default() -> Partition {
        Partition {
            parts: (0..PARTS).map(|_| Part::default()).collect(),
            records: Records::default(),
            system: BTreeSet::new(),
            live: 0,
            capture: None,
        }
    }
}

/// How a caller runs independent jobs, since kvs-core spawns no thread of
/// its own: [`Partition::load`] builds its parts in as many jobs as
/// [`Fanout::ways`] says.
pub trait Fanout {
    /// Jobs worth running at once (1: one after the other).
    fn ways(&self) -> usize;
    /// Calls `job(i)` once for each `i < n`, on any threads, and returns
    /// when every call has returned.
    fn run(&self, n: usize, job: &(dyn Fn(usize) + Sync));
}

/// Runs jobs one after the other on the caller's thread.
#[derive(Debug)]
pub struct Sequential;

impl Fanout for Sequential {
    fn ways(&self) -> usize {
        1
    }

    fn run(&self, n: usize, job: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(job);
    }
}

/// Parts being built by one job of [`Partition::load`], into records of
/// their own.
struct Build<'a, E> {
    parts: Vec<Part>,
    /// Per part, its entries: hash and where the entry begins.
    staged: Vec<Vec<(u64, &'a [u8])>>,
    records: Records,
    system: BTreeSet<Box<[u8]>>,
    live: usize,
    failed: Option<E>,
}

impl<'a, E> Build<'a, E> {
    /// Sizes each part's table once for its keys, then fills it in the
    /// order of its buckets, so that the table is written front to back,
    /// with the entries' bytes prefetched a few ahead: in the snapshot's
    /// order every insert waited for a cache miss (a quarter of recovering
    /// 2M keys).
    fn fill(
        &mut self,
        decode: &impl Fn(&'a [u8]) -> Result<(&'a [u8], Loaded<'a>), E>,
    ) -> Result<(), E> {
        /// Entries prefetched ahead of the one being inserted.
        const AHEAD: usize = 8;
        let recs = &mut self.records;
        for (part, mut entries) in self.parts.iter_mut().zip(std::mem::take(&mut self.staged)) {
            part.table = HashTable::with_capacity(entries.len());
            // hashbrown probes from the bucket `hash & (buckets - 1)`.
            let mask = (part.table.capacity() + 1).next_power_of_two() - 1;
            entries.sort_unstable_by_key(|&(hash, _)| hash as usize & mask);
            for (n, &(hash, at)) in entries.iter().enumerate() {
                if let Some(&(_, ahead)) = entries.get(n + AHEAD) {
                    prefetch(ahead);
                }
                let (key, entry) = decode(at)?;
                index(&mut self.system, key);
                let (record, live) = match entry {
                    Loaded::Live(value) => (part.record(recs, key, value), true),
                    Loaded::Tombstone(ts) => (recs.tombstone(key, ts), false),
                };
                if part.install(recs, hash, record) {
                    self.live -= 1;
                }
                self.live += usize::from(live);
            }
        }
        Ok(())
    }
}

impl Partition {
    /// Builds a partition from a snapshot's entries, each given as its key
    /// and the bytes where its entry begins, which `decode` turns into the
    /// key and its entry. One pass finds each entry's part; then the parts
    /// are built in up to `fanout.ways()` jobs, each into records of its
    /// own, which the partition then takes over. A decode error stops the
    /// load (the first job's, if several fail).
    pub fn load<'a, E: Send>(
        entries: impl IntoIterator<Item = Result<(&'a [u8], &'a [u8]), E>>,
        decode: impl Fn(&'a [u8]) -> Result<(&'a [u8], Loaded<'a>), E> + Sync,
        fanout: &dyn Fanout,
    ) -> Result<Partition, E> {
        let mut p = Partition::default();
        let mut staged: Vec<Vec<(u64, &[u8])>> = (0..PARTS).map(|_| Vec::new()).collect();
        for e in entries {
            let (key, at) = e?;
            let i = part_of(key);
            staged[i].push((p.parts[i].hash(key), at));
        }
        let per_job = PARTS.div_ceil(fanout.ways().clamp(1, PARTS));
        let mut parts = std::mem::take(&mut p.parts).into_iter();
        let mut staged = staged.into_iter();
        let builds: Vec<_> = (0..PARTS.div_ceil(per_job))
            .map(|_| {
                std::sync::Mutex::new(Build {
                    parts: parts.by_ref().take(per_job).collect(),
                    staged: staged.by_ref().take(per_job).collect(),
                    records: Records::default(),
                    system: BTreeSet::new(),
                    live: 0,
                    failed: None,
                })
            })
            .collect();
        fanout.run(builds.len(), &|j| {
            // Each job locks only its own build.
            let mut b = builds[j]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = b.fill(&decode) {
                b.failed = Some(e);
            }
        });
        for b in builds {
            let b = b
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(e) = b.failed {
                return Err(e);
            }
            let moved = p.records.absorb(b.records);
            for mut part in b.parts {
                part.table.iter_mut().for_each(|r| r.move_chunks(moved));
                p.parts.push(part);
            }
            p.system.extend(b.system);
            p.live += b.live;
        }
        Ok(p)
    }
}

/// Asks the CPU for the first two cache lines of `bytes`: a hint, which
/// neither reads them nor can fault.
#[inline]
#[allow(unsafe_code)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = bytes.as_ptr().cast::<i8>();
        // SAFETY: prefetching needs only SSE, which every x86_64 CPU has;
        // it loads nothing into the program and never faults, whatever the
        // address (the second line may lie past `bytes`).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// A snapshot being taken while the partition changes (copy-on-write by
/// part): every part is encoded as it was when the capture began, either
/// by [`Partition::capture_step`] or, for a part about to change first,
/// just before the change.
#[derive(Debug, Clone)]
struct Capture {
    enc: SnapshotEncoder,
    /// Which parts are encoded.
    done: Vec<bool>,
    /// Parts encoded so far.
    encoded: usize,
    /// Where `capture_step` looks next.
    next: usize,
    /// Encoded bytes not yet taken.
    out: Vec<u8>,
}

impl Capture {
    /// Encodes part `i`, `part`, as it is now.
    fn encode(&mut self, i: usize, part: &Part, recs: &Records) {
        self.done[i] = true;
        self.encoded += 1;
        self.enc.entries(part.entries(recs), &mut self.out);
    }
}

/// What [`Partition::capture_step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureStep {
    /// Encoded a part; more are left.
    More,
    /// Every part is encoded: [`Partition::capture_finish`] ends it.
    Done,
    /// No capture is running (none began, or it was aborted).
    None,
}

impl Partition {
    /// Begins a snapshot of the partition as it is now, covering the log up
    /// to `last_lsn`; its bytes come out of [`capture_take`] and
    /// [`capture_finish`] while the partition goes on changing. A capture
    /// already running is dropped.
    ///
    /// [`capture_take`]: Partition::capture_take
    /// [`capture_finish`]: Partition::capture_finish
    pub fn capture_begin(&mut self, last_lsn: Lsn) {
        let mut out = Vec::new();
        let enc = SnapshotEncoder::begin(last_lsn, &mut out);
        self.capture = Some(Box::new(Capture {
            enc,
            done: vec![false; PARTS],
            encoded: 0,
            next: 0,
            out,
        }));
    }

    /// Encodes the next part not yet encoded.
    pub fn capture_step(&mut self) -> CaptureStep {
        let Some(c) = self.capture.as_mut() else {
            return CaptureStep::None;
        };
        while c.next < PARTS && c.done[c.next] {
            c.next += 1;
        }
        if c.next < PARTS {
            c.encode(c.next, &self.parts[c.next], &self.records);
        }
        match c.encoded == PARTS {
            true => CaptureStep::Done,
            false => CaptureStep::More,
        }
    }

    /// The capture's bytes encoded since the last take (appended to `buf`).
    pub fn capture_take(&mut self, buf: &mut Vec<u8>) {
        if let Some(c) = self.capture.as_mut() {
            buf.append(&mut c.out);
        }
    }

    /// Ends a capture whose parts are all encoded: its last bytes (the
    /// trailer included) appended to `buf`. False, appending nothing, if
    /// no capture was running or parts are left.
    pub fn capture_finish(&mut self, buf: &mut Vec<u8>) -> bool {
        match self.capture.take() {
            Some(mut c) if c.encoded == PARTS => {
                buf.append(&mut c.out);
                c.enc.finish(buf);
                true
            }
            other => {
                self.capture = other;
                false
            }
        }
    }

    /// Drops a running capture.
    pub fn capture_abort(&mut self) {
        self.capture = None;
    }

    /// Before part `i` changes: encodes it first if a capture still needs
    /// it as it is.
    fn before_change(&mut self, i: usize) {
        if let Some(c) = self.capture.as_mut().filter(|c| !c.done[i]) {
            c.encode(i, &self.parts[i], &self.records);
        }
    }

    /// Applies one mutation. Refused mutations change nothing.
    pub fn apply(&mut self, m: Mutation) -> Result<Applied, PartitionError> {
        match m {
            Mutation::Put {
                key,
                value: Value::Lww(lww),
            } => self.apply_ref(MutationRef::Put {
                key: &key,
                value: ValueIn::Lww(lww.timestamp(), lww.value()),
            }),
            Mutation::Put { key, value } => self.apply_ref(MutationRef::Put {
                key: &key,
                value: ValueIn::Other(value),
            }),
            Mutation::Delete { key, ts } => self.apply_ref(MutationRef::Delete { key: &key, ts }),
            Mutation::Drop { key } => self.apply_ref(MutationRef::Drop { key: &key }),
        }
    }

    /// Applies one mutation read from encoded bytes, as [`apply`] does.
    ///
    /// [`apply`]: Partition::apply
    pub fn apply_ref(&mut self, m: MutationRef<'_>) -> Result<Applied, PartitionError> {
        let key = m.key();
        let i = part_of(key);
        self.before_change(i);
        match m {
            MutationRef::Put { value, .. } => self.put(i, key, value),
            MutationRef::Delete { ts, .. } => {
                check_key(key)?;
                Ok(self.delete(i, key, ts))
            }
            MutationRef::Drop { .. } => {
                check_key(key)?;
                self.system.remove(key);
                let (part, recs) = (&mut self.parts[i], &mut self.records);
                let hash = part.hash(key);
                let Ok(found) = part.table.find_entry(hash, |r| recs.key(r) == key) else {
                    return Ok(Applied::Dropped { removed: false });
                };
                let record = found.remove().0;
                if part.release(recs, record) {
                    self.live -= 1;
                }
                Ok(Applied::Dropped { removed: true })
            }
        }
    }

    /// Checks a mutation without applying it: what `apply` would refuse.
    pub fn check(&self, m: &Mutation) -> Result<(), PartitionError> {
        match m {
            Mutation::Put { key, value } => self.check_put(key, value),
            Mutation::Delete { key, .. } | Mutation::Drop { key } => check_key(key),
        }
    }

    /// The entry `key` has (a live value or a tombstone), if any.
    #[must_use]
    pub fn entry(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        let part = &self.parts[part_of(key)];
        part.find(&self.records, key)
            .map(|r| part.view(&self.records, r))
    }

    /// Checks the clocks a writer supplied with `value` for `key`, with the
    /// node's wall clock at `wall_us`: an LWW timestamp may lead it by at
    /// most [`CLOCK_LEAD_MAX_US`]; a causal version's vector-clock entry may
    /// lead the key's own entry for that writer by at most
    /// [`VECTOR_CLOCK_STEP_MAX`]. Values the node stamps itself, and records
    /// replayed from the log, are not checked.
    pub fn check_clocks(
        &self,
        key: &[u8],
        value: &Value,
        wall_us: u64,
    ) -> Result<(), PartitionError> {
        match value {
            Value::Lww(lww) => {
                let bound = wall_us.saturating_add(CLOCK_LEAD_MAX_US);
                let clock = lww.timestamp().clock;
                if clock > bound {
                    return Err(PartitionError::ClockAhead { clock, bound });
                }
            }
            Value::SingleKeyCausal(c) | Value::MultiKeyCausal(c) => {
                let have = match self.get(key) {
                    Some(ValueRef::Other(Value::SingleKeyCausal(e) | Value::MultiKeyCausal(e))) => {
                        e.clock()
                    }
                    _ => crate::lattice::VectorClock::default(),
                };
                for version in c.versions() {
                    for (writer, counter) in version.clock.entries() {
                        let bound = have.get(writer).saturating_add(VECTOR_CLOCK_STEP_MAX);
                        if counter > bound {
                            return Err(PartitionError::VectorClockAhead {
                                writer,
                                counter,
                                bound,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Moves every LWW timestamp and tombstone later than `bound_us` back to
    /// `to_us` (same writer); returns how many entries it moved. Recovery
    /// uses it to heal a clock poisoned before the lead bound existed: such
    /// an entry would otherwise win against every later write.
    pub fn restamp_after(&mut self, bound_us: u64, to_us: u64) -> usize {
        let mut moved = 0;
        for i in 0..PARTS {
            self.before_change(i);
        }
        let recs = &mut self.records;
        for record in self.parts.iter().flat_map(|p| p.table.iter()) {
            if let State::Lww(ts, _) | State::Tombstone(ts) = recs.state(record) {
                if ts.clock > bound_us {
                    recs.restamp(
                        record,
                        Timestamp {
                            clock: to_us,
                            writer: ts.writer,
                        },
                    );
                    moved += 1;
                }
            }
        }
        moved
    }

    fn check_put(&self, key: &[u8], value: &Value) -> Result<(), PartitionError> {
        self.check_put_in(part_of(key), key, value)
    }

    fn check_put_in(&self, i: usize, key: &[u8], value: &Value) -> Result<(), PartitionError> {
        check_shape(key, value)?;
        let part = &self.parts[i];
        let recs = &self.records;
        if let Some(EntryRef::Live(existing)) = part.find(recs, key).map(|r| part.view(recs, r)) {
            if existing.kind() != value.kind() {
                return Err(mismatch(key, existing.kind(), value.kind()));
            }
        }
        Ok(())
    }
}

/// [`check_shape`] of an LWW value of `bytes`.
fn check_lww_shape(key: &[u8], bytes: &[u8]) -> Result<(), PartitionError> {
    check_key(key)?;
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(PartitionError::ValueTooLarge {
            len: bytes.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// What a put of `value` under `key` must satisfy whatever the partition
/// holds: the key and value limits.
pub fn check_shape(key: &[u8], value: &Value) -> Result<(), PartitionError> {
    if let Value::Lww(lww) = value {
        return check_lww_shape(key, lww.value());
    }
    check_key(key)?;
    let len = value_len(value);
    if len > VALUE_BYTES_MAX {
        return Err(PartitionError::ValueTooLarge {
            len,
            max: VALUE_BYTES_MAX,
        });
    }
    if matches!(
        value,
        Value::Set(_) | Value::OrderedSet(_) | Value::SingleKeyCausal(_) | Value::MultiKeyCausal(_)
    ) {
        // Scalars cannot exceed it once their content fits; collections
        // also carry per-element prefixes, clocks and dependencies.
        let len = crate::codec::encode_value(value).len();
        if len > VALUE_ENCODED_BYTES_MAX {
            return Err(PartitionError::EncodingTooLarge {
                len,
                max: VALUE_ENCODED_BYTES_MAX,
            });
        }
    }
    Ok(())
}

impl Partition {
    fn put(&mut self, i: usize, key: &[u8], value: ValueIn<'_>) -> Result<Applied, PartitionError> {
        match &value {
            ValueIn::Lww(_, bytes) => check_lww_shape(key, bytes)?,
            ValueIn::Other(v) => check_shape(key, v)?,
        }
        let (part, recs) = (&mut self.parts[i], &mut self.records);
        let hash = part.hash(key);
        let Some(record) = part.table.find_mut(hash, |r| recs.key(r) == key) else {
            index(&mut self.system, key);
            let record = part.record(recs, key, value);
            part.install(recs, hash, record);
            self.live += 1;
            return Ok(Applied::Stored);
        };
        match (recs.state(record), value) {
            (State::Lww(have_ts, have), ValueIn::Lww(ts, bytes)) => {
                // Lww's order: the timestamp, then the bytes.
                if (ts, bytes) > (have_ts, have) {
                    recs.set_lww(record, ts, bytes);
                }
            }
            (State::Lww(..), value) => return Err(mismatch(key, LatticeKind::Lww, value.kind())),
            (State::Other(at), value) => {
                let existing = part.others[at as usize]
                    .as_mut()
                    .expect("a record points at a value it holds");
                let (have, want) = (existing.kind(), value.kind());
                existing
                    .merge(value.into_value())
                    .map_err(|_| mismatch(key, have, want))?;
            }
            (State::Tombstone(deleted_at), value) => {
                let revives = match &value {
                    ValueIn::Lww(ts, _) => *ts > deleted_at,
                    ValueIn::Other(_) => true,
                };
                if revives {
                    match value {
                        ValueIn::Lww(ts, bytes) => recs.set_lww(record, ts, bytes),
                        value => {
                            let fresh = part.record(recs, key, value);
                            part.install(recs, hash, fresh);
                        }
                    }
                    self.live += 1;
                }
            }
        }
        Ok(Applied::Stored)
    }

    fn delete(&mut self, i: usize, key: &[u8], ts: Timestamp) -> Applied {
        index(&mut self.system, key);
        let (part, recs) = (&mut self.parts[i], &mut self.records);
        let hash = part.hash(key);
        let Some(record) = part.table.find_mut(hash, |r| recs.key(r) == key) else {
            let tombstone = recs.tombstone(key, ts);
            part.install(recs, hash, tombstone);
            return Applied::Deleted { removed: false };
        };
        let removed = match recs.state(record) {
            State::Lww(at, _) if at > ts => false,
            State::Tombstone(at) => {
                if ts > at {
                    recs.restamp(record, ts);
                }
                false
            }
            _ => {
                let old = std::mem::replace(record, recs.tombstone(key, ts));
                part.release(recs, old);
                self.live -= 1;
                true
            }
        };
        Applied::Deleted { removed }
    }

    /// The live value of `key`, if any.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<ValueRef<'_>> {
        match self.entry(key) {
            Some(EntryRef::Live(v)) => Some(v),
            _ => None,
        }
    }

    /// Number of live keys.
    #[must_use]
    pub fn live_keys(&self) -> usize {
        self.live
    }

    /// Number of tombstones.
    #[must_use]
    pub fn tombstones(&self) -> usize {
        self.parts.iter().map(|p| p.table.len()).sum::<usize>() - self.live
    }

    /// Every entry, tombstones included (for snapshots), in no set order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], EntryRef<'_>)> {
        (0..PARTS).flat_map(|i| self.part(i))
    }

    /// The entries of part `i` (of [`PARTS`]), in no set order.
    pub fn part(&self, i: usize) -> impl Iterator<Item = (&[u8], EntryRef<'_>)> {
        self.parts[i].entries(&self.records)
    }

    /// Where part `i`'s entries sit: its table's buckets, and how often its
    /// entries may have moved. While this stays the same, every entry keeps
    /// its bucket, so a scan may visit the part in slices of buckets
    /// ([`Self::visit_buckets`]) with the partition changing in between: an
    /// entry neither written nor deleted meanwhile is visited exactly once.
    /// When it changes, the scan must start the part again.
    pub fn part_layout(&self, i: usize) -> (usize, u32) {
        let part = &self.parts[i];
        (part.table.num_buckets(), part.moved)
    }

    /// Calls `f` with the entries in `buckets` of part `i`'s table (indices
    /// below its [`Self::part_layout`] bucket count).
    pub fn visit_buckets(
        &self,
        i: usize,
        buckets: std::ops::Range<usize>,
        mut f: impl FnMut(&[u8], EntryRef<'_>),
    ) {
        let part = &self.parts[i];
        for b in buckets {
            if let Some(r) = part.table.get_bucket(b) {
                f(self.records.key(r), part.view(&self.records, r));
            }
        }
    }

    /// Live keys starting with `prefix`: under [`SYSTEM_KEY_PREFIX`] in
    /// order, from the index of those; any other prefix scans every key
    /// (for administrative listings, not the data path).
    pub fn live_keys_with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> Box<dyn Iterator<Item = &'a [u8]> + 'a> {
        if !prefix.starts_with(SYSTEM_KEY_PREFIX) {
            return Box::new(
                self.entries()
                    .filter(move |(k, e)| e.is_live() && k.starts_with(prefix))
                    .map(|(k, _)| k),
            );
        }
        Box::new(
            (self.system)
                .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .map(|k| &**k)
                .take_while(move |k| k.starts_with(prefix))
                .filter(|k| self.get(k).is_some()),
        )
    }

    /// Installs an entry, replacing what was there.
    pub fn restore(&mut self, key: Vec<u8>, entry: Entry) {
        let i = part_of(&key);
        self.before_change(i);
        index(&mut self.system, &key);
        let (part, recs) = (&mut self.parts[i], &mut self.records);
        let (record, live) = match entry {
            Entry::Live(Value::Lww(lww)) => (recs.lww(&key, lww.timestamp(), lww.value()), true),
            Entry::Live(value) => (part.record(recs, &key, ValueIn::Other(value)), true),
            Entry::Tombstone(ts) => (recs.tombstone(&key, ts), false),
        };
        let hash = part.hash(&key);
        if part.install(recs, hash, record) {
            self.live -= 1;
        }
        self.live += usize::from(live);
    }
}

/// Notes `key` in a partition's index of system keys if it is one (as it
/// goes into its map).
fn index(system: &mut BTreeSet<Box<[u8]>>, key: &[u8]) {
    if key.starts_with(SYSTEM_KEY_PREFIX) && !system.contains(key) {
        system.insert(key.into());
    }
}

fn mismatch(key: &[u8], existing: LatticeKind, attempted: LatticeKind) -> PartitionError {
    PartitionError::TypeMismatch {
        key: String::from_utf8_lossy(key).into_owned(),
        source: TypeMismatch {
            existing,
            attempted,
        },
    }
}

/// A value's size as the value-size limit counts it: the content bytes a
/// client sends — an LWW or priority value's bytes, 8 for a max, the sum of
/// a set's elements, the sum of a causal value's version bytes (clocks,
/// dependencies and prefixes count against [`VALUE_ENCODED_BYTES_MAX`]).
#[must_use]
pub fn value_len(v: &Value) -> usize {
    match v {
        Value::Lww(lww) => lww.value().len(),
        Value::Max(_) => 8,
        Value::Priority(p) => p.value.len(),
        Value::Set(s) | Value::OrderedSet(s) => s.iter().map(Vec::len).sum(),
        Value::SingleKeyCausal(c) | Value::MultiKeyCausal(c) => {
            c.versions().map(|v| v.value.len()).sum()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lattice::tests::any_value;
    use crate::lattice::Lww;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ts(clock: u64) -> Timestamp {
        Timestamp { clock, writer: 7 }
    }
    fn lww(clock: u64, v: &str) -> Value {
        Value::Lww(Lww::new(ts(clock), v.as_bytes().to_vec()))
    }
    fn put(key: &str, value: Value) -> Mutation {
        Mutation::Put {
            key: key.as_bytes().to_vec(),
            value,
        }
    }
    fn got(p: &Partition, key: &[u8]) -> Option<Value> {
        p.get(key).map(ValueRef::to_value)
    }
    /// Every entry, owned, in key order.
    /// Every block in use is a record's: none leaked, none freed twice.
    pub(crate) fn records_add_up(p: &Partition) -> bool {
        let blocks: usize = (p.parts.iter().flat_map(|part| part.table.iter()))
            .map(|r| p.records.block_bytes_of(r))
            .sum();
        p.records.used_bytes() == blocks
    }

    pub(crate) fn sorted(p: &Partition) -> Vec<(Vec<u8>, Entry)> {
        let mut v: Vec<_> = p
            .entries()
            .map(|(k, e)| (k.to_vec(), e.to_entry()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
    fn del(key: &str, clock: u64) -> Mutation {
        Mutation::Delete {
            key: key.as_bytes().to_vec(),
            ts: ts(clock),
        }
    }
    fn set(items: &[&str]) -> Value {
        Value::Set(
            items
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect::<BTreeSet<_>>(),
        )
    }

    #[test]
    fn every_put_merges() {
        let mut p = Partition::default();
        p.apply(put("s", set(&["a"]))).unwrap();
        p.apply(put("s", set(&["b"]))).unwrap();
        assert_eq!(got(&p, b"s"), Some(set(&["a", "b"])));
        p.apply(put("m", Value::Max(5))).unwrap();
        p.apply(put("m", Value::Max(3))).unwrap();
        assert_eq!(got(&p, b"m"), Some(Value::Max(5)));
        assert_eq!(p.live_keys(), 2);
    }

    #[test]
    fn type_mismatch_is_refused_and_changes_nothing() {
        let mut p = Partition::default();
        p.apply(put("k", Value::Max(1))).unwrap();
        let err = p.apply(put("k", lww(1, "x"))).unwrap_err();
        assert!(matches!(
            err,
            PartitionError::TypeMismatch {
                source: TypeMismatch {
                    existing: LatticeKind::Max,
                    attempted: LatticeKind::Lww
                },
                ..
            }
        ));
        assert!(err.to_string().contains("holds a max value"), "{err}");
        assert_eq!(got(&p, b"k"), Some(Value::Max(1)));
    }

    #[test]
    fn lww_delete_orders_against_puts() {
        let mut p = Partition::default();
        p.apply(put("k", lww(10, "v"))).unwrap();
        assert_eq!(
            p.apply(del("k", 5)).unwrap(),
            Applied::Deleted { removed: false },
            "older delete loses"
        );
        assert!(p.get(b"k").is_some());
        assert_eq!(
            p.apply(del("k", 20)).unwrap(),
            Applied::Deleted { removed: true }
        );
        assert_eq!(p.get(b"k"), None);
        assert_eq!((p.live_keys(), p.tombstones()), (0, 1));
        p.apply(put("k", lww(15, "late"))).unwrap();
        assert_eq!(
            p.get(b"k"),
            None,
            "a put older than the delete stays deleted"
        );
        p.apply(put("k", lww(25, "new"))).unwrap();
        assert_eq!(got(&p, b"k"), Some(lww(25, "new")));
        assert_eq!(p.live_keys(), 1);
    }

    #[test]
    fn drop_removes_values_and_tombstones_and_round_trips() {
        let mut p = Partition::default();
        p.apply(put("a", lww(5, "x"))).unwrap();
        p.apply(del("b", 7)).unwrap();
        let drop = |k: &str| Mutation::Drop {
            key: k.as_bytes().to_vec(),
        };
        assert_eq!(p.apply(drop("a")), Ok(Applied::Dropped { removed: true }));
        assert_eq!(p.apply(drop("b")), Ok(Applied::Dropped { removed: true }));
        assert_eq!(p.apply(drop("c")), Ok(Applied::Dropped { removed: false }));
        assert_eq!((p.live_keys(), p.tombstones()), (0, 0));
        // A dropped LWW key takes an older put afresh (no tombstone orders it).
        p.apply(put("a", lww(1, "old"))).unwrap();
        assert_eq!(got(&p, b"a"), Some(lww(1, "old")));
        let mut buf = Vec::new();
        drop("k").encode(&mut buf);
        assert_eq!(buf[0], 3);
        let back = Mutation::decode(&mut Decoder::new(&buf)).unwrap();
        assert_eq!(back, drop("k"));
        assert!(p.apply(drop("")).is_err(), "an empty key is refused");
    }

    #[test]
    fn delete_of_a_merge_only_lattice_frees_the_key_type() {
        let mut p = Partition::default();
        p.apply(put("k", set(&["a"]))).unwrap();
        assert_eq!(
            p.apply(del("k", 1)).unwrap(),
            Applied::Deleted { removed: true }
        );
        assert_eq!(p.get(b"k"), None);
        p.apply(put("k", Value::Max(9))).unwrap();
        assert_eq!(got(&p, b"k"), Some(Value::Max(9)));
    }

    #[test]
    fn delete_of_missing_key_is_not_an_error() {
        let mut p = Partition::default();
        assert_eq!(
            p.apply(del("nope", 1)).unwrap(),
            Applied::Deleted { removed: false }
        );
        assert_eq!(p.live_keys(), 0);
    }

    #[test]
    fn limits_are_enforced() {
        let mut p = Partition::default();
        assert_eq!(
            p.apply(put("", Value::Max(1))),
            Err(PartitionError::EmptyKey)
        );
        let big_key = "k".repeat(KEY_BYTES_MAX + 1);
        assert!(matches!(
            p.apply(put(&big_key, Value::Max(1))),
            Err(PartitionError::KeyTooLarge { .. })
        ));
        // The limit is the content a client sends, exactly.
        let big = Value::Lww(Lww::new(ts(1), vec![0; VALUE_BYTES_MAX + 1]));
        assert!(matches!(
            p.apply(put("k", big)),
            Err(PartitionError::ValueTooLarge { .. })
        ));
        assert_eq!(p.live_keys(), 0);
        let largest = Value::Lww(Lww::new(ts(1), vec![0; VALUE_BYTES_MAX]));
        p.apply(put("k", largest)).unwrap();
        let elements = (0..=VALUE_BYTES_MAX / 1024).map(|i| {
            let mut e = vec![0u8; 1024];
            e[..8].copy_from_slice(&(i as u64).to_le_bytes());
            e
        });
        let set = Value::Set(elements.collect());
        assert!(matches!(
            p.apply(put("s", set)),
            Err(PartitionError::ValueTooLarge { .. })
        ));
        // Metadata is bounded too: 300 000 three-byte elements are 0.9 MB
        // of content but 2.1 MB encoded (a 4-byte prefix each).
        let tiny: BTreeSet<Vec<u8>> = (0..300_000u32)
            .map(|i| i.to_le_bytes()[..3].to_vec())
            .collect();
        assert!(value_len(&Value::Set(tiny.clone())) <= VALUE_BYTES_MAX);
        assert!(matches!(
            p.apply(put("s", Value::Set(tiny))),
            Err(PartitionError::EncodingTooLarge { .. })
        ));
    }

    #[test]
    fn client_clocks_may_lead_the_wall_clock_only_so_far() {
        let p = Partition::default();
        let wall = 1_000_000;
        let at = |clock| lww(clock, "v");
        p.check_clocks(b"k", &at(wall + CLOCK_LEAD_MAX_US), wall)
            .unwrap();
        assert_eq!(
            p.check_clocks(b"k", &at(u64::MAX), wall),
            Err(PartitionError::ClockAhead {
                clock: u64::MAX,
                bound: wall + CLOCK_LEAD_MAX_US
            })
        );
        p.check_clocks(b"k", &at(1), wall).unwrap();
    }

    #[test]
    fn vector_clocks_may_step_only_so_far_ahead_of_the_key() {
        use crate::lattice::{Causal, CausalVersion, VectorClock};
        let causal = |counter: u64| {
            Value::SingleKeyCausal(Causal::from_versions([CausalVersion {
                clock: VectorClock::from_entries([(3, counter)]),
                deps: Default::default(),
                value: b"v".to_vec(),
            }]))
        };
        let mut p = Partition::default();
        assert!(matches!(
            p.check_clocks(b"k", &causal(u64::MAX), 0),
            Err(PartitionError::VectorClockAhead { writer: 3, .. })
        ));
        p.check_clocks(b"k", &causal(VECTOR_CLOCK_STEP_MAX), 0)
            .unwrap();
        p.apply(put("k", causal(VECTOR_CLOCK_STEP_MAX))).unwrap();
        // The bound moves with the key's own clock.
        p.check_clocks(b"k", &causal(2 * VECTOR_CLOCK_STEP_MAX), 0)
            .unwrap();
        assert!(p
            .check_clocks(b"k", &causal(2 * VECTOR_CLOCK_STEP_MAX + 1), 0)
            .is_err());
    }

    #[test]
    fn restamping_heals_entries_from_the_future() {
        let mut p = Partition::default();
        p.apply(put("poisoned", lww(u64::MAX, "old"))).unwrap();
        p.apply(put("gone", lww(5, "x"))).unwrap();
        p.apply(del("gone", u64::MAX)).unwrap();
        p.apply(put("fine", lww(50, "ok"))).unwrap();
        assert_eq!(p.restamp_after(100, 90), 2);
        // Later writes win again.
        p.apply(put("poisoned", lww(91, "new"))).unwrap();
        assert_eq!(got(&p, b"poisoned"), Some(lww(91, "new")));
        p.apply(put("gone", lww(91, "back"))).unwrap();
        assert_eq!(got(&p, b"gone"), Some(lww(91, "back")));
        assert_eq!(got(&p, b"fine"), Some(lww(50, "ok")));
    }

    /// The semantics of the module doc, on an ordered map.
    fn model_apply(
        model: &mut std::collections::BTreeMap<Vec<u8>, Entry>,
        m: Mutation,
    ) -> Result<Applied, PartitionError> {
        match m {
            Mutation::Put { key, value } => {
                check_shape(&key, &value)?;
                match model.get_mut(&key) {
                    Some(Entry::Live(v)) => {
                        let (have, want) = (v.kind(), value.kind());
                        v.merge(value).map_err(|_| mismatch(&key, have, want))?;
                    }
                    Some(e @ Entry::Tombstone(_)) => {
                        let Entry::Tombstone(at) = *e else {
                            unreachable!()
                        };
                        if !matches!(&value, Value::Lww(l) if l.timestamp() <= at) {
                            *e = Entry::Live(value);
                        }
                    }
                    None => {
                        model.insert(key, Entry::Live(value));
                    }
                }
                Ok(Applied::Stored)
            }
            Mutation::Delete { key, ts } => {
                let e = model.entry(key).or_insert(Entry::Tombstone(ts));
                let removed = match e {
                    Entry::Live(Value::Lww(l)) if l.timestamp() > ts => false,
                    Entry::Live(_) => {
                        *e = Entry::Tombstone(ts);
                        true
                    }
                    Entry::Tombstone(at) => {
                        *at = (*at).max(ts);
                        false
                    }
                };
                Ok(Applied::Deleted { removed })
            }
            Mutation::Drop { key } => Ok(Applied::Dropped {
                removed: model.remove(&key).is_some(),
            }),
        }
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let key = prop::sample::select(vec!["a", "b", "c"]).prop_map(|k| k.as_bytes().to_vec());
        prop_oneof![
            (key.clone(), any_value()).prop_map(|(key, value)| Mutation::Put { key, value }),
            (key, 0u64..4).prop_map(|(key, c)| Mutation::Delete { key, ts: ts(c) }),
        ]
    }

    proptest! {
        /// A scan in slices of buckets, with writes, deletes and drops
        /// between slices, that starts a part again whenever its layout
        /// changed (as `dataplane`'s `Shard::scan` does), visits every key
        /// no mutation touched during the scan exactly once.
        #[test]
        fn a_scan_in_slices_sees_each_untouched_key_once(
            start in 0usize..300,
            ops in prop::collection::vec((0u8..3, 0usize..600), 0..400),
            slice in 1usize..16,
        ) {
            let key = |i: usize| format!("k{i}");
            let mut p = Partition::default();
            for i in 0..start {
                p.apply(put(&key(i), lww(1, "v"))).unwrap();
            }
            let mut ops = ops.into_iter();
            let mut touched = BTreeSet::new();
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let (mut restarts, mut clock) = (0, 10);
            for part in 0..PARTS {
                'part: loop {
                    let layout = p.part_layout(part);
                    let mut here = Vec::new();
                    let mut at = 0;
                    while at < layout.0 {
                        let end = (at + slice).min(layout.0);
                        p.visit_buckets(part, at..end, |k, _| here.push(k.to_vec()));
                        at = end;
                        if let Some((op, i)) = ops.next() {
                            clock += 1;
                            touched.insert(key(i).into_bytes());
                            let m = match op {
                                0 => put(&key(i), lww(clock, "w")),
                                1 => del(&key(i), clock),
                                _ => Mutation::Drop { key: key(i).into_bytes() },
                            };
                            p.apply(m).unwrap();
                        }
                        let now = p.part_layout(part);
                        if now != layout {
                            // Every rehash is counted as a move, growth too.
                            prop_assert_ne!(now.1, layout.1);
                            restarts += 1;
                            continue 'part;
                        }
                    }
                    seen.extend(here);
                    break;
                }
            }
            for i in 0..start {
                let k = key(i).into_bytes();
                if !touched.contains(&k) {
                    let n = seen.iter().filter(|s| **s == k).count();
                    prop_assert_eq!(n, 1, "key {:?} seen {} times ({} restarts)", key(i), n, restarts);
                }
            }
            prop_assert!(seen.iter().all(|k| k.starts_with(b"k")));
        }

        /// The state machine is deterministic, and mutations survive the
        /// log encoding unchanged.
        #[test]
        fn replaying_the_encoded_log_rebuilds_the_same_state(ms in prop::collection::vec(mutation(), 0..40)) {
            let mut live = Partition::default();
            let mut log = Vec::new();
            for m in ms {
                if live.apply(m.clone()).is_ok() {
                    m.encode(&mut log);
                }
            }
            let mut replayed = Partition::default();
            let mut d = Decoder::new(&log);
            while d.remaining() > 0 {
                replayed.apply(Mutation::decode(&mut d).unwrap()).unwrap();
            }
            prop_assert_eq!(sorted(&replayed), sorted(&live));
            prop_assert_eq!(replayed.live, live.live);
        }

        /// The partition does what the same mutations do to a plain ordered
        /// map of entries (the semantics in the module doc), refuses the
        /// same ones, whether applied as they are or as read back from the
        /// log, and keeps no value of another lattice it no longer points at.
        #[test]
        fn the_partition_behaves_as_a_map_of_entries(
            ms in prop::collection::vec((0usize..3, 0u8..4, any_value(), 0u64..3, 0u64..2), 0..60),
        ) {
            let (mut p, mut q) = (Partition::default(), Partition::default());
            let mut model: std::collections::BTreeMap<Vec<u8>, Entry> = Default::default();
            for (k, op, value, clock, writer) in ms {
                // Stamps from the same small domain as the values' own, so
                // that deletes tie with puts.
                let key = [b"a", b"b", b"c"][k].to_vec();
                let m = match op {
                    0 | 1 => Mutation::Put { key, value },
                    2 => Mutation::Delete { key, ts: Timestamp { clock, writer } },
                    _ => Mutation::Drop { key },
                };
                let want = model_apply(&mut model, m.clone());
                // The same mutation read back from its log encoding.
                let mut buf = Vec::new();
                m.encode(&mut buf);
                let read = MutationRef::decode(&mut Decoder::new(&buf)).unwrap();
                prop_assert_eq!(read.clone().into_owned(), m.clone());
                prop_assert_eq!(q.apply_ref(read), want.clone());
                prop_assert_eq!(p.apply(m), want);
                let want: Vec<_> = model.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
                prop_assert_eq!(sorted(&p), want.clone());
                prop_assert_eq!(sorted(&q), want);
                prop_assert_eq!(p.live_keys(), model.values().filter(|e| matches!(e, Entry::Live(_))).count());
                for part in &p.parts {
                    let pointed = part.table.iter().filter(|r| matches!(p.records.state(r), State::Other(_))).count();
                    prop_assert_eq!(part.others.iter().flatten().count(), pointed);
                    prop_assert_eq!(part.others.len(), pointed + part.free.len());
                }
                prop_assert!(records_add_up(&p));
            }
        }

        /// Listing system keys from their index finds what a scan of every
        /// key finds, after puts, deletes and drops, and after a snapshot.
        #[test]
        fn the_system_key_index_lists_what_a_scan_finds(
            ms in prop::collection::vec((0usize..6, 0u8..3, 0u64..4), 0..60),
        ) {
            const KEYS: [&str; 6] = ["squall:a", "squall:ab", "squall:b", "squall", "squam:a", "a"];
            let mut p = Partition::default();
            for (k, op, clock) in ms {
                let key = KEYS[k].as_bytes().to_vec();
                let _ = p.apply(match op {
                    0 => Mutation::Put { key, value: lww(clock, "v") },
                    1 => Mutation::Delete { key, ts: ts(clock) },
                    _ => Mutation::Drop { key },
                });
            }
            let restored = crate::snapshot::decode_snapshot(&crate::snapshot::encode_snapshot(&p, Lsn(1)))
                .unwrap()
                .0;
            for prefix in ["squall:", "squall:a", "squall:ab", "squall:c", "squall", "squa", ""] {
                let prefix = prefix.as_bytes();
                let mut scanned: Vec<&[u8]> = p
                    .entries()
                    .filter(|(k, e)| e.is_live() && k.starts_with(prefix))
                    .map(|(k, _)| k)
                    .collect();
                scanned.sort_unstable();
                for q in [&p, &restored] {
                    let mut listed: Vec<&[u8]> = q.live_keys_with_prefix(prefix).collect();
                    listed.sort_unstable();
                    prop_assert_eq!(&listed, &scanned);
                }
            }
        }
    }
}
