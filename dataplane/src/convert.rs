//! Conversions between wire values (validated rkyv archives) and the store's
//! lattice values. Pure functions; the only copies are the byte strings the
//! partition must own anyway.

use std::collections::{BTreeMap, BTreeSet};

use kvs_core::lattice::{
    Causal, CausalVersion, Lww, Priority, Timestamp, Value, ValueRef, VectorClock,
};
use kvs_core::partition::Entry;
use wire::message as w;

fn clock_from(entries: &[w::ArchivedClockEntry]) -> VectorClock {
    VectorClock::from_entries(
        entries
            .iter()
            .map(|e| (e.node.to_native(), e.counter.to_native())),
    )
}

fn clock_of(entries: &[w::ClockEntry]) -> VectorClock {
    VectorClock::from_entries(entries.iter().map(|e| (e.node, e.counter)))
}

fn causal_from(versions: &[w::ArchivedCausalVersion], with_deps: bool) -> Causal {
    Causal::from_versions(versions.iter().map(|v| CausalVersion {
        clock: clock_from(&v.clock),
        deps: if with_deps {
            v.deps
                .iter()
                .map(|d| (d.key.to_vec(), clock_from(&d.clock)))
                .collect::<BTreeMap<_, _>>()
        } else {
            BTreeMap::new()
        },
        value: v.bytes.to_vec(),
    }))
}

/// A store value from an archived wire value. An LWW timestamp of 0 is kept
/// as 0: the owning shard stamps it (see `Shard::stamp`).
#[must_use]
pub fn value_from_archived(v: &w::ArchivedValue) -> Value {
    let set = |items: &[wire::rkyv::vec::ArchivedVec<u8>]| {
        items.iter().map(|i| i.to_vec()).collect::<BTreeSet<_>>()
    };
    match v {
        w::ArchivedValue::Lww(l) => Value::Lww(Lww::new(
            Timestamp {
                clock: l.timestamp.to_native(),
                writer: l.writer.to_native(),
            },
            l.bytes.to_vec(),
        )),
        w::ArchivedValue::Set(s) => Value::Set(set(s)),
        w::ArchivedValue::OrderedSet(s) => Value::OrderedSet(set(s)),
        w::ArchivedValue::Max(m) => Value::Max(m.to_native()),
        w::ArchivedValue::Priority(p) => Value::Priority(Priority {
            priority: p.priority.to_native(),
            value: p.bytes.to_vec(),
        }),
        w::ArchivedValue::SingleKeyCausal(c) => Value::SingleKeyCausal(causal_from(c, false)),
        w::ArchivedValue::MultiKeyCausal(c) => Value::MultiKeyCausal(causal_from(c, true)),
    }
}

/// A store value from an owned wire value (a reply another node sent).
#[must_use]
pub fn value_from_wire(v: w::Value) -> Value {
    let causal = |versions: Vec<w::CausalVersion>, with_deps: bool| {
        Causal::from_versions(versions.into_iter().map(|v| CausalVersion {
            clock: clock_of(&v.clock),
            deps: if with_deps {
                v.deps
                    .into_iter()
                    .map(|d| (d.key, clock_of(&d.clock)))
                    .collect()
            } else {
                BTreeMap::new()
            },
            value: v.bytes,
        }))
    };
    match v {
        w::Value::Lww(l) => Value::Lww(Lww::new(
            Timestamp {
                clock: l.timestamp,
                writer: l.writer,
            },
            l.bytes,
        )),
        w::Value::Set(s) => Value::Set(s.into_iter().collect()),
        w::Value::OrderedSet(s) => Value::OrderedSet(s.into_iter().collect()),
        w::Value::Max(m) => Value::Max(m),
        w::Value::Priority(p) => Value::Priority(Priority {
            priority: p.priority,
            value: p.bytes,
        }),
        w::Value::SingleKeyCausal(c) => Value::SingleKeyCausal(causal(c, false)),
        w::Value::MultiKeyCausal(c) => Value::MultiKeyCausal(causal(c, true)),
    }
}

fn clock_to(vc: &VectorClock) -> Vec<w::ClockEntry> {
    vc.entries()
        .map(|(node, counter)| w::ClockEntry { node, counter })
        .collect()
}

fn causal_to(c: &Causal) -> Vec<w::CausalVersion> {
    c.versions()
        .map(|v| w::CausalVersion {
            clock: clock_to(&v.clock),
            deps: v
                .deps
                .iter()
                .map(|(k, vc)| w::Dependency {
                    key: k.clone(),
                    clock: clock_to(vc),
                })
                .collect(),
            bytes: v.value.clone(),
        })
        .collect()
}

/// The wire form of a stored value.
#[must_use]
pub fn value_to_wire(v: &Value) -> w::Value {
    match v {
        Value::Lww(l) => {
            let ts = l.timestamp();
            w::Value::Lww(w::LwwValue {
                timestamp: ts.clock,
                writer: ts.writer,
                bytes: l.value().to_vec(),
            })
        }
        Value::Set(s) => w::Value::Set(s.iter().cloned().collect()),
        Value::OrderedSet(s) => w::Value::OrderedSet(s.iter().cloned().collect()),
        Value::Max(m) => w::Value::Max(*m),
        Value::Priority(p) => w::Value::Priority(w::PriorityValue {
            priority: p.priority,
            bytes: p.value.clone(),
        }),
        Value::SingleKeyCausal(c) => w::Value::SingleKeyCausal(causal_to(c)),
        Value::MultiKeyCausal(c) => w::Value::MultiKeyCausal(causal_to(c)),
    }
}

/// A stored value, borrowed from the partition, in its wire form.
#[must_use]
pub fn value_ref_to_wire(v: ValueRef<'_>) -> w::Value {
    match v {
        ValueRef::Lww(ts, bytes) => w::Value::Lww(w::LwwValue {
            timestamp: ts.clock,
            writer: ts.writer,
            bytes: bytes.to_vec(),
        }),
        ValueRef::Other(v) => value_to_wire(v),
    }
}

/// A key's state as a hand-over entry (`Merge`).
pub fn entry_to_wire(key: &[u8], entry: &Entry) -> w::MergeEntry {
    let (value, deleted) = match entry {
        Entry::Live(v) => (Some(value_to_wire(v)), None),
        Entry::Tombstone(ts) => (
            None,
            Some(w::DeletedAt {
                clock: ts.clock,
                writer: ts.writer,
            }),
        ),
    };
    w::MergeEntry {
        key: key.to_vec(),
        value,
        deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::frame::{decode_request, encode_frame, FRAME_HEADER_BYTES};

    #[test]
    fn every_kind_survives_wire_and_back() {
        let values = [
            w::Value::Lww(w::LwwValue {
                timestamp: 5,
                writer: 2,
                bytes: b"x".to_vec(),
            }),
            w::Value::Set(vec![b"a".to_vec(), b"b".to_vec()]),
            w::Value::OrderedSet(vec![b"a".to_vec(), b"z".to_vec()]),
            w::Value::Max(9),
            w::Value::Priority(w::PriorityValue {
                priority: 1,
                bytes: b"p".to_vec(),
            }),
            w::Value::SingleKeyCausal(vec![w::CausalVersion {
                clock: vec![w::ClockEntry {
                    node: 1,
                    counter: 2,
                }],
                deps: vec![],
                bytes: b"c".to_vec(),
            }]),
            w::Value::MultiKeyCausal(vec![w::CausalVersion {
                clock: vec![w::ClockEntry {
                    node: 1,
                    counter: 2,
                }],
                deps: vec![w::Dependency {
                    key: b"d".to_vec(),
                    clock: vec![w::ClockEntry {
                        node: 3,
                        counter: 1,
                    }],
                }],
                bytes: b"m".to_vec(),
            }]),
        ];
        for v in values {
            let mut buf = Vec::new();
            let req = w::Request::Put(w::KvPut {
                key: b"k".to_vec(),
                value: v.clone(),
            });
            encode_frame(1, &req, &mut buf).unwrap();
            let w::ArchivedRequest::Put(put) = decode_request(&buf[FRAME_HEADER_BYTES..]).unwrap()
            else {
                panic!("not a put")
            };
            assert_eq!(value_to_wire(&value_from_archived(&put.value)), v);
        }
    }
}
