//! Shard-to-shard forwarding, for requests that reach a shard that does not
//! own their key (naive clients, multi-key gets spanning shards).
//!
//! Every ordered pair of shards (a, b) has two glommio `shared_channel`s — a
//! bounded SPSC pair, which avoids the channel mesh and its known deadlock
//! under contention: requests a→b and replies b→a. The owner applies
//! forwarded requests in arrival order (so one connection's writes to a key
//! stay ordered), then replies once the write is durable. Replies are
//! matched to waiting requests by a token. A forwarded request that gets no
//! reply within `FORWARD_TIMEOUT_MS` fails with `Timeout`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use glommio::channels::shared_channel::{
    ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use kvs_core::Value;
use wire::message as w;
use wire::Status;

use crate::limits::FORWARD_TIMEOUT_MS;
use crate::shard::Shard;

/// What a shard asks of the owner.
#[derive(Debug)]
pub enum ShardOp {
    Get(Vec<Vec<u8>>),
    Put(Vec<u8>, Value),
    Delete(Vec<u8>),
}

/// The owner's answer.
#[derive(Debug)]
pub enum ShardReply {
    Values(Vec<Option<w::Value>>),
    /// A function's result.
    Output(Vec<u8>),
    /// A call accepted; its result will be stored under this key.
    Pending(Vec<u8>),
    Stored,
    Deleted(bool),
    Error(Status, String),
}

impl ShardReply {
    /// The response a client gets for it.
    pub fn into_response(self) -> w::Response {
        match self {
            ShardReply::Values(v) => w::Response::Values(v),
            ShardReply::Output(b) => w::Response::Output(b),
            ShardReply::Pending(k) => w::Response::Pending(k),
            ShardReply::Stored => w::Response::Stored,
            ShardReply::Deleted(removed) => w::Response::Deleted(w::Deleted { removed }),
            ShardReply::Error(status, msg) => w::Response::Error(w::ErrorBody {
                code: status.code(),
                message: msg.into_bytes(),
            }),
        }
    }
}

#[derive(Debug)]
pub struct Envelope {
    token: u64,
    op: ShardOp,
}

#[derive(Debug)]
pub struct ReplyEnvelope {
    token: u64,
    reply: ShardReply,
}

/// The unconnected channel ends one shard holds for one peer.
#[derive(Debug)]
pub struct PeerEnds {
    pub requests_out: SharedSender<Envelope>,
    pub replies_in: SharedReceiver<ReplyEnvelope>,
    pub requests_in: SharedReceiver<Envelope>,
    pub replies_out: SharedSender<ReplyEnvelope>,
}

type Ends<T> = (Option<SharedSender<T>>, Option<SharedReceiver<T>>);

/// `grid[a][b]`: a channel whose sender belongs to shard a, receiver to b.
fn grid<T: Send>(n: usize, depth: usize) -> Vec<Vec<Ends<T>>> {
    (0..n)
        .map(|_| {
            (0..n)
                .map(|_| {
                    let (tx, rx) = glommio::channels::shared_channel::new_bounded(depth);
                    (Some(tx), Some(rx))
                })
                .collect()
        })
        .collect()
}

/// Builds the channel mesh: `ends[a][b]` are shard a's ends towards b.
pub fn mesh(shards: usize, depth: usize) -> Vec<Vec<Option<PeerEnds>>> {
    let mut req = grid::<Envelope>(shards, depth);
    let mut rep = grid::<ReplyEnvelope>(shards, depth);
    let mut out = Vec::with_capacity(shards);
    for a in 0..shards {
        let mut row = Vec::with_capacity(shards);
        for b in 0..shards {
            if a == b {
                row.push(None);
                continue;
            }
            // Requests a→b: a sends, b receives. Replies to a's requests:
            // b sends on rep[b][a], a receives.
            let ends = (
                req[a][b].0.take(),
                rep[b][a].1.take(),
                req[b][a].1.take(),
                rep[a][b].0.take(),
            );
            let (Some(requests_out), Some(replies_in), Some(requests_in), Some(replies_out)) = ends
            else {
                unreachable!("each channel end is taken exactly once")
            };
            row.push(Some(PeerEnds {
                requests_out,
                replies_in,
                requests_in,
                replies_out,
            }));
        }
        out.push(row);
    }
    out
}

/// The connected sending side towards one peer.
#[derive(Debug)]
pub struct Peer {
    tx: ConnectedSender<Envelope>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
    next_token: Cell<u64>,
}

/// A forwarded request in flight.
pub type ReplyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ShardReply>>>;

impl Peer {
    /// Sends `op` (waiting if the queue is full) and returns the future of
    /// its reply, which resolves to `Timeout` after `FORWARD_TIMEOUT_MS`.
    pub async fn send(self: &Rc<Self>, op: ShardOp) -> ReplyFuture {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(token, tx);
        if self.tx.send(Envelope { token, op }).await.is_err() {
            self.pending.borrow_mut().remove(&token);
            return Box::pin(async {
                ShardReply::Error(Status::ShuttingDown, "the owning shard has stopped".into())
            });
        }
        let me = self.clone();
        Box::pin(async move {
            let timeout = async {
                glommio::timer::sleep(Duration::from_millis(FORWARD_TIMEOUT_MS)).await;
                None
            };
            match futures_lite::future::or(async { Some(rx.await) }, timeout).await {
                Some(Ok(reply)) => reply,
                Some(Err(_)) => {
                    ShardReply::Error(Status::ShuttingDown, "the owning shard has stopped".into())
                }
                None => {
                    me.pending.borrow_mut().remove(&token);
                    ShardReply::Error(
                        Status::Timeout,
                        format!("the owning shard did not answer within {FORWARD_TIMEOUT_MS} ms"),
                    )
                }
            }
        })
    }
}

/// Connects all ends; returns the peers (indexed by shard) and spawns the
/// tasks that serve forwarded requests and collect replies.
pub async fn connect(shard: &Rc<Shard>, ends: Vec<Option<PeerEnds>>) -> Vec<Option<Rc<Peer>>> {
    // Every end connects in its own task: a connect waits for the peer to
    // connect the other end, and peers connect their ends in a different
    // order, so connecting them one after another would deadlock.
    let tasks: Vec<_> = ends
        .into_iter()
        .map(|e| {
            e.map(|e| {
                (
                    glommio::spawn_local(e.requests_out.connect()),
                    glommio::spawn_local(e.replies_in.connect()),
                    glommio::spawn_local(e.requests_in.connect()),
                    glommio::spawn_local(e.replies_out.connect()),
                )
            })
        })
        .collect();
    let mut peers = Vec::with_capacity(tasks.len());
    for t in tasks {
        let Some((tx, replies_in, requests_in, replies_out)) = t else {
            peers.push(None);
            continue;
        };
        let (tx, replies_in, requests_in, replies_out) = (
            tx.await,
            replies_in.await,
            requests_in.await,
            replies_out.await,
        );
        let peer = Rc::new(Peer {
            tx,
            pending: RefCell::new(HashMap::new()),
            next_token: Cell::new(0),
        });
        glommio::spawn_local(collect_replies(peer.clone(), replies_in)).detach();
        glommio::spawn_local(serve_forwarded(
            shard.clone(),
            requests_in,
            Rc::new(replies_out),
        ))
        .detach();
        peers.push(Some(peer));
    }
    peers
}

async fn collect_replies(peer: Rc<Peer>, rx: ConnectedReceiver<ReplyEnvelope>) {
    while let Some(r) = rx.recv().await {
        if let Some(tx) = peer.pending.borrow_mut().remove(&r.token) {
            let _ = tx.send(r.reply);
        }
    }
}

async fn serve_forwarded(
    shard: Rc<Shard>,
    rx: ConnectedReceiver<Envelope>,
    replies: Rc<ConnectedSender<ReplyEnvelope>>,
) {
    while let Some(Envelope { token, op }) = rx.recv().await {
        shard
            .stats
            .forwarded_in
            .set(shard.stats.forwarded_in.get() + 1);
        // Applied now, in arrival order; the reply waits for durability in
        // its own task so later requests are not held up.
        let (reply, lsn) = shard.execute(op);
        let (shard, replies) = (shard.clone(), replies.clone());
        glommio::spawn_local(async move {
            let reply = match lsn {
                Some(lsn) => match shard.storage.wait_durable(lsn).await {
                    Ok(()) => reply,
                    Err(e) => ShardReply::Error(Status::StorageFailure, e),
                },
                None => reply,
            };
            let _ = replies.send(ReplyEnvelope { token, reply }).await;
        })
        .detach();
    }
}
