//! # executor — functions and DAGs over the store
//!
//! Everything about running user functions next to the store, with no
//! threads and no I/O of its own (the node supplies both):
//!
//! * [`dag`] — the DAG model: registration-time validation, wait-all fan-in,
//!   the fan-in argument order, per-function options;
//! * [`run`] — one DAG call in flight as a state machine (triggers, fan-in,
//!   competing replicas), advanced by whichever thread completes a function;
//! * [`schedule`] — picking executors for a call's functions (data
//!   locality, chains, parallel branches, load threshold, replicas);
//! * [`function`] — the [`function::Function`] trait (with a batch form), the
//!   state API a call sees ([`function::Context`]: `get`, `put`, `delete`,
//!   `get_id`, `send`, `recv`), the built-ins, and the test fixtures;
//! * [`message`] — mailboxes between executors, with the KVS inbox fallback;
//! * [`registry`] — names → functions (built-ins, test fixtures when asked
//!   for, plus registrations stored in the KVS);
//! * [`instances`] — one thread's cache of function instances
//!   ([`instances::Instances`]: one per function, made on its first call,
//!   replaced when its registration changes; class functions keep state
//!   in it), turning panics into errors naming the function, and running a
//!   whole DAG in-thread;
//! * [`session`] — a DAG run's consistency mode and what it keeps (DSRR's
//!   pinned versions, bounded), as a store wrapper every function of the
//!   run reads and writes through;
//! * [`txn`] — atomic calls: write sets, commit records, why a re-run
//!   takes effect once;
//! * [`store`] — the [`store::Store`] trait the node implements, and
//!   [`store::LocalStore`] over one in-memory partition.
//!
//! ## Boundary
//! `executor` must not depend on `dataplane` or on any runtime: it reaches
//! the store through a trait that `dataplane` implements, so it can be
//! tested without a node and run in a simulation. Of Squall crates it uses
//! `kvs-core` (values) and `anomaly` (the consistency experiment's probe,
//! a built-in). `scripts/check-deps.sh` enforces this.
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
pub mod instances;
pub mod limits;
pub mod message;
pub mod registry;
pub mod run;
pub mod schedule;
pub mod session;
pub mod store;
pub mod txn;
