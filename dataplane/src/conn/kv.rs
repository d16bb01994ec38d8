//! Reads and writes: answered in the batch when this shard owns the keys,
//! else forwarded to their owner and answered from the outbox.

use kvs_core::partition::Applied;
use kvs_core::ShardId;
use wire::limits::KEYS_PER_GET_MAX;
use wire::message as w;
use wire::Status;

use super::Conn;
use crate::transport::ShardOp;

impl Conn {
    pub(super) async fn get(&mut self, request_id: u64, get: &w::ArchivedKvGet) {
        let n = get.keys.len();
        if n == 0 || n > KEYS_PER_GET_MAX {
            let msg = format!("a Get names 1 to {KEYS_PER_GET_MAX} keys, not {n}");
            return self.error(request_id, Status::InvalidArgument, &msg);
        }
        let me = self.shard.id();
        // Fast path: every key is ours.
        if get
            .keys
            .iter()
            .all(|k| self.shard.owner(k.as_slice()) == me)
        {
            let values = get
                .keys
                .iter()
                .map(|k| self.shard.get_local(k.as_slice()))
                .collect();
            return self.reply(request_id, &w::Response::Values(values));
        }
        let mut values: Vec<Option<w::Value>> = vec![None; n];
        let mut remote: Vec<(ShardId, Vec<usize>)> = Vec::new();
        for (i, k) in get.keys.iter().enumerate() {
            let owner = self.shard.owner(k.as_slice());
            if owner == me {
                values[i] = self.shard.get_local(k.as_slice());
            } else if let Some(group) = remote.iter_mut().find(|(s, _)| *s == owner) {
                group.1.push(i);
            } else {
                remote.push((owner, vec![i]));
            }
        }
        let mut parts = Vec::with_capacity(remote.len());
        for (owner, idx) in remote {
            let keys = idx.iter().map(|&i| get.keys[i].to_vec()).collect();
            parts.push((idx, self.shard.forward(owner, ShardOp::Get(keys)).await));
        }
        self.outbox.push(request_id, async move {
            for (idx, reply) in parts {
                match reply.await.into_response() {
                    w::Response::Values(vs) if vs.len() == idx.len() => {
                        for (i, v) in idx.into_iter().zip(vs) {
                            values[i] = v;
                        }
                    }
                    other => return other,
                }
            }
            w::Response::Values(values)
        });
    }

    pub(super) async fn write(
        &mut self,
        request_id: u64,
        key: &[u8],
        value: Option<kvs_core::Value>,
    ) {
        let owner = self.shard.owner(key);
        if owner != self.shard.id() {
            let op = match value {
                Some(v) => ShardOp::Put(key.to_vec(), v),
                None => ShardOp::Delete(key.to_vec()),
            };
            let reply = self.shard.forward(owner, op).await;
            self.outbox
                .push(request_id, async move { reply.await.into_response() });
            return;
        }
        match self.shard.write(key.to_vec(), value) {
            Ok((applied, lsn)) => {
                self.batch_lsn = Some(lsn);
                let resp = match applied {
                    Applied::Stored => w::Response::Stored,
                    Applied::Deleted { removed } => w::Response::Deleted(w::Deleted { removed }),
                };
                self.reply(request_id, &resp);
            }
            Err(e) => self.fail(request_id, &e),
        }
    }
}
