//! A key and its state in one allocation, which is what a part's table
//! holds: a 16-byte slot per key, and for an LWW register one heap block
//! with its key, timestamp and bytes. A lookup follows one pointer, to the
//! block that holds both the key it compares and the bytes it returns.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! kind u8 | key length u16 | key | body
//! ```
//!
//! | kind | body |
//! | --- | --- |
//! | [`LWW`] | clock u64, writer u64, the value's bytes (the rest) |
//! | [`TOMBSTONE`] | clock u64, writer u64 |
//! | [`OTHER`] | u32: where the part keeps the value (any other lattice) |
//!
//! At 2M keys of 100-byte values this is ≈ 180 bytes per key (a 144-byte
//! block plus the table), where a slot holding the key and a `Value` was
//! 64 bytes plus a separate 112-byte block for the bytes.

use crate::lattice::Timestamp;

const LWW: u8 = 0;
const TOMBSTONE: u8 = 1;
const OTHER: u8 = 2;
/// Kind and key length.
const HEAD_BYTES: usize = 3;
const STAMP_BYTES: usize = 16;

/// A key's state as its record holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State<'a> {
    Lww(Timestamp, &'a [u8]),
    Tombstone(Timestamp),
    /// Index into the part's other values.
    Other(u32),
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct Record(Box<[u8]>);

impl Record {
    fn build(kind: u8, key: &[u8], body_len: usize, body: impl FnOnce(&mut Vec<u8>)) -> Record {
        let key_len = u16::try_from(key.len()).expect("keys are limited far below 64 KiB");
        let mut b = Vec::with_capacity(HEAD_BYTES + key.len() + body_len);
        b.push(kind);
        b.extend_from_slice(&key_len.to_le_bytes());
        b.extend_from_slice(key);
        body(&mut b);
        debug_assert_eq!(b.len(), b.capacity(), "a record is allocated exactly");
        Record(b.into_boxed_slice())
    }

    pub(super) fn lww(key: &[u8], ts: Timestamp, bytes: &[u8]) -> Record {
        Record::build(LWW, key, STAMP_BYTES + bytes.len(), |b| {
            stamp(b, ts);
            b.extend_from_slice(bytes);
        })
    }

    pub(super) fn tombstone(key: &[u8], ts: Timestamp) -> Record {
        Record::build(TOMBSTONE, key, STAMP_BYTES, |b| stamp(b, ts))
    }

    pub(super) fn other(key: &[u8], at: u32) -> Record {
        Record::build(OTHER, key, 4, |b| b.extend_from_slice(&at.to_le_bytes()))
    }

    fn body_at(&self) -> usize {
        HEAD_BYTES + usize::from(u16::from_le_bytes([self.0[1], self.0[2]]))
    }

    pub(super) fn key(&self) -> &[u8] {
        &self.0[HEAD_BYTES..self.body_at()]
    }

    pub(super) fn state(&self) -> State<'_> {
        let body = &self.0[self.body_at()..];
        match self.0[0] {
            LWW => State::Lww(read_stamp(body), &body[STAMP_BYTES..]),
            TOMBSTONE => State::Tombstone(read_stamp(body)),
            _ => State::Other(u32::from_le_bytes([body[0], body[1], body[2], body[3]])),
        }
    }

    /// Moves an LWW value's or a tombstone's timestamp to `ts`.
    pub(super) fn restamp(&mut self, ts: Timestamp) {
        debug_assert_ne!(self.0[0], OTHER);
        let at = self.body_at();
        self.0[at..at + 8].copy_from_slice(&ts.clock.to_le_bytes());
        self.0[at + 8..at + STAMP_BYTES].copy_from_slice(&ts.writer.to_le_bytes());
    }

    /// Makes this record the LWW value `ts`, `bytes`: in place when it is an
    /// LWW value of the same length (an overwrite allocates nothing).
    pub(super) fn set_lww(&mut self, ts: Timestamp, bytes: &[u8]) {
        let at = self.body_at() + STAMP_BYTES;
        if self.0[0] == LWW && self.0.len() - at == bytes.len() {
            self.restamp(ts);
            self.0[at..].copy_from_slice(bytes);
        } else {
            *self = Record::lww(self.key(), ts, bytes);
        }
    }
}

fn stamp(b: &mut Vec<u8>, ts: Timestamp) {
    b.extend_from_slice(&ts.clock.to_le_bytes());
    b.extend_from_slice(&ts.writer.to_le_bytes());
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

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Record")
            .field(&self.key())
            .field(&self.state())
            .finish()
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
        for key in [&b""[..], b"k", &[7; 1024]] {
            let r = Record::lww(key, ts(5), b"value");
            assert_eq!((r.key(), r.state()), (key, State::Lww(ts(5), b"value")));
            let r = Record::tombstone(key, ts(6));
            assert_eq!((r.key(), r.state()), (key, State::Tombstone(ts(6))));
            let r = Record::other(key, u32::MAX - 1);
            assert_eq!((r.key(), r.state()), (key, State::Other(u32::MAX - 1)));
        }
    }

    #[test]
    fn an_lww_overwrite_of_the_same_length_stays_in_its_block() {
        let mut r = Record::lww(b"key", ts(1), b"aaaa");
        let block = r.0.as_ptr();
        r.set_lww(ts(2), b"bbbb");
        assert_eq!(r.state(), State::Lww(ts(2), b"bbbb"));
        assert_eq!(r.0.as_ptr(), block, "same length: same block");
        r.set_lww(ts(3), b"longer");
        assert_eq!(
            (r.key(), r.state()),
            (&b"key"[..], State::Lww(ts(3), b"longer"))
        );
        let mut t = Record::tombstone(b"key", ts(4));
        t.set_lww(ts(5), b"back");
        assert_eq!(
            (t.key(), t.state()),
            (&b"key"[..], State::Lww(ts(5), b"back"))
        );
        t.restamp(ts(6));
        assert_eq!(t.state(), State::Lww(ts(6), b"back"));
    }
}
