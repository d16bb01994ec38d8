//! Integration tests of the `squall` binary: real processes, real sockets,
//! real files. One binary, a module per area (see ARCHITECTURE.md).

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod auth;
mod bad_input;
mod cli;
mod crash;
mod dags;
mod e2e;
mod engine;
mod functions;
mod hardening;
mod harness;
mod models;
mod shutdown;
mod wasm;
