//! # executor — functions and DAGs over the store
//!
//! This crate will own everything about running user functions next to the
//! store: the function registry, native and (later) WebAssembly functions,
//! DAG composition and the per-call state API (`get`, `put`, `delete`,
//! `get_id`, `send`, `recv`). Work in progress for the functions/DAG issue;
//! today it holds:
//!
//! * [`dag`] — the DAG model: registration-time validation, wait-all fan-in,
//!   the fan-in argument order;
//! * [`function`] — the [`function::Function`] trait, the state API a call
//!   sees ([`function::Context`]: `get`, `put`, `delete`, `get_id`; `send`
//!   and `recv` come with executor threads), and the built-ins (`increment`,
//!   `square`, `sum`, `echo`, `sleep_ms`, `counter`);
//! * [`registry`] — names → factories, and an [`registry::Executor`] that
//!   keeps per-executor instances (class functions), turns panics into
//!   errors naming the function, and runs a whole DAG in-thread;
//! * [`store`] — the [`store::Store`] trait the node will implement, and
//!   [`store::LocalStore`] over one in-memory partition.
//!
//! ## Boundary
//! `executor` must not depend on `dataplane` or on any runtime: it reaches
//! the store through a trait that `dataplane` implements, so it can be
//! tested without a node and run in a simulation. `scripts/check-deps.sh`
//! enforces this.
//!
//! ## Example
//! ```
//! use executor::dag::{Dag, DagSpec};
//!
//! // square(increment(x))
//! let spec = DagSpec::chain("compose", &["increment", "square"]);
//! let dag = Dag::validate(&spec, |f| ["increment", "square"].contains(&f)).unwrap();
//! assert_eq!(dag.node(dag.sink()).name, "square");
//! assert_eq!(dag.sources().len(), 1);
//! ```

pub mod dag;
pub mod function;
pub mod limits;
pub mod registry;
pub mod store;
