//! Group commit: the flusher writes what is pending and releases waiters;
//! a failed write rolls memory back to the log and resumes once the disk
//! takes writes again; under `--fsync batch` a syncer follows the writes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kvs_core::partition::Partition;
use kvs_core::wal::SEGMENT_MAGIC;
use kvs_core::Lsn;

use crate::limits::{
    FSYNC_BATCH_INTERVAL_MS, STORAGE_PROBE_BYTES, STORAGE_RETRY_MS_MAX, STORAGE_RETRY_MS_MIN,
};

use super::files::{inline_handle, open_segment, read_on_disk, segment_name, sync_dir, write_all};
use super::{Doing, FsyncPolicy, Result, Storage};

impl Storage {
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
            let due = {
                let s = self.state.borrow();
                (self.snapshot_policy).due(s.bytes_since_snapshot, s.snapshot_bytes)
            };
            if due && !self.snapshotting.get() {
                match self.begin_snapshot(&partition).await {
                    Ok(begun) => {
                        let (me, partition) = (self.clone(), partition.clone());
                        glommio::spawn_local(async move {
                            if let Err(e) = me.write_snapshot(&partition, begun).await {
                                // The WAL still holds everything: a failed
                                // snapshot only means a longer replay.
                                log::error!(
                                    "{}: snapshot failed (the WAL keeps every write): {e:#}",
                                    me.shard
                                );
                            }
                        })
                        .detach();
                    }
                    Err(e) => {
                        log::error!(
                            "{}: snapshot failed (the WAL keeps every write): {e:#}",
                            self.shard
                        );
                        // Try again after more writes.
                        self.state.borrow_mut().bytes_since_snapshot = 0;
                    }
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
                    .and_then(|()| read_on_disk(&self.dir, self.shard, &[]))
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
        let (file, written, synced, switched_from) = {
            let mut s = self.state.borrow_mut();
            let switched_from = s.switched_from.take();
            (s.file.clone(), s.written, s.synced, switched_from)
        };
        if let Some(old) = switched_from {
            // A segment switch since the last pass: the tail of the segment
            // left, and the new segment's directory entry, become durable
            // with this pass.
            let durable = async {
                old.fdatasync()
                    .await
                    .doing(|| "background fdatasync of the WAL segment left".into())?;
                sync_dir(&self.dir).await
            }
            .await;
            if let Err(e) = durable {
                let mut s = self.state.borrow_mut();
                s.switched_from.get_or_insert(old); // tried again next pass
                return Err(e);
            }
        }
        if written > synced {
            file.fdatasync()
                .await
                .doing(|| "background fdatasync of the WAL".into())?;
            let mut s = self.state.borrow_mut();
            s.synced = s.synced.max(written);
        }
        Ok(())
    }
}
