//! The executor threads beside the shards, and how a DAG run moves
//! through them.
//!
//! Each executor is a thread pinned to its shard's core (`core_affinity`),
//! fed over a bounded crossbeam channel. A job is one [`Step`]: a function
//! of a DAG call, with its arguments. The receiving shard plans an executor
//! for every function ([`executor::schedule`]), starts the run
//! ([`executor::run::DagRun`], shared behind a mutex) and hands out the
//! source triggers ([`dispatch`]). Whoever completes a function advances
//! the run and hands the next triggers on directly — executor to executor;
//! the shard only waits for the sink's result. Inline functions (pure
//! microsecond built-ins) run wherever their trigger is: on the shard's own
//! thread, or on the executor that produced their input.
//!
//! A function planned on another node (`Run::away`) is not run here: its
//! trigger goes to the shard running the call ([`Away`]), which sends it
//! there with the run's session and completes it with the answer
//! (`call.rs`), or runs it here when that node refused it as overloaded
//! ([`dispatch_here`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel as cb;
use executor::dag::Dag;
use executor::function::FnError;
use executor::instances::{resolve, Instances};
use executor::message::Postbox;
use executor::registry::Registry;
use executor::run::{Arg, DagRun, Progress, Trigger};
use executor::schedule::Plan;
use executor::session::{Consistency, Session};
use executor::store::{NoStore, Store};
use executor::txn::Record;
use futures_channel::{mpsc, oneshot};
use kvs_core::ShardId;
use wire::message as w;
use wire::Status;

use super::store::NodeStore;
use crate::error::NodeError;
use crate::limits::EXECUTOR_LOAD_THRESHOLD;

/// A call's result or why it failed.
pub(super) type CallResult = Result<Vec<u8>, NodeError>;

/// A run just started: the run, its source triggers, where its result
/// will arrive, where its triggers for other nodes arrive.
type Started = (
    Arc<Run>,
    Vec<Trigger>,
    oneshot::Receiver<CallResult>,
    mpsc::UnboundedReceiver<Away>,
);

/// News of a run's functions planned on other nodes, for the shard
/// running the call.
#[derive(Debug)]
pub(super) enum Away {
    /// A trigger of `node` to send to the node at `to`.
    Trigger {
        node: usize,
        args: Vec<Arg>,
        to: SocketAddr,
    },
    /// The answer of the node at `to` to a trigger of `node`, and the
    /// trigger's arguments (to run it here when that node refused it as
    /// overloaded).
    Answer {
        node: usize,
        to: SocketAddr,
        reply: Box<w::Response>,
        args: Vec<w::Arg>,
    },
    /// How the functions of `chain`, sent node to node, ended (`chain.rs`).
    Chain {
        chain: Vec<usize>,
        outcome: w::ChainOutcome,
    },
}

/// One function of a DAG call, for an executor.
#[derive(Debug)]
pub(super) struct Step {
    run: Arc<Run>,
    node: usize,
    args: Vec<Arg>,
}

/// A DAG call in flight, shared by the threads that advance it.
#[derive(Debug)]
pub(super) struct Run {
    state: Mutex<DagRun>,
    dag: Arc<Dag>,
    plan: Plan,
    deadline: Instant,
    reply: Mutex<Option<oneshot::Sender<CallResult>>>,
    pool: Arc<Pool>,
    /// Every store operation of the run goes through it.
    pub(super) session: Session,
    /// Per function: the other node it is planned on, if any.
    away: Vec<Option<SocketAddr>>,
    away_tx: mpsc::UnboundedSender<Away>,
}

impl Run {
    /// Starts a run of `dag` with `args` on `pool`, following `plan` (and
    /// `away`: functions planned on other nodes), under `session`: returns
    /// it, its source triggers (to [`dispatch`]), where its result will
    /// arrive, and where its triggers for other nodes will.
    pub(super) fn start(
        pool: &Arc<Pool>,
        dag: Arc<Dag>,
        args: std::collections::HashMap<String, Vec<Arg>>,
        (plan, away): (Plan, Vec<Option<SocketAddr>>),
        deadline: Instant,
        session: Session,
    ) -> Result<Started, String> {
        let (state, triggers) = DagRun::start(dag.clone(), args)?;
        let (tx, rx) = oneshot::channel();
        let (away_tx, away_rx) = mpsc::unbounded();
        let run = Arc::new(Run {
            state: Mutex::new(state),
            dag,
            plan,
            deadline,
            reply: Mutex::new(Some(tx)),
            pool: pool.clone(),
            session,
            away,
            away_tx,
        });
        Ok((run, triggers, rx, away_rx))
    }

    /// An answer from another node ([`Away::Answer`], [`Away::Chain`]),
    /// for the shard running the call.
    pub(super) fn answered(&self, answer: Away) {
        let _ = self.away_tx.unbounded_send(answer);
    }

    /// Where answers from other nodes go while the run waits for them.
    pub(super) fn answers(&self) -> mpsc::UnboundedSender<Away> {
        self.away_tx.clone()
    }

    pub(super) fn dag(&self) -> &Dag {
        &self.dag
    }

    /// The other node function `node` is planned on, if any.
    pub(super) fn away_of(&self, node: usize) -> Option<SocketAddr> {
        self.away.get(node).copied().flatten()
    }

    /// The name of the function at `node`.
    pub(super) fn function(&self, node: usize) -> &str {
        &self.dag.node(node).function
    }

    /// Stops handing out steps (the caller gave up waiting).
    pub(super) fn abandon(&self) {
        self.lock().abandon();
    }

    /// An atomic run's commit record, made at `created_us`: its result,
    /// the writes it kept and what it read.
    pub(super) fn record(&self, result: Vec<u8>, created_us: u64) -> Record {
        Record {
            created_us,
            result,
            writes: self.session.take_writes(),
            reads: self.session.reads(),
        }
    }

    pub(super) fn dag_name(&self) -> &str {
        self.dag.name()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DagRun> {
        // DagRun's methods do not panic midway; a poisoned lock still
        // holds a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn finish(&self, result: CallResult) {
        self.lock().abandon();
        let sender = self
            .reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(tx) = sender {
            let _ = tx.send(result);
        }
    }

    /// Records one completed replica of `node` and hands out what became
    /// ready (through `here`).
    pub(super) fn complete(
        self: &Arc<Self>,
        node: usize,
        result: Result<Vec<u8>, FnError>,
        here: &mut Here<'_>,
    ) {
        self.complete_chain(&[node], result, here, None);
    }

    /// Records that the functions of `chain` ran one after another on
    /// other nodes, the last with `result`, and hands out what became
    /// ready (through `here`; function `kept`, if any, on this node).
    pub(super) fn complete_chain(
        self: &Arc<Self>,
        chain: &[usize],
        result: Result<Vec<u8>, FnError>,
        here: &mut Here<'_>,
        kept: Option<usize>,
    ) {
        let progress = self.lock().complete_chain(chain, result);
        match progress {
            Progress::Ready(triggers) => dispatch_keeping(self, triggers, here, kept),
            Progress::Finished(result) => self.finish(result.map_err(NodeError::from)),
            Progress::Ignored => {}
        }
    }

    fn over(&self) -> bool {
        Instant::now() >= self.deadline || self.lock().is_finished()
    }
}

/// The node's executor threads.
#[derive(Debug)]
pub(super) struct Pool {
    queues: Vec<cb::Sender<Step>>,
    /// Steps queued or running, per executor (what scheduling compares).
    load: Vec<AtomicUsize>,
    /// Per executor: the deadline (µs after `epoch`, + 1) of the call whose
    /// step it is running now, 0 when idle. A native function cannot be stopped:
    /// one still running past its call's deadline makes its executor count
    /// as over the load threshold, so new work goes elsewhere.
    running_deadline_us: Vec<AtomicU64>,
    epoch: Instant,
    /// Executors per shard: executor `e` sits beside shard `e / per_shard`.
    per_shard: usize,
    pub(super) registry: Arc<Registry>,
}

impl Pool {
    /// Starts `per_shard` executors beside each of `cpus.len()` shards,
    /// each pinned to its shard's cpu (unless `pin` is false: then the OS
    /// places them), with a queue of `depth` steps.
    pub(super) fn start(
        cpus: &[usize],
        pin: bool,
        per_shard: usize,
        registry: Arc<Registry>,
        store: Arc<NodeStore>,
        post: Arc<Postbox>,
        depth: usize,
    ) -> std::io::Result<Arc<Pool>> {
        let n = cpus.len() * per_shard;
        let (queues, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| cb::bounded(depth)).unzip();
        let pool = Arc::new(Pool {
            queues,
            load: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            running_deadline_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            per_shard,
            registry: registry.clone(),
        });
        for (e, rx) in receivers.into_iter().enumerate() {
            let cpu = cpus[e / per_shard];
            let ex = Instances::with_post(e as u64, registry.clone(), post.clone());
            let (pool, store) = (pool.clone(), store.clone());
            std::thread::Builder::new()
                .name(format!("executor-{e}"))
                .spawn(move || {
                    if pin && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        log::warn!("executor-{e}: could not pin to cpu {cpu}; running unpinned");
                    }
                    executor_loop(e, ex, &rx, &pool, &*store);
                })?;
        }
        Ok(pool)
    }

    #[must_use]
    pub(super) fn len(&self) -> usize {
        self.queues.len()
    }

    /// The least-loaded executor beside `shard`.
    #[must_use]
    pub(super) fn beside(&self, shard: ShardId) -> usize {
        let first = usize::from(shard.0) * self.per_shard;
        let now_us = self.us_since_epoch(Instant::now());
        (first..first + self.per_shard)
            .min_by_key(|&e| self.load_of(e, now_us))
            .unwrap_or(0)
            .min(self.len().saturating_sub(1))
    }

    fn us_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64 + 1
    }

    /// Executor `e`'s load as the scheduler sees it: its steps queued or
    /// running, plus `EXECUTOR_LOAD_THRESHOLD + 1` while it runs a step past
    /// its call's deadline.
    fn load_of(&self, e: usize, now_us: u64) -> usize {
        let load = self.load[e].load(Ordering::Relaxed);
        match self.running_deadline_us[e].load(Ordering::Relaxed) {
            0 => load,
            d if d <= now_us => load + EXECUTOR_LOAD_THRESHOLD + 1,
            _ => load,
        }
    }

    /// Every executor at or over `EXECUTOR_LOAD_THRESHOLD`: this node sends
    /// functions of its calls to other nodes, and refuses theirs.
    pub(super) fn saturated(&self) -> bool {
        self.loads().iter().all(|&l| l >= EXECUTOR_LOAD_THRESHOLD)
    }

    pub(super) fn loads(&self) -> Vec<usize> {
        let now_us = self.us_since_epoch(Instant::now());
        (0..self.len()).map(|e| self.load_of(e, now_us)).collect()
    }

    fn send(&self, e: usize, step: Step) -> Result<(), String> {
        self.load[e].fetch_add(1, Ordering::Relaxed);
        self.queues[e].try_send(step).map_err(|err| {
            self.load[e].fetch_sub(1, Ordering::Relaxed);
            if err.is_full() {
                format!("executor {e}'s queue is full")
            } else {
                format!("executor {e} has stopped")
            }
        })
    }
}

/// Where triggers are being handed out from.
pub(super) enum Here<'a> {
    /// A shard's thread, with its inline executor.
    Shard(&'a mut Instances),
    /// Executor thread `index`, with its executor and its local queue.
    Executor {
        index: usize,
        ex: &'a mut Instances,
        local: &'a mut VecDeque<Step>,
    },
}

impl Here<'_> {
    fn executor(&mut self) -> &mut Instances {
        match self {
            Here::Shard(ex) | Here::Executor { ex, .. } => ex,
        }
    }
}

/// Hands out ready triggers: inline functions run here and now (no hop),
/// the others go to their planned executors (one step per replica).
pub(super) fn dispatch(run: &Arc<Run>, triggers: Vec<Trigger>, here: &mut Here<'_>) {
    dispatch_keeping(run, triggers, here, None);
}

/// Runs `trigger` on this node though it was planned on another (which
/// refused it); what it makes ready is handed out as planned.
pub(super) fn dispatch_here(run: &Arc<Run>, trigger: Trigger, here: &mut Here<'_>) {
    let node = trigger.node;
    dispatch_keeping(run, vec![trigger], here, Some(node));
}

/// [`dispatch`], with function `kept` (if any) run on this node.
fn dispatch_keeping(
    run: &Arc<Run>,
    mut triggers: Vec<Trigger>,
    here: &mut Here<'_>,
    kept: Option<usize>,
) {
    while let Some(t) = triggers.pop() {
        let node = run.dag.node(t.node);
        let away = run.away.get(t.node).copied().flatten();
        if let Some(to) = away.filter(|_| kept != Some(t.node)) {
            let away = Away::Trigger {
                node: t.node,
                args: t.args,
                to,
            };
            // The shard running the call takes it (until the run is over).
            let _ = run.away_tx.unbounded_send(away);
            continue;
        }
        if super::runs_inline(&run.pool.registry, &node.function, &node.options, &t.args) {
            let args = super::inline_args(t.args);
            let result = here.executor().call(&node.function, &NoStore, &args);
            let progress = run.lock().complete(t.node, result);
            match progress {
                Progress::Ready(more) => triggers.extend(more),
                Progress::Finished(result) => {
                    return run.finish(result.map_err(NodeError::from));
                }
                Progress::Ignored => {}
            }
            continue;
        }
        for &e in &run.plan[t.node] {
            let step = Step {
                run: run.clone(),
                node: t.node,
                args: t.args.clone(),
            };
            match here {
                Here::Executor { index, local, .. } if *index == e => {
                    run.pool.load[e].fetch_add(1, Ordering::Relaxed);
                    local.push_back(step);
                }
                _ => {
                    if let Err(msg) = run.pool.send(e, step) {
                        return run.finish(Err(NodeError::retriable(
                            Status::Overloaded,
                            format!("{}: {msg}", node.name),
                        )));
                    }
                }
            }
        }
    }
}

/// An executor thread: takes steps (its own local ones first), batches
/// those of functions that allow it, runs them, and advances their runs.
fn executor_loop(
    index: usize,
    mut ex: Instances,
    rx: &cb::Receiver<Step>,
    pool: &Arc<Pool>,
    store: &dyn Store,
) {
    let mut local: VecDeque<Step> = VecDeque::new();
    loop {
        let first = match local.pop_front() {
            Some(s) => s,
            None => match rx.recv() {
                Ok(s) => s,
                Err(_) => return, // the node is gone
            },
        };
        let name = first.run.dag.node(first.node).function.clone();
        let batch_max = first.run.dag.node(first.node).options.batch_max as usize;
        // Steps of one batch share one store view: a step whose session
        // keeps state (DSRR pins, an atomic call's writes) runs alone.
        let plain = |s: &Step| {
            s.run.session.consistency() == Consistency::Lww && !s.run.session.is_atomic()
        };
        let batching = batch_max > 1 && plain(&first);
        let mut batch = vec![first];
        if batching {
            // Other queued triggers of the same batching function join in;
            // the rest keep their order.
            let mut others = VecDeque::new();
            while batch.len() < batch_max {
                let Some(s) = local.pop_front().or_else(|| rx.try_recv().ok()) else {
                    break;
                };
                let node = s.run.dag.node(s.node);
                if node.function == name && node.options.batch_max > 1 && plain(&s) {
                    batch.push(s);
                } else {
                    others.push_back(s);
                }
            }
            others.append(&mut local);
            local = others;
        }
        // Skip steps whose call is over; resolve references of the rest.
        // A step counts in this executor's load until it has run.
        let mut live = Vec::with_capacity(batch.len());
        let mut inputs = Vec::with_capacity(batch.len());
        for step in batch {
            if step.run.over() {
                pool.load[index].fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            match resolve(&name, &step.run.session.over(store), &step.args) {
                Ok(args) => {
                    inputs.push(args);
                    live.push(step);
                }
                Err(e) => {
                    pool.load[index].fetch_sub(1, Ordering::Relaxed);
                    let mut here = Here::Executor {
                        index,
                        ex: &mut ex,
                        local: &mut local,
                    };
                    step.run.complete(step.node, Err(e), &mut here);
                }
            }
        }
        if live.is_empty() {
            continue;
        }
        let deadline = live.iter().map(|s| s.run.deadline).max();
        if let Some(d) = deadline {
            pool.running_deadline_us[index].store(pool.us_since_epoch(d), Ordering::Relaxed);
        }
        let started = Instant::now();
        let results = ex.call_batch(&name, &live[0].run.session.over(store), &inputs);
        pool.running_deadline_us[index].store(0, Ordering::Relaxed);
        if let Some(late) = deadline.and_then(|d| Instant::now().checked_duration_since(d)) {
            log::warn!(
                "executor-{index}: {name:?} ran {} ms, {} ms past its call's deadline; \
                 new work went to other executors meanwhile",
                started.elapsed().as_millis(),
                late.as_millis()
            );
        }
        for (step, result) in live.into_iter().zip(results) {
            pool.load[index].fetch_sub(1, Ordering::Relaxed);
            let mut here = Here::Executor {
                index,
                ex: &mut ex,
                local: &mut local,
            };
            step.run.complete(step.node, result, &mut here);
        }
    }
}
