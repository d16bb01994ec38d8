//! Function executors beside the shards, the DAG engine that drives calls
//! through them, and the store they see.
//!
//! **Executors.** Each is a thread pinned to its shard's core
//! (`core_affinity`), fed over a bounded crossbeam channel ([`Pool`]). A job
//! is one [`Step`]: a function of a DAG call, with its arguments.
//!
//! **A call** ([`run_once`]): the receiving shard plans an executor for
//! every function ([`executor::schedule`]), starts the run
//! ([`executor::run::DagRun`], shared behind a mutex) and hands out the
//! source triggers. Whoever completes a function advances the run and hands
//! the next triggers on directly — executor to executor; the shard only
//! waits for the sink's result on a oneshot, with the call's deadline.
//! Inline functions (pure microsecond built-ins) run wherever their trigger
//! is: on the shard's own thread for all-inline DAGs (no hand-off at all),
//! or on the executor that produced their input.
//!
//! **The store.** Functions reach it through [`NodeStore`]: each operation
//! goes to the key's owning shard over a bounded futures channel (served by
//! a task on that shard), and the executor thread waits for the answer on a
//! crossbeam channel, with a deadline. Puts are answered once durable under
//! the node's `--fsync` policy, like client puts.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use executor::dag::{stored, Dag};
use executor::function::{FnError, Placement};
use executor::message::Postbox;
use executor::registry::{resolve, Executor, Registry};
use executor::run::{Arg, DagRun, Progress, Trigger};
use executor::schedule::{self, Plan};
use executor::store::{NoStore, Store, StoreError};
use futures_channel::{mpsc, oneshot};
use kvs_core::lattice::{Lww, Timestamp};
use kvs_core::partition::Applied;
use kvs_core::ring::HashRing;
use kvs_core::{ShardId, Value};
use wire::message as w;
use wire::Status;

use crate::forward::{ShardOp, ShardReply};
use crate::limits::{
    CALL_TIMEOUT_MS_DEFAULT, CALL_TIMEOUT_MS_MAX, EXECUTOR_LOAD_THRESHOLD, STORE_TIMEOUT_MS,
};
use crate::shard::{bump, Shard, ShardFunctions};

/// Executor ids of the shards' inline executors (`| shard`); executor
/// threads use their index in the pool.
pub const INLINE_EXECUTOR_ID_BASE: u64 = 1 << 32;

/// Why a call failed: a status, a sentence, and whether running it again
/// may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub status: Status,
    pub message: String,
    pub retriable: bool,
}

impl CallError {
    pub fn new(status: Status, message: impl Into<String>) -> CallError {
        CallError {
            status,
            message: message.into(),
            retriable: false,
        }
    }
    fn retriable(status: Status, message: impl Into<String>) -> CallError {
        CallError {
            retriable: true,
            ..CallError::new(status, message)
        }
    }
}

impl From<FnError> for CallError {
    fn from(e: FnError) -> CallError {
        CallError {
            status: match e {
                FnError::LimitExceeded { .. } => Status::LimitExceeded,
                _ => Status::FunctionFailed,
            },
            retriable: e.is_retriable(),
            message: e.to_string(),
        }
    }
}

impl From<(Status, String)> for CallError {
    fn from((status, message): (Status, String)) -> CallError {
        CallError::new(status, message)
    }
}

/// A call's result or why it failed.
pub type CallResult = Result<Vec<u8>, CallError>;

/// One function of a DAG call, for an executor.
#[derive(Debug)]
pub struct Step {
    run: Arc<Run>,
    node: usize,
    args: Vec<Arg>,
}

/// A DAG call in flight, shared by the threads that advance it.
#[derive(Debug)]
pub struct Run {
    state: Mutex<DagRun>,
    dag: Arc<Dag>,
    plan: Plan,
    deadline: Instant,
    reply: Mutex<Option<oneshot::Sender<CallResult>>>,
    pool: Arc<Pool>,
}

impl Run {
    fn lock(&self) -> std::sync::MutexGuard<'_, DagRun> {
        // DagRun's methods do not panic midway; a poisoned lock still
        // holds a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn finish(&self, result: Result<Vec<u8>, CallError>) {
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
    fn complete(
        self: &Arc<Self>,
        node: usize,
        result: Result<Vec<u8>, FnError>,
        here: &mut Here<'_>,
    ) {
        let progress = self.lock().complete(node, result);
        match progress {
            Progress::Ready(triggers) => dispatch(self, triggers, here),
            Progress::Finished(result) => self.finish(result.map_err(CallError::from)),
            Progress::Ignored => {}
        }
    }

    fn over(&self) -> bool {
        Instant::now() >= self.deadline || self.lock().is_finished()
    }
}

/// The node's executor threads.
#[derive(Debug)]
pub struct Pool {
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
    pub registry: Arc<Registry>,
}

impl Pool {
    /// Starts `per_shard` executors beside each of `cpus.len()` shards,
    /// each pinned to its shard's cpu (unless `pin` is false: then the OS
    /// places them), with a queue of `depth` steps.
    pub fn start(
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
            let ex = Executor::with_post(e as u64, registry.clone(), post.clone());
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
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The least-loaded executor beside `shard`.
    #[must_use]
    pub fn beside(&self, shard: ShardId) -> usize {
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

    fn loads(&self) -> Vec<usize> {
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
enum Here<'a> {
    /// A shard's thread, with its inline executor.
    Shard(&'a mut Executor),
    /// Executor thread `index`, with its executor and its local queue.
    Executor {
        index: usize,
        ex: &'a mut Executor,
        local: &'a mut VecDeque<Step>,
    },
}

impl Here<'_> {
    fn executor(&mut self) -> &mut Executor {
        match self {
            Here::Shard(ex) | Here::Executor { ex, .. } => ex,
        }
    }
}

/// Hands out ready triggers: inline functions run here and now (no hop),
/// the others go to their planned executors (one step per replica).
fn dispatch(run: &Arc<Run>, mut triggers: Vec<Trigger>, here: &mut Here<'_>) {
    while let Some(t) = triggers.pop() {
        let node = run.dag.node(t.node);
        let inline = run.pool.registry.placement(&node.function) == Some(Placement::Inline)
            && node.options.replicas == 1
            && node.options.batch_max == 1
            && t.args.iter().all(|a| matches!(a, Arg::Value(_)));
        if inline {
            let args: Vec<Vec<u8>> = t
                .args
                .into_iter()
                .map(|a| match a {
                    Arg::Value(v) | Arg::Ref(v) => v,
                })
                .collect();
            let result = here.executor().call(&node.function, &NoStore, &args);
            let progress = run.lock().complete(t.node, result);
            match progress {
                Progress::Ready(more) => triggers.extend(more),
                Progress::Finished(result) => {
                    return run.finish(result.map_err(CallError::from));
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
                        return run.finish(Err(CallError::retriable(
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
    mut ex: Executor,
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
        let mut batch = vec![first];
        if batch_max > 1 {
            // Other queued triggers of the same batching function join in;
            // the rest keep their order.
            let mut others = VecDeque::new();
            while batch.len() < batch_max {
                let Some(s) = local.pop_front().or_else(|| rx.try_recv().ok()) else {
                    break;
                };
                let node = s.run.dag.node(s.node);
                if node.function == name && node.options.batch_max > 1 {
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
            match resolve(&name, store, &step.args) {
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
        let results = ex.call_batch(&name, store, &inputs);
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

/// The deadline of a call asking for `timeout_ms` (0 = the default).
pub fn deadline_after(timeout_ms: u32) -> Instant {
    let ms = match u64::from(timeout_ms) {
        0 => CALL_TIMEOUT_MS_DEFAULT,
        t => t.min(CALL_TIMEOUT_MS_MAX),
    };
    Instant::now() + Duration::from_millis(ms)
}

/// Runs an inline function on this shard's thread, now.
pub fn invoke_inline(
    shard: &Shard,
    name: &str,
    args: &[Vec<u8>],
) -> Result<Vec<u8>, (Status, String)> {
    let result = shard
        .inline
        .borrow_mut()
        .as_mut()
        .map(|ex| ex.call(name, &NoStore, args));
    match result {
        Some(Ok(out)) => Ok(out),
        Some(Err(e)) => Err((Status::FunctionFailed, e.to_string())),
        None => Err((Status::Internal, "this shard has no inline executor".into())),
    }
}

/// Decodes and validates a stored DAG spec.
pub fn load_dag(functions: &ShardFunctions, stored_spec: &[u8]) -> Result<Dag, (Status, String)> {
    let spec = stored::decode(stored_spec)
        .map_err(|e| (Status::Internal, format!("stored DAG does not decode: {e}")))?;
    Dag::validate(&spec, |f| functions.registry.contains(f)).map_err(|e| {
        (
            Status::InvalidDag,
            format!("DAG {:?} no longer validates: {e}", spec.name),
        )
    })
}

/// The validated DAG `name`: from this shard's cache (owned DAGs and copies
/// of other shards'), else read from its owner and cached.
pub async fn fetch_dag(
    shard: &Shard,
    functions: &ShardFunctions,
    name: &str,
) -> Result<Arc<Dag>, CallError> {
    let key = stored::key(name);
    let owner = shard.owner(&key);
    let unknown = || {
        CallError::new(
            Status::UnknownDag,
            format!("no DAG named {name:?} is registered"),
        )
    };
    if owner == shard.id {
        return shard.cached_dag(&key, functions)?.ok_or_else(unknown);
    }
    if let Some(dag) = shard.cached_copy(&key, functions) {
        return Ok(dag);
    }
    // Read before asking: a write racing with the read makes the copy stale.
    let generations = functions.generations();
    let peer = shard
        .peer(owner)
        .ok_or_else(|| CallError::new(Status::Internal, format!("no route to {owner}")))?;
    bump(&shard.stats.forwarded_out);
    let dag = match peer.send(ShardOp::Get(vec![key.clone()])).await.await {
        ShardReply::Values(mut v) => match v.pop().flatten() {
            Some(w::Value::Lww(l)) => Arc::new(load_dag(functions, &l.bytes)?),
            Some(_) => {
                return Err(CallError::new(
                    Status::Internal,
                    format!("DAG {name:?} is stored with the wrong type"),
                ))
            }
            None => return Err(unknown()),
        },
        ShardReply::Error(status, msg) => return Err(CallError::new(status, msg)),
        other => {
            return Err(CallError::new(
                Status::Internal,
                format!("unexpected reply {other:?}"),
            ))
        }
    };
    shard.cache_copy(&key, generations, dag.clone());
    Ok(dag)
}

/// Runs one DAG call once: plans it, starts it, waits for its result until
/// `deadline`. `spread` plans for the least-loaded executors (re-runs).
pub async fn run_once(
    shard: &Shard,
    functions: &ShardFunctions,
    dag: Arc<Dag>,
    args: HashMap<String, Vec<Arg>>,
    deadline: Instant,
    spread: bool,
) -> Result<Vec<u8>, CallError> {
    let pool = &functions.pool;
    // Data locality: the executor beside the shard owning most of each
    // source's referenced keys.
    let home: Vec<Option<usize>> = dag
        .nodes()
        .iter()
        .map(|node| {
            let mut owners: Vec<(ShardId, usize)> = Vec::new();
            for a in args.get(&node.name).into_iter().flatten() {
                if let Arg::Ref(key) = a {
                    let o = shard.owner(key);
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
    let plan = schedule::plan(&dag, &home, &pool.loads(), pool.beside(shard.id), threshold);
    let (state, triggers) =
        DagRun::start(dag.clone(), args).map_err(|m| CallError::new(Status::InvalidArgument, m))?;
    let (tx, rx) = oneshot::channel();
    let run = Arc::new(Run {
        state: Mutex::new(state),
        dag,
        plan,
        deadline,
        reply: Mutex::new(Some(tx)),
        pool: pool.clone(),
    });
    {
        let mut inline = shard.inline.borrow_mut();
        let Some(ex) = inline.as_mut() else {
            return Err(CallError::new(
                Status::Internal,
                "this shard has no inline executor",
            ));
        };
        dispatch(&run, triggers, &mut Here::Shard(ex));
    }
    let mut rx = rx;
    if let Ok(Some(result)) = rx.try_recv() {
        // Finished on this thread (all-inline): no timer armed at all.
        return result;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let expired = async {
        glommio::timer::sleep(left).await;
        None
    };
    match futures_lite::future::or(async { Some(rx.await) }, expired).await {
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(CallError::retriable(
            Status::Internal,
            format!("DAG {:?}: the run was dropped", run.dag.name()),
        )),
        None => {
            run.lock().abandon();
            Err(CallError::retriable(
                Status::Timeout,
                format!(
                    "DAG {:?} did not finish within its deadline",
                    run.dag.name()
                ),
            ))
        }
    }
}

/// What one `CallDag` asks for besides its DAG and arguments.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    pub timeout_ms: u32,
    pub retries: u32,
    /// Continuation DAG names.
    pub then: Vec<String>,
}

/// Runs a call to the end: the DAG (re-run on retriable failures up to
/// `retries` times, each run with its own deadline), then each
/// continuation with the previous result.
pub async fn run_call(
    shard: &Shard,
    functions: &ShardFunctions,
    dag: Arc<Dag>,
    args: HashMap<String, Vec<Arg>>,
    options: &CallOptions,
) -> Result<Vec<u8>, CallError> {
    let mut result = run_retrying(shard, functions, dag, args, options).await?;
    for name in &options.then {
        let next = fetch_dag(shard, functions, name).await?;
        let args = next
            .sources()
            .iter()
            .map(|&s| (next.node(s).name.clone(), vec![Arg::Value(result.clone())]))
            .collect();
        result = run_retrying(shard, functions, next, args, options).await?;
    }
    Ok(result)
}

async fn run_retrying(
    shard: &Shard,
    functions: &ShardFunctions,
    dag: Arc<Dag>,
    args: HashMap<String, Vec<Arg>>,
    options: &CallOptions,
) -> Result<Vec<u8>, CallError> {
    let mut attempt = 0;
    let mut args = Some(args);
    loop {
        let deadline = deadline_after(options.timeout_ms);
        let spread = attempt > 0;
        // Keep a copy only while a re-run may still need it.
        let this_run = if attempt < options.retries {
            args.clone()
        } else {
            args.take()
        }
        .unwrap_or_default();
        match run_once(shard, functions, dag.clone(), this_run, deadline, spread).await {
            Err(e) if e.retriable && attempt < options.retries => {
                log::info!(
                    "{}: DAG {:?} run {} failed, running again: {}",
                    shard.id,
                    dag.name(),
                    attempt + 1,
                    e.message
                );
                attempt += 1;
            }
            Err(mut e) if attempt > 0 => {
                e.message = format!("after {} runs: {}", attempt + 1, e.message);
                return Err(e);
            }
            other => return other,
        }
    }
}

/// Stores `value` under `key` (any shard's), once durable.
pub async fn store_put(shard: &Shard, key: Vec<u8>, bytes: Vec<u8>) -> Result<(), CallError> {
    let value = Value::Lww(Lww::new(Timestamp::default(), bytes));
    let owner = shard.owner(&key);
    if owner == shard.id {
        let (_, lsn) = shard.write(key, Some(value))?;
        return shard
            .storage
            .wait_durable(lsn)
            .await
            .map_err(|e| CallError::new(Status::StorageFailure, e));
    }
    let peer = shard
        .peer(owner)
        .ok_or_else(|| CallError::new(Status::Internal, format!("no route to {owner}")))?;
    bump(&shard.stats.forwarded_out);
    match peer.send(ShardOp::Put(key, value)).await.await {
        ShardReply::Stored => Ok(()),
        ShardReply::Error(status, msg) => Err(CallError::new(status, msg)),
        other => Err(CallError::new(
            Status::Internal,
            format!("unexpected reply {other:?}"),
        )),
    }
}

/// Stores the outcome of a call made with an output key: the result under
/// the key, or the error under `squall:error:<key>`.
pub async fn store_outcome(
    shard: &Shard,
    output_key: Vec<u8>,
    outcome: Result<Vec<u8>, CallError>,
) {
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
    if let Err(e) = store_put(shard, key, bytes).await {
        log::warn!(
            "{}: the outcome of a call for output key {:?} was not stored: {}",
            shard.id,
            String::from_utf8_lossy(&output_key),
            e.message
        );
    }
}

/// A store operation from an executor thread.
#[derive(Debug)]
pub enum StoreOp {
    Get(Vec<u8>),
    Put(Vec<u8>, Value),
    Delete(Vec<u8>),
    /// Get then delete, with nothing in between (inbox draining).
    Take(Vec<u8>),
}

#[derive(Debug)]
pub enum StoreReply {
    Value(Option<Value>),
    Done(bool),
    Failed(String),
}

#[derive(Debug)]
pub struct StoreRequest {
    op: StoreOp,
    reply: cb::Sender<StoreReply>,
}

/// The node's store, as executor threads see it.
#[derive(Debug)]
pub struct NodeStore {
    shards: Vec<mpsc::Sender<StoreRequest>>,
    ring: HashRing<ShardId>,
}

impl NodeStore {
    /// A store over `shards` request queues (index = shard id).
    pub fn new(shards: Vec<mpsc::Sender<StoreRequest>>, ring: HashRing<ShardId>) -> NodeStore {
        NodeStore { shards, ring }
    }

    fn request(&self, key: &[u8], op: StoreOp) -> Result<StoreReply, StoreError> {
        let owner = usize::from(self.ring.owner(key).unwrap_or_default().0);
        let mut sender = self
            .shards
            .get(owner)
            .cloned()
            .ok_or_else(|| StoreError::Unavailable("no shard".into()))?;
        let (tx, rx) = cb::bounded(1);
        let deadline = Instant::now() + Duration::from_millis(STORE_TIMEOUT_MS);
        let mut req = StoreRequest { op, reply: tx };
        loop {
            match sender.try_send(req) {
                Ok(()) => break,
                Err(e) if e.is_full() && Instant::now() < deadline => {
                    req = e.into_inner();
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) if e.is_full() => {
                    return Err(StoreError::Unavailable(
                        "the shard's queue stayed full".into(),
                    ))
                }
                Err(_) => return Err(StoreError::Unavailable("the shard has stopped".into())),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .map_err(|_| StoreError::Unavailable(format!("no answer within {STORE_TIMEOUT_MS} ms")))
    }
}

impl Store for NodeStore {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        match self.request(key, StoreOp::Get(key.to_vec()))? {
            StoreReply::Value(v) => Ok(v),
            StoreReply::Failed(e) => Err(StoreError::Refused(e)),
            StoreReply::Done(_) => Err(StoreError::Unavailable("unexpected reply".into())),
        }
    }
    fn put(&self, key: &[u8], value: Value) -> Result<(), StoreError> {
        match self.request(key, StoreOp::Put(key.to_vec(), value))? {
            StoreReply::Done(_) => Ok(()),
            StoreReply::Failed(e) => Err(StoreError::Refused(e)),
            StoreReply::Value(_) => Err(StoreError::Unavailable("unexpected reply".into())),
        }
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        match self.request(key, StoreOp::Delete(key.to_vec()))? {
            StoreReply::Done(removed) => Ok(removed),
            StoreReply::Failed(e) => Err(StoreError::Refused(e)),
            StoreReply::Value(_) => Err(StoreError::Unavailable("unexpected reply".into())),
        }
    }
    fn take(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        match self.request(key, StoreOp::Take(key.to_vec()))? {
            StoreReply::Value(v) => Ok(v),
            StoreReply::Failed(e) => Err(StoreError::Refused(e)),
            StoreReply::Done(_) => Err(StoreError::Unavailable("unexpected reply".into())),
        }
    }
}

/// Serves executors' store requests on the owning shard.
pub async fn serve_store(shard: Rc<Shard>, mut rx: mpsc::Receiver<StoreRequest>) {
    use futures_lite::StreamExt;
    while let Some(StoreRequest { op, reply }) = rx.next().await {
        let mut taken = None;
        let (key, value) = match op {
            StoreOp::Get(key) => {
                bump(&shard.stats.gets);
                let v = shard.partition.borrow().get(&key).cloned();
                let _ = reply.send(StoreReply::Value(v));
                continue;
            }
            StoreOp::Take(key) => {
                bump(&shard.stats.gets);
                let v = shard.partition.borrow().get(&key).cloned();
                if v.is_none() {
                    let _ = reply.send(StoreReply::Value(None));
                    continue;
                }
                // Same thread, no await since the read: nothing merged in.
                taken = Some(v);
                (key, None)
            }
            StoreOp::Put(key, value) => (key, Some(value)),
            StoreOp::Delete(key) => (key, None),
        };
        if crate::auth::is_code_key(&key) {
            // Registration goes through the node's checks (and, with
            // authentication, its admin role), never a function's store.
            let msg = format!(
                "functions may not write {:?}: keys under squall:fn:, squall:dag:, squall:model \
                 and squall:labels: change only through registration requests",
                String::from_utf8_lossy(&key)
            );
            let _ = reply.send(StoreReply::Failed(msg));
            continue;
        }
        match shard.write(key, value) {
            Ok((applied, lsn)) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let answer = match (shard.storage.wait_durable(lsn).await, taken) {
                        (Ok(()), Some(v)) => StoreReply::Value(v),
                        (Ok(()), None) => {
                            StoreReply::Done(matches!(applied, Applied::Deleted { removed: true }))
                        }
                        (Err(e), _) => StoreReply::Failed(e),
                    };
                    let _ = reply.send(answer);
                })
                .detach();
            }
            Err((_, msg)) => {
                let _ = reply.send(StoreReply::Failed(msg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_prefixes_are_the_protocols() {
        assert_eq!(executor::dag::stored::KEY_PREFIX, wire::DAG_KEY_PREFIX);
        assert_eq!(
            executor::registry::stored::KEY_PREFIX,
            wire::FUNCTION_KEY_PREFIX
        );
        assert_eq!(executor::message::INBOX_KEY_PREFIX, wire::INBOX_KEY_PREFIX);
    }
}
