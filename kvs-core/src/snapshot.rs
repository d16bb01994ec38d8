//! Snapshot format and the recovery procedure that combines a snapshot with
//! the WAL segments written after it.
//!
//! ```text
//! snapshot = "SQSNP\0\0\x02" last_lsn:u64le entry* count:u64le crc:u32le
//! entry    = key:bytes tag:u8 (1 value | 2 clock:u64le writer:u64le)
//! crc      = CRC32C(every byte before it)
//! ```
//!
//! A snapshot holds the effect of every record up to and including
//! `last_lsn`, and of none after it, although a shard encodes it a part of
//! its partition at a time while it goes on applying writes
//! ([`Partition::capture_begin`]): a part about to change is encoded
//! first (copy-on-write by part), so every part is encoded as it was at
//! `last_lsn`. (Encoding parts as they are when reached, and relying on
//! replay to repair the difference, is not exact: a delete of a set lowers
//! a tombstone's time, which a replayed older put then overtakes.) The
//! entries come in no set order, so the count follows them. Format version
//! 1 (`\x01`: the count before the entries) is still read.
//!
//! Snapshots are written to a temporary name, synced and renamed, so a
//! snapshot that fails its checksum is corruption, never a torn write.

use thiserror::Error;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::ids::Lsn;
use crate::lattice::Timestamp;
use crate::partition::{
    EntryRef, Fanout, Loaded, MutationRef, Partition, Sequential, ValueIn, PARTS,
};
use crate::wal::{visit_segment, TornTail, WalError};

/// First bytes of every snapshot; the last byte is the format version.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SQSNP\0\0\x02";
/// Version 1: the entry count before the entries.
const SNAPSHOT_MAGIC_V1: [u8; 8] = *b"SQSNP\0\0\x01";

/// Encodes a snapshot in pieces, appending to the caller's buffer (which
/// it may write out and clear between calls): [`begin`], then
/// [`entries`] for every part of the partition, then [`finish`].
///
/// [`begin`]: SnapshotEncoder::begin
/// [`entries`]: SnapshotEncoder::entries
/// [`finish`]: SnapshotEncoder::finish
#[derive(Clone, Debug)]
pub struct SnapshotEncoder {
    crc: u32,
    count: u64,
}

impl SnapshotEncoder {
    /// The header, for a snapshot of every record up to `last_lsn`.
    pub fn begin(last_lsn: Lsn, out: &mut Vec<u8>) -> SnapshotEncoder {
        let start = out.len();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&last_lsn.0.to_le_bytes());
        SnapshotEncoder {
            crc: crc32c::crc32c(&out[start..]),
            count: 0,
        }
    }

    /// Entries (a part of the partition).
    pub fn entries<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a [u8], EntryRef<'a>)>,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        let mut e = Encoder::new(out);
        for (key, entry) in entries {
            e.entry(key, entry);
            self.count += 1;
        }
        self.crc = crc32c::crc32c_append(self.crc, &out[start..]);
    }

    /// The trailer: the entry count and the checksum.
    pub fn finish(self, out: &mut Vec<u8>) {
        let count = self.count.to_le_bytes();
        out.extend_from_slice(&count);
        let crc = crc32c::crc32c_append(self.crc, &count);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// Serialises the whole partition at once.
#[must_use]
pub fn encode_snapshot(p: &Partition, last_lsn: Lsn) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = SnapshotEncoder::begin(last_lsn, &mut out);
    for i in 0..PARTS {
        enc.entries(p.part(i), &mut out);
    }
    enc.finish(&mut out);
    out
}

/// A snapshot that cannot be read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a Squall snapshot (bad header)")]
    BadHeader,
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] DecodeError),
}

/// Reads a snapshot back into a partition and its `last_lsn`.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(Partition, Lsn), SnapshotError> {
    decode(bytes, &Sequential).map(|(p, lsn, _)| (p, lsn))
}

/// A snapshot's partition, `last_lsn` and largest clock, either version,
/// its parts built in up to `fanout.ways()` jobs.
fn decode(bytes: &[u8], fanout: &dyn Fanout) -> Result<(Partition, Lsn, u64), SnapshotError> {
    let n = SNAPSHOT_MAGIC.len();
    let v2 = bytes.get(..n) == Some(&SNAPSHOT_MAGIC[..]);
    if !v2 && bytes.get(..n) != Some(&SNAPSHOT_MAGIC_V1[..]) {
        return Err(SnapshotError::BadHeader);
    }
    if bytes.len() < n + 8 + 8 + 4 {
        return Err(SnapshotError::BadHeader);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(SnapshotError::Checksum);
    }
    let (mut d, count) = if v2 {
        let (entries, count) = body.split_at(body.len() - 8);
        let mut count = Decoder::new(count);
        (Decoder::new(&entries[n..]), Some(count.u64()?))
    } else {
        (Decoder::new(&body[n..]), None)
    };
    let last_lsn = Lsn(d.u64()?);
    let count = match count {
        Some(c) => c,
        None => d.u64()?,
    };
    // Where each entry lies: its key, then the rest stepped over.
    let positions = (0..count).map(|_| {
        let at = d.rest();
        let key = d.key_slice()?;
        match d.u8()? {
            1 => d.skip_value()?,
            2 => {
                d.take(16)?;
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "snapshot entry",
                    tag,
                })
            }
        }
        Ok((key, at))
    });
    // Raised rarely (entries are in no time order), so jobs mostly only read it.
    let max_clock_us = std::sync::atomic::AtomicU64::new(0);
    let p = Partition::load(
        positions,
        |at| {
            let mut d = Decoder::new(at);
            let key = d.key_slice()?;
            let entry = match d.u8()? {
                1 => Loaded::Live(ValueIn::decode(&mut d)?),
                _ => Loaded::Tombstone(Timestamp {
                    clock: d.u64()?,
                    writer: d.u64()?,
                }),
            };
            let clock = match &entry {
                Loaded::Live(ValueIn::Lww(ts, _)) | Loaded::Tombstone(ts) => ts.clock,
                Loaded::Live(ValueIn::Other(_)) => 0,
            };
            if clock > max_clock_us.load(std::sync::atomic::Ordering::Relaxed) {
                max_clock_us.fetch_max(clock, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, DecodeError>((key, entry))
        },
        fanout,
    )?;
    d.finish()?;
    Ok((p, last_lsn, max_clock_us.into_inner()))
}

/// What recovery rebuilt.
#[derive(Debug)]
pub struct Recovered {
    pub partition: Partition,
    /// The last LSN applied (from the snapshot or the log).
    pub last_lsn: Lsn,
    /// Records replayed from the log on top of the snapshot.
    pub replayed: usize,
    /// Records in the log already covered by the snapshot.
    pub skipped: usize,
    /// A torn tail cut from the last segment: the caller truncates the file
    /// to `offset` before appending again.
    pub torn: Option<TornTail>,
    /// Largest timestamp seen, so the clock can continue after it.
    pub max_clock_us: u64,
}

/// Why recovery refused to start.
#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error("snapshot {name}: {source}")]
    Snapshot {
        name: String,
        #[source]
        source: SnapshotError,
    },
    #[error("WAL segment {name}: {source}")]
    Wal {
        name: String,
        #[source]
        source: WalError,
    },
    #[error("a put in WAL segment {name} at {lsn} is refused by the partition: {reason}")]
    Replay {
        name: String,
        lsn: Lsn,
        reason: String,
    },
}

/// Rebuilds a partition from an optional snapshot and the segments in log
/// order (each `(name, bytes)`; names only label errors). The snapshot's
/// parts are built in up to `fanout.ways()` jobs; the log is replayed in
/// order on the caller's thread.
pub fn recover<'a>(
    snapshot: Option<(&str, &[u8])>,
    segments: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    fanout: &dyn Fanout,
) -> Result<Recovered, RecoveryError> {
    let (mut partition, snap_lsn, mut max_clock_us) = match snapshot {
        Some((name, bytes)) => decode(bytes, fanout).map_err(|source| RecoveryError::Snapshot {
            name: name.to_owned(),
            source,
        })?,
        None => (Partition::default(), Lsn(0), 0),
    };
    let segments: Vec<_> = segments.into_iter().collect();
    let mut out = Recovered {
        partition: Partition::default(),
        last_lsn: snap_lsn,
        replayed: 0,
        skipped: 0,
        torn: None,
        max_clock_us: 0,
    };
    let count = segments.len();
    for (i, (name, bytes)) in segments.into_iter().enumerate() {
        // The first put the partition refuses; what follows it is not applied.
        let mut refused = None;
        let scanned = visit_segment(bytes, i + 1 == count, |lsn, m| {
            if refused.is_some() {
                return;
            }
            if lsn <= out.last_lsn {
                out.skipped += 1;
                return;
            }
            let clock = match &m {
                MutationRef::Put {
                    value: ValueIn::Lww(ts, _),
                    ..
                }
                | MutationRef::Delete { ts, .. } => ts.clock,
                MutationRef::Put { .. } | MutationRef::Drop { .. } => 0,
            };
            max_clock_us = max_clock_us.max(clock);
            match partition.apply_ref(m) {
                Ok(_) => {
                    out.last_lsn = lsn;
                    out.replayed += 1;
                }
                Err(e) => refused = Some((lsn, e)),
            }
        });
        let (_, torn) = scanned.map_err(|source| RecoveryError::Wal {
            name: name.to_owned(),
            source,
        })?;
        if let Some((lsn, e)) = refused {
            return Err(RecoveryError::Replay {
                name: name.to_owned(),
                lsn,
                reason: e.to_string(),
            });
        }
        out.torn = torn;
    }
    out.partition = partition;
    out.max_clock_us = max_clock_us;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Lww;
    use crate::lattice::Value;
    use crate::partition::tests::{records_add_up, sorted};
    use crate::partition::CaptureStep;
    use crate::partition::{Entry, Mutation};
    use crate::wal::{encode_record, SEGMENT_MAGIC};

    fn put(i: u64) -> Mutation {
        Mutation::Put {
            key: format!("k{}", i % 5).into_bytes(),
            value: Value::Lww(Lww::new(
                Timestamp {
                    clock: i,
                    writer: 1,
                },
                i.to_le_bytes().to_vec(),
            )),
        }
    }

    fn log(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = SEGMENT_MAGIC.to_vec();
        for i in range {
            encode_record(Lsn(i), &put(i), &mut out);
        }
        out
    }

    /// Runs each job on a thread of its own.
    struct Threads(usize);

    impl Fanout for Threads {
        fn ways(&self) -> usize {
            self.0
        }

        fn run(&self, n: usize, job: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                for i in 0..n {
                    s.spawn(move || job(i));
                }
            });
        }
    }

    #[test]
    fn snapshot_round_trips_with_tombstones() {
        let mut p = Partition::default();
        for i in 1..=10 {
            p.apply(put(i)).unwrap();
        }
        p.apply(Mutation::Delete {
            key: b"k1".to_vec(),
            ts: Timestamp {
                clock: 99,
                writer: 1,
            },
        })
        .unwrap();
        let bytes = encode_snapshot(&p, Lsn(11));
        let (q, lsn) = decode_snapshot(&bytes).unwrap();
        assert_eq!(lsn, Lsn(11));
        assert_eq!(q.live_keys(), 4);
        assert_eq!(q.tombstones(), 1);
        assert_eq!(q.get(b"k2"), p.get(b"k2"));
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert_eq!(decode_snapshot(&bad).unwrap_err(), SnapshotError::Checksum);
    }

    #[test]
    fn recovery_applies_only_records_after_the_snapshot() {
        let mut p = Partition::default();
        for i in 1..=6 {
            p.apply(put(i)).unwrap();
        }
        let snap = encode_snapshot(&p, Lsn(6));
        // Segment one overlaps the snapshot (a crash between the snapshot and
        // deleting old segments); segment two continues.
        let (s1, s2) = (log(1..=8), log(9..=12));
        let r = recover(
            Some(("snap", &snap)),
            [("a", &s1[..]), ("b", &s2[..])],
            &Sequential,
        )
        .unwrap();
        assert_eq!((r.replayed, r.skipped, r.last_lsn), (6, 6, Lsn(12)));
        let mut direct = Partition::default();
        for i in 1..=12 {
            direct.apply(put(i)).unwrap();
        }
        for k in 0..5 {
            let key = format!("k{k}");
            assert_eq!(r.partition.get(key.as_bytes()), direct.get(key.as_bytes()));
        }
        assert_eq!(r.max_clock_us, 12);
    }

    #[test]
    fn recovery_reports_a_torn_tail_and_refuses_corruption() {
        let s = log(1..=4);
        let r = recover(None, [("a", &s[..s.len() - 3])], &Sequential).unwrap();
        assert_eq!(r.replayed, 3);
        assert!(r.torn.is_some());
        let mut bad = s.clone();
        bad[20] ^= 0x55;
        let err = recover(None, [("a", &bad[..])], &Sequential).unwrap_err();
        assert!(
            err.to_string().contains("WAL segment a: corrupt record"),
            "{err}"
        );
    }

    #[test]
    fn recovery_names_the_first_record_the_partition_refuses() {
        let mut s = log(1..=2);
        let set = Mutation::Put {
            key: b"k3".to_vec(),
            value: Value::Set([b"x".to_vec()].into_iter().collect()),
        };
        encode_record(Lsn(3), &set, &mut s);
        encode_record(Lsn(4), &put(3), &mut s); // an LWW put of the set's key
        let fifth = s.len();
        encode_record(Lsn(5), &put(8), &mut s);
        encode_record(Lsn(6), &put(9), &mut s);
        let err = recover(None, [("a", &s[..])], &Sequential).unwrap_err();
        assert!(
            matches!(&err, RecoveryError::Replay { lsn, .. } if *lsn == Lsn(4)),
            "{err}"
        );
        // Corruption after the refused record is still reported as such.
        s[fifth + 12] ^= 0x55;
        let err = recover(None, [("a", &s[..])], &Sequential).unwrap_err();
        assert!(matches!(err, RecoveryError::Wal { .. }), "{err}");
    }

    #[test]
    fn a_snapshot_encoded_part_by_part_streams_and_version_1_still_reads() {
        let mut p = Partition::default();
        for i in 1..=300 {
            p.apply(put(i)).unwrap();
        }
        // Written out a part at a time, the buffer cleared between parts.
        let (mut streamed, mut buf) = (Vec::new(), Vec::new());
        let mut enc = SnapshotEncoder::begin(Lsn(300), &mut buf);
        for i in 0..PARTS {
            enc.entries(p.part(i), &mut buf);
            streamed.append(&mut buf);
        }
        enc.finish(&mut buf);
        streamed.append(&mut buf);
        assert_eq!(streamed, encode_snapshot(&p, Lsn(300)));
        // Version 1, as earlier nodes wrote it: the count first.
        let mut v1 = SNAPSHOT_MAGIC_V1.to_vec();
        let mut e = Encoder::new(&mut v1);
        e.u64(300);
        e.u64(p.entries().count() as u64);
        for (key, entry) in p.entries() {
            e.entry(key, entry);
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        for bytes in [&streamed, &v1] {
            let (q, lsn) = decode_snapshot(bytes).unwrap();
            assert_eq!((lsn, sorted(&q)), (Lsn(300), sorted(&p)));
        }
    }

    /// Mutations of 64 keys: LWW puts, set puts, deletes and drops.
    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        (0u8..64, 0u8..5, 1u64..40, 0u8..4).prop_map(|(k, kind, clock, item)| {
            let key = format!("k{k}").into_bytes();
            let ts = Timestamp { clock, writer: 1 };
            match kind {
                0 | 1 => Mutation::Put {
                    key,
                    value: Value::Lww(Lww::new(ts, vec![item])),
                },
                2 => Mutation::Put {
                    key,
                    value: Value::Set([vec![item]].into_iter().collect()),
                },
                3 => Mutation::Delete { key, ts },
                _ => Mutation::Drop { key },
            }
        })
    }

    proptest::proptest! {
        /// Keys of every length (inline and on the heap), values of every
        /// lattice and tombstones come back from a snapshot as they were,
        /// counted alike.
        #[test]
        fn any_entries_round_trip(
            entries in proptest::collection::vec((
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                proptest::option::of(crate::lattice::tests::any_value()),
            ), 0..300),
        ) {
            let mut p = Partition::default();
            for (key, value) in entries {
                let entry = match value {
                    Some(v) => Entry::Live(v),
                    None => Entry::Tombstone(Timestamp { clock: 3, writer: 4 }),
                };
                p.restore(key, entry);
            }
            let bytes = encode_snapshot(&p, Lsn(7));
            let (q, at) = decode_snapshot(&bytes).unwrap();
            proptest::prop_assert_eq!((at, sorted(&q)), (Lsn(7), sorted(&p)));
            proptest::prop_assert_eq!((q.live_keys(), q.tombstones()), (p.live_keys(), p.tombstones()));
            // Built in several jobs on threads, the same partition.
            for ways in [2, 3, 64, 100] {
                let (q, at, _) = decode(&bytes, &Threads(ways)).unwrap();
                proptest::prop_assert_eq!((at, sorted(&q)), (Lsn(7), sorted(&p)));
                proptest::prop_assert_eq!((q.live_keys(), q.tombstones()), (p.live_keys(), p.tombstones()));
                proptest::prop_assert!(records_add_up(&q));
            }
        }

        /// A snapshot captured while the partition changes (steps and
        /// writes interleaved at random) holds the state at its start, and
        /// recovers, with the log after it, the state at the end.
        #[test]
        fn a_capture_holds_the_state_at_its_start(
            base in proptest::collection::vec(mutation(), 0..200),
            during in proptest::collection::vec((mutation(), 0usize..40), 0..100),
        ) {
            let mut p = Partition::default();
            for m in base {
                let _ = p.apply(m);
            }
            let at_start = sorted(&p);
            p.capture_begin(Lsn(10));
            let (mut snap, mut seg, mut lsn) = (Vec::new(), SEGMENT_MAGIC.to_vec(), 10);
            for (m, steps) in during {
                for _ in 0..steps {
                    p.capture_step();
                }
                p.capture_take(&mut snap);
                if p.apply(m.clone()).is_ok() {
                    lsn += 1;
                    encode_record(Lsn(lsn), &m, &mut seg);
                }
            }
            while p.capture_step() == CaptureStep::More {}
            proptest::prop_assert!(p.capture_finish(&mut snap));
            let (q, at) = decode_snapshot(&snap).unwrap();
            proptest::prop_assert_eq!((at, sorted(&q)), (Lsn(10), at_start));
            let r = recover(Some(("s", &snap)), [("w", &seg[..])], &Sequential).unwrap();
            proptest::prop_assert_eq!(sorted(&r.partition), sorted(&p));
            // The log applied over a snapshot built in three jobs.
            let r = recover(Some(("s", &snap)), [("w", &seg[..])], &Threads(3)).unwrap();
            proptest::prop_assert_eq!(sorted(&r.partition), sorted(&p));
            proptest::prop_assert!(records_add_up(&r.partition));
        }
    }
}
