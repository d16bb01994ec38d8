//! Lattice value types. Each `merge` is a join: associative, commutative and
//! idempotent (property-tested in this module), so merging puts in any order,
//! any number of times, converges.
//!
//! | kind | state | merge |
//! | --- | --- | --- |
//! | [`Lww`] | (timestamp, writer, bytes) | larger `(timestamp, writer)` wins; equal stamps: larger bytes |
//! | `Set` | set of byte strings | union |
//! | `OrderedSet` | set of byte strings, read in byte order | union |
//! | `Max` | `u64` | maximum |
//! | [`Priority`] | (priority, bytes) | lowest priority wins; ties: smaller bytes |
//! | `SingleKeyCausal` | versions (vector clock, bytes) | union, then drop versions whose clock another strictly dominates |
//! | `MultiKeyCausal` | versions (vector clock, dependencies, bytes) | as above; dependencies travel with their version |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

/// The lattice type of a key; fixed by its first put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum LatticeKind {
    Lww = 1,
    Set = 2,
    OrderedSet = 3,
    Max = 4,
    Priority = 5,
    SingleKeyCausal = 6,
    MultiKeyCausal = 7,
}

impl LatticeKind {
    /// Every kind, in tag order.
    pub const ALL: [LatticeKind; 7] = [
        LatticeKind::Lww,
        LatticeKind::Set,
        LatticeKind::OrderedSet,
        LatticeKind::Max,
        LatticeKind::Priority,
        LatticeKind::SingleKeyCausal,
        LatticeKind::MultiKeyCausal,
    ];

    /// The kind with this tag, if any.
    #[must_use]
    pub fn from_tag(tag: u8) -> Option<LatticeKind> {
        LatticeKind::ALL.into_iter().find(|k| *k as u8 == tag)
    }

    /// Lower-case name used by the CLI and in error messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            LatticeKind::Lww => "lww",
            LatticeKind::Set => "set",
            LatticeKind::OrderedSet => "ordered-set",
            LatticeKind::Max => "max",
            LatticeKind::Priority => "priority",
            LatticeKind::SingleKeyCausal => "single-key-causal",
            LatticeKind::MultiKeyCausal => "multi-key-causal",
        }
    }
}

impl fmt::Display for LatticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A write's position in last-writer-wins order: clock first, then the
/// writer's id as the tie-break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Microseconds from a hybrid logical clock.
    pub clock: u64,
    /// Who wrote it (node and shard, or a client id); breaks clock ties.
    pub writer: u64,
}

/// Last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lww {
    ts: Timestamp,
    value: Vec<u8>,
}

impl Lww {
    #[must_use]
    pub fn new(ts: Timestamp, value: Vec<u8>) -> Lww {
        Lww { ts, value }
    }
    #[must_use]
    pub fn timestamp(&self) -> Timestamp {
        self.ts
    }
    /// The stored bytes.
    #[must_use]
    pub fn value(&self) -> &[u8] {
        &self.value
    }
    #[must_use]
    pub fn into_parts(self) -> (Timestamp, Vec<u8>) {
        (self.ts, self.value)
    }
    pub fn merge(&mut self, other: Lww) {
        // Total order on (timestamp, bytes): equal stamps with different
        // bytes still merge deterministically.
        if other > *self {
            *self = other;
        }
    }
}

/// Lowest priority wins (e.g. a shortest-path or a min-cost choice).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority {
    pub priority: u64,
    pub value: Vec<u8>,
}

impl Priority {
    pub fn merge(&mut self, other: Priority) {
        if other < *self {
            *self = other;
        }
    }
}

/// A vector clock: node id → counter. Zero counters are not stored, so equal
/// clocks have one representation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VectorClock(BTreeMap<u64, u64>);

impl VectorClock {
    /// Builds a clock from (node, counter) pairs; repeated nodes keep the max.
    pub fn from_entries(entries: impl IntoIterator<Item = (u64, u64)>) -> VectorClock {
        let mut vc = VectorClock::default();
        for (node, counter) in entries {
            vc.observe(node, counter);
        }
        vc
    }
    /// Raises `node`'s counter to at least `counter`.
    pub fn observe(&mut self, node: u64, counter: u64) {
        if counter == 0 {
            return;
        }
        let slot = self.0.entry(node).or_insert(0);
        *slot = (*slot).max(counter);
    }
    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VectorClock) {
        for (&node, &counter) in &other.0 {
            self.observe(node, counter);
        }
    }
    #[must_use]
    pub fn get(&self, node: u64) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }
    /// `self ≥ other` pointwise.
    #[must_use]
    pub fn covers(&self, other: &VectorClock) -> bool {
        other.0.iter().all(|(&n, &c)| self.get(n) >= c)
    }
    /// `self > other`: covers it and differs.
    #[must_use]
    pub fn dominates(&self, other: &VectorClock) -> bool {
        self != other && self.covers(other)
    }
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|(&n, &c)| (n, c))
    }
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One version of a causal value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CausalVersion {
    pub clock: VectorClock,
    /// Keys (and their versions) this version depends on; always empty for
    /// single-key causal values.
    pub deps: BTreeMap<Vec<u8>, VectorClock>,
    pub value: Vec<u8>,
}

/// A causal value: the versions no other version strictly dominates.
/// Concurrent versions are all kept; readers pick with [`Causal::winner`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Causal {
    versions: BTreeSet<CausalVersion>,
}

impl Causal {
    /// Builds a value from versions, keeping only the maximal ones.
    pub fn from_versions(versions: impl IntoIterator<Item = CausalVersion>) -> Causal {
        let mut c = Causal {
            versions: versions.into_iter().collect(),
        };
        c.prune();
        c
    }

    fn prune(&mut self) {
        let dominated: Vec<CausalVersion> = self
            .versions
            .iter()
            .filter(|v| self.versions.iter().any(|w| w.clock.dominates(&v.clock)))
            .cloned()
            .collect();
        for v in dominated {
            self.versions.remove(&v);
        }
    }

    pub fn merge(&mut self, other: Causal) {
        self.versions.extend(other.versions);
        self.prune();
    }

    pub fn versions(&self) -> impl Iterator<Item = &CausalVersion> {
        self.versions.iter()
    }
    #[must_use]
    pub fn version_count(&self) -> usize {
        self.versions.len()
    }
    /// The join of every version's clock.
    #[must_use]
    pub fn clock(&self) -> VectorClock {
        let mut vc = VectorClock::default();
        for v in &self.versions {
            vc.merge(&v.clock);
        }
        vc
    }
    /// The deterministic choice among concurrent versions: the greatest in
    /// (clock, deps, bytes) order, the same on every replica.
    #[must_use]
    pub fn winner(&self) -> Option<&CausalVersion> {
        self.versions.iter().next_back()
    }
}

/// A typed lattice value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Lww(Lww),
    Set(BTreeSet<Vec<u8>>),
    OrderedSet(BTreeSet<Vec<u8>>),
    Max(u64),
    Priority(Priority),
    SingleKeyCausal(Causal),
    MultiKeyCausal(Causal),
}

/// A stored value, borrowed from the partition: an LWW register as its
/// timestamp and bytes (the partition keeps it packed with its key), any
/// other lattice as the value itself (never [`Value::Lww`]).
#[derive(Clone, Copy, Debug)]
pub enum ValueRef<'a> {
    Lww(Timestamp, &'a [u8]),
    Other(&'a Value),
}

impl<'a> ValueRef<'a> {
    #[must_use]
    pub fn kind(self) -> LatticeKind {
        match self {
            ValueRef::Lww(..) => LatticeKind::Lww,
            ValueRef::Other(v) => v.kind(),
        }
    }

    /// An owned copy.
    #[must_use]
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Lww(ts, bytes) => Value::Lww(Lww::new(ts, bytes.to_vec())),
            ValueRef::Other(v) => v.clone(),
        }
    }
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (*self, *other) {
            (ValueRef::Lww(a, x), ValueRef::Lww(b, y)) => a == b && x == y,
            (ValueRef::Other(a), ValueRef::Other(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ValueRef<'_> {}

/// A put whose lattice type differs from the key's.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("key holds a {existing} value; a {attempted} value cannot be merged into it")]
pub struct TypeMismatch {
    pub existing: LatticeKind,
    pub attempted: LatticeKind,
}

impl Value {
    /// This value, borrowed as the partition hands values out.
    #[must_use]
    pub fn view(&self) -> ValueRef<'_> {
        match self {
            Value::Lww(l) => ValueRef::Lww(l.ts, &l.value),
            v => ValueRef::Other(v),
        }
    }

    #[must_use]
    pub fn kind(&self) -> LatticeKind {
        match self {
            Value::Lww(_) => LatticeKind::Lww,
            Value::Set(_) => LatticeKind::Set,
            Value::OrderedSet(_) => LatticeKind::OrderedSet,
            Value::Max(_) => LatticeKind::Max,
            Value::Priority(_) => LatticeKind::Priority,
            Value::SingleKeyCausal(_) => LatticeKind::SingleKeyCausal,
            Value::MultiKeyCausal(_) => LatticeKind::MultiKeyCausal,
        }
    }

    /// Joins `other` into `self`. Fails, changing nothing, when the kinds differ.
    pub fn merge(&mut self, other: Value) -> Result<(), TypeMismatch> {
        match (self, other) {
            (Value::Lww(a), Value::Lww(b)) => a.merge(b),
            (Value::Set(a), Value::Set(b)) | (Value::OrderedSet(a), Value::OrderedSet(b)) => {
                a.extend(b)
            }
            (Value::Max(a), Value::Max(b)) => *a = (*a).max(b),
            (Value::Priority(a), Value::Priority(b)) => a.merge(b),
            (Value::SingleKeyCausal(a), Value::SingleKeyCausal(b))
            | (Value::MultiKeyCausal(a), Value::MultiKeyCausal(b)) => a.merge(b),
            (a, b) => {
                return Err(TypeMismatch {
                    existing: a.kind(),
                    attempted: b.kind(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 0..3)
    }
    fn clock() -> impl Strategy<Value = VectorClock> {
        prop::collection::vec((0u64..3, 0u64..3), 0..3).prop_map(VectorClock::from_entries)
    }
    fn version(with_deps: bool) -> impl Strategy<Value = CausalVersion> {
        let deps = if with_deps {
            prop::collection::btree_map(bytes(), clock(), 0..2).boxed()
        } else {
            Just(BTreeMap::new()).boxed()
        };
        (clock(), deps, bytes()).prop_map(|(clock, deps, value)| CausalVersion {
            clock,
            deps,
            value,
        })
    }

    /// Arbitrary values of one kind; small domains so that ties and equal
    /// clocks actually occur.
    pub(crate) fn value_of(kind: LatticeKind) -> BoxedStrategy<Value> {
        match kind {
            LatticeKind::Lww => (0u64..3, 0u64..2, bytes())
                .prop_map(|(clock, writer, v)| Value::Lww(Lww::new(Timestamp { clock, writer }, v)))
                .boxed(),
            LatticeKind::Set => prop::collection::btree_set(bytes(), 0..4)
                .prop_map(Value::Set)
                .boxed(),
            LatticeKind::OrderedSet => prop::collection::btree_set(bytes(), 0..4)
                .prop_map(Value::OrderedSet)
                .boxed(),
            LatticeKind::Max => (0u64..5).prop_map(Value::Max).boxed(),
            LatticeKind::Priority => (0u64..3, bytes())
                .prop_map(|(priority, value)| Value::Priority(Priority { priority, value }))
                .boxed(),
            LatticeKind::SingleKeyCausal => prop::collection::vec(version(false), 0..4)
                .prop_map(|v| Value::SingleKeyCausal(Causal::from_versions(v)))
                .boxed(),
            LatticeKind::MultiKeyCausal => prop::collection::vec(version(true), 0..4)
                .prop_map(|v| Value::MultiKeyCausal(Causal::from_versions(v)))
                .boxed(),
        }
    }

    pub(crate) fn any_value() -> BoxedStrategy<Value> {
        prop::sample::select(LatticeKind::ALL.to_vec())
            .prop_flat_map(value_of)
            .boxed()
    }

    fn triple() -> impl Strategy<Value = (Value, Value, Value)> {
        prop::sample::select(LatticeKind::ALL.to_vec())
            .prop_flat_map(|k| (value_of(k), value_of(k), value_of(k)))
    }

    fn join(a: &Value, b: &Value) -> Value {
        let mut out = a.clone();
        out.merge(b.clone()).expect("same kind");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn merge_is_associative((a, b, c) in triple()) {
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        }

        #[test]
        fn merge_is_commutative((a, b, _c) in triple()) {
            prop_assert_eq!(join(&a, &b), join(&b, &a));
        }

        #[test]
        fn merge_is_idempotent((a, b, _c) in triple()) {
            prop_assert_eq!(join(&a, &a), a.clone());
            let ab = join(&a, &b);
            prop_assert_eq!(join(&ab, &b), ab);
        }

        #[test]
        fn merge_of_different_kinds_is_refused_and_changes_nothing(a in any_value(), b in any_value()) {
            prop_assume!(a.kind() != b.kind());
            let mut merged = a.clone();
            let err = merged.merge(b.clone()).unwrap_err();
            prop_assert_eq!(err, TypeMismatch { existing: a.kind(), attempted: b.kind() });
            prop_assert_eq!(merged, a);
        }
    }

    #[test]
    fn causal_keeps_concurrent_versions_and_drops_dominated_ones() {
        let v = |entries: &[(u64, u64)], val: &str| CausalVersion {
            clock: VectorClock::from_entries(entries.iter().copied()),
            deps: BTreeMap::new(),
            value: val.as_bytes().to_vec(),
        };
        let mut a = Causal::from_versions([v(&[(1, 1)], "a")]);
        a.merge(Causal::from_versions([v(&[(2, 1)], "b")]));
        assert_eq!(a.version_count(), 2, "concurrent versions are both kept");
        assert_eq!(a.clock(), VectorClock::from_entries([(1, 1), (2, 1)]));
        a.merge(Causal::from_versions([v(&[(1, 1), (2, 1)], "c")]));
        assert_eq!(
            a.version_count(),
            1,
            "a version that saw both supersedes them"
        );
        assert_eq!(a.winner().map(|w| w.value.as_slice()), Some(&b"c"[..]));
    }

    #[test]
    fn lww_larger_timestamp_wins_and_writer_breaks_ties() {
        let mut a = Lww::new(
            Timestamp {
                clock: 5,
                writer: 1,
            },
            b"x".to_vec(),
        );
        a.merge(Lww::new(
            Timestamp {
                clock: 4,
                writer: 9,
            },
            b"old".to_vec(),
        ));
        assert_eq!(a.value(), b"x");
        a.merge(Lww::new(
            Timestamp {
                clock: 5,
                writer: 2,
            },
            b"tie".to_vec(),
        ));
        assert_eq!(a.value(), b"tie");
    }

    #[test]
    fn priority_lowest_wins() {
        let mut p = Priority {
            priority: 5,
            value: b"slow".to_vec(),
        };
        p.merge(Priority {
            priority: 2,
            value: b"fast".to_vec(),
        });
        p.merge(Priority {
            priority: 9,
            value: b"slower".to_vec(),
        });
        assert_eq!(p.value, b"fast");
    }
}
