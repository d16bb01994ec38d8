//! The in-process [`Transport`]: glommio channels between the node's
//! shards.
//!
//! Every ordered pair of shards (a, b) has two glommio `shared_channel`s — a
//! bounded SPSC pair, which avoids the channel mesh and its known deadlock
//! under contention: requests a→b and replies b→a. Replies are matched to
//! waiting requests by a token. A request that gets no reply within
//! `FORWARD_TIMEOUT_MS` fails with `timeout`. The receiving side hands each
//! request to its shard as an [`Inbound`] stream, in arrival order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use kvs_core::ShardId;
use wire::Status;

use super::{ready, ReplyFuture, Sending, ShardOp, ShardReply, Transport};
use crate::error::NodeError;
use crate::limits::FORWARD_TIMEOUT_MS;

#[derive(Debug)]
pub(crate) struct Envelope {
    token: u64,
    op: ShardOp,
}

#[derive(Debug)]
pub(crate) struct ReplyEnvelope {
    token: u64,
    reply: ShardReply,
}

/// The unconnected channel ends one shard holds for one peer; they move to
/// the shard's thread and connect there.
#[derive(Debug)]
pub(crate) struct PeerEnds {
    requests_out: SharedSender<Envelope>,
    replies_in: SharedReceiver<ReplyEnvelope>,
    requests_in: SharedReceiver<Envelope>,
    replies_out: SharedSender<ReplyEnvelope>,
}

type Ends<T> = (Option<SharedSender<T>>, Option<SharedReceiver<T>>);

/// `grid[a][b]`: a channel whose sender belongs to shard a, receiver to b.
fn grid<T: Send>(n: usize, depth: usize) -> Vec<Vec<Ends<T>>> {
    (0..n)
        .map(|_| {
            (0..n)
                .map(|_| {
                    let (tx, rx) = shared_channel::new_bounded(depth);
                    (Some(tx), Some(rx))
                })
                .collect()
        })
        .collect()
}

/// Builds the channel mesh: `ends[a][b]` are shard a's ends towards b.
pub(crate) fn mesh(shards: usize, depth: usize) -> Vec<Vec<Option<PeerEnds>>> {
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
struct Peer {
    tx: ConnectedSender<Envelope>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
    next_token: Cell<u64>,
}

fn stopped() -> ShardReply {
    ShardReply::Error(NodeError::new(
        Status::ShuttingDown,
        "the owning shard has stopped",
    ))
}

impl Peer {
    async fn send(self: Rc<Self>, op: ShardOp) -> ReplyFuture {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(token, tx);
        if self.tx.send(Envelope { token, op }).await.is_err() {
            self.pending.borrow_mut().remove(&token);
            return ready(stopped());
        }
        Box::pin(async move {
            let timeout = async {
                glommio::timer::sleep(Duration::from_millis(FORWARD_TIMEOUT_MS)).await;
                None
            };
            match futures_lite::future::or(async { Some(rx.await) }, timeout).await {
                Some(Ok(reply)) => reply,
                Some(Err(_)) => stopped(),
                None => {
                    self.pending.borrow_mut().remove(&token);
                    ShardReply::Error(NodeError::new(
                        Status::Timeout,
                        format!("the owning shard did not answer within {FORWARD_TIMEOUT_MS} ms"),
                    ))
                }
            }
        })
    }
}

/// One shard's way to the others over the mesh.
#[derive(Debug)]
pub(crate) struct Channels {
    /// By shard id; `None` for the shard itself.
    peers: Vec<Option<Rc<Peer>>>,
}

impl Transport for Channels {
    fn send(&self, to: ShardId, op: ShardOp) -> Sending<'_> {
        match self.peers.get(usize::from(to.0)).cloned().flatten() {
            Some(peer) => Box::pin(peer.send(op)),
            None => Box::pin(std::future::ready(ready(ShardReply::Error(
                NodeError::internal(format!("no route to {to}")),
            )))),
        }
    }
}

/// Requests from one peer, in arrival order.
#[derive(Debug)]
pub(crate) struct Inbound {
    requests: ConnectedReceiver<Envelope>,
    replies: Rc<ConnectedSender<ReplyEnvelope>>,
}

/// Where the reply to one inbound request goes.
#[derive(Debug)]
pub(crate) struct Responder {
    token: u64,
    replies: Rc<ConnectedSender<ReplyEnvelope>>,
}

impl Inbound {
    /// The next request; `None` once the peer is gone.
    pub async fn next(&self) -> Option<(ShardOp, Responder)> {
        let Envelope { token, op } = self.requests.recv().await?;
        let replies = self.replies.clone();
        Some((op, Responder { token, replies }))
    }
}

impl Responder {
    pub async fn send(self, reply: ShardReply) {
        let token = self.token;
        let _ = self.replies.send(ReplyEnvelope { token, reply }).await;
    }
}

/// Connects all of one shard's ends (on its own thread): the way out, and
/// one inbound stream per peer. Replies to this shard's requests are
/// collected by a task per peer.
pub(crate) async fn connect(ends: Vec<Option<PeerEnds>>) -> (Channels, Vec<Inbound>) {
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
    let mut inbound = Vec::with_capacity(tasks.len());
    for t in tasks {
        let Some((tx, replies_in, requests_in, replies_out)) = t else {
            peers.push(None);
            continue;
        };
        let peer = Rc::new(Peer {
            tx: tx.await,
            pending: RefCell::new(HashMap::new()),
            next_token: Cell::new(0),
        });
        glommio::spawn_local(collect_replies(peer.clone(), replies_in.await)).detach();
        inbound.push(Inbound {
            requests: requests_in.await,
            replies: Rc::new(replies_out.await),
        });
        peers.push(Some(peer));
    }
    (Channels { peers }, inbound)
}

async fn collect_replies(peer: Rc<Peer>, rx: ConnectedReceiver<ReplyEnvelope>) {
    while let Some(r) = rx.recv().await {
        if let Some(tx) = peer.pending.borrow_mut().remove(&r.token) {
            let _ = tx.send(r.reply);
        }
    }
}
