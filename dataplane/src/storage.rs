//! A shard's durability: the WAL with group commit, snapshots, and recovery.
//!
//! * **Append** ([`Storage::append`]) encodes a record into the pending
//!   buffer and returns its LSN; it never waits.
//! * **Group commit**: one flusher task per shard writes the whole pending
//!   buffer with one `pwrite` on the shard thread (and, under `--fsync
//!   always`, one io_uring `fdatasync`), then releases every waiter whose LSN it covered. However
//!   many connections put concurrently, a shard issues one write (+ sync) at
//!   a time.
//! * **Acknowledgement** ([`Storage::wait_durable`]): `always` — after the
//!   record's group is on stable storage; `batch` and `never` — after it is
//!   written to the OS (so a killed process loses nothing acknowledged);
//!   `batch` additionally syncs every `FSYNC_BATCH_INTERVAL_MS`.
//! * **Snapshots**: once the WAL grows past the threshold, the flusher
//!   encodes the partition, starts a new segment, writes the snapshot
//!   (temp file, fdatasync, rename, directory sync) and deletes the segments
//!   and snapshots it supersedes.
//! * **Recovery** ([`Storage::open`]) reads the newest snapshot and the
//!   segments with `std::fs` (start-up only), cuts a torn tail and reports
//!   it, and refuses to start on corruption.
//!
//! File names: `wal-<seq:010>.log`, `snap-<lsn:020>.snap` in
//! `<data-dir>/shard-<id>/`.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{BufferedFile, Directory, OpenOptions};
use kvs_core::limits::CLOCK_LEAD_MAX_US;
use kvs_core::partition::{Mutation, Partition};
use kvs_core::snapshot::{encode_snapshot, recover, Recovered};
use kvs_core::wal::{encode_record, SEGMENT_MAGIC};
use kvs_core::{Lsn, ShardId};

use crate::limits::{
    FSYNC_BATCH_INTERVAL_MS, STORAGE_PROBE_BYTES, STORAGE_RETRY_MS_MAX, STORAGE_RETRY_MS_MIN,
};

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
    wal_bytes_total: u64,
    snapshots: u64,
    flushing: bool,
}

/// One shard's WAL and snapshots.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    shard: ShardId,
    policy: FsyncPolicy,
    snapshot_wal_bytes: u64,
    state: RefCell<State>,
    kick: LocalSender<()>,
    kicked: RefCell<Option<LocalReceiver<()>>>,
    idle: Cell<bool>,
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

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:010}.log")
}

fn snapshot_name(lsn: Lsn) -> String {
    format!("snap-{:020}.snap", lsn.0)
}

fn parse_num(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Files found in a shard directory.
#[derive(Debug, Default)]
struct Listing {
    segments: Vec<u64>,
    snapshots: Vec<u64>,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut l = Listing::default();
    for entry in std::fs::read_dir(dir).doing(|| format!("reading {}", dir.display()))? {
        let name = entry
            .doing(|| format!("reading {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(seq) = parse_num(&name, "wal-", ".log") {
            l.segments.push(seq);
        } else if let Some(lsn) = parse_num(&name, "snap-", ".snap") {
            l.snapshots.push(lsn);
        } else if name.ends_with(".tmp") {
            // A snapshot whose write did not finish: never renamed, never used.
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    l.segments.sort_unstable();
    l.snapshots.sort_unstable();
    Ok(l)
}

/// What the files of a shard directory hold, read with `std::fs`: the
/// recovered state and where appends continue (segment, offset).
struct OnDisk {
    recovered: Recovered,
    seq: u64,
    pos: u64,
    snapshot: Option<String>,
    segments: usize,
    log_bytes: u64,
}

/// Reads `dir` and recovers its state, cutting a torn tail off the last
/// segment (start-up, and after a failed write: memory is rebuilt from
/// exactly what the log holds).
fn read_on_disk(dir: &Path, shard: ShardId) -> Result<OnDisk> {
    let listing = list(dir)?;
    let snap = match listing.snapshots.last() {
        Some(&lsn) => {
            let name = snapshot_name(Lsn(lsn));
            Some((
                name.clone(),
                std::fs::read(dir.join(&name)).doing(|| format!("reading {name}"))?,
            ))
        }
        None => None,
    };
    let mut segs = Vec::new();
    for &seq in &listing.segments {
        let name = segment_name(seq);
        segs.push((
            name.clone(),
            std::fs::read(dir.join(&name)).doing(|| format!("reading {name}"))?,
        ));
    }
    let recovered = recover(
        snap.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
        segs.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    )
    .map_err(|source| StorageError::Recovery {
        shard,
        dir: dir.display().to_string(),
        source,
    })?;
    let (seq, pos) = match (listing.segments.last(), &recovered.torn) {
        (Some(&seq), Some(torn)) => {
            let name = segment_name(seq);
            log::warn!(
                "{shard}: cut torn WAL tail of {name}: {} bytes at offset {} ({}); \
                 every whole record before it was kept",
                torn.cut_bytes,
                torn.offset,
                torn.reason
            );
            let cut = || -> std::io::Result<()> {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join(&name))?;
                f.set_len(torn.offset as u64)?;
                f.sync_all()
            };
            cut().doing(|| format!("cutting the torn tail of {name}"))?;
            (seq, torn.offset as u64)
        }
        (Some(&seq), None) => (seq, segs.last().map_or(0, |(_, b)| b.len() as u64)),
        (None, _) => (1, 0),
    };
    Ok(OnDisk {
        recovered,
        seq,
        pos,
        snapshot: snap.map(|(n, _)| n),
        segments: listing.segments.len(),
        log_bytes: segs.iter().map(|(_, b)| b.len() as u64).sum(),
    })
}

impl Storage {
    /// Recovers the shard's state from `dir` and opens the WAL for appends.
    /// `now_us` is the wall clock: recovered entries stamped too far past it
    /// are healed.
    pub async fn open(
        dir: PathBuf,
        shard: ShardId,
        policy: FsyncPolicy,
        snapshot_wal_bytes: u64,
        now_us: u64,
    ) -> Result<(Rc<Storage>, Recovered)> {
        std::fs::create_dir_all(&dir).doing(|| format!("creating {}", dir.display()))?;
        let started = Instant::now();
        let OnDisk {
            mut recovered,
            seq,
            pos,
            snapshot,
            segments,
            log_bytes,
        } = read_on_disk(&dir, shard)?;
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
            "{shard}: recovered {} keys ({} tombstones) at {} in {} ms: snapshot {}, {} WAL records replayed from {segments} segment(s)",
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
            snapshot_wal_bytes,
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
                wal_bytes_total: 0,
                snapshots: 0,
                flushing: false,
            }),
            kick,
            kicked: RefCell::new(Some(kicked)),
            idle: Cell::new(true),
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

    /// The group-commit loop; runs for the shard's lifetime.
    /// `rebuilt` runs after memory was rebuilt from the log following a
    /// failed write (the shard re-derives what it keeps beside the data).
    pub async fn run_flusher(
        self: Rc<Self>,
        partition: Rc<RefCell<Partition>>,
        rebuilt: Box<dyn Fn()>,
    ) {
        let Some(kicked) = self.kicked.borrow_mut().take() else {
            return;
        };
        loop {
            let batch = {
                let mut s = self.state.borrow_mut();
                if s.pending.is_empty() {
                    None
                } else {
                    s.flushing = true;
                    Some((std::mem::take(&mut s.pending), s.next_lsn.0 - 1))
                }
            };
            let Some((buf, upto)) = batch else {
                self.idle.set(true);
                if kicked.recv().await.is_none() {
                    return;
                }
                continue;
            };
            if let Err(e) = self.flush(buf, Lsn(upto)).await {
                self.fail(e.to_string());
                self.recover_after_failure(&partition, &*rebuilt).await;
                continue;
            }
            let due = self.state.borrow().bytes_since_snapshot >= self.snapshot_wal_bytes;
            if due {
                if let Err(e) = self.snapshot(&partition).await {
                    // The WAL still holds everything: a failed snapshot only
                    // means a longer replay; try again after more writes.
                    log::error!(
                        "{}: snapshot failed (the WAL keeps every write): {e:#}",
                        self.shard
                    );
                    self.state.borrow_mut().bytes_since_snapshot = 0;
                }
            }
        }
    }

    async fn flush(&self, buf: Vec<u8>, upto: Lsn) -> Result<()> {
        let (file, pos) = {
            let s = self.state.borrow();
            (s.file.clone(), s.file_pos)
        };
        let len = buf.len() as u64;
        // Appends go to the page cache with a plain `pwrite` on the shard
        // thread instead of an io_uring write: on ext4, io_uring hands
        // buffered writes to a kernel worker thread (io-wq) pinned to the
        // same core, which waits behind the busy shard for a time slice
        // (milliseconds of put latency under load). A group's pwrite is a
        // few microseconds of memcpy. The durability step, fdatasync, stays
        // on io_uring.
        {
            use std::os::unix::fs::FileExt;
            let s = self.state.borrow();
            s.inline
                .write_all_at(&buf, pos)
                .doing(|| format!("writing {} at offset {pos}", segment_name(s.segment_seq)))?;
        }
        let sync = self.policy == FsyncPolicy::Always;
        if sync {
            file.fdatasync()
                .await
                .doing(|| "fdatasync of the WAL".into())?;
        }
        if self.policy == FsyncPolicy::Batch {
            // Full means the syncer is already woken.
            let _ = self.written_kick.try_send(());
        }
        let mut s = self.state.borrow_mut();
        debug_assert!(upto > s.written, "groups are written in LSN order");
        s.file_pos += len;
        s.bytes_since_snapshot += len;
        s.wal_bytes_total += len;
        s.written = upto;
        if sync {
            s.synced = upto;
        }
        s.flushing = false;
        let done = if sync { s.synced } else { s.written };
        let mut i = 0;
        while i < s.waiters.len() {
            if s.waiters[i].0 <= done {
                let (_, tx) = s.waiters.swap_remove(i);
                let _ = tx.send(Ok(()));
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// A write failed: refuse writes, and fail every waiter and every
    /// record not yet written (none of them was acknowledged).
    fn fail(&self, msg: String) {
        log::error!(
            "{}: WAL write failed: {msg}; refusing writes until the disk takes them again \
             (reads go on)",
            self.shard
        );
        let mut s = self.state.borrow_mut();
        for (_, tx) in s.waiters.drain(..) {
            let _ = tx.send(Err(msg.clone()));
        }
        // Everything after the last good write is gone, whoever waits for
        // it later; new records continue after it (no LSN is reused).
        let (from, to) = (s.written.next(), Lsn(s.next_lsn.0 - 1));
        if from <= to {
            s.lost.push((from, to));
        }
        s.pending.clear();
        s.flushing = false;
        s.failed = Some(msg);
    }

    /// After a failed write: memory is rebuilt from exactly what the log
    /// holds (the failed group was applied in memory but never
    /// acknowledged, so it must not stay readable); then, with backoff, the
    /// shard probes the disk and resumes writes once it takes them.
    async fn recover_after_failure(&self, partition: &RefCell<Partition>, rebuilt: &dyn Fn()) {
        let mut backoff_ms = STORAGE_RETRY_MS_MIN;
        let mut appends_at = None;
        loop {
            if appends_at.is_none() {
                match self
                    .cut_to_last_good_write()
                    .and_then(|()| read_on_disk(&self.dir, self.shard))
                {
                    Ok(on_disk) => {
                        let r = on_disk.recovered;
                        log::warn!(
                            "{}: memory rebuilt from the log: {} keys at {}; writes after it \
                             were never acknowledged and are gone",
                            self.shard,
                            r.partition.live_keys(),
                            r.last_lsn
                        );
                        debug_assert!(r.last_lsn <= self.state.borrow().written);
                        *partition.borrow_mut() = r.partition;
                        rebuilt();
                        appends_at = Some((on_disk.seq, on_disk.pos));
                    }
                    Err(e) => log::error!(
                        "{}: the log could not be read back ({e:#}); retrying",
                        self.shard
                    ),
                }
            }
            if let Some((seq, pos)) = appends_at {
                match self.resume_at(seq, pos).await {
                    Ok(()) => {
                        log::info!(
                            "{}: the disk takes writes again; writes resumed",
                            self.shard
                        );
                        return;
                    }
                    Err(e) => log::warn!(
                        "{}: the disk still refuses writes ({e:#}); next try in {backoff_ms} ms",
                        self.shard
                    ),
                }
            }
            glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(STORAGE_RETRY_MS_MAX);
        }
    }

    /// Cuts the active segment back to the end of the last write that
    /// succeeded: a failed write (or sync) may have left part or all of its
    /// group in the file, and none of it was acknowledged.
    fn cut_to_last_good_write(&self) -> Result<()> {
        let (seq, pos) = {
            let s = self.state.borrow();
            (s.segment_seq, s.file_pos)
        };
        let path = self.dir.join(segment_name(seq));
        let cut = || -> std::io::Result<()> {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            if f.metadata()?.len() > pos {
                f.set_len(pos)?;
                f.sync_all()?;
            }
            Ok(())
        };
        cut().doing(|| format!("cutting {} back to {pos} bytes", path.display()))
    }

    /// Probes the disk with `STORAGE_PROBE_BYTES` (written, synced,
    /// removed), then reopens segment `seq` for appends at `pos`.
    async fn resume_at(&self, seq: u64, pos: u64) -> Result<()> {
        let probe = self.dir.join("probe.tmp");
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(&vec![0u8; STORAGE_PROBE_BYTES])?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        written.doing(|| format!("probe write of {STORAGE_PROBE_BYTES} bytes"))?;
        let file = open_segment(&self.dir, seq).await?;
        let pos = if pos < SEGMENT_MAGIC.len() as u64 {
            write_all(&file, SEGMENT_MAGIC.to_vec(), 0).await?;
            file.fdatasync()
                .await
                .doing(|| "syncing a new segment".into())?;
            sync_dir(&self.dir).await?;
            SEGMENT_MAGIC.len() as u64
        } else {
            pos
        };
        let inline = inline_handle(&self.dir, seq)?;
        let mut s = self.state.borrow_mut();
        s.file = Rc::new(file);
        s.inline = inline;
        s.segment_seq = seq;
        s.file_pos = pos;
        s.failed = None;
        Ok(())
    }

    /// `--fsync batch`: syncs what was written, every interval.
    pub async fn run_batch_syncer(self: Rc<Self>) {
        if self.policy != FsyncPolicy::Batch {
            return;
        }
        let Some(written) = self.written_kicked.borrow_mut().take() else {
            return;
        };
        loop {
            let dirty = {
                let s = self.state.borrow();
                s.written > s.synced
            };
            if !dirty {
                if written.recv().await.is_none() {
                    return;
                }
                continue;
            }
            glommio::timer::sleep(Duration::from_millis(FSYNC_BATCH_INTERVAL_MS)).await;
            if let Err(e) = self.sync_written().await {
                log::error!("{}: background fdatasync failed: {e:#}", self.shard);
            }
        }
    }

    async fn sync_written(&self) -> Result<()> {
        let (file, written, synced) = {
            let s = self.state.borrow();
            (s.file.clone(), s.written, s.synced)
        };
        if written > synced {
            file.fdatasync()
                .await
                .doing(|| "background fdatasync of the WAL".into())?;
            let mut s = self.state.borrow_mut();
            s.synced = s.synced.max(written);
        }
        Ok(())
    }

    async fn snapshot(&self, partition: &RefCell<Partition>) -> Result<()> {
        let started = Instant::now();
        // Everything applied so far: records still pending go to the new
        // segment, and recovery skips those the snapshot already covers.
        let (bytes, lsn, old_seq) = {
            let s = self.state.borrow();
            let lsn = Lsn(s.next_lsn.0 - 1);
            (
                encode_snapshot(&partition.borrow(), lsn),
                lsn,
                s.segment_seq,
            )
        };
        let new_seq = old_seq + 1;
        let file = async {
            let file = open_segment(&self.dir, new_seq).await?;
            write_all(&file, SEGMENT_MAGIC.to_vec(), 0).await?;
            file.fdatasync()
                .await
                .doing(|| "syncing a new segment".into())?;
            sync_dir(&self.dir).await?;
            Ok::<_, StorageError>(file)
        }
        .await;
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                // Appends stay in the old segment: an empty newer one would
                // make its later records look like a mid-log tear.
                let _ = std::fs::remove_file(self.dir.join(segment_name(new_seq)));
                return Err(e);
            }
        };
        {
            let mut s = self.state.borrow_mut();
            s.file = Rc::new(file);
            s.inline = inline_handle(&self.dir, new_seq)?;
            s.file_pos = SEGMENT_MAGIC.len() as u64;
            s.segment_seq = new_seq;
            s.bytes_since_snapshot = 0;
        }
        let name = snapshot_name(lsn);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let size = bytes.len();
        let written = async {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .buffered_open(&tmp)
                .await
                .doing(|| format!("creating {}", tmp.display()))?;
            write_all(&f, bytes, 0).await?;
            let what = || format!("writing snapshot {name}");
            f.fdatasync().await.doing(what)?;
            f.rename(self.dir.join(&name)).await.doing(what)?;
            f.close().await.doing(what)?;
            Ok::<_, StorageError>(())
        }
        .await;
        if let Err(e) = written {
            // A partial snapshot is useless and holds space the WAL needs.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir).await?;
        let listing = list(&self.dir)?;
        for seq in listing.segments.into_iter().filter(|&s| s < new_seq) {
            let old = segment_name(seq);
            std::fs::remove_file(self.dir.join(&old)).doing(|| format!("removing {old}"))?;
        }
        for old in listing.snapshots.into_iter().filter(|&l| l < lsn.0) {
            let old = snapshot_name(Lsn(old));
            std::fs::remove_file(self.dir.join(&old)).doing(|| format!("removing {old}"))?;
        }
        self.state.borrow_mut().snapshots += 1;
        log::info!(
            "{}: snapshot {name} ({size} bytes) written in {} ms; WAL now starts at {}",
            self.shard,
            started.elapsed().as_millis(),
            segment_name(new_seq)
        );
        Ok(())
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

fn inline_handle(dir: &Path, seq: u64) -> Result<std::fs::File> {
    let path = dir.join(segment_name(seq));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .doing(|| format!("opening {}", path.display()))
}

async fn open_segment(dir: &Path, seq: u64) -> Result<BufferedFile> {
    let path = dir.join(segment_name(seq));
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .buffered_open(&path)
        .await
        .doing(|| format!("opening {}", path.display()))
}

async fn write_all(file: &BufferedFile, buf: Vec<u8>, pos: u64) -> Result<()> {
    // `write_at` consumes its buffer. Regular files only write short on
    // ENOSPC-like conditions; treat that as the failure it is (the shard
    // then refuses writes) rather than keep a copy of every batch.
    let total = buf.len();
    let n = file
        .write_at(buf, pos)
        .await
        .doing(|| format!("writing {total} bytes at offset {pos}"))?;
    if n != total {
        return Err(StorageError::ShortWrite {
            written: n,
            total,
            offset: pos,
        });
    }
    Ok(())
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let d = Directory::open(dir)
        .await
        .doing(|| format!("opening directory {}", dir.display()))?;
    let what = || format!("syncing directory {}", dir.display());
    d.sync().await.doing(what)?;
    d.close().await.doing(what)?;
    Ok(())
}
