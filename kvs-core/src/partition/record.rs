//! A key and its state in one block, and where a partition keeps those
//! blocks: [`Records`], memory the partition maps itself, in chunks that
//! grow with it. A part's table holds one 8-byte [`Rec`] per key, the place
//! of its block; a lookup follows it to the block that holds both the key
//! it compares and the bytes it returns.
//!
//! Record layout (integers little-endian):
//!
//! ```text
//! kind u8 | key length u16 | body length u32 | key | body
//! ```
//!
//! | kind | body |
//! | --- | --- |
//! | [`LWW`] | clock u64, writer u64, the value's bytes (the rest) |
//! | [`TOMBSTONE`] | clock u64, writer u64 |
//! | [`OTHER`] | u32: where the part keeps the value (any other lattice) |
//!
//! ## Where blocks come from
//! - A record of up to [`SMALL_BYTES_MAX`] takes a block of its length
//!   rounded up to [`GRAIN`] bytes: the first on that size's free list, else
//!   the next bytes of the newest chunk. A free block's first 8 bytes hold
//!   the [`Rec`] of the next free block of its size.
//! - Chunks double with the partition, from [`CHUNK_BYTES_MIN`] to
//!   [`CHUNK_BYTES_MAX`]; from [`HUGE_CHUNK_BYTES`] up they are mapped
//!   apart and advised for huge pages. What is left at a chunk's end when
//!   a block does not fit goes on the free list of its size.
//! - A larger record gets a chunk of its own, returned when it is freed.
//! - Chunks are never returned while the partition lives: a freed block is
//!   reused by records of the same rounded size only (as with any
//!   allocator by size classes).
//!
//! ## Why not the global allocator
//! Recovering 2M keys, glibc grew the shard thread's arena one 4 KiB page
//! per `mprotect` (68,739 calls, 10% of recovery) and faulted every page
//! apart (24%); each block also carried an 8-byte header, and a
//! `Box<[u8]>` in the table took 16 bytes. Here a block is carved by a
//! bump, chunks fault in huge pages, and a table slot is 8 bytes. Records
//! are reached by index, with bounds checks: no `unsafe`.

use crate::lattice::Timestamp;

const LWW: u8 = 0;
const TOMBSTONE: u8 = 1;
const OTHER: u8 = 2;
/// Kind, key length and body length.
const HEAD_BYTES: usize = 7;
const STAMP_BYTES: usize = 16;
/// Blocks are sized in steps of this many bytes, and a free block holds
/// the next one's place: at least 8.
const GRAIN: usize = 8;
/// Largest record carved from the shared chunks; a larger one gets a chunk
/// of its own.
const SMALL_BYTES_MAX: usize = 4096;
/// The first chunk (a partition holding a few keys takes no more).
const CHUNK_BYTES_MIN: usize = 4 << 10;
/// Chunks stop doubling here.
const CHUNK_BYTES_MAX: usize = 64 << 20;
/// Chunks from this size up are mapped apart and advised for huge pages.
const HUGE_CHUNK_BYTES: usize = 2 << 20;
/// The end of a free list.
const NIL: u64 = u64::MAX;

/// A key's state as its record holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State<'a> {
    Lww(Timestamp, &'a [u8]),
    Tombstone(Timestamp),
    /// Index into the part's other values.
    Other(u32),
}

/// Where a record's block is: its chunk and its offset in it. Neither
/// `Clone` nor `Copy`: a record is freed once, by [`Records::free`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Rec(u64);

impl Rec {
    fn new(chunk: usize, at: usize) -> Rec {
        let chunk = u32::try_from(chunk).expect("under 4 Gi chunks");
        let at = u32::try_from(at).expect("chunks are under 4 GiB");
        Rec(u64::from(chunk) << 32 | u64::from(at))
    }

    /// Follows its block when its chunks move `by` places
    /// ([`Records::absorb`]).
    pub(super) fn move_chunks(&mut self, by: usize) {
        *self = Rec::new(self.chunk() + by, self.at());
    }

    fn chunk(&self) -> usize {
        (self.0 >> 32) as usize
    }

    fn at(&self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

enum Chunk {
    Boxed(Box<[u8]>),
    Mapped(memmap2::MmapMut),
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Boxed(b) => b,
            Chunk::Mapped(m) => m,
        }
    }
}

impl std::ops::DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Chunk::Boxed(b) => b,
            Chunk::Mapped(m) => m,
        }
    }
}

/// A partition's records (module doc).
pub(super) struct Records {
    chunks: Vec<Chunk>,
    /// The chunk blocks are carved from and where its unused bytes begin.
    bump: Option<(usize, usize)>,
    /// Per block size / [`GRAIN`], the first free block, or [`NIL`].
    free: Vec<u64>,
    /// Chunks of large records since freed (empty).
    vacant: Vec<usize>,
    /// Bytes of the shared chunks.
    shared_bytes: usize,
    /// Bytes of the blocks in use.
    used_bytes: usize,
}

impl Default for Records {
    fn default() -> Records {
        Records {
            chunks: Vec::new(),
            bump: None,
            free: vec![NIL; SMALL_BYTES_MAX / GRAIN + 1],
            vacant: Vec::new(),
            shared_bytes: 0,
            used_bytes: 0,
        }
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("chunks", &self.chunks.len())
            .field("shared_bytes", &self.shared_bytes)
            .field("used_bytes", &self.used_bytes)
            .finish_non_exhaustive()
    }
}

/// The block size of a record of `len` bytes carved from the shared chunks.
fn block_bytes(len: usize) -> usize {
    len.max(GRAIN).next_multiple_of(GRAIN)
}

impl Records {
    pub(super) fn lww(&mut self, key: &[u8], ts: Timestamp, bytes: &[u8]) -> Rec {
        self.build(LWW, key, STAMP_BYTES + bytes.len(), |b| {
            stamp(b, ts);
            b[STAMP_BYTES..].copy_from_slice(bytes);
        })
    }

    pub(super) fn tombstone(&mut self, key: &[u8], ts: Timestamp) -> Rec {
        self.build(TOMBSTONE, key, STAMP_BYTES, |b| stamp(b, ts))
    }

    pub(super) fn other(&mut self, key: &[u8], at: u32) -> Rec {
        self.build(OTHER, key, 4, |b| b.copy_from_slice(&at.to_le_bytes()))
    }

    fn build(
        &mut self,
        kind: u8,
        key: &[u8],
        body_len: usize,
        body: impl FnOnce(&mut [u8]),
    ) -> Rec {
        let key_len = u16::try_from(key.len()).expect("keys are limited far below 64 KiB");
        let body_len32 = u32::try_from(body_len).expect("values are limited far below 4 GiB");
        let len = HEAD_BYTES + key.len() + body_len;
        let r = self.alloc(len);
        let at = r.at();
        let b = &mut self.chunks[r.chunk()][at..at + len];
        b[0] = kind;
        b[1..3].copy_from_slice(&key_len.to_le_bytes());
        b[3..7].copy_from_slice(&body_len32.to_le_bytes());
        b[HEAD_BYTES..HEAD_BYTES + key.len()].copy_from_slice(key);
        body(&mut b[HEAD_BYTES + key.len()..]);
        r
    }

    /// The block of `r`, exactly its record's bytes.
    fn block(&self, r: &Rec) -> &[u8] {
        let chunk = &self.chunks[r.chunk()];
        let at = r.at();
        let h = &chunk[at..at + HEAD_BYTES];
        let len = HEAD_BYTES
            + usize::from(u16::from_le_bytes([h[1], h[2]]))
            + u32::from_le_bytes([h[3], h[4], h[5], h[6]]) as usize;
        &chunk[at..at + len]
    }

    fn block_mut(&mut self, r: &Rec) -> &mut [u8] {
        let len = self.block(r).len();
        let at = r.at();
        &mut self.chunks[r.chunk()][at..at + len]
    }

    pub(super) fn key(&self, r: &Rec) -> &[u8] {
        let b = self.block(r);
        &b[HEAD_BYTES..HEAD_BYTES + usize::from(u16::from_le_bytes([b[1], b[2]]))]
    }

    pub(super) fn state(&self, r: &Rec) -> State<'_> {
        let b = self.block(r);
        let body = &b[HEAD_BYTES + usize::from(u16::from_le_bytes([b[1], b[2]]))..];
        match b[0] {
            LWW => State::Lww(read_stamp(body), &body[STAMP_BYTES..]),
            TOMBSTONE => State::Tombstone(read_stamp(body)),
            _ => State::Other(u32::from_le_bytes([body[0], body[1], body[2], body[3]])),
        }
    }

    /// Moves an LWW value's or a tombstone's timestamp to `ts`.
    pub(super) fn restamp(&mut self, r: &Rec, ts: Timestamp) {
        let b = self.block_mut(r);
        debug_assert_ne!(b[0], OTHER);
        let at = HEAD_BYTES + usize::from(u16::from_le_bytes([b[1], b[2]]));
        stamp(&mut b[at..], ts);
    }

    /// Makes `r` the LWW value `ts`, `bytes`: in place when it is an LWW
    /// value of the same length (an overwrite allocates nothing), else in a
    /// new block, freeing the old one.
    pub(super) fn set_lww(&mut self, r: &mut Rec, ts: Timestamp, bytes: &[u8]) {
        let b = self.block_mut(r);
        let at = HEAD_BYTES + usize::from(u16::from_le_bytes([b[1], b[2]]));
        if b[0] == LWW && b.len() - at - STAMP_BYTES == bytes.len() {
            stamp(&mut b[at..], ts);
            b[at + STAMP_BYTES..].copy_from_slice(bytes);
            return;
        }
        // The key moves to the new block: copied out first, onto the stack
        // (keys are limited to `KEY_BYTES_MAX`; a longer one would be copied
        // to the heap).
        let mut buf = [0; crate::limits::KEY_BYTES_MAX];
        let owned: Vec<u8>;
        let key: &[u8] = if at - HEAD_BYTES <= buf.len() {
            buf[..at - HEAD_BYTES].copy_from_slice(&b[HEAD_BYTES..at]);
            &buf[..at - HEAD_BYTES]
        } else {
            owned = b[HEAD_BYTES..at].to_vec();
            &owned
        };
        let new = self.lww(key, ts, bytes);
        self.free(std::mem::replace(r, new));
    }

    /// A block for a record of `len` bytes.
    fn alloc(&mut self, len: usize) -> Rec {
        if len > SMALL_BYTES_MAX {
            self.used_bytes += len;
            let chunk = Chunk::Boxed(vec![0; len].into_boxed_slice());
            return match self.vacant.pop() {
                Some(i) => {
                    self.chunks[i] = chunk;
                    Rec::new(i, 0)
                }
                None => {
                    self.chunks.push(chunk);
                    Rec::new(self.chunks.len() - 1, 0)
                }
            };
        }
        let size = block_bytes(len);
        self.used_bytes += size;
        let class = size / GRAIN;
        if self.free[class] != NIL {
            let r = Rec(self.free[class]);
            let at = r.at();
            let next = &self.chunks[r.chunk()][at..at + 8];
            self.free[class] = u64::from_le_bytes(next.try_into().expect("8 bytes"));
            return r;
        }
        if let Some((c, at)) = self.bump {
            let end = self.chunks[c].len();
            if end - at >= size {
                self.bump = Some((c, at + size));
                return Rec::new(c, at);
            }
            // Shorter than `size`, so a size the free lists have.
            if end - at >= GRAIN {
                self.push_free(Rec::new(c, at), end - at);
            }
        }
        let bytes = self.shared_bytes.clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX);
        let chunk = if bytes < HUGE_CHUNK_BYTES {
            Chunk::Boxed(vec![0; bytes].into_boxed_slice())
        } else {
            // Like the global allocator's, a failure to map is fatal.
            let map = memmap2::MmapOptions::new()
                .len(bytes)
                .map_anon()
                .expect("mapping memory for records");
            // Only a hint: without huge pages it works as well, if slower.
            let _ = map.advise(memmap2::Advice::HugePage);
            Chunk::Mapped(map)
        };
        self.shared_bytes += bytes;
        self.chunks.push(chunk);
        let c = self.chunks.len() - 1;
        self.bump = Some((c, size));
        Rec::new(c, 0)
    }

    /// Frees the block of `r`.
    pub(super) fn free(&mut self, r: Rec) {
        let len = self.block(&r).len();
        if len > SMALL_BYTES_MAX {
            self.used_bytes -= len;
            self.chunks[r.chunk()] = Chunk::Boxed(Box::default());
            self.vacant.push(r.chunk());
            return;
        }
        let size = block_bytes(len);
        self.used_bytes -= size;
        self.push_free(r, size);
    }

    fn push_free(&mut self, r: Rec, size: usize) {
        let class = size / GRAIN;
        let at = r.at();
        self.chunks[r.chunk()][at..at + 8].copy_from_slice(&self.free[class].to_le_bytes());
        self.free[class] = r.0;
    }

    /// Takes over `other`'s chunks, after this one's: its records'
    /// handles must move by the returned number of chunks
    /// ([`Rec::move_chunks`]). Blocks go on carving from the chunk with more
    /// bytes left; the other's unused end is not reused.
    pub(super) fn absorb(&mut self, other: Records) -> usize {
        let by = self.chunks.len();
        self.chunks.extend(other.chunks);
        for (class, &first) in other.free.iter().enumerate() {
            let mut next = first;
            while next != NIL {
                let mut r = Rec(next);
                r.move_chunks(by);
                let at = r.at();
                let link = &self.chunks[r.chunk()][at..at + 8];
                next = u64::from_le_bytes(link.try_into().expect("8 bytes"));
                self.push_free(r, class * GRAIN);
            }
        }
        self.vacant.extend(other.vacant.iter().map(|c| c + by));
        let left = |bump: Option<(usize, usize)>, chunks: &[Chunk]| {
            bump.map_or(0, |(c, at)| chunks[c].len() - at)
        };
        let theirs = other.bump.map(|(c, at)| (c + by, at));
        if left(theirs, &self.chunks) > left(self.bump, &self.chunks) {
            self.bump = theirs;
        }
        self.shared_bytes += other.shared_bytes;
        self.used_bytes += other.used_bytes;
        by
    }

    /// Bytes of the blocks in use: each record's length, rounded up to
    /// [`GRAIN`] if it is carved from the shared chunks.
    #[cfg(test)]
    pub(super) fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// What the blocks of records of `len` bytes take: for tests to check
    /// [`Records::used_bytes`] against the records a partition holds.
    #[cfg(test)]
    pub(super) fn block_bytes_of(&self, r: &Rec) -> usize {
        let len = self.block(r).len();
        if len > SMALL_BYTES_MAX {
            len
        } else {
            block_bytes(len)
        }
    }
}

fn stamp(b: &mut [u8], ts: Timestamp) {
    b[..8].copy_from_slice(&ts.clock.to_le_bytes());
    b[8..STAMP_BYTES].copy_from_slice(&ts.writer.to_le_bytes());
}

fn read_stamp(body: &[u8]) -> Timestamp {
    let u64_at = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Timestamp {
        clock: u64_at(0),
        writer: u64_at(8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(clock: u64) -> Timestamp {
        Timestamp { clock, writer: 9 }
    }

    #[test]
    fn records_read_back_what_they_were_built_from() {
        let mut recs = Records::default();
        for key in [&b""[..], b"k", &[7; 1024]] {
            for len in [0, 5, SMALL_BYTES_MAX, 100_000] {
                let value = vec![3; len];
                let r = recs.lww(key, ts(5), &value);
                assert_eq!(
                    (recs.key(&r), recs.state(&r)),
                    (key, State::Lww(ts(5), &value[..]))
                );
            }
            let r = recs.tombstone(key, ts(6));
            assert_eq!(
                (recs.key(&r), recs.state(&r)),
                (key, State::Tombstone(ts(6)))
            );
            let r = recs.other(key, u32::MAX - 1);
            assert_eq!(
                (recs.key(&r), recs.state(&r)),
                (key, State::Other(u32::MAX - 1))
            );
        }
    }

    #[test]
    fn an_lww_overwrite_of_the_same_length_stays_in_its_block() {
        let mut recs = Records::default();
        let mut r = recs.lww(b"key", ts(1), b"aaaa");
        let block = r.0;
        recs.set_lww(&mut r, ts(2), b"bbbb");
        assert_eq!(recs.state(&r), State::Lww(ts(2), b"bbbb"));
        assert_eq!(r.0, block, "same length: same block");
        recs.set_lww(&mut r, ts(3), b"longer than a grain");
        assert_eq!(
            (recs.key(&r), recs.state(&r)),
            (&b"key"[..], State::Lww(ts(3), &b"longer than a grain"[..]))
        );
        let mut t = recs.tombstone(b"key", ts(4));
        recs.set_lww(&mut t, ts(5), b"back");
        assert_eq!(
            (recs.key(&t), recs.state(&t)),
            (&b"key"[..], State::Lww(ts(5), &b"back"[..]))
        );
        recs.restamp(&t, ts(6));
        assert_eq!(recs.state(&t), State::Lww(ts(6), &b"back"[..]));
    }

    #[test]
    fn freed_blocks_are_reused_by_records_of_their_size() {
        let mut recs = Records::default();
        let a = recs.lww(b"a", ts(1), &[1; 100]);
        let b = recs.lww(b"b", ts(1), &[2; 100]);
        let (a_at, used) = (a.0, recs.used_bytes());
        recs.free(a);
        assert_eq!(recs.used_bytes(), used - block_bytes(HEAD_BYTES + 1 + 116));
        let c = recs.lww(b"c", ts(2), &[3; 99]); // the same rounded size
        assert_eq!(c.0, a_at, "the freed block comes back");
        assert_eq!(recs.state(&b), State::Lww(ts(1), &[2; 100][..]));
        assert_eq!(recs.state(&c), State::Lww(ts(2), &[3; 99][..]));
        let big = recs.lww(b"big", ts(1), &[4; 10_000]);
        let big_chunk = big.chunk();
        recs.free(big);
        let again = recs.lww(b"again", ts(1), &[5; 20_000]);
        assert_eq!(again.chunk(), big_chunk, "a large record's chunk is reused");
        assert_eq!(recs.state(&again), State::Lww(ts(1), &[5; 20_000][..]));
    }

    #[test]
    fn many_records_span_chunks_and_keep_their_bytes() {
        let mut recs = Records::default();
        let mut held = Vec::new();
        for i in 0u32..40_000 {
            // Sizes vary so that chunk ends are left over and reused.
            let value = vec![i as u8; (i % 300) as usize];
            held.push((i, recs.lww(&i.to_le_bytes(), ts(u64::from(i)), &value)));
            if i % 3 == 0 {
                let (_, r) = held.swap_remove(held.len() / 2);
                recs.free(r);
            }
        }
        assert!(recs.chunks.len() > 5, "{} chunks", recs.chunks.len());
        let mut used = 0;
        for (i, r) in &held {
            let value = vec![*i as u8; (i % 300) as usize];
            assert_eq!(recs.key(r), i.to_le_bytes());
            assert_eq!(recs.state(r), State::Lww(ts(u64::from(*i)), &value[..]));
            used += recs.block_bytes_of(r);
        }
        assert_eq!(recs.used_bytes(), used);
    }
}
