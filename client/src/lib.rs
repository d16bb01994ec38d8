//! # client — talk to a Squall node or cluster
//!
//! [`Client::connect`] dials any shard of any node, performs the `Hello`
//! handshake and learns the topology (every shard's address, the ring's
//! token table, and the cluster's members). From then on each key is sent
//! straight to a node that holds it and to the shard there that owns it,
//! over one connection per shard, opened on first use.
//!
//! * **Routing across nodes**: every request carries the epoch of the
//!   client's view; every reply the answering node's. A reply from a node
//!   with another epoch makes the client ask for the view again before its
//!   next batch, so after a join or a leave each client sends a key to the
//!   wrong node at most once per epoch (the node forwards it once).
//! * **Failover**: a batch of reads and writes that fails on one node's
//!   connection (refused, broken, timed out) is sent again, once, with
//!   that node avoided: its keys go to their next replica.
//!
//! * **Pipelining**: [`Client::execute`] writes a whole batch of requests
//!   (one write per shard) before reading any reply, and matches replies by
//!   request id.
//! * **Timeouts**: every call has a deadline ([`ClientOptions::timeout`]); a
//!   call that misses it fails with [`ClientError::Timeout`] and the
//!   client's connections are dropped (late replies cannot be confused with
//!   new ones), to be reopened by the next call that needs them; so does a
//!   batch that fails for any reason but the node's error replies.
//!
//! ## Modules
//! This file is the public API: [`Client`] and its options and errors.
//! Behind it:
//! * `route` — the connected node's topology and ring: which of its
//!   shards a key (or a function's or DAG's registry key) goes to;
//! * `placement` — the cluster: which node a key goes to, the epoch, the
//!   nodes avoided;
//! * `pool` — the connection per shard of each node, opened on first use,
//!   and pipelined batches over them (request ids, frames in flight, the
//!   deadline, dropping connections after a failed batch);
//! * `conn` — one connection: the handshake (with authentication) and its
//!   frames;
//! * [`pipeline`] — the prediction pipeline's DAG and calls (public; no
//!   relation to request pipelining).
//!
//! ## Boundary
//! Depends only on `wire` and `kvs-core` (for the cluster ring's
//! specification) among Squall crates, plus tokio for sockets and timers. Everything here is what any other-language client would do from
//! `docs/wire-protocol.md`.
//!
//! ## Example
//! ```no_run
//! # async fn demo() -> Result<(), client::ClientError> {
//! use client::{Client, ClientOptions};
//! use wire::message::{LwwValue, Value};
//!
//! let mut c = Client::connect("127.0.0.1:7400", ClientOptions::default()).await?;
//! c.put(b"k", Value::Lww(LwwValue { timestamp: 0, writer: 0, bytes: b"v".to_vec() })).await?;
//! assert!(c.get(b"k").await?.is_some());
//! # Ok(()) }
//! ```

mod conn;
pub mod pipeline;
mod placement;
mod pool;
mod route;

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use thiserror::Error;
use wire::message::{
    Arg, ClusterView, DagCall, DagDef, DagName, FnCall, FunctionBody, FunctionDef, FunctionName,
    KvDelete, KvGet, KvPut, KvPutConcern, LwwValue, Request, Response, ShardStats, SourceArgs,
    Topology, Value, WasmBody,
};
use wire::Status;

use crate::conn::dial;
use crate::placement::Placement;
use crate::pool::Pool;
use crate::route::Route;

pub use crate::placement::Dest;

pub use wire;

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of one call (connect, handshake, or a whole pipelined batch).
    pub timeout: Duration,
    /// Sent in `Hello`, shown in the node's logs.
    pub client_name: String,
    /// The secret to prove to a node that requires authentication
    /// (`wire::auth`); never sent, and redacted from `Debug`.
    pub token: Option<wire::auth::Secret>,
    /// Send each key to a node that holds it (on by default). Off: every
    /// request goes to the node connected to, which forwards what it does
    /// not hold (one more hop), and requests carry epoch 0.
    pub route_across_nodes: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            client_name: "squall-client".to_owned(),
            token: None,
            route_across_nodes: true,
        }
    }
}

/// The secret a client presents: the first line of `file` when given
/// (`wire::auth::parse_client_secret`), else the `SQUALL_TOKEN` environment
/// variable, else none (for open nodes).
pub fn load_token(file: Option<&std::path::Path>) -> Result<Option<wire::auth::Secret>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        return wire::auth::parse_client_secret(&text)
            .map(Some)
            .map_err(|e| format!("in the token file {}: {e}", path.display()));
    }
    match std::env::var("SQUALL_TOKEN") {
        Ok(t) if !t.trim().is_empty() => wire::auth::Secret::new(t.trim().as_bytes())
            .map(Some)
            .map_err(|e| format!("SQUALL_TOKEN: {e}")),
        _ => Ok(None),
    }
}

/// Why a call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no reply from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("node refused the request: {status}: {message}")]
    Server { status: Status, message: String },
    #[error("node sent error code {code} this client does not know: {message}")]
    UnknownStatus { code: u16, message: String },
    #[error("protocol error from {addr}: {message}")]
    Protocol { addr: String, message: String },
    /// Refused by this client before anything was sent; says why.
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The node's status, for errors the node reported.
    #[must_use]
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub(crate) type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The least time between two requests for the cluster's view (after a
/// reply with another epoch): while nodes disagree, a busy client asks
/// every this often, not at every batch.
pub const REFRESH_INTERVAL_MS_MIN: u64 = 100;

/// One request of a pipelined batch.
#[derive(Clone, Debug)]
pub struct Op {
    /// Where to send it (see [`Client::dest_for`]).
    pub dest: Dest,
    pub request: Request,
}

/// How the client's routing went (counters since it connected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// Batches with a reply from a node whose epoch was not the client's.
    pub stale_batches: u64,
    /// Times the client asked for the cluster's view again.
    pub refreshes: u64,
    /// Batches sent again with a failed node avoided.
    pub failovers: u64,
}

/// A connection to a node, and through it to its cluster.
#[derive(Debug)]
pub struct Client {
    opts: ClientOptions,
    /// The connected node's shards.
    route: Route,
    placement: Placement,
    pool: Pool,
    /// A reply said the view has moved on.
    stale: bool,
    last_refresh: Option<Instant>,
    routing: RoutingStats,
}

impl Client {
    /// Dials `addr`, performs the handshake and learns the topology.
    pub async fn connect(addr: &str, opts: ClientOptions) -> Result<Client> {
        let (conn, topology) = dial(addr, &opts).await?;
        let route = Route::new(addr, topology)?;
        let topology = route.topology();
        let placement = Placement::new(
            &topology.cluster,
            topology.ring.vnodes_per_shard,
            !opts.route_across_nodes,
        );
        let pool = Pool::new(placement.home(), topology, conn);
        Ok(Client {
            opts,
            route,
            placement,
            pool,
            stale: false,
            last_refresh: None,
            routing: RoutingStats::default(),
        })
    }

    /// What the connected node said at handshake.
    #[must_use]
    pub fn topology(&self) -> &Topology {
        self.route.topology()
    }

    /// The shard of the connected node that owns `key`.
    #[must_use]
    pub fn shard_for(&self, key: &[u8]) -> u16 {
        self.route.shard_for(key)
    }

    /// Where a request for `key` goes: a node holding it (see the module
    /// doc), and the shard there that owns it.
    #[must_use]
    pub fn dest_for(&self, key: &[u8]) -> Dest {
        let node = self.placement.node_for(key);
        if node == self.placement.home() {
            return self.home_dest(self.route.shard_for(key));
        }
        let shard = self.placement.shard_on(node, key).unwrap_or(0);
        match self.pool.shards_of(node) {
            Some(n) if usize::from(shard) >= n => Dest { node, shard: 0 },
            _ => Dest { node, shard },
        }
    }

    /// Shard `shard` of the connected node.
    #[must_use]
    pub fn home_dest(&self, shard: u16) -> Dest {
        Dest {
            node: self.placement.home(),
            shard,
        }
    }

    /// The epoch of the client's view of the cluster.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.placement.epoch()
    }

    /// How routing went so far.
    #[must_use]
    pub fn routing_stats(&self) -> RoutingStats {
        self.routing
    }

    /// Reads one key.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        let mut values = self.get_many(&[key]).await?;
        Ok(values.pop().flatten())
    }

    /// Reads `key` from the copy the connected node holds itself (`GetLocal`:
    /// never routed to another node of its cluster); `None` if that node
    /// holds none.
    pub async fn get_local(&mut self, key: &[u8]) -> Result<Option<Value>> {
        let request = Request::GetLocal(KvGet {
            keys: vec![key.to_vec()],
        });
        match self.call(self.shard_for(key), request).await? {
            Response::Values(mut v) if v.len() == 1 => Ok(v.pop().flatten()),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads several keys (each from its owning shard, pipelined); values
    /// come back in the order of `keys`.
    pub async fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>> {
        let mut by_dest: HashMap<Dest, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            by_dest.entry(self.dest_for(k)).or_default().push(i);
        }
        let groups: Vec<(Dest, Vec<usize>)> = by_dest.into_iter().collect();
        let ops = groups
            .iter()
            .map(|(dest, idx)| Op {
                dest: *dest,
                request: Request::Get(KvGet {
                    keys: idx.iter().map(|&i| keys[i].to_vec()).collect(),
                }),
            })
            .collect();
        let mut out = vec![None; keys.len()];
        for ((_, idx), reply) in groups.iter().zip(self.execute(ops).await?) {
            match reply? {
                Response::Values(values) if values.len() == idx.len() => {
                    for (i, v) in idx.iter().zip(values) {
                        out[*i] = v;
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
        Ok(out)
    }

    /// Merges `value` into `key`.
    pub async fn put(&mut self, key: &[u8], value: Value) -> Result<()> {
        let req = Request::Put(KvPut {
            key: key.to_vec(),
            value,
        });
        match self.send(self.dest_for(key), req).await? {
            Response::Stored => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes `value` under `key` only if it holds no value: `None` when
    /// this value was stored (acknowledged by every holder of the key),
    /// else the value the key holds, unchanged.
    pub async fn put_if_absent(&mut self, key: &[u8], value: Value) -> Result<Option<Value>> {
        let req = Request::PutIfAbsent(KvPut {
            key: key.to_vec(),
            value,
        });
        match self.send(self.dest_for(key), req).await? {
            Response::Values(mut vs) if vs.len() == 1 => Ok(vs.pop().flatten()),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes `value` under `key`, acknowledged once `concern` copies have
    /// it (`wire::message::WRITE_CONCERN_*`: 1 the node's own, 2 a
    /// majority of the key's holders, 3 all of them).
    pub async fn put_with_concern(&mut self, key: &[u8], value: Value, concern: u8) -> Result<()> {
        let req = Request::PutConcern(KvPutConcern {
            key: key.to_vec(),
            value,
            concern,
        });
        match self.send(self.dest_for(key), req).await? {
            Response::Stored => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes `key`; `true` if a live value went away.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let req = Request::Delete(KvDelete { key: key.to_vec() });
        match self.send(self.dest_for(key), req).await? {
            Response::Deleted(d) => Ok(d.removed),
            other => Err(unexpected(&other)),
        }
    }

    /// Calls a registered function (on the executor beside the shard this
    /// client first connected to) and returns its result. `timeout_ms` 0 =
    /// the node's default; the client's own deadline still applies.
    pub async fn call_function(
        &mut self,
        function: &str,
        args: Vec<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>> {
        let args = args.into_iter().map(Arg::Value).collect();
        self.call_function_with(function, args, timeout_ms).await
    }

    /// Like [`Client::call_function`], with arguments that may be key
    /// references (`Arg::Ref`), read by the node just before the call.
    pub async fn call_function_with(
        &mut self,
        function: &str,
        args: Vec<Arg>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>> {
        let req = Request::Call(FnCall {
            function: function.as_bytes().to_vec(),
            args,
            timeout_ms,
        });
        match self.call(self.route.home(), req).await? {
            Response::Output(out) => Ok(out),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers `name` as another name of built-in `builtin` (stored in
    /// the node's KVS, so it survives restarts).
    pub async fn register_function(&mut self, name: &str, builtin: &str) -> Result<()> {
        self.register(name, FunctionBody::Builtin(builtin.as_bytes().to_vec()))
            .await
    }

    /// Sends a registration to the shard owning its registry key.
    async fn register(&mut self, name: &str, body: FunctionBody) -> Result<()> {
        let req = Request::RegisterFunction(FunctionDef {
            name: name.as_bytes().to_vec(),
            body,
        });
        let shard = self.route.function_shard(name);
        match self.call(shard, req).await? {
            Response::Stored => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Uploads a WebAssembly module as function `name`, with its sandbox
    /// limits (0 = the node's default for each). The node compiles and
    /// checks it before storing it; a refusal says why.
    pub async fn register_wasm(
        &mut self,
        name: &str,
        module: Vec<u8>,
        memory_mb: u32,
        timeout_ms: u32,
    ) -> Result<()> {
        let body = FunctionBody::Wasm(WasmBody {
            module,
            memory_mb,
            timeout_ms,
            result_bytes_max: 0,
        });
        self.register(name, body).await
    }

    /// Registers `name` as a function running the stored model `model`
    /// (one argument: the input tensor). Refused here if the model is not
    /// stored.
    pub async fn register_model_function(&mut self, name: &str, model: &str) -> Result<()> {
        if self.get(&wire::model::manifest_key(model)).await?.is_none() {
            return Err(ClientError::Invalid(format!(
                "no model named {model:?} is stored (upload it with `squall model put {model} FILE`)"
            )));
        }
        self.register(name, FunctionBody::Model(model.as_bytes().to_vec()))
            .await
    }

    /// Stores model `name` (its file's bytes, chunked; see [`wire::model`])
    /// and its optional class labels, then registers function `name`
    /// running it. The manifest is written after every chunk, so a reader
    /// never sees a partial model.
    pub async fn put_model(
        &mut self,
        name: &str,
        model: &[u8],
        labels: Option<&[u8]>,
    ) -> Result<()> {
        use wire::model::{
            chunk_key, labels_key, manifest_key, Manifest, CHUNK_BYTES, MODEL_BYTES_MAX,
        };
        if model.is_empty() || model.len() as u64 > MODEL_BYTES_MAX {
            return Err(ClientError::Invalid(format!(
                "a model is 1 to {MODEL_BYTES_MAX} bytes, not {}",
                model.len()
            )));
        }
        let manifest = Manifest {
            model_bytes: model.len() as u64,
            hash: xxhash_rust::xxh64::xxh64(model, 0),
        };
        let lww = |bytes: &[u8]| {
            Value::Lww(LwwValue {
                timestamp: 0,
                writer: 0,
                bytes: bytes.to_vec(),
            })
        };
        // A few chunks per pipelined batch: bounded memory and frames.
        let chunks: Vec<(u64, &[u8])> = (0..).zip(model.chunks(CHUNK_BYTES)).collect();
        for group in chunks.chunks(4) {
            let ops = group
                .iter()
                .map(|(i, bytes)| {
                    let key = chunk_key(name, manifest.hash, *i);
                    Op {
                        dest: self.dest_for(&key),
                        request: Request::Put(KvPut {
                            key,
                            value: lww(bytes),
                        }),
                    }
                })
                .collect();
            for reply in self.execute(ops).await? {
                match reply? {
                    Response::Stored => {}
                    other => return Err(unexpected(&other)),
                }
            }
        }
        if let Some(labels) = labels {
            self.put(&labels_key(name), lww(labels)).await?;
        }
        self.put(&manifest_key(name), lww(&manifest.encode()))
            .await?;
        self.register_model_function(name, name).await
    }

    /// Removes a registered function; `true` if it existed.
    pub async fn delete_function(&mut self, name: &str) -> Result<bool> {
        let req = Request::DeleteFunction(FunctionName {
            name: name.as_bytes().to_vec(),
        });
        let shard = self.route.function_shard(name);
        match self.call(shard, req).await? {
            Response::Deleted(d) => Ok(d.removed),
            other => Err(unexpected(&other)),
        }
    }

    /// Registered function names.
    pub async fn list_functions(&mut self) -> Result<Vec<String>> {
        match self.call(self.route.home(), Request::ListFunctions).await? {
            Response::Functions(names) => Ok(names
                .into_iter()
                .map(|n| String::from_utf8_lossy(&n).into_owned())
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers (or replaces) a DAG; the node validates it first.
    pub async fn register_dag(&mut self, def: DagDef) -> Result<()> {
        let shard = self.route.dag_shard(&String::from_utf8_lossy(&def.name));
        match self.call(shard, Request::RegisterDag(def)).await? {
            Response::Stored => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs DAG `name` with arguments for its source functions; returns the
    /// sink's result.
    pub async fn call_dag(
        &mut self,
        name: &str,
        args: Vec<SourceArgs>,
        timeout_ms: u32,
    ) -> Result<Vec<u8>> {
        let mut call = DagCall::new(name, args);
        call.timeout_ms = timeout_ms;
        self.call_dag_with(call).await
    }

    /// Runs a DAG call with every option (retries, continuations); returns
    /// the result. For a call with an output key use
    /// [`Client::call_dag_to_key`].
    pub async fn call_dag_with(&mut self, call: DagCall) -> Result<Vec<u8>> {
        let shard = self.route.dag_shard(&String::from_utf8_lossy(&call.name));
        match self.call(shard, Request::CallDag(call)).await? {
            Response::Output(out) => Ok(out),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a DAG call whose result the node stores under
    /// `call.output_key`; returns once the node accepted it. Read the result
    /// with [`Client::wait_for`].
    pub async fn call_dag_to_key(&mut self, call: DagCall) -> Result<()> {
        let shard = self.route.dag_shard(&String::from_utf8_lossy(&call.name));
        match self.call(shard, Request::CallDag(call)).await? {
            Response::Pending(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Waits up to `timeout` for the outcome of a call made with output key
    /// `key`: its result, or the error the node stored for it. Polls with
    /// back-off (50 µs doubling to 5 ms); never waits past `timeout`.
    pub async fn wait_for(&mut self, key: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let error_key = [wire::ERROR_KEY_PREFIX.as_bytes(), key].concat();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            let mut found = self.get_many(&[key, &error_key]).await?.into_iter();
            match (found.next().flatten(), found.next().flatten()) {
                (Some(Value::Lww(l)), _) => return Ok(l.bytes),
                (Some(other), _) => {
                    return Err(ClientError::Protocol {
                        addr: self.route.key_addr(key),
                        message: format!("output key holds a non-LWW value: {other:?}"),
                    })
                }
                (None, Some(Value::Lww(l))) if l.bytes.len() >= 2 => {
                    let code = u16::from_le_bytes([l.bytes[0], l.bytes[1]]);
                    let message = String::from_utf8_lossy(&l.bytes[2..]).into_owned();
                    return Err(match Status::from_code(code) {
                        Some(status) => ClientError::Server { status, message },
                        None => ClientError::UnknownStatus { code, message },
                    });
                }
                _ => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    addr: self.route.key_addr(key),
                    timeout,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Deletes DAG `name`; `true` if it existed.
    pub async fn delete_dag(&mut self, name: &str) -> Result<bool> {
        let req = Request::DeleteDag(DagName {
            name: name.as_bytes().to_vec(),
        });
        match self.call(self.route.dag_shard(name), req).await? {
            Response::Deleted(d) => Ok(d.removed),
            other => Err(unexpected(&other)),
        }
    }

    /// Every registered DAG's name, sorted (asks every shard).
    pub async fn list_dags(&mut self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for r in self.ask_every_shard(Request::ListDags).await? {
            match r {
                Response::Dags(d) => names.extend(
                    d.into_iter()
                        .map(|n| String::from_utf8_lossy(&n).into_owned()),
                ),
                other => return Err(unexpected(&other)),
            }
        }
        names.sort();
        Ok(names)
    }

    /// Sends `request` to every shard (pipelined) and returns the replies in
    /// shard order; any error reply fails the whole call.
    async fn ask_every_shard(&mut self, request: Request) -> Result<Vec<Response>> {
        let ops = (0..self.topology().shards.len())
            .map(|s| Op {
                dest: self.home_dest(u16::try_from(s).unwrap_or(u16::MAX)),
                request: request.clone(),
            })
            .collect();
        self.execute(ops).await?.into_iter().collect()
    }

    /// Round trip to one shard.
    pub async fn ping(&mut self, shard: u16) -> Result<()> {
        match self.call(shard, Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Every shard's counters.
    pub async fn stats(&mut self) -> Result<Vec<ShardStats>> {
        self.ask_every_shard(Request::Stats)
            .await?
            .into_iter()
            .map(|r| match r {
                Response::Stats(s) => Ok(s),
                other => Err(unexpected(&other)),
            })
            .collect()
    }

    /// The node's view of its cluster (members, their state, the epoch),
    /// as its home shard answers it.
    pub async fn cluster_status(&mut self) -> Result<ClusterView> {
        match self.call(self.route.home(), Request::ClusterStatus).await? {
            Response::Cluster(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the node to leave its cluster and stop, gracefully; it has
    /// begun once this returns (see `Request::Leave`).
    pub async fn leave(&mut self) -> Result<()> {
        match self.call(self.route.home(), Request::Leave).await? {
            Response::Leaving => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request to shard `shard` of the connected node (which
    /// need not own the key: the node forwards) and returns its reply;
    /// error replies become `Err`.
    pub async fn call(&mut self, shard: u16, request: Request) -> Result<Response> {
        self.send(self.home_dest(shard), request).await
    }

    /// Sends one request to `dest` and returns its reply; error replies
    /// become `Err`.
    pub async fn send(&mut self, dest: Dest, request: Request) -> Result<Response> {
        let mut replies = self.execute(vec![Op { dest, request }]).await?;
        replies
            .pop()
            .unwrap_or_else(|| Err(protocol("", "no reply")))
    }

    /// Sends a batch, pipelined: all requests are written (one write per
    /// shard) before replies are read. Returns one result per op, in order;
    /// the outer error is a transport failure or the deadline. A batch of
    /// key reads and writes that fails on one node is sent once more with
    /// that node avoided (module doc).
    pub async fn execute(&mut self, mut ops: Vec<Op>) -> Result<Vec<Result<Response>>> {
        if self.stale && self.may_refresh() {
            self.refresh().await;
        }
        let failure = match self.run(&ops).await {
            Ok(replies) => return Ok(replies),
            Err(e) => e,
        };
        let Some(node) = failure.node.filter(|_| failure_moves(&failure.error)) else {
            return Err(failure.error);
        };
        let keys: Option<Vec<Vec<u8>>> = ops.iter().map(|op| routed_key(&op.request)).collect();
        let Some(keys) = keys else {
            return Err(failure.error);
        };
        self.placement.avoid(node);
        self.routing.failovers += 1;
        if self.may_refresh() {
            self.refresh().await;
        }
        for (op, key) in ops.iter_mut().zip(keys) {
            op.dest = self.dest_for(&key);
        }
        self.run(&ops).await.map_err(|e| {
            if let Some(n) = e.node {
                self.placement.avoid(n);
            }
            e.error
        })
    }

    /// One batch over the pool; notes a reply from another epoch.
    async fn run(&mut self, ops: &[Op]) -> Result<Vec<Result<Response>>, pool::BatchError> {
        let (replies, stale) = self.pool.execute(&self.placement, &self.opts, ops).await?;
        if stale {
            self.stale = true;
            self.routing.stale_batches += 1;
        }
        Ok(replies)
    }

    /// Whether `REFRESH_INTERVAL_MS_MIN` has passed since the last refresh.
    fn may_refresh(&self) -> bool {
        self.last_refresh
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(REFRESH_INTERVAL_MS_MIN))
    }

    /// Asks for the cluster's view (the connected node first, then the
    /// other members) and routes by it from now on. Best effort: with no
    /// member answering, the old view stays.
    async fn refresh(&mut self) {
        self.last_refresh = Some(Instant::now());
        self.routing.refreshes += 1;
        for node in self.placement.nodes_home_first() {
            let op = Op {
                dest: Dest { node, shard: 0 },
                request: Request::ClusterStatus,
            };
            match self.pool.execute(&self.placement, &self.opts, &[op]).await {
                Ok((mut replies, _)) => {
                    if let Some(Ok(Response::Cluster(view))) = replies.pop() {
                        self.placement.update(&view);
                        self.stale = false;
                        return;
                    }
                }
                Err(e) => {
                    if let Some(n) = e.node {
                        self.placement.avoid(n);
                    }
                }
            }
        }
    }
}

/// Whether a batch that failed this way may succeed at another node.
fn failure_moves(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io { .. } | ClientError::Timeout { .. } | ClientError::Protocol { .. }
    )
}

/// The key a request is routed by, for the requests a failover may send
/// elsewhere (reads and writes of spread keys); `None` for the others.
fn routed_key(request: &Request) -> Option<Vec<u8>> {
    match request {
        Request::Get(g) => g.keys.first().cloned(),
        Request::Put(p) => Some(p.key.clone()),
        Request::PutConcern(p) => Some(p.key.clone()),
        Request::Delete(d) => Some(d.key.clone()),
        _ => None,
    }
    .filter(|k| !k.starts_with(b"squall:"))
}

/// An error reply as an error; any other reply as it is.
pub(crate) fn into_result(resp: Response) -> Result<Response> {
    match resp {
        Response::Error(e) => {
            let message = String::from_utf8_lossy(&e.message).into_owned();
            Err(match Status::from_code(e.code) {
                Some(status) => ClientError::Server { status, message },
                None => ClientError::UnknownStatus {
                    code: e.code,
                    message,
                },
            })
        }
        ok => Ok(ok),
    }
}

pub(crate) fn unexpected(resp: &Response) -> ClientError {
    protocol("", &format!("unexpected reply {resp:?}"))
}

pub(crate) fn protocol(addr: &str, message: &str) -> ClientError {
    ClientError::Protocol {
        addr: addr.to_owned(),
        message: message.to_owned(),
    }
}

pub(crate) fn io(addr: &str, source: std::io::Error) -> ClientError {
    ClientError::Io {
        addr: addr.to_owned(),
        source,
    }
}
