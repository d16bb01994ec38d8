//! Integration tests of the `squall` binary: real processes, real sockets,
//! real files. One binary, a module per area:
//!
//! * `e2e`, `crash`, `shutdown`, `bad_input`: every lattice through the
//!   client and the CLI, misrouted requests, limits, SIGKILL mid-stream, torn
//!   tails, mid-log corruption, snapshots, hostile input beside a bystander,
//!   SIGTERM under load, the locked-memory check.
//! * `dags`, `functions`, `engine`: validation, fan-in order, replicas,
//!   batching, continuations, references and locality, send/recv and the
//!   inbox, re-runs, output keys, registrations across restarts.
//! * `wasm`, `models`: uploaded guests (every host call, refusals, limits
//!   ending calls while others succeed), the SqueezeNet pipeline.
//! * `hardening`: writer clocks refused and healed on disk, replies out of
//!   order, overdue executors skipped, the exact value limit, a full disk (a
//!   tmpfs the test mounts: needs root), silent / idle / trickling /
//!   oversized connections, the large-frame budget, memory returned.
//! * `auth`: every request before authentication and under each role,
//!   replays, the rate limit, code keys, secrets out of logs; `cli`: hints,
//!   binary values, JSON errors, a closed stdout.
//! * `cluster`: a node's identity across restarts; membership between
//!   node processes on their own loopback addresses (join, kill -9,
//!   SIGTERM, restart, `squall leave`, another cluster's secret).
//! * `placement`: keys spread over the nodes, hand-off on join and leave,
//!   `kv get --local`, bad node-to-node input, two copies surviving a kill,
//!   a hot key's own copies.
//! * `history`: a history checker over clusters under seeded link faults:
//!   W=quorum with a node lost for good or a join and a leave, W=1 with a
//!   node restarted or a partition that heals.
//! * `spread`: functions across nodes: registrations everywhere (and on a
//!   joining node), keys other nodes hold read and written at their holder
//!   and cached (pushed fresh, a lost push healed), calls sent beside their
//!   data, machine code compiled once per cluster.
//! * `consistency`: consistency modes of DAG calls on three nodes: a
//!   planted repeatable-read anomaly caught under `lww`, prevented under
//!   `dsrr`; `loadgen consistency` under `dsrr` and `dsc --atomic`; the
//!   session metadata limit; all of it again with functions spread.
//! * `across`: one call's functions on several nodes: beside the keys they
//!   reference, or spread over the members, atomic writes made elsewhere
//!   committed once, a node lost midway.
//! * `atomic`: atomic calls take effect once when their first run fails
//!   before or after applying its commit record, or its node dies after
//!   applying it; a failed run writes nothing.
//! * `failpoints`: a crash at each step of the hand-off (fail points), on
//!   the sender and on the receiver; no key lost.
//! * `netns`: a real cut (network namespaces, a link taken down) and the
//!   catch-up after it heals.
//! * `faults`: messages between shards delayed, duplicated and dropped on
//!   purpose (`SQUALL_FAULTS`).
//! * `resp`: the RESP2 listener: Redis's commands on every shard and
//!   across nodes, pipelining, other lattices, limits, `AUTH`, durability.
//! * `network`: both socket paths (`--net uring`, `--net glommio`) hold
//!   back a peer that pipelines without reading, and answer it in order.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod across;
mod atomic;
mod auth;
mod bad_input;
mod cli;
mod cluster;
mod consistency;
mod crash;
mod dags;
mod e2e;
mod engine;
mod failpoints;
mod faults;
mod functions;
mod hardening;
mod harness;
mod history;
mod models;
mod netns;
mod network;
mod placement;
mod resp;
mod shutdown;
mod spread;
mod wasm;
