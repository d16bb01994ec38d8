//! A shard's client connections: accepting them ([`accept`]), the
//! session's opening ([`handshake`]), reads and writes ([`kv`]), and the
//! loop that serves one (here). HOT PATH: no logging per request, no
//! allocation beyond the values being copied in and out.
//!
//! The loop: read what the socket has; handle every complete frame in the
//! buffer, appending each immediate reply to one write buffer; wait once
//! for the durability of the batch's writes (group commit across the
//! batch); write all replies with one write. Then read again. Requests that
//! wait on something else — function calls, requests forwarded to another
//! shard — wait in the connection's [`Outbox`]: the loop polls them whenever
//! it waits for input and writes each reply as soon as it completes, so a
//! slow call never holds up the requests behind it. Requests read but
//! not yet answered are bounded (`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`):
//! at the bound the loop stops reading until replies complete.
//!
//! Deadlines: a new connection must send `Hello` within `hello_timeout_ms`;
//! a started frame must be finished within `partial_frame_timeout_ms`;
//! either closes the connection without an error frame. Idle connections
//! are reclaimed when the shard nears its connection limit.

mod accept;
mod handshake;
mod kv;
mod outbox;
pub(crate) mod resp;
mod route;

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kvs_core::Lsn;
use wire::auth::Role;
use wire::frame::{
    decode_request, encode_error_epoch, encode_frame_epoch, FrameError, FrameHeader,
    FRAME_HEADER_BYTES,
};
use wire::message::{self as w, ArchivedRequest};
use wire::Status;

pub(crate) use accept::{accept_loop, Protocol};

use crate::concern::WriteConcern;
use crate::convert::value_from_archived;
use crate::error::NodeError;
use crate::functions::Answer;
use crate::limits::{
    HELLO_FRAME_BODY_BYTES_MAX, LEAVE_GRACE_MS, LEAVE_HANDOFF_TIMEOUT_MS, READ_BUFFER_BYTES,
    REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
};
use crate::server::Server;
use crate::shard::{bump, Shard};
use crate::transport::error_response;
use crate::uring::Stream;
use outbox::Outbox;

/// What woke a waiting connection.
enum Input {
    /// This many bytes arrived.
    Bytes(usize),
    /// Replies are waiting in the outbox.
    Replies,
    /// The shard set or pulsed its shutdown event.
    Notice,
}

struct Conn {
    server: Rc<Server>,
    shard: Rc<Shard>,
    stream: Stream,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` holding data.
    filled: usize,
    wbuf: Vec<u8>,
    /// Whether the session is open: `Hello` answered (and, on a node that
    /// requires it, authenticated).
    greeted: bool,
    /// What this connection may do (`Admin` on an open node).
    role: Role,
    /// Another node's link (`Hello` from `squall-node`): its requests are
    /// never sent on to a third node.
    from_node: bool,
    /// The nonce of the challenge sent, until it is answered.
    challenge: Option<[u8; wire::auth::NONCE_BYTES]>,
    /// Set when the connection must close after the replies in hand.
    closing: Option<String>,
    peer_ip: Option<std::net::IpAddr>,
    /// Highest LSN this batch wrote.
    batch_lsn: Option<Lsn>,
    outbox: Outbox,
    opened: Instant,
    last_active: Instant,
    /// When the first byte of the unfinished frame at the start of `rbuf`
    /// arrived (its deadline counts from there).
    frame_started: Option<Instant>,
    /// Bytes of `rbuf` beyond `READ_BUFFER_BYTES`, counted in the node's
    /// read-buffer budget.
    grown: usize,
    /// The node's cluster epoch, read at each batch: every reply's header
    /// carries it.
    epoch: u64,
}

/// Stops the node once every shard has handed its keys over (a `Leave`),
/// or after `LEAVE_HANDOFF_TIMEOUT_MS`: what is left then stays in the data
/// directory, and goes to its owners when the node runs again. It left the
/// membership when the leave began (`Members::start_leaving`) and goes on
/// serving for `LEAVE_GRACE_MS` after the hand-off, forwarding what still
/// arrives, so that clients move on before it stops.
async fn leave_after_handoff(server: Rc<Server>) {
    let deadline = Instant::now() + Duration::from_millis(LEAVE_HANDOFF_TIMEOUT_MS);
    while !server.members.all_handed_off() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if server.members.all_handed_off() {
        log::info!("every shard has handed over its keys; leaving the cluster");
    } else {
        log::warn!(
            "the hand-off did not finish within {LEAVE_HANDOFF_TIMEOUT_MS} ms; leaving anyway \
             (the keys not handed over stay in the data directory)"
        );
    }
    glommio::timer::sleep(Duration::from_millis(LEAVE_GRACE_MS)).await;
    server.settings.stop.store(true, Ordering::SeqCst);
}

/// Serves one connection until the peer closes, a fatal protocol error, or
/// shutdown.
pub(crate) async fn serve(server: Rc<Server>, stream: Stream) {
    let peer_addr = stream.peer_addr();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
    let now = Instant::now();
    let mut c = Conn {
        shard: server.shard.clone(),
        server,
        stream,
        rbuf: vec![0; READ_BUFFER_BYTES],
        filled: 0,
        wbuf: Vec::with_capacity(READ_BUFFER_BYTES),
        greeted: false,
        role: Role::Admin,
        from_node: false,
        challenge: None,
        closing: None,
        peer_ip: peer_addr.map(|a| a.ip()),
        batch_lsn: None,
        outbox: Outbox::default(),
        opened: now,
        last_active: now,
        frame_started: None,
        grown: 0,
        epoch: 0,
    };
    let result = c.run().await;
    c.set_grown(0);
    if let Err(e) = result {
        log::debug!("{}: connection from {peer} closed: {e}", c.shard.id());
    }
}

impl Conn {
    async fn run(&mut self) -> Result<(), String> {
        loop {
            let (handled, fatal) = self.handle_buffered().await;
            if handled > 0 || fatal.is_some() {
                self.finish_batch().await?;
            }
            if let Some(e) = fatal {
                return Err(e);
            }
            if handled > 0 {
                continue; // more complete frames may be buffered
            }
            if self.server.shutdown.is_set() {
                // Answer what is running (calls have deadlines), then close.
                while self.outbox.in_flight() > 0 {
                    self.outbox.ready(&mut self.wbuf, self.epoch).await;
                    self.finish_batch().await?;
                }
                self.finish_batch().await?;
                return Err("node shutting down".into());
            }
            let room = self.outbox.in_flight() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX;
            match self.wait(room).await? {
                Input::Bytes(n) => {
                    self.last_active = Instant::now();
                    if self.filled == 0 {
                        self.frame_started = Some(self.last_active);
                    }
                    self.filled += n;
                }
                Input::Replies => self.finish_batch().await?,
                Input::Notice => {
                    if !self.server.shutdown.is_set() && self.reclaimable() {
                        return Err(
                            "idle connection reclaimed (the shard is near its connection limit)"
                                .into(),
                        );
                    }
                }
            }
        }
    }

    /// Whether this connection is idle enough to close for a new one.
    fn reclaimable(&self) -> bool {
        self.filled == 0
            && self.outbox.in_flight() == 0
            && self.last_active.elapsed()
                >= Duration::from_millis(self.server.settings.idle_reclaim_ms)
    }

    /// Counts `bytes` of grown read buffer against the node's budget.
    fn set_grown(&mut self, bytes: usize) -> bool {
        count_grown(&self.server.settings, &mut self.grown, bytes)
    }

    /// Waits for bytes (when `read`: reads at least one more), for replies
    /// in the outbox, or for a notice from the shard. A full buffer grows
    /// (doubling, up to the frame at its start) only as bytes actually
    /// arrive, so a header that merely announces a large frame pins no
    /// memory.
    async fn wait(&mut self, read: bool) -> Result<Input, String> {
        if read {
            let need = match FrameHeader::parse(&self.rbuf[..self.filled]) {
                Ok(Some(h)) => h.frame_len(),
                _ => FRAME_HEADER_BYTES,
            };
            if self.filled == self.rbuf.len() && self.rbuf.len() < need {
                let grown = (self.rbuf.len() * 2).min(need);
                // Exactly: the budget counts what is allocated.
                self.rbuf.reserve_exact(grown - self.rbuf.len());
                if !self.set_grown(self.rbuf.capacity() - READ_BUFFER_BYTES) {
                    let msg = format!(
                        "the node holds {} MiB of large frames being received (its limit); retry later",
                        self.server.settings.read_buffers_max_bytes >> 20
                    );
                    let id = request_id_of(&self.rbuf[..self.filled]);
                    encode_error_epoch(id, self.epoch, Status::Overloaded, &msg, &mut self.wbuf);
                    self.finish_batch().await?;
                    return Err(msg);
                }
                self.rbuf.resize(grown, 0);
            } else if self.filled == 0 && self.rbuf.len() > READ_BUFFER_BYTES {
                // A large frame has passed: give its memory back.
                self.rbuf = vec![0; READ_BUFFER_BYTES];
                self.set_grown(0);
            }
        }
        // A connection has a deadline until its Hello, and while a frame
        // it started is unfinished; idle connections may wait.
        let settings = &self.server.settings;
        let deadline = if !self.greeted {
            let at = self.opened + Duration::from_millis(settings.hello_timeout_ms);
            Some((
                at,
                format!("no Hello within {} ms", settings.hello_timeout_ms),
            ))
        } else if read && self.filled > 0 {
            let ms = settings.partial_frame_timeout_ms;
            let started = self.frame_started.unwrap_or_else(Instant::now);
            Some((
                started + Duration::from_millis(ms),
                format!("frame not completed within {ms} ms"),
            ))
        } else {
            None
        };
        let (filled, epoch) = (self.filled, self.epoch);
        let (stream, rbuf, outbox, wbuf, server) = (
            &mut self.stream,
            &mut self.rbuf,
            &mut self.outbox,
            &mut self.wbuf,
            &self.server,
        );
        let bytes = async {
            if !read {
                return futures_lite::future::pending().await;
            }
            match stream.read(&mut rbuf[filled..]).await {
                Ok(0) => Err("peer closed".to_owned()),
                Ok(n) => Ok(Input::Bytes(n)),
                Err(e) => Err(e.to_string()),
            }
        };
        let replies = async {
            outbox.ready(wbuf, epoch).await;
            Ok(Input::Replies)
        };
        let notice = async {
            server.shutdown.wait().await;
            Ok(Input::Notice)
        };
        let stalled = async {
            match deadline {
                None => futures_lite::future::pending().await,
                Some((at, why)) => {
                    glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                    Err(why)
                }
            }
        };
        futures_lite::future::or(
            bytes,
            futures_lite::future::or(replies, futures_lite::future::or(notice, stalled)),
        )
        .await
    }

    /// Handles the complete frames in the buffer. Returns how many, and a
    /// fatal error after which the connection must close.
    async fn handle_buffered(&mut self) -> (usize, Option<String>) {
        let mut off = 0;
        let mut handled = 0;
        let mut fatal = None;
        self.epoch = self.server.with_placement(|p| p.epoch());
        while handled + self.outbox.in_flight() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX {
            let header = match FrameHeader::parse(&self.rbuf[off..self.filled]) {
                Ok(Some(h)) if !self.greeted && h.body_len > HELLO_FRAME_BODY_BYTES_MAX => {
                    // Before the handshake only small frames: an unknown
                    // peer cannot make the node buffer megabytes.
                    let msg = format!(
                        "a frame before Hello may carry at most {HELLO_FRAME_BODY_BYTES_MAX} bytes, not {}",
                        h.body_len
                    );
                    self.error(h.request_id, Status::FrameTooLarge, &msg);
                    fatal = Some(msg);
                    break;
                }
                Ok(Some(h)) if self.filled - off >= h.frame_len() => h,
                Ok(_) => break,
                Err(e) => {
                    // The stream cannot be resynchronised after a bad length.
                    let id = request_id_of(&self.rbuf[off..self.filled]);
                    self.error(id, e.status(), &e.to_string());
                    fatal = Some(e.to_string());
                    break;
                }
            };
            let start = off + FRAME_HEADER_BYTES;
            let end = off + header.frame_len();
            if header.epoch != 0 && header.epoch != self.epoch {
                bump(&self.shard.stats().stale_epoch);
            }
            // Move the buffer out so the body can be borrowed while `self`
            // is mutated; moved back below (no copy).
            let rbuf = std::mem::take(&mut self.rbuf);
            self.handle_frame(header.request_id, &rbuf[start..end])
                .await;
            self.rbuf = rbuf;
            off = end;
            handled += 1;
            if let Some(why) = self.closing.take() {
                fatal = Some(why);
                break;
            }
        }
        if off > 0 {
            self.rbuf.copy_within(off..self.filled, 0);
            self.filled -= off;
            // What is left began arriving with the last read, at the latest.
            self.frame_started = (self.filled > 0).then_some(self.last_active);
        }
        (handled, fatal)
    }

    async fn handle_frame(&mut self, request_id: u64, body: &[u8]) {
        let req = match decode_request(body) {
            Ok(r) => r,
            Err(e) => return self.error(request_id, e.status(), &e.to_string()),
        };
        if !self.greeted {
            return self.handshake(request_id, req);
        }
        if let Some(need) = crate::auth::required_role(req) {
            if self.role < need {
                let msg = format!(
                    "this request needs the {need} role; this connection has {}",
                    self.role
                );
                if matches!(
                    req,
                    ArchivedRequest::RunChain(_) | ArchivedRequest::ChainDone(_)
                ) {
                    // Never answered, refused or not: a reply would be a
                    // stray frame on the sender's link.
                    bump(&self.shard.stats().errors);
                    return log::warn!("{}: a chain message dropped: {msg}", self.shard.id());
                }
                return self.error(request_id, Status::Forbidden, &msg);
            }
        }
        match req {
            // Again: the same topology.
            ArchivedRequest::Hello(_) => self.reply_topology(request_id),
            ArchivedRequest::Authenticate(_) => {
                self.error(request_id, Status::InvalidArgument, "already authenticated");
            }
            ArchivedRequest::Ping => self.reply(request_id, &w::Response::Pong),
            ArchivedRequest::Stats => {
                let mut stats = self.shard.snapshot_stats();
                if self.shard.id().0 == 0 {
                    let c = self.server.cache.stats();
                    stats.cache_keys = c.keys as u64;
                    stats.cache_bytes = c.bytes as u64;
                    stats.cache_hits = c.hits;
                    stats.cache_misses = c.misses;
                }
                let placement = self.server.members.placement();
                // A lone node is every key's primary: no scan of them all.
                if placement.solo() {
                    stats.primary_keys = stats.live_keys;
                    return self.reply(request_id, &w::Response::Stats(stats));
                }
                // A member counts its primaries in a scan in slices, and
                // answers when it ends.
                let shard = self.shard.clone();
                self.outbox.push(request_id, async move {
                    stats.primary_keys = shard.count_live(|k| placement.is_primary(k)).await;
                    w::Response::Stats(stats)
                });
            }
            ArchivedRequest::ClusterStatus => {
                let view = self.server.members.view();
                self.reply(request_id, &w::Response::Cluster(view));
            }
            ArchivedRequest::Leave => {
                let from = self
                    .peer_ip
                    .map_or_else(|| "?".to_owned(), |ip| ip.to_string());
                log::info!("leave requested (from {from}): handing every key over, then stopping");
                self.server.members.start_leaving();
                glommio::spawn_local(leave_after_handoff(self.server.clone())).detach();
                self.reply(request_id, &w::Response::Leaving);
            }
            ArchivedRequest::Get(get) => self.get(request_id, &get.keys, false, None).await,
            ArchivedRequest::GetLocal(get) => self.get(request_id, &get.keys, true, None).await,
            ArchivedRequest::Subscribe(sub) => self.subscribe(request_id, sub).await,
            ArchivedRequest::CacheUpdate(batch) => self.cache_update(request_id, batch),
            ArchivedRequest::Merge(batch) => self.merge(request_id, batch).await,
            ArchivedRequest::Digest(d) => self.digest(request_id, d).await,
            ArchivedRequest::Put(put) => {
                let value = value_from_archived(&put.value);
                self.write(request_id, put.key.as_slice(), Some(value), None)
                    .await;
            }
            ArchivedRequest::PutConcern(put) => {
                let Some(concern) = WriteConcern::from_code(put.concern) else {
                    let msg = format!("write concern {} is not 1, 2 or 3", put.concern);
                    return self.error(request_id, Status::InvalidArgument, &msg);
                };
                let value = value_from_archived(&put.value);
                self.write(request_id, put.key.as_slice(), Some(value), Some(concern))
                    .await;
            }
            ArchivedRequest::Delete(del) => {
                self.write(request_id, del.key.as_slice(), None, None).await;
            }
            ArchivedRequest::PutIfAbsent(put) => {
                let value = value_from_archived(&put.value);
                self.put_if_absent(request_id, put.key.as_slice(), value)
                    .await;
            }
            ArchivedRequest::Call(_)
            | ArchivedRequest::CallDag(_)
            | ArchivedRequest::RunStep(_)
            | ArchivedRequest::RunChain(_)
            | ArchivedRequest::ChainDone(_)
            | ArchivedRequest::RegisterDag(_)
            | ArchivedRequest::DeleteDag(_)
            | ArchivedRequest::ListDags
            | ArchivedRequest::RegisterFunction(_)
            | ArchivedRequest::DeleteFunction(_)
            | ArchivedRequest::ListFunctions => {
                let answer = self.server.functions.request(req, self.from_node);
                self.answer(request_id, answer).await;
            }
        }
    }

    fn reply(&mut self, request_id: u64, resp: &w::Response) {
        if let Err(e) = encode_frame_epoch(request_id, self.epoch, resp, &mut self.wbuf) {
            let e: FrameError = e;
            log::error!("{}: reply did not encode: {e}", self.shard.id());
            self.error(request_id, Status::Internal, "reply did not encode");
        }
    }

    fn error(&mut self, request_id: u64, status: Status, msg: &str) {
        bump(&self.shard.stats().errors);
        encode_error_epoch(request_id, self.epoch, status, msg, &mut self.wbuf);
    }

    fn fail(&mut self, request_id: u64, e: &NodeError) {
        self.error(request_id, e.status, &e.message);
    }

    /// Writes what the function platform answered.
    async fn answer(&mut self, request_id: u64, answer: Answer) {
        match answer {
            Answer::Now(Ok(resp)) => self.reply(request_id, &resp),
            Answer::Now(Err(e)) => self.fail(request_id, &e),
            Answer::Write(key, value) => {
                // A registration is answered once every member has it, so
                // that a call on any node finds what was just registered.
                let concern = crate::members::on_every_member(&key)
                    .then_some(crate::concern::WriteConcern::All);
                self.write(request_id, &key, value, concern).await;
            }
            Answer::Later(reply) => self.outbox.push(request_id, async move {
                reply.await.unwrap_or_else(|e| error_response(&e))
            }),
            Answer::Never(Some(work)) => {
                glommio::spawn_local(work).detach();
            }
            Answer::Never(None) => {}
        }
    }

    /// Waits for the batch's durability, then writes every reply ready now
    /// (the batch's and completed deferred ones) at once.
    async fn finish_batch(&mut self) -> Result<(), String> {
        if let Some(lsn) = self.batch_lsn.take() {
            if let Err(e) = self.shard.wait_durable(lsn).await {
                // Nothing of this batch is acknowledged: the client sees the
                // connection close and must treat its writes as unknown.
                return Err(format!("WAL failure: {e}"));
            }
        }
        if !self.wbuf.is_empty() {
            let res = self.stream.write_all(&self.wbuf).await;
            self.wbuf.clear();
            res.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Counts a connection's read buffer grown to `bytes` past
/// `READ_BUFFER_BYTES` (from `grown`) against the node's budget: false,
/// counting nothing, if the budget cannot hold it.
fn count_grown(settings: &crate::server::ConnSettings, grown: &mut usize, bytes: usize) -> bool {
    if bytes > *grown {
        let more = bytes - *grown;
        let held = settings
            .read_buffers_bytes
            .fetch_add(more, Ordering::Relaxed);
        if held + more > settings.read_buffers_max_bytes {
            settings
                .read_buffers_bytes
                .fetch_sub(more, Ordering::Relaxed);
            return false;
        }
    } else {
        (settings.read_buffers_bytes).fetch_sub(*grown - bytes, Ordering::Relaxed);
    }
    *grown = bytes;
    true
}

/// The request id of a frame whose header is complete (0 if not).
fn request_id_of(buf: &[u8]) -> u64 {
    // The id follows the length (see `wire::frame`).
    buf.get(4..12).map_or(0, |b| {
        let mut id = [0u8; 8];
        id.copy_from_slice(b);
        u64::from_le_bytes(id)
    })
}
