//! # wire — the Squall protocol
//!
//! Everything a client and a node exchange: the messages ([`message`]), how
//! they are framed ([`frame`]), the stable status codes of errors
//! ([`status`]) and the protocol's limits ([`limits`]); and RESP2, Redis's
//! protocol, for the node's RESP listener ([`resp`]). The normative
//! description for implementers in other languages is
//! `docs/wire-protocol.md`; this crate is its reference implementation.
//!
//! ## Boundary
//! `wire` depends on no other Squall crate and on no runtime: it only turns
//! bytes into validated messages and back. Nodes, clients and load
//! generators all build on it. Inbound bytes are only ever read through
//! [`frame::decode_request`] / [`frame::decode_response`], which validate the
//! rkyv archive before handing out a reference (zero-copy, checked).
//!
//! ## Example
//! ```
//! use wire::frame::{decode_request, encode_frame, FrameHeader, FRAME_HEADER_BYTES};
//! use wire::message::{KvGet, Request};
//!
//! let mut buf = Vec::new();
//! encode_frame(7, &Request::Get(KvGet { keys: vec![b"k".to_vec()] }), &mut buf).unwrap();
//! let header = FrameHeader::parse(&buf).unwrap().unwrap();
//! assert_eq!(header.request_id, 7);
//! let body = &buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.body_len];
//! let wire::message::ArchivedRequest::Get(get) = decode_request(body).unwrap() else { panic!() };
//! assert_eq!(get.keys[0].as_slice(), b"k");
//! ```

pub mod auth;
pub mod frame;
#[cfg(test)]
mod golden;
pub mod limits;
pub mod message;
pub mod model;
pub mod resp;
pub mod status;

pub use rkyv;
pub use status::Status;

/// The protocol version this crate speaks; sent in `Hello`. Version 3 added
/// authentication (`Authenticate`, `Challenge`, `Welcome`) and statuses
/// 19–21; version 4 the cluster (`ClusterStatus`, `Cluster`, `Leave`,
/// `Leaving`, `GetLocal`, `Merge`, `PutConcern`); version 5 the epoch in
/// every frame header and the cluster in the topology, so that clients
/// route across nodes; version 6 the primary keys in `ShardStats`. Both
/// changed layouts clients decode (the frame header, `ShardStats`): nodes
/// accept version 6 clients and later. Version 7 added the caches'
/// subscriptions between nodes (`Subscribe`, `Leased`, `CacheUpdate`).
/// Version 8 added the consistency mode to `DagCall` and the cache's
/// counters to `ShardStats`: changed layouts, so nodes accept version 8
/// clients only. Version 9 added atomic calls (`DagCall.txn`) and
/// `PutIfAbsent`: a changed layout again, so nodes accept version 9 only.
/// Version 10 added the functions of one call run on other nodes
/// (`RunStep`, `Stepped`), new variants only: nodes accept version 9
/// clients too. Version 11 added chains of a call's functions sent node to
/// node (`RunChain`, `ChainDone`: never answered), new variants only.
pub const PROTOCOL_VERSION: u32 = 11;

/// The oldest protocol version a node accepts.
pub const PROTOCOL_VERSION_MIN: u32 = 9;

/// Prefix of the KVS keys under which DAGs are stored (`squall:dag:<name>`);
/// a client sends DAG requests to the shard owning that key.
pub const DAG_KEY_PREFIX: &str = "squall:dag:";

/// Prefix of the KVS keys under which registered functions are stored
/// (`squall:fn:<name>`).
pub const FUNCTION_KEY_PREFIX: &str = "squall:fn:";

/// Prefix of the keys that give one key its own number of copies in a
/// cluster (`squall:replicas:<key>`, an LWW value: the number in decimal,
/// 1 to 7; deleting it restores `--replication`). Every node holds every
/// such key: selective replication for hot keys, itself a replicated
/// lattice. Writing them needs the admin role.
pub const REPLICAS_KEY_PREFIX: &str = "squall:replicas:";

/// Prefix of executors' inbox keys (`squall:inbox:<executor id>`): an
/// ordered set of messages `send` could not deliver directly.
pub const INBOX_KEY_PREFIX: &str = "squall:inbox:";

/// Where a call with an output key stores its error instead of a result
/// (`squall:error:<output key>`): an LWW value, the status code as a
/// little-endian u16 followed by the UTF-8 message.
pub const ERROR_KEY_PREFIX: &str = "squall:error:";

/// Prefix of atomic calls' commit records (`squall:txn:<id as 16 hex
/// digits>:<stage>`). Unlike the other `squall:` keys (a node's own, or on
/// every member), these are spread over the cluster like users' keys: a
/// call re-run on another node, and a reader anywhere, finds its record at
/// its holders.
pub const TXN_KEY_PREFIX: &str = "squall:txn:";

/// Identifies the ring hash in [`message::RingInfo::hash`]: XXH64, seed 0.
pub const RING_HASH_XXH64: u8 = 1;
