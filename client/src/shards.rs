//! Pipelining over the connection per shard.
//!
//! A batch of requests is written first — every request gets the next
//! request id, and all the frames bound for one shard go out in one write —
//! and only then are the replies read, shard by shard, and matched to their
//! requests by id. A batch that misses the deadline or fails (but for the
//! node's error replies, which are results) drops every connection, since
//! replies may still be in flight on them (a reused connection would hand
//! them to the next call); the next batch reopens what it needs.

use std::collections::HashMap;

use wire::message::{Response, Topology};

use crate::conn::{dial, ShardConn};
use crate::route::Route;
use crate::{into_result, protocol, ClientError, ClientOptions, Op, Result};

/// One connection slot per shard (opened on first use), and the request
/// ids.
#[derive(Debug)]
pub(crate) struct Shards {
    conns: Vec<Option<ShardConn>>,
    next_id: u64,
}

impl Shards {
    /// A slot for every shard of `topology`; the handshake's connection
    /// fills the slot of the shard that answered.
    pub(crate) fn new(topology: &Topology, first: ShardConn) -> Shards {
        let mut conns: Vec<Option<ShardConn>> = topology.shards.iter().map(|_| None).collect();
        if let Some(slot) = conns.get_mut(usize::from(topology.shard)) {
            *slot = Some(first);
        }
        Shards { conns, next_id: 1 }
    }

    /// How many shards there are.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Sends a batch, pipelined (see the module doc), within
    /// `opts.timeout`. Returns one result per op, in order; the outer error
    /// is a transport failure or the deadline.
    pub(crate) async fn execute(
        &mut self,
        route: &Route,
        opts: &ClientOptions,
        ops: Vec<Op>,
    ) -> Result<Vec<Result<Response>>> {
        let timeout = opts.timeout;
        match tokio::time::timeout(timeout, self.execute_inner(route, opts, ops)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.drop_all();
                Err(e)
            }
            Err(_) => {
                let addr = self.open_addrs();
                self.drop_all();
                Err(ClientError::Timeout { addr, timeout })
            }
        }
    }

    async fn execute_inner(
        &mut self,
        route: &Route,
        opts: &ClientOptions,
        ops: Vec<Op>,
    ) -> Result<Vec<Result<Response>>> {
        let mut slot_of_id: HashMap<u64, usize> = HashMap::with_capacity(ops.len());
        let mut waiting = vec![0usize; self.conns.len()];
        for (i, op) in ops.iter().enumerate() {
            let s = usize::from(op.shard);
            if s >= self.conns.len() {
                return Err(protocol("", &format!("shard {} does not exist", op.shard)));
            }
            self.ensure_conn(route, opts, s).await?;
            let id = self.next_id;
            self.next_id += 1;
            slot_of_id.insert(id, i);
            waiting[s] += 1;
            let conn = self.conns[s]
                .as_mut()
                .ok_or_else(|| protocol("", "connection vanished"))?;
            conn.queue(id, &op.request)?;
        }
        for conn in self.conns.iter_mut().flatten() {
            conn.flush().await?;
        }
        let mut out: Vec<Option<Result<Response>>> = (0..ops.len()).map(|_| None).collect();
        for (s, n) in waiting.iter().enumerate() {
            let Some(conn) = self.conns[s].as_mut() else {
                continue;
            };
            for _ in 0..*n {
                let (id, resp) = conn.read_frame().await?;
                let slot = slot_of_id.remove(&id).ok_or_else(|| {
                    protocol(&conn.addr, &format!("reply to unknown request id {id}"))
                })?;
                out[slot] = Some(into_result(resp));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(protocol("", "missing reply"))))
            .collect())
    }

    /// Opens shard `s`'s connection unless it is open.
    async fn ensure_conn(&mut self, route: &Route, opts: &ClientOptions, s: usize) -> Result<()> {
        if self.conns[s].is_none() {
            let addr = String::from_utf8_lossy(&route.topology().shards[s].addr).into_owned();
            let (conn, _) = tokio::time::timeout(opts.timeout, dial(&addr, opts))
                .await
                .map_err(|_| ClientError::Timeout {
                    addr: addr.clone(),
                    timeout: opts.timeout,
                })??;
            self.conns[s] = Some(conn);
        }
        Ok(())
    }

    /// The addresses of the open connections (named by a timeout).
    fn open_addrs(&self) -> String {
        let open: Vec<&str> = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.addr.as_str())
            .collect();
        open.join(", ")
    }

    fn drop_all(&mut self) {
        // A failed or timed-out batch may leave replies in flight: a
        // connection that is reused would hand them to the next call.
        for c in &mut self.conns {
            *c = None;
        }
    }
}
