//! A shard's durability: the WAL with group commit, snapshots, and recovery.
//!
//! * **Append** ([`Storage::append`]) encodes a record into the pending
//!   buffer and returns its LSN; it never waits.
//! * **Group commit**: one flusher task per shard writes the whole pending
//!   buffer with one `pwrite` on the shard thread (and, under `--fsync
//!   always`, one io_uring `fdatasync`), then releases every waiter whose
//!   LSN it covered. However many connections put concurrently, a shard
//!   issues one write (+ sync) at a time.
//! * **Acknowledgement** ([`Storage::wait_durable`]): `always` — after the
//!   record's group is on stable storage; `batch` and `never` — after it is
//!   written to the OS (so a killed process loses nothing acknowledged);
//!   `batch` additionally syncs every `FSYNC_BATCH_INTERVAL_MS`.
//! * **Snapshots**: once the WAL grows past both bounds of the
//!   [`SnapshotPolicy`] (`--snapshot-wal-mb`, and `--snapshot-wal-percent`
//!   of the newest snapshot's size, so that rewriting every key stays
//!   proportional to what was logged), the flusher
//!   starts capturing the partition and a new segment (made durable at
//!   once under `always`, by the syncer's next pass under `batch`: the
//!   segment left, then the directory); a task of its own
//!   encodes the partition a part at a time while the shard serves (a part
//!   about to change is encoded first), writes the snapshot (temp file,
//!   fdatasync, rename, directory sync) and deletes the segments and
//!   snapshots it supersedes ([`snapshot`]).
//! * **Recovery** ([`Storage::open`]) reads the newest snapshot and the
//!   segments with `std::fs` (start-up only), cuts a torn tail and reports
//!   it, and refuses to start on corruption.
//!
//! File names: `wal-<seq:010>.log`, `snap-<lsn:020>.snap` in
//! `<data-dir>/shard-<id>/`.
//!
//! Modules: [`files`] (the shard directory: names, listing, reading it back,
//! opening and writing files), [`flusher`] (group commit, the batch syncer,
//! and recovery from a failed write), [`snapshot`]; the store's interface
//! is here.

mod files;
mod flusher;
mod snapshot;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::BufferedFile;
use kvs_core::limits::CLOCK_LEAD_MAX_US;
use kvs_core::partition::Mutation;
use kvs_core::snapshot::Recovered;
use kvs_core::wal::{encode_record, SEGMENT_MAGIC};
use kvs_core::{Lsn, ShardId};

use files::{inline_handle, open_segment, read_on_disk, sync_dir, write_all, OnDisk};

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A write came back short (the disk is full, or nearly).
    #[error("short write: {written} of {total} bytes at offset {offset}")]
    ShortWrite {
        written: usize,
        total: usize,
        offset: u64,
    },
    /// What is on disk cannot be recovered: the shard refuses to start.
    #[error("{shard}: recovery of {dir} failed; refusing to start: {source}")]
    Recovery {
        shard: ShardId,
        dir: String,
        #[source]
        source: kvs_core::snapshot::RecoveryError,
    },
    /// A write failed earlier, or the record waited for was lost with a
    /// failed write (never acknowledged); the sentence says which.
    #[error("{0}")]
    Failed(String),
}

/// Names the operation an I/O error came from (glommio's errors become
/// `io::Error`s).
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, StorageError>;
}

impl<T> Doing<T> for std::io::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            what: what(),
            source,
        })
    }
}

impl<T, E> Doing<T> for Result<T, glommio::GlommioError<E>> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, StorageError> {
        self.map_err(std::io::Error::from).doing(what)
    }
}

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// When a put is acknowledged (see module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// Acknowledge after fdatasync of the record's group.
    Always,
    /// Acknowledge after write(2); fdatasync in the background every few ms.
    Batch,
    /// Acknowledge after write(2); never fdatasync (the OS decides).
    Never,
}

#[derive(Debug)]
struct State {
    pending: Vec<u8>,
    next_lsn: Lsn,
    /// Highest LSN written to the OS.
    written: Lsn,
    /// Highest LSN fdatasync'ed.
    synced: Lsn,
    waiters: Vec<(Lsn, oneshot::Sender<Result<(), String>>)>,
    failed: Option<String>,
    /// LSN ranges (inclusive) whose records were lost to a failed write:
    /// LSNs are never reused, and waiting for one of these fails.
    lost: Vec<(Lsn, Lsn)>,
    segment_seq: u64,
    file: Rc<BufferedFile>,
    /// The same segment through a plain descriptor, for inline appends.
    inline: std::fs::File,
    file_pos: u64,
    bytes_since_snapshot: u64,
    /// Size of the newest snapshot on disk (0: none).
    snapshot_bytes: u64,
    wal_bytes_total: u64,
    snapshots: u64,
    flushing: bool,
    /// `--fsync batch`: a segment switch the syncer has not made durable
    /// yet (the segment appends left, and the directory entry of the new
    /// one).
    switched_from: Option<Rc<BufferedFile>>,
}

/// When a shard snapshots: once its WAL has grown by `wal_bytes` and by
/// `wal_percent` of the newest snapshot's size (`--snapshot-wal-mb`,
/// `--snapshot-wal-percent`).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    pub wal_bytes: u64,
    pub wal_percent: u64,
}

impl SnapshotPolicy {
    fn due(&self, wal_bytes_since: u64, snapshot_bytes: u64) -> bool {
        let grown = snapshot_bytes.saturating_mul(self.wal_percent) / 100;
        wal_bytes_since >= self.wal_bytes.max(grown)
    }
}

/// One shard's WAL and snapshots.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    shard: ShardId,
    policy: FsyncPolicy,
    snapshot_policy: SnapshotPolicy,
    state: RefCell<State>,
    kick: LocalSender<()>,
    kicked: RefCell<Option<LocalReceiver<()>>>,
    idle: Cell<bool>,
    /// A snapshot is being written (one at a time).
    snapshotting: Cell<bool>,
    /// Wakes the `--fsync batch` syncer when something was written: an idle
    /// shard runs no timer at all.
    written_kick: LocalSender<()>,
    written_kicked: RefCell<Option<LocalReceiver<()>>>,
}

/// Counters for stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct StorageStats {
    pub last_lsn: u64,
    pub durable_lsn: u64,
    pub wal_bytes: u64,
    pub snapshots: u64,
}

impl Storage {
    /// Recovers the shard's state from `dir` and opens the WAL for appends.
    /// `now_us` is the wall clock: recovered entries stamped too far past it
    /// are healed.
    /// A snapshot's parts are built by the shard's thread and by one
    /// thread on each of `helper_cpus`.
    pub async fn open(
        dir: PathBuf,
        shard: ShardId,
        helper_cpus: &[usize],
        policy: FsyncPolicy,
        snapshot_policy: SnapshotPolicy,
        now_us: u64,
    ) -> Result<(Rc<Storage>, Recovered)> {
        std::fs::create_dir_all(&dir).doing(|| format!("creating {}", dir.display()))?;
        let started = Instant::now();
        let OnDisk {
            mut recovered,
            seq,
            pos,
            snapshot,
            snapshot_bytes,
            segments,
            log_bytes,
            read_ms,
        } = read_on_disk(&dir, shard, helper_cpus)?;
        let file = open_segment(&dir, seq).await?;
        let pos = if pos < SEGMENT_MAGIC.len() as u64 {
            write_all(&file, SEGMENT_MAGIC.to_vec(), 0).await?;
            file.fdatasync()
                .await
                .doing(|| "syncing a new segment".into())?;
            sync_dir(&dir).await?;
            SEGMENT_MAGIC.len() as u64
        } else {
            pos
        };
        log::info!(
            "{shard}: recovered {} keys ({} tombstones) at {} in {} ms (reading files {read_ms} ms): snapshot {}, {} WAL records replayed from {segments} segment(s)",
            recovered.partition.live_keys(),
            recovered.partition.tombstones(),
            recovered.last_lsn,
            started.elapsed().as_millis(),
            snapshot.as_deref().unwrap_or("none"),
            recovered.replayed,
        );
        // A clock poisoned before writers' clocks were bounded (a timestamp
        // far in the future) would win against every later write: move such
        // entries back to now, and make that durable with a snapshot below
        // (replaying the log alone would bring the old stamps back).
        let bound_us = now_us.saturating_add(CLOCK_LEAD_MAX_US);
        let healed = if recovered.max_clock_us > bound_us {
            let n = recovered.partition.restamp_after(bound_us, now_us);
            log::warn!(
                "{shard}: recovered clock {} us is more than {} ms ahead of wall time: \
                 {n} entries re-stamped to now ({now_us} us); writing a snapshot",
                recovered.max_clock_us,
                CLOCK_LEAD_MAX_US / 1000
            );
            recovered.max_clock_us = now_us;
            n
        } else {
            0
        };
        let bytes_since_snapshot = log_bytes;
        let (kick, kicked) = local_channel::new_bounded(1);
        let (written_kick, written_kicked) = local_channel::new_bounded(1);
        let last = recovered.last_lsn;
        let inline = inline_handle(&dir, seq)?;
        let storage = Rc::new(Storage {
            dir,
            shard,
            policy,
            snapshot_policy,
            state: RefCell::new(State {
                pending: Vec::new(),
                next_lsn: last.next(),
                written: last,
                synced: last,
                waiters: Vec::new(),
                failed: None,
                lost: Vec::new(),
                segment_seq: seq,
                inline,
                file: Rc::new(file),
                file_pos: pos,
                bytes_since_snapshot,
                snapshot_bytes,
                wal_bytes_total: 0,
                snapshots: 0,
                flushing: false,
                switched_from: None,
            }),
            kick,
            kicked: RefCell::new(Some(kicked)),
            idle: Cell::new(true),
            snapshotting: Cell::new(false),
            written_kick,
            written_kicked: RefCell::new(Some(written_kicked)),
        });
        if healed > 0 {
            let partition = RefCell::new(std::mem::take(&mut recovered.partition));
            storage.snapshot(&partition).await?;
            recovered.partition = partition.into_inner();
        }
        Ok((storage, recovered))
    }

    /// Fails if an earlier write failed: the shard then refuses writes.
    pub fn check_writable(&self) -> Result<()> {
        match &self.state.borrow().failed {
            Some(e) => Err(StorageError::Failed(format!(
                "{}: the WAL failed ({e}); this shard refuses writes until the disk takes them again",
                self.shard
            ))),
            None => Ok(()),
        }
    }

    /// Queues a record for `m`; returns its LSN. Never waits.
    pub fn append(&self, m: &Mutation) -> Lsn {
        let lsn = {
            let mut s = self.state.borrow_mut();
            let lsn = s.next_lsn;
            s.next_lsn = lsn.next();
            encode_record(lsn, m, &mut s.pending);
            lsn
        };
        if self.idle.replace(false) {
            // Wake the flusher; a full channel means it is already kicked.
            let _ = self.kick.try_send(());
        }
        lsn
    }

    /// Waits until `lsn` is durable under the policy.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let rx = {
            let mut s = self.state.borrow_mut();
            if let Some(e) = &s.failed {
                return Err(StorageError::Failed(e.clone()));
            }
            if s.lost.iter().any(|&(from, to)| from <= lsn && lsn <= to) {
                return Err(StorageError::Failed(format!(
                    "{lsn} was lost when a WAL write failed; it was never acknowledged"
                )));
            }
            let done = match self.policy {
                FsyncPolicy::Always => s.synced,
                FsyncPolicy::Batch | FsyncPolicy::Never => s.written,
            };
            if done >= lsn {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push((lsn, tx));
            rx
        };
        rx.await
            .unwrap_or_else(|_| Err("the WAL flusher stopped".to_owned()))
            .map_err(StorageError::Failed)
    }

    /// Counters for stats.
    pub fn stats(&self) -> StorageStats {
        let s = self.state.borrow();
        StorageStats {
            last_lsn: s.next_lsn.0 - 1,
            durable_lsn: match self.policy {
                FsyncPolicy::Always => s.synced.0,
                _ => s.written.0,
            },
            wal_bytes: s.wal_bytes_total,
            snapshots: s.snapshots,
        }
    }

    /// Flushes everything appended and syncs it (graceful shutdown).
    pub async fn close(&self) -> Result<()> {
        let last = Lsn(self.state.borrow().next_lsn.0 - 1);
        if last.0 > 0 {
            // Under `always` this waits for the sync too; otherwise for the write.
            self.wait_durable(last).await?;
        }
        loop {
            if !self.state.borrow().flushing {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let file = self.state.borrow().file.clone();
        file.fdatasync()
            .await
            .doing(|| "the final fdatasync of the WAL".into())
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn a_snapshot_is_due_once_the_wal_outgrows_both_bounds() {
        const MIB: u64 = 1 << 20;
        let policy = SnapshotPolicy {
            wal_bytes: 64 * MIB,
            wal_percent: 100,
        };
        // No snapshot yet, or a small one: the fixed bound alone.
        assert!(!policy.due(64 * MIB - 1, 0));
        assert!(policy.due(64 * MIB, 0));
        assert!(policy.due(64 * MIB, 10 * MIB));
        // A snapshot larger than that: the WAL must grow by its size.
        assert!(!policy.due(255 * MIB, 256 * MIB));
        assert!(policy.due(256 * MIB, 256 * MIB));
        let half = SnapshotPolicy {
            wal_percent: 50,
            ..policy
        };
        assert!(policy.due(128 * MIB, 128 * MIB) && half.due(128 * MIB, 256 * MIB));
        let fixed = SnapshotPolicy {
            wal_percent: 0,
            ..policy
        };
        assert!(fixed.due(64 * MIB, 1 << 40));
    }
}
