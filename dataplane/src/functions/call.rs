//! One call from start to result: plan where each function runs, start the
//! run, wait for its result until the deadline; re-run on retriable
//! failures; run continuations; store the outcome when the call named an
//! output key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use executor::dag::Dag;
use executor::function::FnError;
use executor::run::{Arg, Trigger};
use executor::schedule;
use executor::session::{Consistency, Session};
use executor::store::{NoStore, StoreError};
use executor::txn::{self, Record};
use futures_channel::oneshot;
use futures_lite::StreamExt as _;
use kvs_core::lattice::{Lww, Timestamp};
use kvs_core::limits::VALUE_BYTES_MAX;
use kvs_core::{ShardId, Value};
use wire::message as w;
use wire::Status;

use super::pool::{dispatch, dispatch_here, Away, CallResult, Here, Run};
use super::ShardFunctions;
use crate::convert::value_from_wire;
use crate::error::NodeError;
use crate::limits::{
    BUSY_NODE_AVOID_MS, CALL_TIMEOUT_MS_DEFAULT, CALL_TIMEOUT_MS_MAX, CONFLICT_RERUNS_MAX,
    EXECUTOR_LOAD_THRESHOLD, NODE_REQUEST_TIMEOUT_MS,
};
use crate::transport::{ShardOp, ShardReply};

/// What the shard running a call waits for.
enum Event {
    Result(Result<CallResult, oneshot::Canceled>),
    Away(Box<Away>),
    Expired,
}

/// What one call asks for besides its DAG and arguments.
#[derive(Clone, Debug, Default)]
pub(super) struct CallOptions {
    pub timeout_ms: u32,
    pub retries: u32,
    /// Continuation DAG names.
    pub then: Vec<String>,
    /// Each run's consistency mode (each run has its own session).
    pub consistency: Consistency,
    /// Not 0: the call is atomic, with this transaction id (`txn.rs`).
    pub txn: u64,
    /// Every function runs on this node (a plain function call, which
    /// reads other nodes' keys through the cache; a call meant for a node
    /// that could not be reached).
    pub here_only: bool,
}

/// The error of a run failed on purpose at a fail point (tests of
/// re-runs; the points exist only in the test build: `atomic::before-apply`
/// and `atomic::after-apply` fail the first run of each atomic call there).
#[cfg_attr(not(test), allow(dead_code))]
fn failed_here(point: &str) -> NodeError {
    eprintln!("squall: fail point {point} reached: the run fails here");
    NodeError::retriable(Status::Unavailable, format!("fail point {point}"))
}

/// The deadline of a call asking for `timeout_ms` (0 = the default).
pub(super) fn deadline_after(timeout_ms: u32) -> Instant {
    let ms = match u64::from(timeout_ms) {
        0 => CALL_TIMEOUT_MS_DEFAULT,
        t => t.min(CALL_TIMEOUT_MS_MAX),
    };
    Instant::now() + Duration::from_millis(ms)
}

impl ShardFunctions {
    /// Runs an inline function on this shard's thread, now.
    pub(super) fn invoke_inline(&self, name: &str, args: &[Vec<u8>]) -> CallResult {
        Ok(self.inline.borrow_mut().call(name, &NoStore, args)?)
    }

    /// Runs a DAG of inline functions start to end on this shard's thread.
    pub(super) fn run_inline(&self, dag: &Arc<Dag>, args: HashMap<String, Vec<Arg>>) -> CallResult {
        self.inline
            .borrow_mut()
            .run_dag(dag, &NoStore, args)
            .map_err(|e| NodeError::new(Status::FunctionFailed, e.to_string()))
    }

    /// Runs one DAG call once under `session`: plans it, starts it, waits
    /// for its result until `deadline`, sending the functions planned on
    /// other nodes there. `spread` (a re-run) plans for the least-loaded
    /// executors, all on this node; `here_only` plans all here too.
    pub(super) async fn run_once(
        &self,
        dag: Arc<Dag>,
        args: HashMap<String, Vec<Arg>>,
        deadline: Instant,
        (spread, here_only): (bool, bool),
        session: Session,
    ) -> Result<(Vec<u8>, Arc<Run>), NodeError> {
        let pool = &self.platform.pool;
        // Data locality: the executor beside the shard owning most of each
        // source's referenced keys.
        let home: Vec<Option<usize>> = dag
            .nodes()
            .iter()
            .map(|node| {
                let mut owners: Vec<(ShardId, usize)> = Vec::new();
                for a in args.get(&node.name).into_iter().flatten() {
                    if let Arg::Ref(key) = a {
                        let o = self.shard.owner(key);
                        match owners.iter_mut().find(|(s, _)| *s == o) {
                            Some((_, n)) => *n += 1,
                            None => owners.push((o, 1)),
                        }
                    }
                }
                owners
                    .into_iter()
                    .max_by_key(|&(s, n)| (n, std::cmp::Reverse(s.0)))
                    .map(|(s, _)| pool.beside(s))
            })
            .collect();
        let threshold = if spread { 0 } else { EXECUTOR_LOAD_THRESHOLD };
        let here = pool.beside(self.shard.id());
        let plan = schedule::plan(&dag, &home, &pool.loads(), here, threshold);
        let away = match spread || here_only {
            true => vec![None; dag.nodes().len()],
            false => self.plan_away(&dag, &args),
        };
        let (run, triggers, mut rx, mut away_rx) =
            Run::start(pool, dag, args, (plan, away), deadline, session)
                .map_err(|m| NodeError::new(Status::InvalidArgument, m))?;
        dispatch(
            &run,
            triggers,
            &mut Here::Shard(&mut self.inline.borrow_mut()),
        );
        if let Ok(Some(result)) = rx.try_recv() {
            // Finished on this thread (all-inline): no timer armed at all.
            return result.map(|out| (out, run));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut expired = Box::pin(glommio::timer::sleep(left));
        loop {
            use futures_lite::future::{or, pending};
            let event = or(
                async { Event::Result((&mut rx).await) },
                or(
                    async {
                        match away_rx.next().await {
                            Some(a) => Event::Away(Box::new(a)),
                            None => pending().await,
                        }
                    },
                    async {
                        (&mut expired).await;
                        Event::Expired
                    },
                ),
            )
            .await;
            match event {
                Event::Result(Ok(result)) => return result.map(|out| (out, run)),
                Event::Result(Err(_)) => {
                    return Err(NodeError::retriable(
                        Status::Internal,
                        format!("DAG {:?}: the run was dropped", run.dag_name()),
                    ))
                }
                Event::Expired => {
                    run.abandon();
                    return Err(NodeError::retriable(
                        Status::Timeout,
                        format!(
                            "DAG {:?} did not finish within its deadline",
                            run.dag_name()
                        ),
                    ));
                }
                Event::Away(away) => match *away {
                    Away::Trigger { node, args, to } => {
                        self.send_away(&run, node, args, to, deadline);
                    }
                    Away::Answer {
                        node,
                        to,
                        reply,
                        args,
                    } => self.stepped(&run, &[node], to, *reply, args),
                    Away::Chain { chain, outcome } => self.chain_ended(&run, &chain, outcome),
                },
            }
        }
    }

    /// Where each function of `dag` runs when not on this node: under
    /// `--spread-functions` every function of one replica on the next
    /// member in rotation (this node first); otherwise a function whose
    /// referenced keys are mostly another node's (not cached here) there,
    /// and when every executor here is over the load threshold, each
    /// function of one replica run by executors on the next other member.
    /// A node that refused a step as overloaded lately gets none.
    fn plan_away(&self, dag: &Dag, args: &HashMap<String, Vec<Arg>>) -> Vec<Option<SocketAddr>> {
        let mut away = vec![None; dag.nodes().len()];
        let others: Vec<SocketAddr> = (self.remote.members.placement().others().into_iter())
            .map(|(_, a)| a)
            .filter(|&a| !self.is_busy(a))
            .collect();
        if self.platform.spread_functions {
            let members: Vec<Option<SocketAddr>> = std::iter::once(None)
                .chain(others.into_iter().map(Some))
                .collect();
            for (k, &i) in dag.topological_order().iter().enumerate() {
                if dag.node(i).options.replicas == 1 {
                    away[i] = members[k % members.len()];
                }
            }
            return away;
        }
        let saturated = !others.is_empty() && self.platform.pool.saturated();
        for (i, node) in dag.nodes().iter().enumerate() {
            if node.options.replicas != 1 {
                continue;
            }
            let args = args.get(&node.name).map_or(&[][..], Vec::as_slice);
            away[i] = self.best_node(args);
            // Inline functions run on the shard's thread, not an executor
            // (those after the sources get values only).
            if away[i].is_none()
                && saturated
                && !self
                    .platform
                    .runs_inline(&node.function, &node.options, args)
            {
                let turn = self.shed_turn.get();
                self.shed_turn.set(turn.wrapping_add(1));
                away[i] = Some(others[turn % others.len()]);
            }
        }
        away
    }

    /// Sends a trigger of `node` to the node at `to`, with the run's
    /// session; the answer comes back to the run ([`Run::answered`]). The
    /// functions after it that make a chain with it, all planned on other
    /// nodes, go with it (`chain.rs`).
    fn send_away(
        &self,
        run: &Arc<Run>,
        node: usize,
        args: Vec<Arg>,
        to: SocketAddr,
        deadline: Instant,
    ) {
        let chain = executor::run::chain(run.dag(), node, |d| run.away_of(d).is_some());
        let args = match chain.len() {
            1 => args,
            _ => match self.send_chain(run, chain, args, deadline) {
                Ok(()) => return,
                Err(args) => args,
            },
        };
        let session = match run.session.encode() {
            Ok(s) => s,
            Err(source) => {
                let function = run.function(node).to_owned();
                let e = FnError::Store { function, source };
                let here = &mut Here::Shard(&mut self.inline.borrow_mut());
                return run.complete(node, Err(e), here);
            }
        };
        let left_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let step = w::RunStep {
            function: run.function(node).as_bytes().to_vec(),
            args: super::wire_args(args),
            timeout_ms: u32::try_from(left_ms.max(1)).unwrap_or(u32::MAX),
            session,
        };
        let (links, run) = (self.remote.links.clone(), run.clone());
        crate::shard::bump(&self.shard.stats().node_forwards);
        glommio::spawn_local(async move {
            let request = w::Request::RunStep(step);
            let reply = links.call_within(to, &request, left_ms + 100).await;
            let args = match request {
                w::Request::RunStep(step) => step.args,
                _ => Vec::new(),
            };
            run.answered(Away::Answer {
                node,
                to,
                reply: Box::new(reply),
                args,
            });
        })
        .detach();
    }

    /// Completes the functions of `chain` (one, or a chain sent node to
    /// node) with the answer of the node at `to`; runs the first here
    /// (with `args`, its trigger's) if that node refused it as overloaded,
    /// and leaves that node out of plans for a while.
    pub(super) fn stepped(
        &self,
        run: &Arc<Run>,
        chain: &[usize],
        to: SocketAddr,
        reply: w::Response,
        args: Vec<w::Arg>,
    ) {
        let node = chain[0];
        let function = run.function(node).to_owned();
        let here = &mut Here::Shard(&mut self.inline.borrow_mut());
        let result = match reply {
            w::Response::Stepped(s) => match run.session.absorb(&s.session) {
                Ok(()) => Ok(s.output),
                Err(source) => Err(FnError::Store { function, source }),
            },
            w::Response::Error(e) => {
                let message = String::from_utf8_lossy(&e.message).into_owned();
                let store = |source| FnError::Store {
                    function: function.clone(),
                    source,
                };
                match Status::from_code(e.code).unwrap_or(Status::Internal) {
                    Status::Overloaded => {
                        log::debug!(
                            "{}: {to} is overloaded; {function} runs here",
                            self.shard.id()
                        );
                        let until = Instant::now() + Duration::from_millis(BUSY_NODE_AVOID_MS);
                        self.busy.borrow_mut().insert(to, until);
                        let args = super::args_from_wire(args);
                        return dispatch_here(run, Trigger { node, args }, here);
                    }
                    Status::FunctionFailed => Err(FnError::Failed {
                        function: function.clone(),
                        message,
                    }),
                    Status::Conflict => Err(store(StoreError::Conflict(message))),
                    Status::LimitExceeded => Err(store(StoreError::LimitExceeded(message))),
                    // Not reached, timed out, refused: running it here may do.
                    status => {
                        let msg = format!("{function} on another node: {message}");
                        return run.finish(Err(NodeError::retriable(status, msg)));
                    }
                }
            }
            other => {
                let msg = format!("{function} on another node: unexpected answer {other:?}");
                return run.finish(Err(NodeError::retriable(Status::Internal, msg)));
            }
        };
        run.complete_chain(chain, result, here, None);
    }

    /// Runs a call to the end: the DAG (re-run on retriable failures up to
    /// `retries` times, each run with its own deadline), then each
    /// continuation with the previous result.
    pub(super) async fn run_call(
        &self,
        dag: Arc<Dag>,
        args: HashMap<String, Vec<Arg>>,
        options: &CallOptions,
    ) -> CallResult {
        let mut result = self.run_retrying(dag, args, options, 0).await?;
        for (stage, name) in options.then.iter().enumerate() {
            let next = self.fetch_dag(name).await?;
            let args = next
                .sources()
                .iter()
                .map(|&s| (next.node(s).name.clone(), vec![Arg::Value(result.clone())]))
                .collect();
            result = self.run_retrying(next, args, options, stage + 1).await?;
        }
        Ok(result)
    }

    async fn run_retrying(
        &self,
        dag: Arc<Dag>,
        args: HashMap<String, Vec<Arg>>,
        options: &CallOptions,
        stage: usize,
    ) -> CallResult {
        let mut attempt = 0;
        let mut conflicts = 0;
        let mut args = Some(args);
        let atomic = options.txn != 0;
        // Runs that may read what their mode forbids, and fail to run again.
        let may_conflict = atomic || options.consistency == Consistency::Dsrr;
        loop {
            let deadline = deadline_after(options.timeout_ms);
            let spread = attempt > 0;
            // A run that read what its mode forbids runs again here, all
            // of it: shorter, so less likely to meet a write again.
            let here_only = options.here_only || conflicts > 0;
            // Keep a copy only while a re-run may still need it.
            let rerun_possible =
                attempt < options.retries || (may_conflict && conflicts < CONFLICT_RERUNS_MAX);
            let this_run = if rerun_possible {
                args.clone()
            } else {
                args.take()
            }
            .unwrap_or_default();
            let session = match atomic {
                true => Session::new(options.consistency).atomic(),
                false => Session::new(options.consistency),
            };
            let run = async {
                let (out, run) = (self.run_once(
                    dag.clone(),
                    this_run,
                    deadline,
                    (spread, here_only),
                    session,
                ))
                .await?;
                match atomic {
                    true => {
                        let record = run.record(out, self.shard.tick_us());
                        self.commit(options.txn, stage, record, attempt == 0).await
                    }
                    false => Ok(out),
                }
            };
            match run.await {
                // Reads the mode forbids (a fractured read, two pins of
                // one key on two nodes): not one of --retries.
                Err(e) if e.status == Status::Conflict && conflicts < CONFLICT_RERUNS_MAX => {
                    log::debug!(
                        "{}: DAG {:?} runs again: {}",
                        self.shard.id(),
                        dag.name(),
                        e
                    );
                    conflicts += 1;
                }
                Err(e) if e.retriable && attempt < options.retries => {
                    log::info!(
                        "{}: DAG {:?} run {} failed, running again: {}",
                        self.shard.id(),
                        dag.name(),
                        attempt + 1,
                        e.message
                    );
                    attempt += 1;
                }
                Err(mut e) if attempt + conflicts > 0 => {
                    e.message = format!("after {} runs: {}", attempt + conflicts + 1, e.message);
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// Stores `value` under `key` (any shard's, any node's), once durable.
    async fn store_put(&self, key: Vec<u8>, value: Value) -> Result<(), NodeError> {
        if let Some(to) = self.remote.holder(&key) {
            let put = self.remote.put(to, key, value).await;
            return put.map_err(|e| NodeError::new(wire::Status::Unavailable, e));
        }
        let owner = self.shard.owner(&key);
        if owner == self.shard.id() {
            let (_, lsn) = self.shard.write(key, Some(value))?;
            return self.shard.wait_durable(lsn).await;
        }
        match self
            .shard
            .forward(owner, ShardOp::Put(key, value))
            .await
            .await
        {
            ShardReply::Stored => Ok(()),
            ShardReply::Error(e) => Err(e),
            other => Err(NodeError::internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// `PutIfAbsent` of `value` under `key` (any shard's, any node's):
    /// what the key held, `None` when `value` was stored (once durable).
    async fn store_put_if_absent(
        &self,
        key: Vec<u8>,
        value: Value,
    ) -> Result<Option<Value>, NodeError> {
        if let Some(to) = self.remote.holder(&key) {
            return self.remote.put_if_absent(to, key, value).await;
        }
        let owner = self.shard.owner(&key);
        if owner == self.shard.id() {
            let (held, lsn, acks) = self.shard.put_if_absent(key, value)?;
            self.shard.wait_durable(lsn).await?;
            if let Some((barriers, need)) = acks {
                let timeout = Duration::from_millis(NODE_REQUEST_TIMEOUT_MS);
                crate::event::acknowledged(barriers, need, timeout)
                    .await
                    .map_err(|got| NodeError::copies_missing(got, need, NODE_REQUEST_TIMEOUT_MS))?;
            }
            return Ok(held);
        }
        match (self.shard)
            .forward(owner, ShardOp::PutIfAbsent(key, value))
            .await
            .await
        {
            ShardReply::Values(mut vs) if vs.len() == 1 => {
                Ok(vs.pop().flatten().map(value_from_wire))
            }
            ShardReply::Error(e) => Err(e),
            other => Err(NodeError::internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Commits a run of atomic call `txn` (`executor::txn`): its record —
    /// result and write set, LWW writes stamped now — is stored unless an
    /// earlier run of the call stored one; the record that stands is
    /// applied, and its result is the call's. Errors on the way are
    /// retriable (a re-run commits again, and finds the record) but for a
    /// write set the node refuses as a whole.
    async fn commit(
        &self,
        txn: u64,
        stage: usize,
        mut record: Record,
        first_run: bool,
    ) -> CallResult {
        let writes = std::mem::take(&mut record.writes);
        if let Some((key, _)) = writes.iter().find(|(k, _)| crate::auth::is_reserved_key(k)) {
            let msg = format!(
                "functions may not write {:?}: the node reserves it (code, models, commit records)",
                String::from_utf8_lossy(key)
            );
            return Err(NodeError::new(Status::InvalidArgument, msg));
        }
        record.writes = txn::stamp(writes, txn, stage, record.created_us);
        let bytes = record.encode();
        if bytes.len() > VALUE_BYTES_MAX {
            let msg = format!(
                "an atomic run's result and writes make a {} byte commit record; one value \
                 holds {VALUE_BYTES_MAX}",
                bytes.len()
            );
            return Err(NodeError::new(Status::LimitExceeded, msg));
        }
        let key = txn::record_key(txn, stage);
        let value = Value::Lww(Lww::new(Timestamp::default(), bytes));
        let retriable = |e: NodeError| NodeError {
            retriable: e.retriable
                || matches!(
                    e.status,
                    Status::Unavailable | Status::Timeout | Status::Overloaded
                ),
            ..e
        };
        let standing = match self
            .store_put_if_absent(key, value)
            .await
            .map_err(retriable)?
        {
            None => record,
            Some(Value::Lww(held)) => Record::decode(held.value())
                .map_err(|e| NodeError::internal(format!("transaction {txn:016x}: {e}")))?,
            Some(other) => {
                let msg = format!(
                    "transaction {txn:016x}: its record key holds a {} value",
                    other.kind()
                );
                return Err(NodeError::internal(msg));
            }
        };
        // Test build only: the first run of each call fails here, or dies.
        let _ = first_run;
        fail::fail_point!("atomic::before-apply", first_run, |_| {
            Err(failed_here("atomic::before-apply"))
        });
        // One key after another: a re-run re-applies what a failure left.
        for (key, value) in standing.writes {
            self.store_put(key, value).await.map_err(retriable)?;
        }
        fail::fail_point!("atomic::after-apply", first_run, |_| {
            Err(failed_here("atomic::after-apply"))
        });
        crash_point!("atomic::crash-after-apply");
        Ok(standing.result)
    }

    /// Stores the outcome of a call made with an output key: the result
    /// under the key, or the error under `squall:error:<key>`.
    pub(super) async fn store_outcome(&self, output_key: Vec<u8>, outcome: CallResult) {
        let (key, bytes) = match outcome {
            Ok(out) => (output_key.clone(), out),
            Err(e) => {
                let mut bytes = e.status.code().to_le_bytes().to_vec();
                bytes.extend_from_slice(e.message.as_bytes());
                (
                    [wire::ERROR_KEY_PREFIX.as_bytes(), &output_key].concat(),
                    bytes,
                )
            }
        };
        let value = Value::Lww(Lww::new(Timestamp::default(), bytes));
        if let Err(e) = self.store_put(key, value).await {
            log::warn!(
                "{}: the outcome of a call for output key {:?} was not stored: {}",
                self.shard.id(),
                String::from_utf8_lossy(&output_key),
                e.message
            );
        }
    }
}
