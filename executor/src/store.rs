//! How functions reach the store: the [`Store`] trait. The node implements
//! it over its shards; [`LocalStore`] implements it over one in-memory
//! partition (tests, simulations, and the in-process baseline of the
//! composition benchmark).

use std::sync::Mutex;

use kvs_core::lattice::{Timestamp, Value};
use kvs_core::partition::{Applied, Mutation, Partition, PartitionError};
use thiserror::Error;

/// A store operation that failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A named limit of the call was reached (its session metadata).
    #[error("{0}")]
    LimitExceeded(String),
    /// An atomic run read a version older than a write set it then saw
    /// (`crate::txn`): it must run again.
    #[error("{0}")]
    Conflict(String),
}

impl From<PartitionError> for StoreError {
    fn from(e: PartitionError) -> Self {
        StoreError::Refused(e.to_string())
    }
}

/// The key-value operations a function may use. Puts merge (lattices);
/// LWW values with timestamp 0 are stamped by the store.
pub trait Store: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError>;
    /// Several keys; values in the order of `keys`.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    fn put(&self, key: &[u8], value: Value) -> Result<(), StoreError>;
    /// `true` if a live value went away.
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError>;
    /// Reads and deletes `key` in one step (nothing can merge in between);
    /// a missing key is left alone.
    fn take(&self, key: &[u8]) -> Result<Option<Value>, StoreError>;
}

/// A store over one in-memory partition with a logical clock.
#[derive(Debug, Default)]
pub struct LocalStore {
    inner: Mutex<(Partition, u64)>,
}

impl LocalStore {
    fn with<T>(&self, f: impl FnOnce(&mut Partition, &mut u64) -> T) -> Result<T, StoreError> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| StoreError::Unavailable("a writer panicked".into()))?;
        let (p, clock) = &mut *g;
        Ok(f(p, clock))
    }
}

const LOCAL_WRITER: u64 = 1;

impl Store for LocalStore {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        self.with(|p, _| p.get(key).map(kvs_core::lattice::ValueRef::to_value))
    }

    fn put(&self, key: &[u8], value: Value) -> Result<(), StoreError> {
        self.with(|p, clock| {
            let value = match value {
                Value::Lww(l) if l.timestamp().clock == 0 => {
                    *clock += 1;
                    let (_, bytes) = l.into_parts();
                    Value::Lww(kvs_core::lattice::Lww::new(
                        Timestamp {
                            clock: *clock,
                            writer: LOCAL_WRITER,
                        },
                        bytes,
                    ))
                }
                v => v,
            };
            p.apply(Mutation::Put {
                key: key.to_vec(),
                value,
            })
            .map(|_| ())
        })?
        .map_err(StoreError::from)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.with(|p, clock| tombstone(p, clock, key))?
            .map(|a| matches!(a, Applied::Deleted { removed: true }))
            .map_err(StoreError::from)
    }

    fn take(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        self.with(|p, clock| {
            let value = p.get(key).map(kvs_core::lattice::ValueRef::to_value);
            if value.is_some() {
                tombstone(p, clock, key)?;
            }
            Ok::<_, PartitionError>(value)
        })?
        .map_err(StoreError::from)
    }
}

/// Deletes `key` with the next logical timestamp.
fn tombstone(p: &mut Partition, clock: &mut u64, key: &[u8]) -> Result<Applied, PartitionError> {
    *clock += 1;
    let ts = Timestamp {
        clock: *clock,
        writer: LOCAL_WRITER,
    };
    p.apply(Mutation::Delete {
        key: key.to_vec(),
        ts,
    })
}

/// A store that refuses every operation: what inline functions (which must
/// not touch state) run against, so a misdeclared function fails loudly.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl Store for NoStore {
    fn get(&self, _key: &[u8]) -> Result<Option<Value>, StoreError> {
        Err(NoStore::refusal())
    }
    fn put(&self, _key: &[u8], _value: Value) -> Result<(), StoreError> {
        Err(NoStore::refusal())
    }
    fn delete(&self, _key: &[u8]) -> Result<bool, StoreError> {
        Err(NoStore::refusal())
    }
    fn take(&self, _key: &[u8]) -> Result<Option<Value>, StoreError> {
        Err(NoStore::refusal())
    }
}

impl NoStore {
    fn refusal() -> StoreError {
        StoreError::Refused(
            "inline functions have no store access; register it for executor threads".into(),
        )
    }
}
