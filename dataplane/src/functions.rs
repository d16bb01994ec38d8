//! Function executors beside the shards, and the store they see.
//!
//! Functions declared `Placement::Inline` (pure, microsecond built-ins) run
//! on the shard's own thread inside the request: no hand-off at all. All
//! others run on the shard's executor thread, pinned to the shard's core
//! (`core_affinity`) and fed over a bounded crossbeam channel: a `Call`
//! becomes an [`FnJob`] for that executor (the nearest one); the reply comes
//! back on a oneshot whose waker wakes the shard's glommio task from the
//! executor thread (glommio accepts foreign wakes).
//!
//! Functions reach the store through [`NodeStore`]: each operation goes to
//! the key's owning shard over a bounded futures channel (awaited by a task
//! on that shard), and the executor thread waits for the answer on a
//! crossbeam channel, with a deadline. Puts are answered once durable under
//! the node's `--fsync` policy, like client puts.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use executor::function::FnError;
use executor::registry::{Executor, Registry};
use executor::store::{Store, StoreError};
use futures_channel::{mpsc, oneshot};
use kvs_core::partition::Applied;
use kvs_core::ring::HashRing;
use kvs_core::{ShardId, Value};

use crate::limits::{CALL_TIMEOUT_MS_DEFAULT, CALL_TIMEOUT_MS_MAX, STORE_TIMEOUT_MS};
use crate::shard::{bump, Shard, ShardFunctions};
use executor::dag::{stored, Dag};
use executor::function::Placement;
use executor::store::NoStore;
use std::collections::HashMap;
use wire::Status;

/// Executor ids of the shards' inline executors (`| shard`); executor
/// threads use the plain shard number.
pub const INLINE_EXECUTOR_ID_BASE: u64 = 1 << 32;

/// One function call for an executor.
#[derive(Debug)]
pub struct FnJob {
    pub function: String,
    pub args: Vec<Vec<u8>>,
    pub reply: oneshot::Sender<Result<Vec<u8>, FnError>>,
}

/// A store operation from an executor thread.
#[derive(Debug)]
pub enum StoreOp {
    Get(Vec<u8>),
    Put(Vec<u8>, Value),
    Delete(Vec<u8>),
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
}

/// Serves executors' store requests on the owning shard.
pub async fn serve_store(shard: Rc<Shard>, mut rx: mpsc::Receiver<StoreRequest>) {
    use futures_lite::StreamExt;
    while let Some(StoreRequest { op, reply }) = rx.next().await {
        let (key, value) = match op {
            StoreOp::Get(key) => {
                bump(&shard.stats.gets);
                let v = shard.partition.borrow().get(&key).cloned();
                let _ = reply.send(StoreReply::Value(v));
                continue;
            }
            StoreOp::Put(key, value) => (key, Some(value)),
            StoreOp::Delete(key) => (key, None),
        };
        match shard.write(key, value) {
            Ok((applied, lsn)) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let answer = match shard.storage.wait_durable(lsn).await {
                        Ok(()) => {
                            StoreReply::Done(matches!(applied, Applied::Deleted { removed: true }))
                        }
                        Err(e) => StoreReply::Failed(e),
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

/// Starts an executor thread pinned to `cpu`; returns its job queue.
pub fn spawn_executor(
    id: u64,
    cpu: usize,
    registry: Arc<Registry>,
    store: Arc<NodeStore>,
    depth: usize,
) -> std::io::Result<cb::Sender<FnJob>> {
    let (tx, rx) = cb::bounded::<FnJob>(depth);
    std::thread::Builder::new()
        .name(format!("executor-{id}"))
        .spawn(move || {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                log::warn!("executor-{id}: could not pin to cpu {cpu}; running unpinned");
            }
            let mut ex = Executor::new(id, registry);
            for job in rx {
                let result = ex.call(&job.function, &*store, &job.args);
                let _ = job.reply.send(result);
            }
        })?;
    Ok(tx)
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

/// Runs a function where its placement says, by `deadline`.
pub async fn invoke(
    shard: &Shard,
    functions: &ShardFunctions,
    name: &str,
    args: Vec<Vec<u8>>,
    deadline: Instant,
) -> Result<Vec<u8>, (Status, String)> {
    match functions.registry.placement(name) {
        None => Err((
            Status::UnknownFunction,
            format!("no function named {name:?} is registered"),
        )),
        Some(Placement::Inline) => invoke_inline(shard, name, &args),
        Some(Placement::Executor) => {
            let (tx, rx) = oneshot::channel();
            let job = FnJob {
                function: name.to_owned(),
                args,
                reply: tx,
            };
            if let Err(e) = functions.executor.try_send(job) {
                let status = if e.is_full() {
                    Status::Overloaded
                } else {
                    Status::Internal
                };
                return Err((
                    status,
                    format!("the executor did not take the call to {name}: {e}"),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let expired = async {
                glommio::timer::sleep(left).await;
                None
            };
            match futures_lite::future::or(async { Some(rx.await) }, expired).await {
                Some(Ok(Ok(out))) => Ok(out),
                Some(Ok(Err(e))) => Err((Status::FunctionFailed, e.to_string())),
                Some(Err(_)) => Err((
                    Status::Internal,
                    format!("the executor dropped the call to {name}"),
                )),
                None => Err((
                    Status::Timeout,
                    format!("{name} did not finish within the call's deadline"),
                )),
            }
        }
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

/// Runs a DAG: every function once, in topological order, inline ones on
/// this shard and the others on its executor thread; a function's upstream
/// results are appended to its arguments in DAG list order.
pub async fn run_dag(
    shard: &Shard,
    functions: &ShardFunctions,
    dag: &Dag,
    args: &HashMap<String, Vec<Vec<u8>>>,
    deadline: Instant,
) -> Result<Vec<u8>, (Status, String)> {
    if let Some(unknown) = args
        .keys()
        .find(|f| !dag.sources().iter().any(|&s| dag.node(s).name == **f))
    {
        return Err((
            Status::InvalidArgument,
            format!(
                "{unknown:?} is not a source function of DAG {:?}",
                dag.name()
            ),
        ));
    }
    let mut results: Vec<Option<Vec<u8>>> = vec![None; dag.nodes().len()];
    for &i in dag.topological_order() {
        let node = dag.node(i);
        let mut call_args = args.get(&node.name).cloned().unwrap_or_default();
        call_args.extend(
            node.upstream
                .iter()
                .map(|&u| results[u].clone().unwrap_or_default()),
        );
        results[i] = Some(invoke(shard, functions, &node.name, call_args, deadline).await?);
    }
    Ok(results[dag.sink()].take().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dag_key_prefix_is_the_protocols() {
        assert_eq!(executor::dag::stored::KEY_PREFIX, wire::DAG_KEY_PREFIX);
    }
}
