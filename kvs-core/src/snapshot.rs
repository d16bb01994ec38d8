//! Snapshot format and the recovery procedure that combines a snapshot with
//! the WAL segments written after it.
//!
//! ```text
//! snapshot = "SQSNP\0\0\x01" last_lsn:u64le count:u64le entry{count} crc:u32le
//! entry    = key:bytes tag:u8 (1 value | 2 clock:u64le writer:u64le)
//! crc      = CRC32C(every byte before it)
//! ```
//!
//! A snapshot holds the effect of every record up to and including
//! `last_lsn`. Snapshots are written to a temporary name, synced and renamed,
//! so a snapshot that fails its checksum is corruption, never a torn write.

use thiserror::Error;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::ids::Lsn;
use crate::lattice::{Timestamp, Value};
use crate::partition::{Entry, Mutation, Partition};
use crate::wal::{scan_segment, TornTail, WalError};

/// First bytes of every snapshot; the last byte is the format version.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SQSNP\0\0\x01";

/// Serialises the whole partition.
#[must_use]
pub fn encode_snapshot(p: &Partition, last_lsn: Lsn) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    let mut e = Encoder::new(&mut out);
    e.u64(last_lsn.0);
    e.u64(p.entries().count() as u64);
    for (key, entry) in p.entries() {
        e.entry(key, entry);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
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
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 || bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadHeader);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(SnapshotError::Checksum);
    }
    let mut d = Decoder::new(&body[SNAPSHOT_MAGIC.len()..]);
    let last_lsn = Lsn(d.u64()?);
    let count = d.u64()?;
    let mut p = Partition::default();
    for _ in 0..count {
        let key = d.key()?;
        let entry = match d.u8()? {
            1 => Entry::Live(d.value()?),
            2 => Entry::Tombstone(Timestamp {
                clock: d.u64()?,
                writer: d.u64()?,
            }),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "snapshot entry",
                    tag,
                }
                .into())
            }
        };
        p.restore(key, entry);
    }
    d.finish()?;
    Ok((p, last_lsn))
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
/// order (each `(name, bytes)`; names only label errors).
pub fn recover<'a>(
    snapshot: Option<(&str, &[u8])>,
    segments: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Recovered, RecoveryError> {
    let (mut partition, snap_lsn) = match snapshot {
        Some((name, bytes)) => {
            decode_snapshot(bytes).map_err(|source| RecoveryError::Snapshot {
                name: name.to_owned(),
                source,
            })?
        }
        None => (Partition::default(), Lsn(0)),
    };
    let mut max_clock_us = partition
        .entries()
        .map(|(_, e)| match e {
            Entry::Live(Value::Lww(l)) => l.timestamp().clock,
            Entry::Tombstone(ts) => ts.clock,
            Entry::Live(_) => 0,
        })
        .max()
        .unwrap_or(0);
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
        let scan = scan_segment(bytes, i + 1 == count).map_err(|source| RecoveryError::Wal {
            name: name.to_owned(),
            source,
        })?;
        for (lsn, m) in scan.records {
            if lsn <= out.last_lsn {
                out.skipped += 1;
                continue;
            }
            let clock = match &m {
                Mutation::Put {
                    value: Value::Lww(l),
                    ..
                } => l.timestamp().clock,
                Mutation::Delete { ts, .. } => ts.clock,
                Mutation::Put { .. } | Mutation::Drop { .. } => 0,
            };
            max_clock_us = max_clock_us.max(clock);
            partition.apply(m).map_err(|e| RecoveryError::Replay {
                name: name.to_owned(),
                lsn,
                reason: e.to_string(),
            })?;
            out.last_lsn = lsn;
            out.replayed += 1;
        }
        out.torn = scan.torn;
    }
    out.partition = partition;
    out.max_clock_us = max_clock_us;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Lww;
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
        let r = recover(Some(("snap", &snap)), [("a", &s1[..]), ("b", &s2[..])]).unwrap();
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
        let r = recover(None, [("a", &s[..s.len() - 3])]).unwrap();
        assert_eq!(r.replayed, 3);
        assert!(r.torn.is_some());
        let mut bad = s.clone();
        bad[20] ^= 0x55;
        let err = recover(None, [("a", &bad[..])]).unwrap_err();
        assert!(
            err.to_string().contains("WAL segment a: corrupt record"),
            "{err}"
        );
    }
}
