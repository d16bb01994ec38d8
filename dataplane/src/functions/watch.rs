//! Keeping the platform in step with the store. Function registrations and
//! DAGs are stored as keys (`squall:fn:<name>`, `squall:dag:<name>`) on
//! their owning shard; [`Mirror`], the shard's [`WriteObserver`], mirrors
//! every registration write into the node's shared registry (so every
//! shard sees it at once) and makes cached DAGs stale on every DAG write.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use executor::registry::{stored as fn_stored, FunctionBody};
use kvs_core::lattice::ValueRef;
use kvs_core::partition::Partition;
use kvs_core::ring::HashRing;
use kvs_core::ShardId;

use super::dags::DagCache;
use super::Platform;
use crate::shard::WriteObserver;

/// One shard's observer of registration keys.
#[derive(Debug)]
pub(crate) struct Mirror {
    platform: Platform,
    shard: ShardId,
    ring: Rc<HashRing<ShardId>>,
    dags: Rc<DagCache>,
}

impl Mirror {
    pub fn new(platform: Platform, shard: ShardId, ring: Rc<HashRing<ShardId>>) -> Mirror {
        Mirror {
            platform,
            shard,
            ring,
            dags: Rc::new(DagCache::default()),
        }
    }

    /// The DAG cache this observer keeps current.
    pub(super) fn dags(&self) -> Rc<DagCache> {
        self.dags.clone()
    }

    /// At start-up, before any shard serves: the registrations the shard
    /// recovered join the registry.
    pub fn load(&self, partition: &Partition) {
        let prefix = fn_stored::KEY_PREFIX.as_bytes();
        for key in partition.live_keys_with_prefix(prefix) {
            let name = fn_stored::name_of(key).unwrap_or_default();
            match self.define(name, partition.get(key)) {
                Ok(()) => log::info!("{}: function {name:?} registered (recovered)", self.shard),
                Err(e) => log::warn!("{}: stored function {name:?} ignored: {e}", self.shard),
            }
        }
    }

    /// Mirrors the stored registration of function `name` (now `value`).
    fn define(&self, name: &str, value: Option<ValueRef<'_>>) -> Result<(), String> {
        let registry = &self.platform.registry;
        match value {
            None => {
                registry.undefine(name);
                Ok(())
            }
            Some(ValueRef::Lww(_, bytes)) => {
                let mut body = fn_stored::decode(bytes)?;
                let FunctionBody::Wasm(m) = &mut body else {
                    return registry.define(name, &body).map_err(|e| e.to_string());
                };
                if !self.platform.trust_precompiled {
                    m.precompiled = None;
                }
                let (t0, before) = (Instant::now(), self.platform.wasm.loads());
                registry.define(name, &body).map_err(|e| e.to_string())?;
                let after = self.platform.wasm.loads();
                let how = if after.1 > before.1 {
                    "loaded its machine code"
                } else if after.0 > before.0 {
                    "compiled here"
                } else {
                    "compiled already"
                };
                log::info!(
                    "{}: WebAssembly function {name:?} ready in {} us ({how})",
                    self.shard,
                    t0.elapsed().as_micros()
                );
                Ok(())
            }
            Some(other) => Err(format!("stored as a {} value", other.kind())),
        }
    }

    fn dag_written(&self, key: &[u8]) {
        // Copies of it on other shards go stale with the generation.
        self.dags.remove(key);
        self.platform.dag_generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl WriteObserver for Mirror {
    fn watches(&self, key: &[u8]) -> bool {
        key.starts_with(wire::DAG_KEY_PREFIX.as_bytes()) || fn_stored::name_of(key).is_some()
    }

    fn written(&self, key: &[u8], now: Option<ValueRef<'_>>) {
        if key.starts_with(wire::DAG_KEY_PREFIX.as_bytes()) {
            return self.dag_written(key);
        }
        if let Some(name) = fn_stored::name_of(key) {
            if let Err(e) = self.define(name, now) {
                log::warn!(
                    "{}: registration of function {name:?} ignored: {e}",
                    self.shard
                );
            }
        }
    }

    /// The registrations of functions whose keys the shard owns are
    /// mirrored again (a rolled-back one disappears), and every cached DAG
    /// goes stale.
    fn rebuilt(&self, partition: &Partition) {
        let registry = &self.platform.registry;
        let prefix = fn_stored::KEY_PREFIX.as_bytes();
        let mut names: Vec<String> = registry
            .names()
            .into_iter()
            .filter(|n| !registry.is_builtin(n))
            .filter(|n| self.ring.owner(&fn_stored::key(n)) == Some(self.shard))
            .collect();
        names.extend(
            partition
                .live_keys_with_prefix(prefix)
                .filter_map(fn_stored::name_of)
                .map(str::to_owned),
        );
        names.sort();
        names.dedup();
        for name in names {
            if let Err(e) = self.define(&name, partition.get(&fn_stored::key(&name))) {
                log::warn!(
                    "{}: registration of function {name:?} ignored: {e}",
                    self.shard
                );
            }
        }
        self.dags.clear();
        self.platform.dag_generation.fetch_add(1, Ordering::AcqRel);
    }
}
