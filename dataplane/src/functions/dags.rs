//! Validated DAGs. A DAG is stored on the shard owning its key; every shard
//! caches the ones it runs — its own and copies of other shards' — each
//! with the [`Generations`] it was validated under. Any DAG write or
//! function change on the node moves a generation and makes every entry
//! stale ([`super::watch`]), so a cached DAG never outlives a change to it
//! or to a function it names.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use executor::dag::{stored, Dag};
use executor::registry::Registry;
use kvs_core::Value;
use wire::message as w;
use wire::Status;

use super::{Generations, ShardFunctions};
use crate::error::NodeError;
use crate::transport::{ShardOp, ShardReply};

/// A DAG and the generations it was validated under.
type Entry = (Generations, Arc<Dag>);

/// One shard's validated DAGs by key.
#[derive(Debug, Default)]
pub(crate) struct DagCache {
    entries: RefCell<HashMap<Vec<u8>, Entry>>,
}

impl DagCache {
    /// The entry for `key`, if it was validated under `now`.
    fn get(&self, key: &[u8], now: Generations) -> Option<Arc<Dag>> {
        match self.entries.borrow().get(key) {
            Some((g, dag)) if *g == now => Some(dag.clone()),
            _ => None,
        }
    }

    fn insert(&self, key: &[u8], g: Generations, dag: Arc<Dag>) {
        self.entries.borrow_mut().insert(key.to_vec(), (g, dag));
    }

    pub(super) fn remove(&self, key: &[u8]) {
        self.entries.borrow_mut().remove(key);
    }

    pub(super) fn clear(&self) {
        self.entries.borrow_mut().clear();
    }
}

/// Decodes and validates a stored DAG spec.
fn load_dag(registry: &Registry, stored_spec: &[u8]) -> Result<Dag, NodeError> {
    let spec = stored::decode(stored_spec)
        .map_err(|e| NodeError::internal(format!("stored DAG does not decode: {e}")))?;
    Dag::validate(&spec, |f| registry.contains(f)).map_err(|e| {
        NodeError::new(
            Status::InvalidDag,
            format!("DAG {:?} no longer validates: {e}", spec.name),
        )
    })
}

fn unknown(name: &str) -> NodeError {
    NodeError::new(
        Status::UnknownDag,
        format!("no DAG named {name:?} is registered"),
    )
}

fn wrong_type(name: &str) -> NodeError {
    NodeError::internal(format!("DAG {name:?} is stored with the wrong type"))
}

impl ShardFunctions {
    /// DAG `name` if it can be had without waiting: this shard owns it (read
    /// now, cached), or holds a current copy. `Ok(None)`: another shard
    /// owns it and it must be fetched ([`Self::fetch_dag`]).
    pub(super) fn dag_now(&self, name: &str) -> Result<Option<Arc<Dag>>, NodeError> {
        let key = stored::key(name);
        let now = self.platform.generations();
        if let Some(dag) = self.dags.get(&key, now) {
            return Ok(Some(dag));
        }
        if self.shard.owner(&key) != self.shard.id() {
            return Ok(None);
        }
        let dag = match self.shard.peek(&key) {
            Some(Value::Lww(l)) => Arc::new(load_dag(&self.platform.registry, l.value())?),
            Some(_) => return Err(wrong_type(name)),
            None => return Err(unknown(name)),
        };
        self.dags.insert(&key, now, dag.clone());
        Ok(Some(dag))
    }

    /// The validated DAG `name`, read from its owner when this shard has
    /// no current copy.
    pub(super) async fn fetch_dag(&self, name: &str) -> Result<Arc<Dag>, NodeError> {
        if let Some(dag) = self.dag_now(name)? {
            return Ok(dag);
        }
        // Read before asking: a write racing with the read makes the copy stale.
        let generations = self.platform.generations();
        let key = stored::key(name);
        let owner = self.shard.owner(&key);
        let reply = self
            .shard
            .forward(owner, ShardOp::Get(vec![key.clone()]))
            .await;
        let dag = match reply.await {
            ShardReply::Values(mut v) => match v.pop().flatten() {
                Some(w::Value::Lww(l)) => Arc::new(load_dag(&self.platform.registry, &l.bytes)?),
                Some(_) => return Err(wrong_type(name)),
                None => return Err(unknown(name)),
            },
            ShardReply::Error(e) => return Err(e),
            other => return Err(NodeError::internal(format!("unexpected reply {other:?}"))),
        };
        self.dags.insert(&key, generations, dag.clone());
        Ok(dag)
    }
}
