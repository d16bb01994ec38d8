//! A stored key: its bytes inside the map's slot when they fit
//! ([`INLINE_BYTES`]), else on the heap. The slot is as large as a `Vec<u8>`'s
//! (24 bytes), so short keys cost no allocation (≈ 32 bytes each with
//! malloc's header) and a lookup compares them without following a pointer.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Keys this long or shorter are stored inline.
pub const INLINE_BYTES: usize = 22;

#[derive(Clone)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Key>() == std::mem::size_of::<Vec<u8>>());

impl Key {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_BYTES => {
                let mut bytes = [0; INLINE_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(key.into()),
        }
    }
}

impl From<Vec<u8>> for Key {
    fn from(key: Vec<u8>) -> Key {
        if key.len() <= INLINE_BYTES {
            Key::from(key.as_slice())
        } else {
            Key::Heap(key.into_boxed_slice())
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Hashed exactly as its bytes are, so maps find it by `&[u8]`.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn keys_read_back_hash_as_their_bytes_and_inline_only_when_short() {
        let hasher = foldhash::fast::RandomState::default();
        for len in [0, 1, INLINE_BYTES - 1, INLINE_BYTES, INLINE_BYTES + 1, 300] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let key = Key::from(bytes.clone());
            assert_eq!(key.as_slice(), bytes.as_slice());
            assert_eq!(key, Key::from(bytes.as_slice()));
            assert_eq!(hasher.hash_one(&key), hasher.hash_one(bytes.as_slice()));
            assert_eq!(
                matches!(key, Key::Inline { .. }),
                len <= INLINE_BYTES,
                "{len}"
            );
        }
    }
}
