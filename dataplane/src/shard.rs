//! One shard: a partition, its storage, its clock and counters, owned by one
//! glommio executor on one core. Nothing here is shared across threads; the
//! `RefCell`s are never borrowed across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use executor::dag::Dag;
use executor::registry::stored as fn_stored;
use kvs_core::clock::HybridClock;
use kvs_core::lattice::{Lww, Timestamp};
use kvs_core::partition::{Applied, Mutation, Partition, PartitionError};
use kvs_core::ring::HashRing;
use kvs_core::{Lsn, ShardId, Value};
use wire::message as w;
use wire::Status;

use crate::convert::value_to_wire;
use crate::event::Event;
use crate::forward::{Peer, ShardOp, ShardReply};
use crate::storage::Storage;

/// The node's executors and the function registry they run from.
#[derive(Debug, Clone)]
pub struct ShardFunctions {
    pub pool: Arc<crate::functions::Pool>,
    pub registry: Arc<executor::registry::Registry>,
    /// Bumped by every write of a DAG key on any shard of the node.
    pub dag_generation: Arc<AtomicU64>,
}

/// (function registry, DAG) generations a cached DAG was validated under.
pub type Generations = (u64, u64);

type CachedDag = (Generations, Arc<Dag>);

impl ShardFunctions {
    /// The generations now.
    #[must_use]
    pub fn generations(&self) -> Generations {
        (
            self.registry.generation(),
            self.dag_generation.load(Ordering::Acquire),
        )
    }
}

/// Monotonic counters reported by `Stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub gets: Cell<u64>,
    pub puts: Cell<u64>,
    pub deletes: Cell<u64>,
    pub errors: Cell<u64>,
    pub forwarded_out: Cell<u64>,
    pub forwarded_in: Cell<u64>,
    pub connections: Cell<u64>,
    pub connections_refused: Cell<u64>,
}

pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// A shard's state.
#[derive(Debug)]
pub struct Shard {
    pub id: ShardId,
    pub partition: Rc<RefCell<Partition>>,
    pub storage: Rc<Storage>,
    pub ring: Rc<HashRing<ShardId>>,
    pub peers: RefCell<Vec<Option<Rc<Peer>>>>,
    /// This shard's executor and the function registry (set at start-up).
    pub functions: RefCell<Option<ShardFunctions>>,
    /// Instances of inline functions, run on this shard's own thread.
    pub inline: RefCell<Option<executor::registry::Executor>>,
    /// Validated DAGs whose registry key this shard owns, by key; an entry
    /// is dropped whenever its key is written (`write`).
    /// Validated DAGs by key — owned ones and copies of other shards' —
    /// each with the [`Generations`] it was read under: any DAG write or
    /// function change on the node makes every entry stale.
    dag_cache: RefCell<HashMap<Vec<u8>, CachedDag>>,
    /// Calls with an output key running in the background now.
    pub background_calls: Cell<usize>,
    /// The topology this shard reports, and its encoded `Response::Hello`
    /// body.
    pub topology: w::Topology,
    pub hello_body: Vec<u8>,
    pub stats: Counters,
    pub shutdown: Event,
    /// Connections open now.
    pub open_connections: Cell<usize>,
    /// How this node's connections behave (deadlines, budgets).
    pub conn: Arc<crate::conn::ConnSettings>,
    clock: RefCell<HybridClock>,
    /// LWW writer id of timestamps this shard assigns.
    writer: u64,
    started: Instant,
}

/// Writer ids the node assigns are `NODE_WRITER_BASE | shard`; clients
/// choosing their own writer ids should stay below it.
pub const NODE_WRITER_BASE: u64 = 1 << 63;

pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Shard {
    pub fn new(
        id: ShardId,
        partition: Partition,
        storage: Rc<Storage>,
        ring: Rc<HashRing<ShardId>>,
        (topology, hello_body): (w::Topology, Vec<u8>),
        clock_floor_us: u64,
        conn: Arc<crate::conn::ConnSettings>,
    ) -> Shard {
        let mut clock = HybridClock::default();
        clock.observe(clock_floor_us);
        Shard {
            id,
            partition: Rc::new(RefCell::new(partition)),
            storage,
            ring,
            peers: RefCell::new(Vec::new()),
            functions: RefCell::new(None),
            inline: RefCell::new(None),
            dag_cache: RefCell::new(HashMap::new()),
            background_calls: Cell::new(0),
            topology,
            hello_body,
            stats: Counters::default(),
            shutdown: Event::default(),
            open_connections: Cell::new(0),
            conn,
            clock: RefCell::new(clock),
            writer: NODE_WRITER_BASE | u64::from(id.0),
            started: Instant::now(),
        }
    }

    /// The shard owning `key`.
    pub fn owner(&self, key: &[u8]) -> ShardId {
        self.ring.owner(key).unwrap_or(self.id)
    }

    /// The peer towards `shard`.
    pub fn peer(&self, shard: ShardId) -> Option<Rc<Peer>> {
        self.peers
            .borrow()
            .get(usize::from(shard.0))
            .cloned()
            .flatten()
    }

    fn stamp(&self) -> Timestamp {
        Timestamp {
            clock: self.clock.borrow_mut().tick(wall_us()),
            writer: self.writer,
        }
    }

    /// Reads a local key into its wire form.
    pub fn get_local(&self, key: &[u8]) -> Option<w::Value> {
        bump(&self.stats.gets);
        self.partition.borrow().get(key).map(value_to_wire)
    }

    /// Applies a put or delete to this shard's partition and queues its WAL
    /// record. Returns the LSN to wait for before acknowledging.
    pub fn write(
        &self,
        key: Vec<u8>,
        value: Option<Value>,
    ) -> Result<(Applied, Lsn), (Status, String)> {
        self.storage
            .check_writable()
            .map_err(|e| (Status::StorageFailure, e))?;
        if key.starts_with(wire::DAG_KEY_PREFIX.as_bytes()) {
            // A DAG is being (re)registered or deleted: every shard's cached
            // copies go stale.
            self.dag_cache.borrow_mut().remove(&key);
            if let Some(f) = &*self.functions.borrow() {
                f.dag_generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        let registration = fn_stored::name_of(&key).map(|n| (n.to_owned(), key.clone()));
        let m = match value {
            Some(Value::Lww(lww)) if lww.timestamp().clock == 0 => {
                let (_, bytes) = lww.into_parts();
                Mutation::Put {
                    key,
                    value: Value::Lww(Lww::new(self.stamp(), bytes)),
                }
            }
            Some(value) => {
                // A writer's own clock may lead ours only so far: one bad
                // clock must not drag the shard's into the future.
                self.partition
                    .borrow()
                    .check_clocks(&key, &value, wall_us())
                    .map_err(partition_status)?;
                if let Value::Lww(lww) = &value {
                    self.clock.borrow_mut().observe(lww.timestamp().clock);
                }
                Mutation::Put { key, value }
            }
            None => Mutation::Delete {
                key,
                ts: self.stamp(),
            },
        };
        let mut partition = self.partition.borrow_mut();
        partition.check(&m).map_err(partition_status)?;
        let lsn = self.storage.append(&m);
        let is_put = matches!(m, Mutation::Put { .. });
        // `check` passed, so `apply` accepts it: the logged record and the
        // in-memory state never diverge.
        let applied = partition
            .apply(m)
            .map_err(|e| (Status::Internal, format!("checked mutation refused: {e}")))?;
        if let Some((name, name_key)) = registration {
            // A function (re)registered or deleted: every shard's registry
            // sees it now.
            self.apply_registration(name, partition.get(&name_key));
        }
        bump(if is_put {
            &self.stats.puts
        } else {
            &self.stats.deletes
        });
        Ok((applied, lsn))
    }

    /// Mirrors the stored registration of function `name` (now `value`)
    /// into the shared registry.
    pub fn apply_registration(&self, name: String, value: Option<&Value>) {
        let Some(functions) = self.functions.borrow().clone() else {
            return;
        };
        let outcome = match value {
            None => {
                functions.registry.undefine(&name);
                Ok(())
            }
            Some(Value::Lww(l)) => fn_stored::decode(l.value()).and_then(|body| {
                functions
                    .registry
                    .define(&name, &body)
                    .map_err(|e| e.to_string())
            }),
            Some(other) => Err(format!("stored as a {} value", other.kind())),
        };
        if let Err(e) = outcome {
            log::warn!(
                "{}: registration of function {name:?} ignored: {e}",
                self.id
            );
        }
    }

    /// After memory was rebuilt from the log (a failed write rolled back):
    /// what the shard derives from its data is derived again — the
    /// registrations of functions whose keys it owns, and cached DAGs.
    pub fn after_rebuild(&self) {
        let Some(functions) = self.functions.borrow().clone() else {
            return;
        };
        let prefix = fn_stored::KEY_PREFIX.as_bytes();
        let mut names: Vec<String> = functions
            .registry
            .names()
            .into_iter()
            .filter(|n| !functions.registry.is_builtin(n))
            .filter(|n| self.owner(&fn_stored::key(n)) == self.id)
            .collect();
        names.extend(
            self.partition
                .borrow()
                .live_keys_with_prefix(prefix)
                .filter_map(fn_stored::name_of)
                .map(str::to_owned),
        );
        names.sort();
        names.dedup();
        for name in names {
            let value = self.partition.borrow().get(&fn_stored::key(&name)).cloned();
            self.apply_registration(name, value.as_ref());
        }
        self.dag_cache.borrow_mut().clear();
        functions.dag_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Executes a forwarded operation (this shard owns its keys).
    pub fn execute(&self, op: ShardOp) -> (ShardReply, Option<Lsn>) {
        let result = match op {
            ShardOp::Get(keys) => {
                return (
                    ShardReply::Values(keys.iter().map(|k| self.get_local(k)).collect()),
                    None,
                )
            }
            ShardOp::Put(key, value) => self.write(key, Some(value)),
            ShardOp::Delete(key) => self.write(key, None),
        };
        match result {
            Ok((Applied::Stored, lsn)) => (ShardReply::Stored, Some(lsn)),
            Ok((Applied::Deleted { removed }, lsn)) => (ShardReply::Deleted(removed), Some(lsn)),
            Err((status, msg)) => {
                bump(&self.stats.errors);
                (ShardReply::Error(status, msg), None)
            }
        }
    }

    /// A cached DAG that is still current.
    pub fn cached_copy(&self, key: &[u8], functions: &ShardFunctions) -> Option<Arc<Dag>> {
        let now = functions.generations();
        match self.dag_cache.borrow().get(key) {
            Some((g, dag)) if *g == now => Some(dag.clone()),
            _ => None,
        }
    }

    /// Caches `dag`, read from its owner under generations `g`.
    pub fn cache_copy(&self, key: &[u8], g: Generations, dag: Arc<Dag>) {
        self.dag_cache.borrow_mut().insert(key.to_vec(), (g, dag));
    }

    /// The validated DAG stored under `key` (a key this shard owns), cached.
    pub fn cached_dag(
        &self,
        key: &[u8],
        functions: &ShardFunctions,
    ) -> Result<Option<Arc<Dag>>, (Status, String)> {
        if let Some(dag) = self.cached_copy(key, functions) {
            return Ok(Some(dag));
        }
        let generation = functions.generations();
        let stored = match self.partition.borrow().get(key) {
            Some(Value::Lww(l)) => l.value().to_vec(),
            Some(_) => {
                return Err((
                    Status::Internal,
                    "a DAG is stored with the wrong type".into(),
                ))
            }
            None => return Ok(None),
        };
        let dag = Arc::new(crate::functions::load_dag(functions, &stored)?);
        self.dag_cache
            .borrow_mut()
            .insert(key.to_vec(), (generation, dag.clone()));
        Ok(Some(dag))
    }

    /// This shard's counters.
    pub fn snapshot_stats(&self) -> w::ShardStats {
        let p = self.partition.borrow();
        let st = self.storage.stats();
        let s = &self.stats;
        w::ShardStats {
            shard: self.id.0,
            live_keys: p.live_keys() as u64,
            tombstones: p.tombstones() as u64,
            gets: s.gets.get(),
            puts: s.puts.get(),
            deletes: s.deletes.get(),
            errors: s.errors.get(),
            forwarded_out: s.forwarded_out.get(),
            forwarded_in: s.forwarded_in.get(),
            connections: s.connections.get(),
            connections_refused: s.connections_refused.get(),
            last_lsn: st.last_lsn,
            durable_lsn: st.durable_lsn,
            wal_bytes: st.wal_bytes,
            snapshots: st.snapshots,
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// The status and sentence for a refused mutation.
pub fn partition_status(e: PartitionError) -> (Status, String) {
    let status = match e {
        PartitionError::TypeMismatch { .. } => Status::TypeMismatch,
        PartitionError::KeyTooLarge { .. } => Status::KeyTooLarge,
        PartitionError::ValueTooLarge { .. } | PartitionError::EncodingTooLarge { .. } => {
            Status::ValueTooLarge
        }
        PartitionError::ClockAhead { .. } | PartitionError::VectorClockAhead { .. } => {
            Status::ClockSkew
        }
        PartitionError::EmptyKey => Status::InvalidArgument,
    };
    (status, e.to_string())
}
