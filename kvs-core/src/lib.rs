//! # kvs-core — the deterministic heart of the Squall store
//!
//! This crate owns everything about the key-value store that can be decided
//! without touching the outside world:
//!
//! * [`lattice`] — the value types. Every value is a join-semilattice: `merge`
//!   is associative, commutative and idempotent, so replicas can apply puts in
//!   any order, any number of times, and agree.
//! * [`partition`] — one shard's data: key → typed lattice value. Every put
//!   merges; a key's lattice type is fixed by its first put; deletes leave
//!   tombstones (see [`partition::Mutation::Delete`]).
//! * [`ring`] — the consistent hash ring (virtual nodes, xxh64) that maps a key
//!   to its owner. It is generic over the member type so that the same code
//!   maps keys to shards and, in [`cluster`], keys to replica nodes (a node
//!   ring over each node's shard ring) and a membership view to its epoch.
//! * [`digest`] — range digests of the keys two replicas share, for
//!   anti-entropy.
//! * [`wal`] and [`snapshot`] — the durable formats, with CRC32C checksums, and
//!   the recovery rules (torn tail cut, corruption in the middle refused).
//! * [`clock`] — a hybrid logical clock; wall time is *passed in*.
//!
//! ## Boundary
//! `kvs-core` performs no I/O, spawns no threads, reads no clock and depends on
//! no runtime (no glommio, no tokio) and on no other Squall crate. It must stay
//! testable with plain `#[test]`s and usable inside a seeded simulation.
//! `scripts/check-deps.sh` enforces this with `cargo tree`.
//!
//! ## Example
//! ```
//! use kvs_core::lattice::{Lww, Timestamp, Value, ValueRef};
//! use kvs_core::partition::{Mutation, Partition};
//!
//! let mut p = Partition::default();
//! let put = |clock, v: &str| Mutation::Put {
//!     key: b"greeting".to_vec(),
//!     value: Value::Lww(Lww::new(Timestamp { clock, writer: 1 }, v.as_bytes().to_vec())),
//! };
//! p.apply(put(2, "hello")).unwrap();
//! p.apply(put(1, "stale")).unwrap(); // older timestamp: merged away
//! match p.get(b"greeting") {
//!     Some(ValueRef::Lww(_, bytes)) => assert_eq!(bytes, b"hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

pub mod clock;
pub mod cluster;
pub mod codec;
pub mod digest;
pub mod ids;
pub mod lattice;
pub mod limits;
pub mod partition;
pub mod ring;
pub mod snapshot;
pub mod wal;

pub use ids::{Lsn, NodeId, ShardId};
pub use lattice::{LatticeKind, Value};
pub use partition::{Mutation, Partition, PartitionError};
