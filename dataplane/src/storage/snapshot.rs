//! Snapshots, without stalling the shard. [`Storage::begin_snapshot`]
//! (the flusher, between two flushes) starts capturing the partition at the
//! last LSN applied and moves appends to a new segment; then
//! [`Storage::write_snapshot`] (a task of its own) encodes the partition a
//! part at a time — a part about to change is encoded first, by the write
//! itself (`Partition::capture_begin`) — writes the bytes to a temporary
//! file in chunks, yielding to the shard's other tasks after every part,
//! then syncs and renames it, syncs the directory, and removes the files
//! it supersedes. Writes go on being applied and acknowledged meanwhile.
//!
//! A snapshot is abandoned (its temporary file removed; the WAL keeps
//! everything) when a file operation fails, or when a WAL write failed
//! while it ran: memory was then rebuilt from the log, and the parts still
//! to encode might no longer hold every record up to the snapshot's LSN.

use std::cell::RefCell;
use std::os::unix::fs::FileExt as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::OpenOptions;
use kvs_core::partition::{CaptureStep, Partition};
use kvs_core::wal::SEGMENT_MAGIC;
use kvs_core::Lsn;

use super::files::{
    inline_handle, list, open_segment, segment_name, snapshot_name, sync_dir, write_all,
};
use super::{Doing, FsyncPolicy, Result, Storage, StorageError};
use crate::limits::{SNAPSHOT_TURN_US, SNAPSHOT_WRITE_CHUNK_BYTES};

/// A snapshot begun: what it covers, and the segment appends moved to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Begun {
    lsn: Lsn,
    new_seq: u64,
}

impl Storage {
    /// Writes a snapshot and waits for it (start-up).
    pub(super) async fn snapshot(&self, partition: &RefCell<Partition>) -> Result<()> {
        let begun = self.begin_snapshot(partition).await?;
        self.write_snapshot(partition, begun).await
    }

    /// Starts capturing `partition` at the last LSN applied and moves
    /// appends to a new segment (records still pending go there; recovery
    /// skips those the snapshot covers). One snapshot runs at a time: the
    /// flusher begins none while `snapshotting` is set.
    pub(super) async fn begin_snapshot(&self, partition: &RefCell<Partition>) -> Result<Begun> {
        let (lsn, old_seq) = {
            let s = self.state.borrow();
            (Lsn(s.next_lsn.0 - 1), s.segment_seq)
        };
        partition.borrow_mut().capture_begin(lsn);
        self.snapshotting.set(true);
        let new_seq = old_seq + 1;
        // Under `always` the switch is durable before any record goes to
        // the new segment (each acknowledgement waits for a sync anyway).
        // Under `batch` the syncer makes it durable on its next pass, and
        // under `never` nothing is promised: the flusher does not wait on
        // the disk, which may be busy writing back the last segment.
        let durable_now = self.policy == FsyncPolicy::Always;
        let file = async {
            let file = open_segment(&self.dir, new_seq).await?;
            write_all(&file, SEGMENT_MAGIC.to_vec(), 0).await?;
            if durable_now {
                file.fdatasync()
                    .await
                    .doing(|| "syncing a new segment".into())?;
                sync_dir(&self.dir).await?;
            }
            Ok::<_, StorageError>(file)
        }
        .await;
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                partition.borrow_mut().capture_abort();
                self.snapshotting.set(false);
                // Appends stay in the old segment: an empty newer one would
                // make its later records look like a mid-log tear.
                let _ = std::fs::remove_file(self.dir.join(segment_name(new_seq)));
                return Err(e);
            }
        };
        let mut s = self.state.borrow_mut();
        let old = std::mem::replace(&mut s.file, Rc::new(file));
        if self.policy == FsyncPolicy::Batch && s.switched_from.is_none() {
            s.switched_from = Some(old);
        }
        s.inline = inline_handle(&self.dir, new_seq)?;
        s.file_pos = SEGMENT_MAGIC.len() as u64;
        s.segment_seq = new_seq;
        s.bytes_since_snapshot = 0;
        Ok(Begun { lsn, new_seq })
    }

    /// Encodes and writes the snapshot `begin_snapshot` began (see the
    /// module doc); the shard serves between its parts. The next snapshot
    /// may begin once this returns.
    pub(super) async fn write_snapshot(
        &self,
        partition: &RefCell<Partition>,
        begun: Begun,
    ) -> Result<()> {
        let result = self.write_and_replace(partition, begun).await;
        partition.borrow_mut().capture_abort(); // a no-op once finished
        self.snapshotting.set(false);
        result
    }

    async fn write_and_replace(&self, partition: &RefCell<Partition>, begun: Begun) -> Result<()> {
        let started = Instant::now();
        let name = snapshot_name(begun.lsn);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let lost_before = self.state.borrow().lost.len();
        let written = self.write_parts(partition, begun, &tmp).await;
        let size = match written {
            Ok(size) if self.state.borrow().lost.len() == lost_before => size,
            other => {
                // A partial snapshot is useless and holds space the WAL needs.
                let _ = std::fs::remove_file(&tmp);
                return Err(other.err().unwrap_or_else(|| {
                    StorageError::Failed("a WAL write failed while the snapshot was taken".into())
                }));
            }
        };
        let what = || format!("writing snapshot {name}");
        let mut f = OpenOptions::new()
            .write(true)
            .buffered_open(&tmp)
            .await
            .doing(what)?;
        f.fdatasync().await.doing(what)?;
        f.rename(self.dir.join(&name)).await.doing(what)?;
        f.close().await.doing(what)?;
        sync_dir(&self.dir).await?;
        let listing = list(&self.dir)?;
        // Unlinking the superseded files (megabytes of extents and cached
        // pages) takes milliseconds: through io_uring, off the shard's turn.
        let old_segments = listing.segments.into_iter().filter(|&s| s < begun.new_seq);
        let old_snapshots = listing.snapshots.into_iter().filter(|&l| l < begun.lsn.0);
        let old = old_segments
            .map(segment_name)
            .chain(old_snapshots.map(|l| snapshot_name(Lsn(l))));
        for old in old.collect::<Vec<_>>() {
            glommio::io::remove(self.dir.join(&old))
                .await
                .doing(|| format!("removing {old}"))?;
        }
        let mut s = self.state.borrow_mut();
        s.snapshots += 1;
        s.snapshot_bytes = size;
        drop(s);
        log::info!(
            "{}: snapshot {name} ({size} bytes) written in {} ms; WAL now starts at {}",
            self.shard,
            started.elapsed().as_millis(),
            segment_name(begun.new_seq)
        );
        Ok(())
    }

    /// The capture's parts into `tmp`, a chunk at a time with a plain
    /// `pwrite` (page cache: io_uring would hand buffered writes to a
    /// kernel thread that waits behind the shard for its core); its size.
    async fn write_parts(
        &self,
        partition: &RefCell<Partition>,
        begun: Begun,
        tmp: &std::path::Path,
    ) -> Result<u64> {
        let what = || format!("writing {}", tmp.display());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .doing(what)?;
        let (mut buf, mut pos, mut turn) = (Vec::new(), 0u64, Instant::now());
        loop {
            let step = partition.borrow_mut().capture_step();
            let done = match step {
                CaptureStep::More => {
                    partition.borrow_mut().capture_take(&mut buf);
                    false
                }
                CaptureStep::Done if partition.borrow_mut().capture_finish(&mut buf) => true,
                CaptureStep::Done | CaptureStep::None => {
                    return Err(StorageError::Failed(format!(
                        "the capture of snapshot {} ended before it was written (memory \
                         rebuilt from the log)",
                        snapshot_name(begun.lsn)
                    )));
                }
            };
            if done || buf.len() >= SNAPSHOT_WRITE_CHUNK_BYTES {
                file.write_all_at(&buf, pos).doing(what)?;
                pos += buf.len() as u64;
                buf.clear();
            }
            if done {
                return Ok(pos);
            }
            if turn.elapsed() >= Duration::from_micros(SNAPSHOT_TURN_US) {
                // Let the shard's connections run. A plain yield would not
                // do: the task queue would go on running this task without
                // reaping the sockets' completions; a timer goes through
                // the reactor.
                glommio::timer::sleep(Duration::from_micros(1)).await;
                turn = Instant::now();
            }
        }
    }
}
