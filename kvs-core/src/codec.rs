//! The binary encoding of values and mutations inside WAL records and
//! snapshots. Little-endian, length-prefixed, no padding:
//!
//! ```text
//! bytes   = len:u32 data[len]
//! clock   = n:u32 (node:u64 counter:u64){n}
//! value   = tag:u8 body            (tag = LatticeKind as u8)
//!   Lww            clock:u64 writer:u64 bytes
//!   Set/OrderedSet n:u32 bytes{n}
//!   Max            u64
//!   Priority       priority:u64 bytes
//!   *Causal        n:u32 (clock deps:(m:u32 (key:bytes clock){m}) value:bytes){n}
//! ```
//!
//! Decoding checks every length against the remaining input and
//! [`crate::limits`], so hostile or corrupt input yields a [`DecodeError`],
//! never a panic or an unbounded allocation.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::lattice::{
    Causal, CausalVersion, LatticeKind, Lww, Priority, Timestamp, Value, ValueRef, VectorClock,
};
use crate::limits::{COLLECTION_LEN_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Input that is not a valid encoding.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("input ends {needed} bytes early")]
    Truncated { needed: usize },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{what} length {len} exceeds the limit {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} trailing bytes after the encoding")]
    Trailing(usize),
}

/// Appends encodings to a byte buffer.
#[derive(Debug)]
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out }
    }
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Length-prefixed bytes. Lengths above `u32::MAX` are a programmer
    /// error: every caller enforces far smaller limits first.
    pub fn bytes(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).expect("byte strings are limited far below 4 GiB");
        self.u32(len);
        self.out.extend_from_slice(b);
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("collections are limited far below 4 Gi entries"));
    }
    pub fn clock(&mut self, vc: &VectorClock) {
        self.len(vc.len());
        for (node, counter) in vc.entries() {
            self.u64(node);
            self.u64(counter);
        }
    }
    /// A key and its state, as a snapshot stores it (and a range digest
    /// hashes it): the key, then `1` and the value, or `2` and the
    /// tombstone's timestamp.
    pub fn entry(&mut self, key: &[u8], entry: crate::partition::EntryRef<'_>) {
        self.bytes(key);
        match entry {
            crate::partition::EntryRef::Live(v) => {
                self.u8(1);
                self.value_ref(v);
            }
            crate::partition::EntryRef::Tombstone(ts) => {
                self.u8(2);
                self.u64(ts.clock);
                self.u64(ts.writer);
            }
        }
    }

    /// A borrowed value, encoded exactly as [`Encoder::value`] encodes it.
    pub fn value_ref(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Lww(ts, bytes) => {
                self.u8(LatticeKind::Lww as u8);
                self.u64(ts.clock);
                self.u64(ts.writer);
                self.bytes(bytes);
            }
            ValueRef::Other(v) => self.value(v),
        }
    }

    pub fn value(&mut self, v: &Value) {
        self.u8(v.kind() as u8);
        match v {
            Value::Lww(lww) => {
                let ts = lww.timestamp();
                self.u64(ts.clock);
                self.u64(ts.writer);
                self.bytes(lww.value());
            }
            Value::Set(s) | Value::OrderedSet(s) => {
                self.len(s.len());
                for e in s {
                    self.bytes(e);
                }
            }
            Value::Max(m) => self.u64(*m),
            Value::Priority(p) => {
                self.u64(p.priority);
                self.bytes(&p.value);
            }
            Value::SingleKeyCausal(c) | Value::MultiKeyCausal(c) => {
                self.len(c.version_count());
                for ver in c.versions() {
                    self.clock(&ver.clock);
                    self.len(ver.deps.len());
                    for (k, vc) in &ver.deps {
                        self.bytes(k);
                        self.clock(vc);
                    }
                    self.bytes(&ver.value);
                }
            }
        }
    }
}

/// Reads encodings from a byte slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    input: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Decoder { input }
    }
    /// Bytes not read yet.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.input.len()
    }
    /// Fails unless all input was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
    /// The input not read yet.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < n {
            return Err(DecodeError::Truncated {
                needed: n - self.input.len(),
            });
        }
        let (head, tail) = self.input.split_at(n);
        self.input = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.slice(what, max)?.to_vec())
    }
    /// A length-prefixed byte string, borrowed from the input.
    pub fn slice(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        self.take(len)
    }
    fn len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > COLLECTION_LEN_MAX {
            return Err(DecodeError::TooLong {
                what,
                len,
                max: COLLECTION_LEN_MAX,
            });
        }
        Ok(len)
    }
    pub fn key(&mut self) -> Result<Vec<u8>, DecodeError> {
        self.bytes("key", KEY_BYTES_MAX)
    }
    pub fn key_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        self.slice("key", KEY_BYTES_MAX)
    }
    fn skip_clock(&mut self) -> Result<(), DecodeError> {
        let n = self.len("vector clock")?;
        self.take(n * 16).map(drop)
    }
    /// Steps over a value, checking what [`Decoder::value`] checks of its
    /// lengths and tags, without building it.
    pub fn skip_value(&mut self) -> Result<(), DecodeError> {
        let tag = self.u8()?;
        let kind = LatticeKind::from_tag(tag).ok_or(DecodeError::UnknownTag {
            what: "lattice",
            tag,
        })?;
        match kind {
            LatticeKind::Lww | LatticeKind::Priority => {
                self.take(if kind == LatticeKind::Lww { 16 } else { 8 })?;
                self.slice("value", VALUE_BYTES_MAX)?;
            }
            LatticeKind::Set | LatticeKind::OrderedSet => {
                for _ in 0..self.len("set")? {
                    self.slice("set element", VALUE_BYTES_MAX)?;
                }
            }
            LatticeKind::Max => {
                self.take(8)?;
            }
            LatticeKind::SingleKeyCausal | LatticeKind::MultiKeyCausal => {
                for _ in 0..self.len("causal versions")? {
                    self.skip_clock()?;
                    for _ in 0..self.len("dependencies")? {
                        self.key_slice()?;
                        self.skip_clock()?;
                    }
                    self.slice("value", VALUE_BYTES_MAX)?;
                }
            }
        }
        Ok(())
    }
    pub fn clock(&mut self) -> Result<VectorClock, DecodeError> {
        let n = self.len("vector clock")?;
        let mut entries = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            entries.push((self.u64()?, self.u64()?));
        }
        Ok(VectorClock::from_entries(entries))
    }
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        let tag = self.u8()?;
        let kind = LatticeKind::from_tag(tag).ok_or(DecodeError::UnknownTag {
            what: "lattice",
            tag,
        })?;
        Ok(match kind {
            LatticeKind::Lww => {
                let clock = self.u64()?;
                let writer = self.u64()?;
                Value::Lww(Lww::new(
                    Timestamp { clock, writer },
                    self.bytes("value", VALUE_BYTES_MAX)?,
                ))
            }
            LatticeKind::Set | LatticeKind::OrderedSet => {
                let n = self.len("set")?;
                let mut set = BTreeSet::new();
                for _ in 0..n {
                    set.insert(self.bytes("set element", VALUE_BYTES_MAX)?);
                }
                if kind == LatticeKind::Set {
                    Value::Set(set)
                } else {
                    Value::OrderedSet(set)
                }
            }
            LatticeKind::Max => Value::Max(self.u64()?),
            LatticeKind::Priority => {
                let priority = self.u64()?;
                Value::Priority(Priority {
                    priority,
                    value: self.bytes("value", VALUE_BYTES_MAX)?,
                })
            }
            LatticeKind::SingleKeyCausal | LatticeKind::MultiKeyCausal => {
                let n = self.len("causal versions")?;
                let mut versions = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let clock = self.clock()?;
                    let m = self.len("dependencies")?;
                    let mut deps = BTreeMap::new();
                    for _ in 0..m {
                        let k = self.key()?;
                        deps.insert(k, self.clock()?);
                    }
                    let value = self.bytes("value", VALUE_BYTES_MAX)?;
                    versions.push(CausalVersion { clock, deps, value });
                }
                let c = Causal::from_versions(versions);
                if kind == LatticeKind::SingleKeyCausal {
                    Value::SingleKeyCausal(c)
                } else {
                    Value::MultiKeyCausal(c)
                }
            }
        })
    }
}

/// Encodes one value into a fresh buffer.
#[must_use]
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(&mut out).value(v);
    out
}

/// Decodes exactly one value.
pub fn decode_value(input: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder::new(input);
    let v = d.value()?;
    d.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::tests::any_value;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn values_round_trip(v in any_value()) {
            prop_assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        }

        #[test]
        fn skipping_a_value_reads_what_decoding_it_reads(v in any_value()) {
            let mut enc = encode_value(&v);
            enc.push(7);
            let mut d = Decoder::new(&enc);
            d.skip_value().unwrap();
            prop_assert_eq!(d.remaining(), 1);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let decoded = decode_value(&bytes);
            let mut d = Decoder::new(&bytes);
            let skipped = d.skip_value().and_then(|()| d.finish());
            prop_assert_eq!(decoded.is_ok(), skipped.is_ok());
        }

        #[test]
        fn every_truncation_is_an_error(v in any_value()) {
            let enc = encode_value(&v);
            for cut in 0..enc.len() {
                prop_assert!(decode_value(&enc[..cut]).is_err());
                prop_assert!(Decoder::new(&enc[..cut]).skip_value().is_err());
            }
        }
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        let mut enc = vec![LatticeKind::Set as u8];
        enc.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_value(&enc),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
