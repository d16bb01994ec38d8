//! The connections: one per shard of each node, opened on first use, and
//! pipelined batches over them.
//!
//! A batch of requests is written first — every request gets the next
//! request id, and all the frames bound for one shard go out in one write —
//! and only then are the replies read, connection by connection, and
//! matched to their requests by id. The whole batch has one deadline. A
//! batch that misses it or fails (but for the node's error replies, which
//! are results) drops every connection, since replies may still be in
//! flight on them (a reused connection would hand them to the next call),
//! and names the node whose connection failed; the next batch reopens what
//! it needs.
//!
//! A node's shard addresses come from its own `Hello`: the first
//! connection to a node goes to its member address (its shard 0), and the
//! topology it answers says where its other shards listen. A node that
//! fails a batch is asked again.

use std::collections::HashMap;
use std::future::Future;

use tokio::time::Instant;
use wire::message::{Response, Topology};

use crate::conn::{dial, ShardConn};
use crate::placement::{Dest, Placement};
use crate::{into_result, protocol, ClientError, ClientOptions, Op, Result};

/// The open connections and what is known of each node's shards.
#[derive(Debug)]
pub(crate) struct Pool {
    conns: HashMap<Dest, ShardConn>,
    /// Each node's shard addresses, by shard id, from its `Hello`.
    shard_addrs: HashMap<u64, Vec<String>>,
    next_id: u64,
}

/// A batch that failed as a whole.
#[derive(Debug)]
pub(crate) struct BatchError {
    pub error: ClientError,
    /// The node whose connection failed or timed out (if one did).
    pub node: Option<u64>,
}

/// A batch's replies, one per op, and whether a reply came from a node
/// whose epoch differs from the placement's.
pub(crate) type Replies = (Vec<Result<Response>>, bool);

impl Pool {
    /// The pool of a client whose handshake went to `home` (the connection
    /// `first`, answered with `topology`).
    pub(crate) fn new(home: u64, topology: &Topology, first: ShardConn) -> Pool {
        let mut pool = Pool {
            conns: HashMap::new(),
            shard_addrs: HashMap::new(),
            next_id: 1,
        };
        pool.learn(home, topology);
        pool.conns.insert(
            Dest {
                node: home,
                shard: topology.shard,
            },
            first,
        );
        pool
    }

    fn learn(&mut self, node: u64, topology: &Topology) {
        let addrs = topology
            .shards
            .iter()
            .map(|s| String::from_utf8_lossy(&s.addr).into_owned())
            .collect();
        self.shard_addrs.insert(node, addrs);
    }

    /// How many shards `node` has, if known.
    pub(crate) fn shards_of(&self, node: u64) -> Option<usize> {
        self.shard_addrs.get(&node).map(Vec::len)
    }

    /// Sends a batch, pipelined (see the module doc), within
    /// `opts.timeout`.
    pub(crate) async fn execute(
        &mut self,
        placement: &Placement,
        opts: &ClientOptions,
        ops: &[Op],
    ) -> Result<Replies, BatchError> {
        let deadline = Instant::now() + opts.timeout;
        let result = self.execute_inner(placement, opts, ops, deadline).await;
        if let Err(e) = &result {
            // A failed or timed-out batch may leave replies in flight: a
            // connection that is reused would hand them to the next call.
            self.conns.clear();
            // The node may have restarted elsewhere: ask its member
            // address for its shards again.
            if let Some(node) = e.node {
                self.shard_addrs.remove(&node);
            }
        }
        result
    }

    async fn execute_inner(
        &mut self,
        placement: &Placement,
        opts: &ClientOptions,
        ops: &[Op],
        deadline: Instant,
    ) -> Result<Replies, BatchError> {
        let epoch = placement.epoch();
        // The ops by destination, in order of first appearance.
        let mut groups: Vec<(Dest, Vec<usize>)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match groups.iter_mut().find(|(d, _)| *d == op.dest) {
                Some((_, v)) => v.push(i),
                None => groups.push((op.dest, vec![i])),
            }
        }
        // Op `i` gets request id `first_id + i`: replies map back by it.
        let first_id = self.next_id;
        self.next_id += ops.len() as u64;
        for (dest, idx) in &groups {
            self.ensure_conn(placement, opts, *dest, deadline).await?;
            let conn = self.conn(*dest)?;
            for &i in idx {
                conn.queue(first_id + i as u64, epoch, &ops[i].request)
                    .map_err(|error| failed(error, None))?;
            }
            let flushed = within(deadline, conn.flush()).await;
            flushed.map_err(|late| late.at(&conn.addr, dest.node, opts))?;
        }
        let mut out: Vec<Option<Result<Response>>> = (0..ops.len()).map(|_| None).collect();
        let mut stale = false;
        for (dest, idx) in &groups {
            let conn = self.conn(*dest)?;
            for _ in idx {
                let read = within(deadline, conn.read_frame()).await;
                let (id, reply_epoch, resp) =
                    read.map_err(|late| late.at(&conn.addr, dest.node, opts))?;
                stale |= epoch != 0 && reply_epoch != 0 && reply_epoch != epoch;
                let slot = id
                    .checked_sub(first_id)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| out.get_mut(i))
                    .filter(|slot| slot.is_none());
                let Some(slot) = slot else {
                    let msg = format!("reply to unknown request id {id}");
                    return Err(failed(protocol(&conn.addr, &msg), Some(dest.node)));
                };
                *slot = Some(into_result(resp));
            }
        }
        let replies = out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(protocol("", "missing reply"))))
            .collect();
        Ok((replies, stale))
    }

    fn conn(&mut self, dest: Dest) -> Result<&mut ShardConn, BatchError> {
        self.conns
            .get_mut(&dest)
            .ok_or_else(|| failed(protocol("", "connection vanished"), Some(dest.node)))
    }

    /// Opens `dest`'s connection unless it is open: through the node's
    /// member address first when its shards are not known yet.
    async fn ensure_conn(
        &mut self,
        placement: &Placement,
        opts: &ClientOptions,
        dest: Dest,
        deadline: Instant,
    ) -> Result<(), BatchError> {
        if self.conns.contains_key(&dest) {
            return Ok(());
        }
        if !self.shard_addrs.contains_key(&dest.node) {
            let Some(addr) = placement.addr(dest.node) else {
                let msg = format!("node {:016x} is not in the client's view", dest.node);
                return Err(failed(protocol("", &msg), Some(dest.node)));
            };
            let addr = addr.to_owned();
            let (conn, topology) = within(deadline, dial(&addr, opts))
                .await
                .map_err(|late| late.at(&addr, dest.node, opts))?;
            if topology.cluster.node != dest.node {
                let msg = format!(
                    "expected node {:016x} there, found node {:016x}",
                    dest.node, topology.cluster.node
                );
                return Err(failed(protocol(&addr, &msg), Some(dest.node)));
            }
            self.learn(dest.node, &topology);
            let at = Dest {
                node: dest.node,
                shard: topology.shard,
            };
            self.conns.insert(at, conn);
            if at == dest {
                return Ok(());
            }
        }
        let Some(addr) = self
            .shard_addrs
            .get(&dest.node)
            .and_then(|a| a.get(usize::from(dest.shard)))
            .cloned()
        else {
            let msg = format!("node {:016x} has no shard {}", dest.node, dest.shard);
            return Err(failed(protocol("", &msg), Some(dest.node)));
        };
        let (conn, _) = within(deadline, dial(&addr, opts))
            .await
            .map_err(|late| late.at(&addr, dest.node, opts))?;
        self.conns.insert(dest, conn);
        Ok(())
    }
}

fn failed(error: ClientError, node: Option<u64>) -> BatchError {
    BatchError { error, node }
}

/// Why a step of a batch did not complete.
enum Late {
    Failed(ClientError),
    Timeout,
}

impl Late {
    /// The batch's error, naming the connection it happened on.
    fn at(self, addr: &str, node: u64, opts: &ClientOptions) -> BatchError {
        let error = match self {
            Late::Failed(e) => e,
            Late::Timeout => ClientError::Timeout {
                addr: addr.to_owned(),
                timeout: opts.timeout,
            },
        };
        failed(error, Some(node))
    }
}

/// `f`, unless `deadline` passes first.
async fn within<T>(deadline: Instant, f: impl Future<Output = Result<T>>) -> Result<T, Late> {
    match tokio::time::timeout_at(deadline, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Late::Failed(e)),
        Err(_) => Err(Late::Timeout),
    }
}
