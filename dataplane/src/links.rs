//! Links to other nodes: the connections a shard opens to another node's
//! shard 0 to forward a request there or to hand keys over. A link speaks
//! the client protocol — `Hello` as client `squall-node`, and on a node
//! with `--auth-token-file` the challenge–response under its first admin
//! secret, exactly as a client would — one request at a time. Each shard
//! keeps the links it opened for reuse, at most `LINKS_PER_PEER_MAX` per
//! peer at once (more callers wait for one to come back).
//!
//! A request that fails on a link (it cannot connect, the peer closes, the
//! deadline `NODE_REQUEST_TIMEOUT_MS` passes) closes that link and fails
//! with `unavailable`: the caller may retry, another link is opened then.
//! One exception: a link kept idle may have been closed by the peer
//! meanwhile (it restarted): a read or a merge that fails on one goes
//! again, once, on a new link (the peer's other idle links are closed too).
//! Tests disturb links on purpose through [`faults`].

pub(crate) mod faults;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use wire::auth::Secret;
use wire::frame::{decode_response_owned, encode_frame, FrameHeader, FRAME_HEADER_BYTES};
use wire::message as w;
use wire::Status;

use crate::error::NodeError;
use crate::limits::{LINKS_PER_PEER_MAX, NODE_REQUEST_TIMEOUT_MS};

/// What a node calls itself in `Hello` on its links.
pub(crate) const NODE_CLIENT_NAME: &[u8] = b"squall-node";

/// One shard's links to other nodes.
pub(crate) struct Links {
    /// Proves this node to peers that require authentication.
    secret: Option<Secret>,
    faults: Option<faults::LinkFaults>,
    peers: RefCell<HashMap<SocketAddr, Rc<Peer>>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Links({} peers)", self.peers.borrow().len())
    }
}

struct Peer {
    idle: RefCell<Vec<Link>>,
    /// One permit per link that may be in use at once.
    permits: Semaphore,
}

struct Link {
    stream: TcpStream,
    next_id: u64,
}

impl Links {
    pub fn new(secret: Option<Secret>, faults: Option<faults::LinkFaults>) -> Links {
        Links {
            secret,
            faults,
            peers: RefCell::new(HashMap::new()),
        }
    }

    /// Sends `request` to the node at `to` and returns its reply; a failure
    /// to get one within `NODE_REQUEST_TIMEOUT_MS` is an `unavailable`
    /// error reply.
    pub async fn call(&self, to: SocketAddr, request: &w::Request) -> w::Response {
        self.call_within(to, request, NODE_REQUEST_TIMEOUT_MS).await
    }

    /// As [`call`](Self::call), waiting `timeout_ms` for the reply (a DAG
    /// call run there).
    pub async fn call_within(
        &self,
        to: SocketAddr,
        request: &w::Request,
        timeout_ms: u64,
    ) -> w::Response {
        let fate = self.faults.as_ref().map(|f| f.fate(to)).unwrap_or_default();
        if fate.delay_ms > 0 {
            glommio::timer::sleep(Duration::from_millis(fate.delay_ms)).await;
        }
        let result = if fate.drop_request {
            Err(unavailable(to, "request dropped on purpose (link faults)"))
        } else {
            self.try_call(to, request, timeout_ms).await
        };
        if fate.duplicate && result.is_ok() {
            let _ = self.try_call(to, request, timeout_ms).await;
        }
        match result {
            Ok(_) if fate.drop_reply => crate::transport::error_response(&unavailable(
                to,
                "reply dropped on purpose (link faults)",
            )),
            Ok(resp) => resp,
            Err(e) => crate::transport::error_response(&e),
        }
    }

    /// Sends `request`, one the peer never answers (`RunChain`,
    /// `ChainDone`), to the node at `to`: `Ok` once written. A link the
    /// peer closed while it sat idle is not used. Lost on purpose under
    /// link faults like any request (a delayed reply: delivered).
    pub async fn send(&self, to: SocketAddr, request: &w::Request) -> Result<(), NodeError> {
        let fate = self.faults.as_ref().map(|f| f.fate(to)).unwrap_or_default();
        if fate.delay_ms > 0 {
            glommio::timer::sleep(Duration::from_millis(fate.delay_ms)).await;
        }
        if fate.drop_request {
            return Ok(());
        }
        let peer = self.peer(to);
        let _permit =
            (peer.permits.acquire_permit(1).await).map_err(|e| unavailable(to, &e.to_string()))?;
        let idle = std::iter::from_fn(|| peer.idle.borrow_mut().pop()).find(|l| !l.closed());
        let send = async {
            let mut link = match idle {
                Some(link) => link,
                None => self.connect(to).await?,
            };
            link.send(request).await?;
            if fate.duplicate {
                link.send(request).await?;
            }
            Ok::<_, NodeError>(link)
        };
        let timeout = Duration::from_millis(NODE_REQUEST_TIMEOUT_MS);
        match glommio::timer::timeout(timeout, async { Ok(send.await) }).await {
            Ok(Ok(link)) => {
                peer.idle.borrow_mut().push(link);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unavailable(to, "not sent within the request timeout")),
        }
    }

    /// Hands `entries` to the node at `to` (`Merge`); `Ok` once it has
    /// them durable.
    pub async fn merge(
        &self,
        to: SocketAddr,
        entries: Vec<w::MergeEntry>,
    ) -> Result<(), NodeError> {
        match self
            .call(to, &w::Request::Merge(w::MergeBatch { entries }))
            .await
        {
            w::Response::Stored => Ok(()),
            w::Response::Error(e) => {
                let status = Status::from_code(e.code).unwrap_or(Status::Internal);
                let why = String::from_utf8_lossy(&e.message);
                Err(NodeError::retriable(status, format!("to {to}: {why}")))
            }
            other => Err(NodeError::internal(format!(
                "to {to}: unexpected reply {other:?}"
            ))),
        }
    }

    async fn try_call(
        &self,
        to: SocketAddr,
        request: &w::Request,
        timeout_ms: u64,
    ) -> Result<w::Response, NodeError> {
        let peer = self.peer(to);
        let _permit = peer
            .permits
            .acquire_permit(1)
            .await
            .map_err(|e| unavailable(to, &e.to_string()))?;
        let timeout = Duration::from_millis(timeout_ms);
        let idle = peer.idle.borrow_mut().pop();
        let exchange = async {
            if let Some(mut link) = idle {
                match link.exchange(request).await {
                    Ok(resp) => return Ok((link, resp)),
                    // The peer may have closed it while it sat idle (it
                    // restarted, or reclaimed idle connections): so the
                    // others kept for it too. A request that may safely go
                    // twice goes again, once, on a new link.
                    Err(e) => {
                        peer.idle.borrow_mut().clear();
                        if !goes_twice(request) {
                            return Err(e);
                        }
                    }
                }
            }
            let mut link = self.connect(to).await?;
            let resp = link.exchange(request).await?;
            Ok::<_, NodeError>((link, resp))
        };
        match glommio::timer::timeout(timeout, async { Ok(exchange.await) }).await {
            Ok(Ok((link, resp))) => {
                peer.idle.borrow_mut().push(link);
                Ok(resp)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unavailable(to, &format!("no reply within {timeout_ms} ms"))),
        }
    }

    fn peer(&self, to: SocketAddr) -> Rc<Peer> {
        let mut peers = self.peers.borrow_mut();
        let peer = peers.entry(to).or_insert_with(|| {
            Rc::new(Peer {
                idle: RefCell::new(Vec::new()),
                permits: Semaphore::new(LINKS_PER_PEER_MAX as u64),
            })
        });
        peer.clone()
    }

    /// Opens a link: connect, `Hello`, and the proof if the peer asks.
    async fn connect(&self, to: SocketAddr) -> Result<Link, NodeError> {
        let stream = TcpStream::connect(to)
            .await
            .map_err(|e| unavailable(to, &format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut link = Link { stream, next_id: 1 };
        let hello = w::Request::Hello(w::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            client_name: NODE_CLIENT_NAME.to_vec(),
        });
        match link.exchange(&hello).await? {
            w::Response::Hello(_) => Ok(link),
            w::Response::Challenge(c) => {
                let Some(secret) = &self.secret else {
                    return Err(unavailable(
                        to,
                        "it requires authentication; this node has no secret",
                    ));
                };
                let mut client_nonce = [0u8; wire::auth::NONCE_BYTES];
                getrandom::fill(&mut client_nonce)
                    .map_err(|e| NodeError::internal(format!("no randomness: {e}")))?;
                let auth = w::Request::Authenticate(w::Authenticate {
                    client_nonce: client_nonce.to_vec(),
                    proof: secret.client_proof(&c.nonce, &client_nonce),
                });
                match link.exchange(&auth).await? {
                    w::Response::Welcome(welcome)
                        if secret.verify_node(&c.nonce, &client_nonce, &welcome.proof) =>
                    {
                        Ok(link)
                    }
                    w::Response::Welcome(_) => {
                        Err(unavailable(to, "it could not prove the cluster's secret"))
                    }
                    other => Err(unavailable(
                        to,
                        &format!("authentication failed: {other:?}"),
                    )),
                }
            }
            other => Err(unavailable(
                to,
                &format!("unexpected reply to Hello: {other:?}"),
            )),
        }
    }
}

fn broken(e: std::io::Error) -> NodeError {
    NodeError::retriable(Status::Unavailable, format!("link broken: {e}"))
}

impl Link {
    /// Writes one request (under the next id).
    async fn send(&mut self, request: &w::Request) -> Result<(), NodeError> {
        let mut out = Vec::new();
        encode_frame(self.next_id, request, &mut out)
            .map_err(|e| NodeError::internal(e.to_string()))?;
        self.next_id += 1;
        self.stream.write_all(&out).await.map_err(broken)
    }

    /// Whether the peer closed this idle link (or sent on it what nobody
    /// asked for): one non-blocking peek.
    #[allow(unsafe_code)]
    fn closed(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let mut byte = 0u8;
        // SAFETY: the descriptor is this link's open socket, and the
        // buffer is one byte on the stack that outlives the call.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let again = || {
            let e = std::io::Error::last_os_error().raw_os_error();
            e == Some(libc::EAGAIN) || e == Some(libc::EWOULDBLOCK)
        };
        n >= 0 || !again()
    }

    /// Writes one request and reads its reply.
    async fn exchange(&mut self, request: &w::Request) -> Result<w::Response, NodeError> {
        let id = self.next_id;
        self.send(request).await?;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.stream.read_exact(&mut header).await.map_err(broken)?;
        let h = FrameHeader::parse(&header)
            .map_err(|e| {
                NodeError::retriable(Status::Unavailable, format!("bad frame from a peer: {e}"))
            })?
            .ok_or_else(|| NodeError::internal("short frame header".to_owned()))?;
        let mut body = vec![0u8; h.body_len];
        self.stream.read_exact(&mut body).await.map_err(broken)?;
        if h.request_id != id {
            return Err(NodeError::retriable(
                Status::Unavailable,
                format!("a peer answered request {} instead of {id}", h.request_id),
            ));
        }
        decode_response_owned(&body).map_err(|e| {
            NodeError::retriable(Status::Unavailable, format!("bad reply from a peer: {e}"))
        })
    }
}

/// Whether `request` changes nothing more when a peer gets it twice (a
/// read, or a merge of lattice state): what a link may send again after a
/// failure that leaves unknown whether the peer got it.
fn goes_twice(request: &w::Request) -> bool {
    use w::Request as R;
    matches!(
        request,
        R::Ping
            | R::Stats
            | R::ClusterStatus
            | R::Get(_)
            | R::GetLocal(_)
            | R::Subscribe(_)
            | R::Digest(_)
            | R::Merge(_)
            | R::CacheUpdate(_)
            | R::PutIfAbsent(_)
    )
}

fn unavailable(to: SocketAddr, why: &str) -> NodeError {
    NodeError::retriable(
        Status::Unavailable,
        format!("node {to} is unavailable: {why}"),
    )
}
