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
//!
//! Where keys live for a membership view (the node ring over shard rings,
//! replicas, the view's epoch) is `kvs_core::cluster`. Replication's
//! pushes and the hand-off run in the node for now (`dataplane`'s
//! `replicate.rs`, `handoff.rs`), tested with real processes under seeded
//! link faults; moving their decisions here, into the simulation, is next.
//!
//! ## Boundary
//! No I/O, no threads, no clock (time is passed in as timers firing), no
//! runtime; of Squall crates only `kvs-core`. `scripts/check-deps.sh`
//! enforces it.

pub mod membership;
