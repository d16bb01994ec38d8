//! The store as executor threads see it ([`NodeStore`], this crate's
//! `executor::store::Store`): each operation goes to the key's owning shard
//! over a bounded futures channel, served there by [`serve_store`], and the
//! executor thread waits for the answer on a crossbeam channel, with a
//! deadline. Puts are answered once durable under the node's `--fsync`
//! policy, like client puts. Functions may not write the keys that hold
//! code and models.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use executor::store::{Store, StoreError};
use futures_channel::mpsc;
use kvs_core::partition::Applied;
use kvs_core::ring::HashRing;
use kvs_core::{ShardId, Value};

use crate::limits::STORE_TIMEOUT_MS;
use crate::shard::Shard;

/// A store operation from an executor thread.
#[derive(Debug)]
enum StoreOp {
    Get(Vec<u8>),
    Put(Vec<u8>, Value),
    Delete(Vec<u8>),
    /// Get then delete, with nothing in between (inbox draining).
    Take(Vec<u8>),
}

#[derive(Debug)]
enum StoreReply {
    Value(Option<Value>),
    Done(bool),
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct StoreRequest {
    op: StoreOp,
    reply: cb::Sender<StoreReply>,
}

/// The node's store, as executor threads see it.
#[derive(Debug)]
pub(super) struct NodeStore {
    shards: Vec<mpsc::Sender<StoreRequest>>,
    ring: HashRing<ShardId>,
}

impl NodeStore {
    /// A store over `shards` request queues (index = shard id).
    pub(super) fn new(
        shards: Vec<mpsc::Sender<StoreRequest>>,
        ring: HashRing<ShardId>,
    ) -> NodeStore {
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
pub(crate) async fn serve_store(shard: Rc<Shard>, mut rx: mpsc::Receiver<StoreRequest>) {
    use futures_lite::StreamExt;
    while let Some(StoreRequest { op, reply }) = rx.next().await {
        let mut taken = None;
        let (key, value) = match op {
            StoreOp::Get(key) => {
                let _ = reply.send(StoreReply::Value(shard.get(&key)));
                continue;
            }
            StoreOp::Take(key) => {
                let v = shard.get(&key);
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
                    let answer = match (shard.wait_durable(lsn).await, taken) {
                        (Ok(()), Some(v)) => StoreReply::Value(v),
                        (Ok(()), None) => {
                            StoreReply::Done(matches!(applied, Applied::Deleted { removed: true }))
                        }
                        (Err(e), _) => StoreReply::Failed(e.message),
                    };
                    let _ = reply.send(answer);
                })
                .detach();
            }
            Err(e) => {
                let _ = reply.send(StoreReply::Failed(e.message));
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
