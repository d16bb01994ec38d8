//! A RESP2 connection (`squall node --resp-listen ADDR`): Redis clients
//! and tools (`redis-cli`, `redis-benchmark`) read and write the node's
//! LWW keys. The bytes are `wire::resp`'s; this module maps its commands
//! onto the same partitions, routes and limits as the native protocol.
//!
//! The loop is the native one's (`mod.rs`): read what the socket has;
//! handle every complete command in the buffer; wait once for the
//! durability of the batch's writes; write every reply with one write.
//! RESP has no request ids, so replies leave in the order of their
//! commands: a reply that waits — a key another shard or node owns, a write
//! other copies must acknowledge — holds back those after it
//! ([`Ordered`]). Commands read but not answered are bounded
//! (`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`): at the bound the loop stops
//! reading until replies complete.
//!
//! Commands:
//! - `GET` answers an LWW value's bytes, nil for no key, and Redis's
//!   `WRONGTYPE` for a key holding another lattice; a key this shard
//!   owns is encoded straight from the partition into the send buffer.
//! - `MGET` answers nil for a key holding another lattice, as Redis does
//!   for a non-string. `EXISTS` counts live keys of any lattice.
//! - `SET` and `MSET` store LWW values stamped by the owner's clock,
//!   acknowledged under the node's `--write-concern`. `MSET` is not
//!   atomic: each pair is written at its owner. `DEL` counts the keys
//!   that held a live value.
//!
//! Errors: `-CODE sentence`, with `CODE` Redis's own where it has one
//! (`WRONGTYPE`, `NOAUTH`, `NOPERM`, `WRONGPASS`) and otherwise the wire
//! status's name in capitals (`-VALUE_TOO_LARGE …`, `-OVERLOADED …`). A
//! malformed stream is answered `-ERR Protocol error: …` and closed.
//!
//! Authentication: on a node with `--auth-token-file`, `AUTH secret`
//! (sent in the clear: for loopback and trusted networks) grants that
//! token's role; before it every command but `AUTH` and `QUIT` answers
//! `NOAUTH`, and the connection must authenticate within
//! `hello_timeout_ms`. Failed attempts count in the same per-address rate
//! limit as the native handshake's. Writes need the write role (keys
//! holding code: admin), as natively.
//!
//! Deadlines: a command whose first bytes arrived must be complete within
//! `partial_frame_timeout_ms`; idle connections are reclaimed near the
//! shard's connection limit, which RESP connections share with native ones.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kvs_core::lattice::{Lww, Timestamp, ValueRef};
use kvs_core::partition::check_key;
use kvs_core::{LatticeKind, Lsn, Value};
use wire::auth::Role;
use wire::message as w;
use wire::resp::{self, reply, Args, Command, RESP_COMMAND_BYTES_MAX};
use wire::Status;

use super::route::{self, Routed};
use super::{count_grown, Input};
use crate::error::NodeError;
use crate::limits::{READ_BUFFER_BYTES, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX};
use crate::server::Server;
use crate::shard::bump;
use crate::uring::Stream;

/// Serves one RESP connection until the peer closes or quits, a protocol
/// error, or shutdown.
pub(crate) async fn serve(server: Rc<Server>, stream: Stream) {
    let peer_ip = stream.peer_addr().map(|a| a.ip());
    let now = Instant::now();
    let open = server.settings.auth.is_none();
    let mut c = RespConn {
        server,
        stream,
        rbuf: vec![0; READ_BUFFER_BYTES],
        filled: 0,
        wbuf: Vec::with_capacity(READ_BUFFER_BYTES),
        args: Vec::new(),
        role: open.then_some(Role::Admin),
        peer_ip,
        batch_lsn: None,
        held: Ordered::default(),
        quit: false,
        opened: now,
        last_active: now,
        started: None,
        grown: 0,
    };
    let result = c.run().await;
    count_grown(&c.server.settings, &mut c.grown, 0);
    if let Err(e) = result {
        log::debug!("{}: RESP connection closed: {e}", c.server.shard.id());
    }
}

struct RespConn {
    server: Rc<Server>,
    stream: Stream,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` holding data.
    filled: usize,
    wbuf: Vec<u8>,
    /// The arguments of the command being handled, as ranges of `rbuf`
    /// (kept: a command allocates no list of its own).
    args: Vec<Range<usize>>,
    /// What this connection may do; `None` until `AUTH` on a node that
    /// requires it.
    role: Option<Role>,
    peer_ip: Option<IpAddr>,
    /// Highest LSN this batch wrote.
    batch_lsn: Option<Lsn>,
    held: Ordered,
    /// `QUIT`: close once the replies in hand are out.
    quit: bool,
    opened: Instant,
    last_active: Instant,
    /// When the first byte of the unfinished command at the start of
    /// `rbuf` arrived.
    started: Option<Instant>,
    /// Bytes of `rbuf` beyond `READ_BUFFER_BYTES`, counted in the node's
    /// read-buffer budget.
    grown: usize,
}

impl RespConn {
    async fn run(&mut self) -> Result<(), String> {
        loop {
            let (handled, fatal) = self.handle_buffered().await;
            if handled > 0 || fatal.is_some() {
                self.flush().await?;
            }
            if let Some(e) = fatal {
                return Err(e);
            }
            if self.quit || self.server.shutdown.is_set() {
                // Answer what is in hand, then close.
                while self.held.len() > 0 {
                    self.held.ready(&mut self.wbuf).await;
                    self.flush().await?;
                }
                return match self.quit {
                    true => Ok(()),
                    false => Err("node shutting down".into()),
                };
            }
            if handled > 0 {
                continue; // more complete commands may be buffered
            }
            let room = self.held.len() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX;
            match self.wait(room).await? {
                Input::Bytes(n) => {
                    self.last_active = Instant::now();
                    if self.filled == 0 {
                        self.started = Some(self.last_active);
                    }
                    self.filled += n;
                }
                Input::Replies => self.flush().await?,
                Input::Notice => {
                    let idle = Duration::from_millis(self.server.settings.idle_reclaim_ms);
                    if !self.server.shutdown.is_set()
                        && self.filled == 0
                        && self.held.len() == 0
                        && self.last_active.elapsed() >= idle
                    {
                        return Err(
                            "idle connection reclaimed (the shard is near its connection limit)"
                                .into(),
                        );
                    }
                }
            }
        }
    }

    /// Handles the complete commands in the buffer. Returns how many, and
    /// a fatal error after which the connection must close.
    async fn handle_buffered(&mut self) -> (usize, Option<String>) {
        let (mut off, mut handled, mut fatal) = (0, 0, None);
        while !self.quit && handled + self.held.len() < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX {
            match resp::parse(&self.rbuf[off..self.filled], &mut self.args) {
                Ok(None) => break,
                Ok(Some(len)) => {
                    // Moved out so the command can borrow them while `self`
                    // is mutated; moved back below (no copy).
                    let (rbuf, args) = (
                        std::mem::take(&mut self.rbuf),
                        std::mem::take(&mut self.args),
                    );
                    if !args.is_empty() {
                        self.command(&rbuf[off..off + len], &args).await;
                    }
                    (self.rbuf, self.args) = (rbuf, args);
                    off += len;
                    handled += 1;
                }
                Err(e) => {
                    bump(&self.server.shard.stats().errors);
                    reply::error(self.out(), &format!("ERR {e}"));
                    fatal = Some(e.to_string());
                    break;
                }
            }
        }
        if off > 0 {
            self.rbuf.copy_within(off..self.filled, 0);
            self.filled -= off;
            self.started = (self.filled > 0).then_some(self.last_active);
        }
        (handled, fatal)
    }

    async fn command(&mut self, buf: &[u8], args: &[Range<usize>]) {
        let cmd = match Command::from_args(buf, args) {
            Ok(c) => c,
            Err(msg) => return self.error(&msg),
        };
        let role = match (self.role, cmd) {
            (_, Command::Auth(secret)) => return self.auth(secret),
            (_, Command::Quit) => {
                self.quit = true;
                return reply::simple(self.out(), "OK");
            }
            (None, _) => return self.error("NOAUTH Authentication required."),
            (Some(role), _) => role,
        };
        if let Some(e) = bad_key(&cmd) {
            return self.error(&format!("{} {}", error_code(e.status), e.message));
        }
        match cmd {
            Command::Get(key) => self.get(key).await,
            Command::MGet(keys) => self.read(keys, encode_mget).await,
            Command::Exists(keys) => self.read(keys, encode_exists).await,
            Command::Set(key, value) => {
                if self.may_write(role, [key].into_iter()) {
                    let routed = self.put(key, Some(value)).await;
                    self.answer(vec![routed], encode_ok);
                }
            }
            Command::MSet(pairs) => {
                if self.may_write(role, pairs.pairs().map(|(k, _)| k)) {
                    let mut parts = Vec::with_capacity(pairs.len() / 2);
                    for (key, value) in pairs.pairs() {
                        parts.push(self.put(key, Some(value)).await);
                    }
                    self.answer(parts, encode_ok);
                }
            }
            Command::Del(keys) => {
                if self.may_write(role, keys.iter()) {
                    let mut parts = Vec::with_capacity(keys.len());
                    for key in keys.iter() {
                        parts.push(self.put(key, None).await);
                    }
                    self.answer(parts, encode_deleted);
                }
            }
            Command::Ping(None) => reply::simple(self.out(), "PONG"),
            Command::Ping(Some(msg)) | Command::Echo(msg) => reply::bulk(self.out(), Some(msg)),
            Command::Info => {
                let info = self.info();
                reply::bulk(self.out(), Some(info.as_bytes()));
            }
            Command::Command => reply::array(self.out(), 0),
            Command::ConfigGet(name) => {
                // What `redis-benchmark` asks at start; nothing else is
                // set (an empty list, as Redis answers an unknown name).
                let value: Option<&[u8]> = match name.to_ascii_lowercase().as_slice() {
                    b"save" => Some(b""),
                    b"appendonly" => Some(b"yes"), // every write goes to the WAL
                    _ => None,
                };
                let out = self.out();
                match value {
                    Some(v) => {
                        reply::array(out, 2);
                        reply::bulk(out, Some(name));
                        reply::bulk(out, Some(v));
                    }
                    None => reply::array(out, 0),
                }
            }
            Command::Select => reply::simple(self.out(), "OK"),
            Command::Auth(_) | Command::Quit => unreachable!("answered above"),
        }
    }

    /// `AUTH`: the role of the token whose secret this is.
    fn auth(&mut self, secret: &[u8]) {
        let Some(auth) = self.server.settings.auth.clone() else {
            return self.error(
                "ERR AUTH called without any password configured: this node runs without \
                 --auth-token-file",
            );
        };
        if let Some(wait) = auth.blocked(self.peer_ip) {
            let msg = format!(
                "ERR too many failed authentications from this address; try again in {} s",
                wait.as_secs() + 1
            );
            return self.error(&msg);
        }
        match auth.verify_plain(secret) {
            Some(role) => {
                self.role = Some(role);
                reply::simple(self.out(), "OK");
            }
            None => {
                auth.record_failure(self.peer_ip);
                log::warn!(
                    "{}: failed RESP authentication from {}",
                    self.server.shard.id(),
                    self.peer_ip.map_or("?".to_owned(), |ip| ip.to_string())
                );
                self.error("WRONGPASS the secret matches no token this node accepts");
            }
        }
    }

    /// Whether `role` may write `keys`; if not, the refusal is the reply.
    fn may_write<'k>(&mut self, role: Role, keys: impl Iterator<Item = &'k [u8]>) -> bool {
        let Some(need) = keys
            .map(crate::auth::role_to_write)
            .find(|need| role < *need)
        else {
            return true;
        };
        let msg = format!("NOPERM this command needs the {need} role; this connection has {role}");
        self.error(&msg);
        false
    }

    /// `GET`: a key of this shard is encoded from the partition in place
    /// (no allocation); another owner's answer is held in order.
    async fn get(&mut self, key: &[u8]) {
        let shard = self.server.shard.clone();
        if route::remote_owner(&self.server, key).is_none() && shard.owner(key) == shard.id() {
            let out = self.held.out(&mut self.wbuf);
            return shard.read_with(key, |v| encode_get(out, v.as_ref()));
        }
        match route::read(&self.server, &[key], false, true).await {
            Routed::Later(reply) => self.held.push(async move {
                let mut out = Vec::new();
                match reply.await {
                    w::Response::Values(vs) => encode_get(&mut out, vs[0].as_ref()),
                    other => encode_error_response(&mut out, &other),
                }
                out
            }),
            other => self.answer(vec![other], |out, r| match r {
                [w::Response::Values(vs)] => encode_get(out, vs[0].as_ref()),
                [other] => encode_error_response(out, other),
                _ => unreachable!("one answer"),
            }),
        }
    }

    /// Reads `keys` at their owners; `encode` makes the reply.
    async fn read(&mut self, keys: Args<'_>, encode: Encode) {
        let keys: Vec<&[u8]> = keys.iter().collect();
        let routed = route::read(&self.server, &keys, false, true).await;
        self.answer(vec![routed], encode);
    }

    /// A put of an LWW value (stamped by the owner) or a delete.
    async fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Routed {
        let value = value.map(|v| {
            let unstamped = Timestamp {
                clock: 0,
                writer: 0,
            };
            Value::Lww(Lww::new(unstamped, v.to_vec()))
        });
        route::write(&self.server, key, value, None, true).await
    }

    /// The reply `encode` makes of `parts`' answers: now when all are
    /// here, else in order once the last one is.
    fn answer(&mut self, parts: Vec<Routed>, encode: Encode) {
        for p in &parts {
            if let Routed::Now(_, Some(lsn)) = p {
                self.batch_lsn = Some(*lsn);
            }
        }
        if parts.iter().all(|p| matches!(p, Routed::Now(..))) {
            let answers: Vec<w::Response> = parts.into_iter().map(answered_now).collect();
            return encode(self.held.out(&mut self.wbuf), &answers);
        }
        self.held.push(async move {
            let mut answers = Vec::with_capacity(parts.len());
            for p in parts {
                answers.push(match p {
                    Routed::Later(reply) => reply.await,
                    now => answered_now(now),
                });
            }
            let mut out = Vec::new();
            encode(&mut out, &answers);
            out
        });
    }

    /// Where the next reply goes: the send buffer, or behind a reply that
    /// waits.
    fn out(&mut self) -> &mut Vec<u8> {
        self.held.out(&mut self.wbuf)
    }

    fn error(&mut self, msg: &str) {
        bump(&self.server.shard.stats().errors);
        reply::error(self.out(), msg);
    }

    /// `INFO`: what a Redis client looks for, and this shard's place.
    fn info(&self) -> String {
        let shard = &self.server.shard;
        format!(
            "# Server\r\nredis_version:7.0.0\r\nsquall_version:{}\r\nredis_mode:standalone\r\n\
             process_id:{}\r\nsquall_shard:{}\r\nsquall_shards:{}\r\n\r\n# Clients\r\n\
             connected_clients:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            shard.id().0,
            shard.siblings().len(),
            self.server.open_connections.get(),
        )
    }

    /// Waits for the batch's durability, then writes every reply ready now.
    async fn flush(&mut self) -> Result<(), String> {
        if let Some(lsn) = self.batch_lsn.take() {
            if let Err(e) = self.server.shard.wait_durable(lsn).await {
                // Nothing of this batch is acknowledged: the client sees the
                // connection close and must treat its writes as unknown.
                return Err(format!("WAL failure: {e}"));
            }
        }
        self.held.take_done(&mut self.wbuf);
        if !self.wbuf.is_empty() {
            let res = self.stream.write_all(&self.wbuf).await;
            self.wbuf.clear();
            res.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Waits for bytes (when `read`), for held replies, or for a notice
    /// from the shard. A full buffer grows (doubling, up to the largest
    /// command) only as bytes arrive.
    async fn wait(&mut self, read: bool) -> Result<Input, String> {
        if read && self.filled == self.rbuf.len() {
            if self.rbuf.len() >= RESP_COMMAND_BYTES_MAX {
                // `parse` refuses a longer command before this.
                return Err("command larger than the limit".into());
            }
            let grown = (self.rbuf.len() * 2).min(RESP_COMMAND_BYTES_MAX);
            self.rbuf.reserve_exact(grown - self.rbuf.len());
            let bytes = self.rbuf.capacity() - READ_BUFFER_BYTES;
            if !count_grown(&self.server.settings, &mut self.grown, bytes) {
                let msg = format!(
                    "OVERLOADED the node holds {} MiB of large commands being received (its \
                     limit); retry later",
                    self.server.settings.read_buffers_max_bytes >> 20
                );
                self.error(&msg);
                self.flush().await?;
                return Err(msg);
            }
            self.rbuf.resize(grown, 0);
        } else if read && self.filled == 0 && self.rbuf.len() > READ_BUFFER_BYTES {
            // A large command has passed: give its memory back.
            self.rbuf = vec![0; READ_BUFFER_BYTES];
            count_grown(&self.server.settings, &mut self.grown, 0);
        }
        let settings = &self.server.settings;
        let deadline = if self.role.is_none() {
            let ms = settings.hello_timeout_ms;
            Some((
                self.opened + Duration::from_millis(ms),
                format!("no AUTH within {ms} ms"),
            ))
        } else if read && self.filled > 0 {
            let ms = settings.partial_frame_timeout_ms;
            let started = self.started.unwrap_or_else(Instant::now);
            Some((
                started + Duration::from_millis(ms),
                format!("command not completed within {ms} ms"),
            ))
        } else {
            None
        };
        let filled = self.filled;
        let (stream, rbuf, held, wbuf, server) = (
            &mut self.stream,
            &mut self.rbuf,
            &mut self.held,
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
            held.ready(wbuf).await;
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
}

/// How a command's answers become its reply.
type Encode = fn(&mut Vec<u8>, &[w::Response]);

fn answered_now(routed: Routed) -> w::Response {
    match routed {
        Routed::Now(resp, _) => resp,
        // RESP connections always forward.
        Routed::Later(_) | Routed::WrongOwner(..) => unreachable!("not answered now"),
    }
}

/// `GET`'s reply from a stored value.
fn encode_get<V: Stored>(out: &mut Vec<u8>, v: Option<&V>) {
    match v.map(Stored::lww) {
        None => reply::bulk(out, None),
        Some(Ok(bytes)) => reply::bulk(out, Some(bytes)),
        Some(Err(kind)) => reply::error(
            out,
            &format!(
                "WRONGTYPE Operation against a key holding the wrong kind of value (a {kind} \
                 lattice: read it with squall kv get)"
            ),
        ),
    }
}

fn encode_mget(out: &mut Vec<u8>, answers: &[w::Response]) {
    match answers {
        [w::Response::Values(vs)] => {
            reply::array(out, vs.len());
            for v in vs {
                reply::bulk(out, v.as_ref().and_then(|v| v.lww().ok()));
            }
        }
        [other] => encode_error_response(out, other),
        _ => unreachable!("one answer"),
    }
}

fn encode_exists(out: &mut Vec<u8>, answers: &[w::Response]) {
    match answers {
        [w::Response::Values(vs)] => reply::integer(out, vs.iter().flatten().count() as i64),
        [other] => encode_error_response(out, other),
        _ => unreachable!("one answer"),
    }
}

/// `+OK` when every write was stored; else the first error.
fn encode_ok(out: &mut Vec<u8>, answers: &[w::Response]) {
    match answers.iter().find(|a| !matches!(a, w::Response::Stored)) {
        None => reply::simple(out, "OK"),
        Some(other) => encode_error_response(out, other),
    }
}

/// How many keys held a live value; the first error if a delete failed.
fn encode_deleted(out: &mut Vec<u8>, answers: &[w::Response]) {
    let mut removed = 0;
    for a in answers {
        match a {
            w::Response::Deleted(d) => removed += i64::from(d.removed),
            other => return encode_error_response(out, other),
        }
    }
    reply::integer(out, removed);
}

/// The first key of `cmd` the store would refuse (empty, too long).
fn bad_key(cmd: &Command<'_>) -> Option<NodeError> {
    let check = |k: &[u8]| check_key(k).err().map(NodeError::from);
    match cmd {
        Command::Get(k) | Command::Set(k, _) => check(k),
        Command::Del(keys) | Command::Exists(keys) | Command::MGet(keys) => {
            keys.iter().find_map(check)
        }
        Command::MSet(pairs) => pairs.pairs().find_map(|(k, _)| check(k)),
        _ => None,
    }
}

/// A status as the first word of a RESP error: Redis's own code where it
/// has one, else the status's name in capitals.
fn error_code(status: Status) -> String {
    match status {
        Status::TypeMismatch => "WRONGTYPE".to_owned(),
        Status::Forbidden => "NOPERM".to_owned(),
        Status::Unauthenticated => "NOAUTH".to_owned(),
        s => s.name().to_ascii_uppercase(),
    }
}

/// A native answer that is not the one expected, as a RESP error.
fn encode_error_response(out: &mut Vec<u8>, resp: &w::Response) {
    let w::Response::Error(e) = resp else {
        return reply::error(out, &format!("INTERNAL unexpected answer {resp:?}"));
    };
    let code =
        Status::from_code(e.code).map_or_else(|| format!("ERR status {}", e.code), error_code);
    reply::error(
        out,
        &format!("{code} {}", String::from_utf8_lossy(&e.message)),
    );
}

/// A stored value, in the partition or on the wire: its bytes if it is an
/// LWW value, else its lattice's name.
trait Stored {
    fn lww(&self) -> Result<&[u8], &'static str>;
}

impl Stored for ValueRef<'_> {
    fn lww(&self) -> Result<&[u8], &'static str> {
        match self {
            ValueRef::Lww(_, bytes) => Ok(bytes),
            ValueRef::Other(v) => Err(v.kind().name()),
        }
    }
}

impl Stored for w::Value {
    fn lww(&self) -> Result<&[u8], &'static str> {
        match self {
            w::Value::Lww(l) => Ok(&l.bytes),
            w::Value::Set(_) => Err(LatticeKind::Set.name()),
            w::Value::OrderedSet(_) => Err(LatticeKind::OrderedSet.name()),
            w::Value::Max(_) => Err(LatticeKind::Max.name()),
            w::Value::Priority(_) => Err(LatticeKind::Priority.name()),
            w::Value::SingleKeyCausal(_) => Err(LatticeKind::SingleKeyCausal.name()),
            w::Value::MultiKeyCausal(_) => Err(LatticeKind::MultiKeyCausal.name()),
        }
    }
}

/// Replies in command order. While none waits, replies go straight into
/// the send buffer; once one waits, those after it queue behind it.
#[derive(Default)]
struct Ordered {
    slots: VecDeque<Slot>,
    /// Replies held (a `Done` slot may hold several).
    replies: usize,
}

enum Slot {
    /// Replies encoded, and how many.
    Done(Vec<u8>, usize),
    Waiting(Pin<Box<dyn Future<Output = Vec<u8>>>>),
}

impl Ordered {
    /// Replies held back.
    fn len(&self) -> usize {
        self.replies
    }

    /// Where the next reply goes (one reply: the caller encodes one).
    fn out<'a>(&'a mut self, wbuf: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
        if self.slots.is_empty() {
            return wbuf;
        }
        self.replies += 1;
        if !matches!(self.slots.back(), Some(Slot::Done(..))) {
            self.slots.push_back(Slot::Done(Vec::new(), 0));
        }
        match self.slots.back_mut() {
            Some(Slot::Done(buf, n)) => {
                *n += 1;
                buf
            }
            _ => unreachable!("a done slot was just ensured"),
        }
    }

    fn push(&mut self, reply: impl Future<Output = Vec<u8>> + 'static) {
        self.replies += 1;
        self.slots.push_back(Slot::Waiting(Box::pin(reply)));
    }

    /// Moves the replies done at the front into `wbuf`.
    fn take_done(&mut self, wbuf: &mut Vec<u8>) -> bool {
        let mut moved = false;
        while let Some(Slot::Done(..)) = self.slots.front() {
            if let Some(Slot::Done(buf, n)) = self.slots.pop_front() {
                wbuf.extend_from_slice(&buf);
                self.replies -= n;
                moved = true;
            }
        }
        moved
    }

    /// Completes once replies at the front are done and moved into `wbuf`.
    /// Every waiting reply is polled (each makes progress, whatever its
    /// place).
    async fn ready(&mut self, wbuf: &mut Vec<u8>) {
        futures_lite::future::poll_fn(|cx| {
            for slot in &mut self.slots {
                if let Slot::Waiting(reply) = slot {
                    if let Poll::Ready(bytes) = reply.as_mut().poll(cx) {
                        *slot = Slot::Done(bytes, 1);
                    }
                }
            }
            match self.take_done(wbuf) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await;
    }
}
