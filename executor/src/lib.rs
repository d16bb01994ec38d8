//! # executor — functions and DAGs over the store
//!
//! This crate will own everything about running user functions next to the
//! store: the function registry, native and (later) WebAssembly functions,
//! DAG composition and the per-call state API (`get`, `put`, `delete`,
//! `get_id`, `send`, `recv`). Work in progress for the functions/DAG issue:
//! today it holds the DAG model ([`dag`]) — registration-time validation,
//! wait-all fan-in and the argument order — which the scheduler and the
//! executor threads will run.
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
pub mod limits;
