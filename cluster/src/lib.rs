//! # cluster — many nodes, one store: the state machines
//!
//! What nodes of a Squall cluster say to each other, decided without
//! touching the outside world, so that every step can run in a seeded
//! simulation as well as on real sockets:
//!
//! * [`membership`] — who is in the cluster and who is down: SWIM with
//!   suspicion and piggybacked dissemination, through `foca` (a proven,
//!   sans-I/O implementation), wrapped so that its outputs are plain
//!   values (send these bytes, wake me after this long, this node is up or
//!   down).
//! * [`push`] — replication: the queues of keys owed to each other holder,
//!   their sequence numbers (what a write concern waits on) and pauses.
//! * [`handoff`] — after a placement change: which keys go to whom, and
//!   which may be dropped once every holder acknowledged them.
//!
//! Where keys live for a membership view (the node ring over shard rings,
//! replicas, the view's epoch) is `kvs_core::cluster`. The node
//! (`dataplane`'s `replicate.rs`, `handoff.rs`) only moves bytes for these
//! decisions. `sim` runs all three together: nodes on a virtual clock with
//! lossy, duplicating, reordering links, joins, leaves, kills and
//! restarts, and a history check at the end.
//!
//! ## Boundary
//! No I/O, no threads, no clock (time is passed in as timers firing), no
//! runtime; of Squall crates only `kvs-core`. `scripts/check-deps.sh`
//! enforces it.

pub mod handoff;
pub mod membership;
pub mod push;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod timeline;
