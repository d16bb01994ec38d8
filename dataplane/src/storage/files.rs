//! The shard directory: file names, what it holds, reading it back (with
//! `std::fs`: start-up and after a failed write), and opening and writing
//! its files.

use std::path::Path;

use glommio::io::{BufferedFile, Directory, OpenOptions};
use kvs_core::partition::Fanout;
use kvs_core::snapshot::{recover, Recovered};
use kvs_core::{Lsn, ShardId};

use super::{Doing, Result, StorageError};

pub(super) fn segment_name(seq: u64) -> String {
    format!("wal-{seq:010}.log")
}

pub(super) fn snapshot_name(lsn: Lsn) -> String {
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
pub(super) struct Listing {
    pub segments: Vec<u64>,
    pub snapshots: Vec<u64>,
}

pub(super) fn list(dir: &Path) -> Result<Listing> {
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
pub(super) struct OnDisk {
    pub recovered: Recovered,
    pub seq: u64,
    pub pos: u64,
    pub snapshot: Option<String>,
    pub snapshot_bytes: u64,
    pub segments: usize,
    pub log_bytes: u64,
    /// How long reading the files took (the rest of recovery is CPU).
    pub read_ms: u128,
}

/// Files of at least this size are read into memory the kernel may back
/// with huge pages (a snapshot of 2M keys, 285 MB: 0.28-0.36 s with
/// `std::fs::read`, mostly faulting in 4 KiB pages; 0.07-0.09 s so).
const HUGE_READ_BYTES: usize = 4 << 20;

/// A whole file, in memory.
enum FileBytes {
    Heap(Vec<u8>),
    Anon(memmap2::MmapMut),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Heap(v) => v,
            FileBytes::Anon(m) => m,
        }
    }
}

fn read_whole(path: &Path) -> std::io::Result<FileBytes> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if len < HUGE_READ_BYTES {
        let mut bytes = Vec::with_capacity(len);
        file.read_to_end(&mut bytes)?;
        return Ok(FileBytes::Heap(bytes));
    }
    let mut bytes = memmap2::MmapOptions::new().len(len).map_anon()?;
    // Only a hint: without huge pages the read is as slow as before.
    let _ = bytes.advise(memmap2::Advice::HugePage);
    file.read_exact(&mut bytes)?;
    Ok(FileBytes::Anon(bytes))
}

/// Threads that help build a snapshot's partition beside the caller's: one
/// pinned to each core given (cores no shard runs on; a thread spawned from
/// the shard would inherit its pinning).
struct Helpers<'c>(&'c [usize]);

impl Fanout for Helpers<'_> {
    fn ways(&self) -> usize {
        1 + self.0.len()
    }

    fn run(&self, n: usize, job: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            // Job 0, and any job without a core or whose thread did not
            // start, runs on the caller's thread.
            let mut here = vec![0];
            for i in 1..n {
                let Some(&cpu) = self.0.get(i - 1) else {
                    here.push(i);
                    continue;
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("recover-{i}"))
                    .spawn_scoped(s, move || {
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                        job(i);
                    });
                if spawned.is_err() {
                    here.push(i);
                }
            }
            here.into_iter().for_each(job);
        });
    }
}

/// Reads `dir` and recovers its state, cutting a torn tail off the last
/// segment (start-up, and after a failed write: memory is rebuilt from
/// exactly what the log holds). Threads on `helper_cpus` help build the
/// snapshot's partition.
pub(super) fn read_on_disk(dir: &Path, shard: ShardId, helper_cpus: &[usize]) -> Result<OnDisk> {
    let listing = list(dir)?;
    let reading = std::time::Instant::now();
    let snap = match listing.snapshots.last() {
        Some(&lsn) => {
            let name = snapshot_name(Lsn(lsn));
            Some((
                name.clone(),
                read_whole(&dir.join(&name)).doing(|| format!("reading {name}"))?,
            ))
        }
        None => None,
    };
    let mut segs = Vec::new();
    for &seq in &listing.segments {
        let name = segment_name(seq);
        segs.push((
            name.clone(),
            read_whole(&dir.join(&name)).doing(|| format!("reading {name}"))?,
        ));
    }
    let read_ms = reading.elapsed().as_millis();
    let recovered = recover(
        snap.as_ref().map(|(n, b)| (n.as_str(), &b[..])),
        segs.iter().map(|(n, b)| (n.as_str(), &b[..])),
        &Helpers(helper_cpus),
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
        snapshot_bytes: snap.as_ref().map_or(0, |(_, b)| b.len() as u64),
        snapshot: snap.map(|(n, _)| n),
        segments: listing.segments.len(),
        log_bytes: segs.iter().map(|(_, b)| b.len() as u64).sum(),
        read_ms,
    })
}

pub(super) fn inline_handle(dir: &Path, seq: u64) -> Result<std::fs::File> {
    let path = dir.join(segment_name(seq));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .doing(|| format!("opening {}", path.display()))
}

pub(super) async fn open_segment(dir: &Path, seq: u64) -> Result<BufferedFile> {
    let path = dir.join(segment_name(seq));
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .buffered_open(&path)
        .await
        .doing(|| format!("opening {}", path.display()))
}

pub(super) async fn write_all(file: &BufferedFile, buf: Vec<u8>, pos: u64) -> Result<()> {
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

pub(super) async fn sync_dir(dir: &Path) -> Result<()> {
    let d = Directory::open(dir)
        .await
        .doing(|| format!("opening directory {}", dir.display()))?;
    let what = || format!("syncing directory {}", dir.display());
    d.sync().await.doing(what)?;
    d.close().await.doing(what)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{read_whole, HUGE_READ_BYTES};

    #[test]
    fn whole_files_read_back_exactly_on_either_side_of_the_huge_page_size() {
        let dir = std::env::temp_dir().join(format!("squall-read-whole-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [
            0,
            1,
            HUGE_READ_BYTES - 1,
            HUGE_READ_BYTES,
            HUGE_READ_BYTES + 4099,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            assert!(*read_whole(&path).unwrap() == bytes[..], "{len} bytes");
        }
        assert!(read_whole(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
