//! Snapshots: the partition encoded, a new segment started, the snapshot
//! written (temp file, fdatasync, rename, directory sync), and the files it
//! supersedes removed.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use glommio::io::OpenOptions;
use kvs_core::partition::Partition;
use kvs_core::snapshot::encode_snapshot;
use kvs_core::wal::SEGMENT_MAGIC;
use kvs_core::Lsn;

use super::files::{
    inline_handle, list, open_segment, segment_name, snapshot_name, sync_dir, write_all,
};
use super::{Doing, Result, Storage, StorageError};

impl Storage {
    /// Writes a snapshot of `partition` (see the module doc).
    pub(super) async fn snapshot(&self, partition: &RefCell<Partition>) -> Result<()> {
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
}
