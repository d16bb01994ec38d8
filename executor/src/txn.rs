//! Atomic calls: their write sets and commit records (AFT's idea, on a
//! lattice store).
//!
//! A run of an atomic call keeps its writes in its session
//! ([`crate::session`]) and writes nothing while it runs. When it ends, it
//! commits: its write set — every LWW write stamped with one commit
//! timestamp ([`stamp`]) — and its result go into one [`Record`], stored
//! under [`record_key`] only if that key holds nothing yet (the node's
//! `PutIfAbsent`). The record that stands — this run's, or the one an
//! earlier run of the same call stored — is then applied key by key, and
//! its result is the call's.
//!
//! Why that is exactly once: applying a record twice changes nothing
//! (every lattice's merge is idempotent, and its LWW writes carry fixed
//! stamps, not ones the store picks), and no run ever applies anything but
//! the one record that stands. So a run that dies anywhere in its commit,
//! a re-run after a timeout, a second run racing the first, or the client
//! sending the call again with the same id, all end with one record's
//! effects, once.
//!
//! Rules:
//! * a run that fails writes nothing (its write set is dropped);
//! * an atomic call cannot delete keys (a re-applied delete would stamp a
//!   new tombstone and could erase a later write): `delete` and `take`
//!   are refused;
//! * the record is one value, so a write set is limited to
//!   [`WRITE_SET_BYTES_MAX`]; past it the run fails with `LimitExceeded`.
//!
//! A record also lists what the run read (each LWW key at the oldest
//! version it was given): the write set's dependencies, which causal
//! readers (`mk`, `dsc`) read no older than (`crate::session`).
//!
//! Record format (little-endian, `kvs_core::codec`):
//! ```text
//! record = magic:u32 created_us:u64 result:bytes n:u32 (key:bytes value){n}
//!          m:u32 (key:bytes clock:u64 writer:u64){m}
//! ```

use kvs_core::codec::{DecodeError, Decoder, Encoder};
pub use kvs_core::ids::TXN_ID_MAX;
use kvs_core::ids::{txn_of_writer, txn_writer};
use kvs_core::lattice::{Lww, Timestamp, Value};
use kvs_core::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use thiserror::Error;

/// Keys under which commit records are stored: `squall:txn:<id hex>:<stage>`
/// (`stage` numbers the DAGs of a call with continuations, from 0).
pub const RECORD_KEY_PREFIX: &str = "squall:txn:";

/// Bytes of one run's write set (its keys and encoded values): the record
/// holding it, with the run's result, must fit in one value.
pub const WRITE_SET_BYTES_MAX: usize = VALUE_BYTES_MAX / 2;

const MAGIC: u32 = 0x5154_5831; // "1XTQ"

/// The key of the commit record of stage `stage` of call `txn`.
#[must_use]
pub fn record_key(txn: u64, stage: usize) -> Vec<u8> {
    format!("{RECORD_KEY_PREFIX}{txn:016x}:{stage}").into_bytes()
}

/// The transaction and stage whose commit wrote a version with this
/// stamp, if an atomic call's did (`kvs_core::ids::txn_writer`).
#[must_use]
pub fn origin(ts: Timestamp) -> Option<(u64, usize)> {
    txn_of_writer(ts.writer)
}

/// A stored commit record that cannot be read.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("the value is not a commit record")]
    NotARecord,
    #[error("corrupt commit record: {0}")]
    Decode(#[from] DecodeError),
}

/// What a committed run did: its result and its write set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the record was made (µs since the epoch; also the writes'
    /// commit timestamp).
    pub created_us: u64,
    pub result: Vec<u8>,
    pub writes: Vec<(Vec<u8>, Value)>,
    /// The versions the run read: its writes' dependencies.
    pub reads: Vec<(Vec<u8>, Timestamp)>,
}

/// Stamps a write set: every LWW write the function left for the store to
/// stamp (timestamp 0) gets `(commit_us, txn_writer(txn, stage))`, so
/// applying the record again writes the very same versions.
#[must_use]
pub fn stamp(
    writes: Vec<(Vec<u8>, Value)>,
    txn: u64,
    stage: usize,
    commit_us: u64,
) -> Vec<(Vec<u8>, Value)> {
    let ts = Timestamp {
        clock: commit_us,
        writer: txn_writer(txn, stage),
    };
    writes
        .into_iter()
        .map(|(key, value)| match value {
            Value::Lww(lww) if lww.timestamp().clock == 0 => {
                let (_, bytes) = lww.into_parts();
                (key, Value::Lww(Lww::new(ts, bytes)))
            }
            other => (key, other),
        })
        .collect()
}

impl Record {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        e.u32(MAGIC);
        e.u64(self.created_us);
        e.bytes(&self.result);
        e.u32(u32::try_from(self.writes.len()).expect("write sets are bounded"));
        for (key, value) in &self.writes {
            e.bytes(key);
            e.value(value);
        }
        e.u32(u32::try_from(self.reads.len()).expect("read sets are bounded"));
        for (key, ts) in &self.reads {
            e.bytes(key);
            e.u64(ts.clock);
            e.u64(ts.writer);
        }
        out
    }

    /// Decodes a stored record; corrupt input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut d = Decoder::new(bytes);
        if d.u32()? != MAGIC {
            return Err(RecordError::NotARecord);
        }
        let created_us = d.u64()?;
        let result = d.bytes("result", VALUE_BYTES_MAX)?;
        let n = d.u32()? as usize;
        let mut writes = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let key = d.bytes("key", KEY_BYTES_MAX)?;
            writes.push((key, d.value()?));
        }
        let m = d.u32()? as usize;
        let mut reads = Vec::with_capacity(m.min(1024));
        for _ in 0..m {
            let key = d.bytes("key", KEY_BYTES_MAX)?;
            let (clock, writer) = (d.u64()?, d.u64()?);
            reads.push((key, Timestamp { clock, writer }));
        }
        d.finish()?;
        Ok(Record {
            created_us,
            result,
            writes,
            reads,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn lww(clock: u64, s: &str) -> Value {
        Value::Lww(Lww::new(
            Timestamp { clock, writer: 7 },
            s.as_bytes().to_vec(),
        ))
    }

    #[test]
    fn stamping_fixes_only_the_versions_the_store_would_pick() {
        let writes = vec![
            (b"a".to_vec(), lww(0, "x")),
            (b"b".to_vec(), lww(5, "y")),
            (b"c".to_vec(), Value::Max(3)),
        ];
        let stamped = stamp(writes, 0xabc, 2, 1_000);
        let Value::Lww(a) = &stamped[0].1 else {
            panic!()
        };
        assert_eq!(a.timestamp().clock, 1_000);
        assert_eq!(origin(a.timestamp()), Some((0xabc, 2)));
        assert_eq!(stamped[1].1, lww(5, "y"));
        assert_eq!(stamped[2].1, Value::Max(3));
    }

    #[test]
    fn a_record_round_trips_and_corruption_is_an_error() {
        let r = Record {
            created_us: 42,
            result: b"36".to_vec(),
            writes: vec![
                (b"k".to_vec(), lww(9, "v")),
                (
                    b"s".to_vec(),
                    Value::Set(BTreeSet::from([b"e".to_vec(), b"f".to_vec()])),
                ),
            ],
            reads: vec![(
                b"r".to_vec(),
                Timestamp {
                    clock: 3,
                    writer: 4,
                },
            )],
        };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), r);
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Record::decode(&trailing).is_err());
        assert!(Record::decode(b"not a record at all").is_err());
        assert_eq!(record_key(255, 1), b"squall:txn:00000000000000ff:1");
    }
}
