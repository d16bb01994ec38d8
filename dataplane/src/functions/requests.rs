//! The function requests a connection hands over: registering, listing and
//! deleting functions and DAGs, and calls. Each returns an [`Answer`]; the
//! connection writes it (registrations are ordinary writes of their keys,
//! so they go through the connection's write path: forwarding to the
//! owner, group commit).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use executor::dag::{stored, Dag, DagSpec, FunctionOptions};
use executor::limits::{CONTINUATIONS_MAX, RETRIES_MAX};
use executor::registry::{
    stored as fn_stored, FunctionBody, RegistryError, SandboxLimits, WasmModule,
};
use executor::run::{check_sources, Arg};
use executor::session::{Consistency, Session};
use executor::store::StoreError;
use executor::txn::TXN_ID_MAX;
use kvs_core::lattice::{Lww, Timestamp};
use kvs_core::Value;
use wire::message::{self as w, ArchivedRequest};
use wire::Status;

use super::call::CallOptions;
use super::pool::CallResult;
use super::{inline_args, wire_args, ShardFunctions};
use crate::error::NodeError;
use crate::limits::{
    BACKGROUND_CALLS_PER_SHARD_MAX, CALL_TIMEOUT_MS_DEFAULT, CALL_TIMEOUT_MS_MAX,
    EXECUTOR_LOAD_THRESHOLD, NODE_REQUEST_TIMEOUT_MS,
};

/// How a request is answered.
pub(crate) enum Answer {
    /// At once, in this batch.
    Now(Result<w::Response, NodeError>),
    /// By storing `value` under `key` (`None`: deleting it).
    Write(Vec<u8>, Option<Value>),
    /// When this completes; requests behind it do not wait.
    Later(Pin<Box<dyn Future<Output = Result<w::Response, NodeError>>>>),
    /// Never (a request that is never answered); this, if any, runs on
    /// its own.
    Never(Option<Pin<Box<dyn Future<Output = ()>>>>),
}

impl Answer {
    pub(super) fn fail(status: Status, message: impl Into<String>) -> Answer {
        Answer::Now(Err(NodeError::new(status, message)))
    }

    fn output(result: CallResult) -> Answer {
        Answer::Now(result.map(w::Response::Output))
    }
}

/// The node's form of wire arguments.
pub(super) fn args_of(args: &wire::rkyv::vec::ArchivedVec<w::ArchivedArg>) -> Vec<Arg> {
    args.iter()
        .map(|a| match a {
            w::ArchivedArg::Value(v) => Arg::Value(v.to_vec()),
            w::ArchivedArg::Ref(k) => Arg::Ref(k.to_vec()),
        })
        .collect()
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A panic in a function another node asked this one to run: that node
/// runs the call again (the wire has no retriable flag, so it is not
/// `FunctionFailed`).
pub(super) fn rerun_panics(e: NodeError) -> NodeError {
    match e.status {
        Status::FunctionFailed if e.retriable => NodeError {
            status: Status::Unavailable,
            message: format!("{} (a re-run may succeed)", e.message),
            ..e
        },
        _ => e,
    }
}

/// Why a node refuses another's function: it is saturated.
pub(super) fn saturated_message(function: &str) -> String {
    format!(
        "every executor of this node has {EXECUTOR_LOAD_THRESHOLD} or more steps queued or \
         running: the node that sent {function:?} runs it itself"
    )
}

/// A registration stored as an LWW value the shard stamps.
fn stamped(bytes: Vec<u8>) -> Option<Value> {
    Some(Value::Lww(Lww::new(Timestamp::default(), bytes)))
}

/// The wire form of a call to send on to another node.
fn owned_call(name: &str, args: &HashMap<String, Vec<Arg>>, options: &CallOptions) -> w::DagCall {
    let args = args
        .iter()
        .map(|(f, a)| w::SourceArgs {
            function: f.as_bytes().to_vec(),
            args: wire_args(a.iter().cloned()),
        })
        .collect();
    w::DagCall {
        name: name.as_bytes().to_vec(),
        args,
        timeout_ms: options.timeout_ms,
        output_key: Vec::new(),
        then: options.then.iter().map(|t| t.as_bytes().to_vec()).collect(),
        retries: options.retries,
        consistency: match options.consistency {
            Consistency::Lww => w::Consistency::Lww,
            Consistency::Dsrr => w::Consistency::Dsrr,
            Consistency::SingleKeyCausal => w::Consistency::SingleKeyCausal,
            Consistency::MultiKeyCausal => w::Consistency::MultiKeyCausal,
            Consistency::DistributedSessionCausal => w::Consistency::DistributedSessionCausal,
        } as u8,
        txn: options.txn,
    }
}

/// A run's consistency mode for its wire code.
fn consistency_of(code: u8) -> Result<Consistency, String> {
    match w::Consistency::from_code(code) {
        Some(w::Consistency::Lww) => Ok(Consistency::Lww),
        Some(w::Consistency::Dsrr) => Ok(Consistency::Dsrr),
        Some(w::Consistency::SingleKeyCausal) => Ok(Consistency::SingleKeyCausal),
        Some(w::Consistency::MultiKeyCausal) => Ok(Consistency::MultiKeyCausal),
        Some(w::Consistency::DistributedSessionCausal) => Ok(Consistency::DistributedSessionCausal),
        None => Err(format!(
            "consistency code {code} is unknown: 0 lww, 1 dsrr, 2 sk, 3 mk, 4 dsc"
        )),
    }
}

/// The transaction id a call runs under: its own, or for an `mk` or `dsc`
/// call without one a fresh random id. Causal calls are always atomic: the
/// dependencies their readers follow travel in commit records, so their
/// writes must go through one. (A drawn id is this call's alone: a client
/// that re-sends the call is not deduplicated; it sends `txn` for that.)
fn txn_of(txn: u64, consistency: Consistency) -> Result<u64, NodeError> {
    let causal = matches!(
        consistency,
        Consistency::MultiKeyCausal | Consistency::DistributedSessionCausal
    );
    if txn > TXN_ID_MAX {
        let msg = format!("a transaction id is at most {TXN_ID_MAX:#x} (58 bits), not {txn:#x}");
        return Err(NodeError::new(Status::InvalidArgument, msg));
    }
    if txn != 0 || !causal {
        return Ok(txn);
    }
    loop {
        let id = getrandom::u64()
            .map_err(|e| NodeError::internal(format!("no random id for a causal call: {e}")))?
            & TXN_ID_MAX;
        if id != 0 {
            return Ok(id);
        }
    }
}

impl ShardFunctions {
    /// The node to run a call on: the one holding the most of its
    /// referenced keys, if that is not this one (a tie stays here; keys in
    /// this node's cache count as here: reading them costs nothing); not a
    /// node that refused a step as overloaded lately.
    pub(super) fn best_node<'a>(
        &self,
        args: impl IntoIterator<Item = &'a Arg>,
    ) -> Option<SocketAddr> {
        let mut here = 0;
        let mut there: Vec<(SocketAddr, usize)> = Vec::new();
        for a in args {
            let Arg::Ref(key) = a else { continue };
            match self.remote.holder(key) {
                None => here += 1,
                Some(_) if self.remote.cache.holds(key) => here += 1,
                Some(to) => match there.iter_mut().find(|(a, _)| *a == to) {
                    Some((_, n)) => *n += 1,
                    None => there.push((to, 1)),
                },
            }
        }
        there
            .into_iter()
            .filter(|&(a, n)| n > here && !self.is_busy(a))
            .max_by_key(|&(a, n)| (n, std::cmp::Reverse(a)))
            .map(|(a, _)| a)
    }

    /// Runs `call` on the node at `to` (beside its data); if that node
    /// cannot be reached, runs it here (`here`) instead: a re-run, as after
    /// a retriable failure, so its effects may happen twice — once only
    /// for an atomic call.
    async fn forwarded(
        self: Rc<Self>,
        to: SocketAddr,
        call: w::DagCall,
        here: impl Future<Output = CallResult>,
    ) -> Result<w::Response, NodeError> {
        crate::shard::bump(&self.shard.stats().node_forwards);
        let runs = u64::from(call.retries + 1) * (call.then.len() as u64 + 1);
        let run_ms = match u64::from(call.timeout_ms) {
            0 => CALL_TIMEOUT_MS_DEFAULT,
            t => t.min(CALL_TIMEOUT_MS_MAX),
        };
        let budget_ms = (run_ms * runs).min(CALL_TIMEOUT_MS_MAX) + NODE_REQUEST_TIMEOUT_MS;
        let request = w::Request::CallDag(call);
        match self.remote.links.call_within(to, &request, budget_ms).await {
            w::Response::Error(e) if e.code == Status::Unavailable.code() => {
                log::info!(
                    "{}: a call for {to} runs here instead: {}",
                    self.shard.id(),
                    String::from_utf8_lossy(&e.message)
                );
                here.await.map(w::Response::Output)
            }
            w::Response::Error(e) => {
                let status = Status::from_code(e.code).unwrap_or(Status::Internal);
                Err(NodeError::new(status, String::from_utf8_lossy(&e.message)))
            }
            reply => Ok(reply),
        }
    }

    /// The answer to one of the platform's requests (`from_node`: sent on
    /// by another node, never sent on again).
    pub fn request(self: &Rc<Self>, req: &ArchivedRequest, from_node: bool) -> Answer {
        match req {
            ArchivedRequest::Call(c) => self.call(c),
            ArchivedRequest::CallDag(c) => self.call_dag(c, from_node),
            ArchivedRequest::RunStep(s) => self.run_step(s),
            ArchivedRequest::RunChain(c) => self.run_chain(c),
            ArchivedRequest::ChainDone(d) => self.chain_done(d),
            ArchivedRequest::RegisterDag(d) => self.register_dag(d),
            ArchivedRequest::DeleteDag(d) => {
                Answer::Write(stored::key(&text(d.name.as_slice())), None)
            }
            ArchivedRequest::ListDags => self.list_dags(),
            ArchivedRequest::RegisterFunction(f) => self.register_function(f),
            ArchivedRequest::DeleteFunction(f) => self.delete_function(f),
            ArchivedRequest::ListFunctions => self.list_functions(),
            _ => Answer::fail(Status::Internal, "not a function request"),
        }
    }

    /// Calls one function: an inline one now (values only), others as a
    /// one-function DAG through the executors.
    fn call(self: &Rc<Self>, call: &w::ArchivedFnCall) -> Answer {
        let name = text(call.function.as_slice());
        let args = args_of(&call.args);
        let registry = &self.platform.registry;
        if !registry.contains(&name) {
            let msg = format!("no function named {name:?} is registered");
            return Answer::fail(Status::UnknownFunction, msg);
        }
        if self
            .platform
            .runs_inline(&name, &FunctionOptions::default(), &args)
        {
            // Pure and short: answered in this batch, no thread hand-off.
            return Answer::output(self.invoke_inline(&name, &inline_args(args)));
        }
        let dag = match Dag::single(&name, |f| registry.contains(f)) {
            Ok(dag) => dag,
            Err(e) => return Answer::fail(Status::InvalidArgument, e.to_string()),
        };
        let options = CallOptions {
            timeout_ms: call.timeout_ms.to_native(),
            here_only: true,
            ..CallOptions::default()
        };
        let me = self.clone();
        Answer::Later(Box::pin(async move {
            let args = HashMap::from([(name, args)]);
            me.run_call(Arc::new(dag), args, &options)
                .await
                .map(w::Response::Output)
        }))
    }

    /// Runs one function of a call another node is running, under the
    /// session its trigger brought; answers its result and what it added
    /// to the session.
    fn run_step(self: &Rc<Self>, step: &w::ArchivedRunStep) -> Answer {
        let name = text(step.function.as_slice());
        let registry = &self.platform.registry;
        if !registry.contains(&name) {
            let msg = format!("no function named {name:?} is registered on this node");
            return Answer::fail(Status::UnknownFunction, msg);
        }
        let stepped = |output, session: Result<Vec<u8>, StoreError>| {
            let session =
                session.map_err(|e| NodeError::new(Status::LimitExceeded, e.to_string()))?;
            Ok(w::Response::Stepped(w::Stepped { output, session }))
        };
        let args = args_of(&step.args);
        if (self.platform).runs_inline(&name, &FunctionOptions::default(), &args) {
            // Pure and short, no store: answered in this batch, adding
            // nothing to the session.
            let out = (self.invoke_inline(&name, &inline_args(args))).map_err(rerun_panics);
            return Answer::Now(out.and_then(|o| stepped(o, Session::default().encode())));
        }
        if self.platform.pool.saturated() {
            return Answer::fail(Status::Overloaded, saturated_message(&name));
        }
        let session = match Session::decode(step.session.as_slice()) {
            Ok(s) => s,
            Err(e) => return Answer::fail(Status::InvalidArgument, e),
        };
        let dag = match Dag::single(&name, |f| registry.contains(f)) {
            Ok(dag) => Arc::new(dag),
            Err(e) => return Answer::fail(Status::InvalidArgument, e.to_string()),
        };
        let deadline = super::call::deadline_after(step.timeout_ms.to_native());
        let args = HashMap::from([(name, args)]);
        let me = self.clone();
        Answer::Later(Box::pin(async move {
            let ran = me
                .run_once(dag, args, deadline, (false, true), session)
                .await;
            let (output, run) = ran.map_err(rerun_panics)?;
            stepped(output, run.session.encode())
        }))
    }

    /// Checks a function registration; stores it under its registry key.
    fn register_function(&self, def: &w::ArchivedFunctionDef) -> Answer {
        let name = text(def.name.as_slice());
        let body = match &def.body {
            w::ArchivedFunctionBody::Builtin(b) => FunctionBody::Builtin(text(b.as_slice())),
            w::ArchivedFunctionBody::Model(m) => FunctionBody::Model(text(m.as_slice())),
            w::ArchivedFunctionBody::Wasm(m) => {
                let limits = match SandboxLimits::new(
                    m.memory_mb.to_native(),
                    m.timeout_ms.to_native(),
                    m.result_bytes_max.to_native(),
                ) {
                    Ok(l) => l,
                    Err(e) => {
                        let msg = format!("function {name:?} refused: {e}");
                        return Answer::fail(Status::InvalidArgument, msg);
                    }
                };
                FunctionBody::Wasm(WasmModule {
                    bytes: m.module.to_vec(),
                    limits,
                    precompiled: None,
                })
            }
        };
        if let Err(e) = self.platform.registry.check_definition(&name, &body) {
            let status = match e {
                RegistryError::UnknownBuiltin(_) => Status::UnknownFunction,
                _ => Status::InvalidArgument,
            };
            return Answer::fail(status, format!("function {name:?} refused: {e}"));
        }
        let mut record = fn_stored::encode(&body);
        if let (FunctionBody::Wasm(m), true) = (&body, self.platform.trust_precompiled) {
            // Its machine code goes with it (compile once per cluster), if
            // the record still fits in a value.
            let precompiled = self.platform.registry.precompile(m);
            let with_code = FunctionBody::Wasm(WasmModule {
                precompiled,
                ..m.clone()
            });
            let bigger = fn_stored::encode(&with_code);
            if bigger.len() <= kvs_core::limits::VALUE_BYTES_MAX {
                record = bigger;
            }
        }
        Answer::Write(fn_stored::key(&name), stamped(record))
    }

    /// Deletes a registered function (not a built-in).
    fn delete_function(&self, f: &w::ArchivedFunctionName) -> Answer {
        let name = text(f.name.as_slice());
        if self.platform.registry.is_builtin(&name) {
            let msg = format!("{name:?} is a built-in function; built-ins cannot be deleted");
            return Answer::fail(Status::InvalidArgument, msg);
        }
        Answer::Write(fn_stored::key(&name), None)
    }

    /// Every function the node runs, built-ins included.
    fn list_functions(&self) -> Answer {
        let names = self.platform.registry.names();
        Answer::Now(Ok(w::Response::Functions(
            names.into_iter().map(String::into_bytes).collect(),
        )))
    }

    /// Validates a DAG; stores it under its registry key.
    fn register_dag(&self, def: &w::ArchivedDagDef) -> Answer {
        let spec = DagSpec {
            name: text(def.name.as_slice()),
            functions: def
                .functions
                .iter()
                .map(|f| {
                    let options = FunctionOptions {
                        replicas: f.replicas.to_native(),
                        batch_max: f.batch_max.to_native(),
                    };
                    (text(f.name.as_slice()), options)
                })
                .collect(),
            edges: def
                .edges
                .iter()
                .map(|e| (text(e.from.as_slice()), text(e.to.as_slice())))
                .collect(),
        };
        let registry = &self.platform.registry;
        if let Err(e) = Dag::validate(&spec, |f| registry.contains(f)) {
            let msg = format!("DAG {:?} refused: {e}", spec.name);
            return Answer::fail(Status::InvalidDag, msg);
        }
        let executors = self.platform.pool.len();
        if let Some((f, o)) = spec
            .functions
            .iter()
            .find(|(_, o)| o.replicas as usize > executors)
        {
            let msg = format!(
                "DAG {:?} refused: function {f:?} asks for {} replicas, but replicas run on \
                 different executors and this node has {executors} (start it with more \
                 --executors-per-shard, or ask for fewer)",
                spec.name, o.replicas
            );
            return Answer::fail(Status::InvalidDag, msg);
        }
        Answer::Write(stored::key(&spec.name), stamped(stored::encode(&spec)))
    }

    /// The DAGs whose keys this shard owns.
    fn list_dags(&self) -> Answer {
        let prefix = stored::KEY_PREFIX.as_bytes();
        let names = self
            .shard
            .keys_with_prefix(prefix)
            .into_iter()
            .map(|k| k[prefix.len()..].to_vec())
            .collect();
        Answer::Now(Ok(w::Response::Dags(names)))
    }

    /// Runs a DAG: answered when its result is in, or `Pending` at once
    /// when the call names an output key (the outcome is stored there). A
    /// call whose referenced keys are mostly another node's runs there
    /// ([`Self::forwarded`]).
    fn call_dag(self: &Rc<Self>, call: &w::ArchivedDagCall, from_node: bool) -> Answer {
        let name = text(call.name.as_slice());
        let retries = call.retries.to_native();
        if retries > RETRIES_MAX || call.then.len() > CONTINUATIONS_MAX {
            let msg = format!(
                "a call asks for 0 to {RETRIES_MAX} retries and 0 to {CONTINUATIONS_MAX} continuations, not {retries} and {}",
                call.then.len()
            );
            return Answer::fail(Status::InvalidArgument, msg);
        }
        let consistency = match consistency_of(call.consistency) {
            Ok(c) => c,
            Err(msg) => return Answer::fail(Status::InvalidArgument, msg),
        };
        let txn = match txn_of(call.txn.to_native(), consistency) {
            Ok(txn) => txn,
            Err(e) => return Answer::Now(Err(e)),
        };
        let mut options = CallOptions {
            timeout_ms: call.timeout_ms.to_native(),
            retries,
            then: call.then.iter().map(|t| text(t.as_slice())).collect(),
            consistency,
            txn,
            here_only: false,
        };
        let mut args: HashMap<String, Vec<Arg>> = HashMap::new();
        for a in call.args.iter() {
            args.entry(text(a.function.as_slice()))
                .or_default()
                .extend(args_of(&a.args));
        }
        let output_key = call.output_key.to_vec();
        if crate::auth::is_reserved_key(&output_key) {
            let msg = format!(
                "output key {:?} is under a prefix the node reserves (code, models, commit \
                 records); choose another",
                String::from_utf8_lossy(&output_key)
            );
            return Answer::fail(Status::InvalidArgument, msg);
        }
        // The DAG now when it can be had without waiting (in request order:
        // a re-registration earlier on this connection is seen); otherwise
        // read from its owner in the deferred part.
        let local = match self.dag_now(&name) {
            Ok(dag) => dag,
            Err(e) => return Answer::Now(Err(e)),
        };
        if let Some(dag) = &local {
            if let Err(msg) = check_sources(dag, &args) {
                return Answer::fail(Status::InvalidArgument, msg);
            }
            let plain = output_key.is_empty() && options.then.is_empty() && options.retries == 0;
            let inline = dag.nodes().iter().all(|n| {
                let args = args.get(&n.name).map_or(&[][..], Vec::as_slice);
                self.platform.runs_inline(&n.function, &n.options, args)
            });
            if plain && inline && !self.platform.spread_functions {
                // Pure built-ins only: run the whole DAG now on this thread
                // and answer in this batch (no run state, no hand-off).
                return Answer::output(self.run_inline(dag, args));
            }
        }
        // Beside its data, if another node holds most of it (the outcome
        // of a call with an output key is still stored from here).
        let elsewhere = (!from_node)
            .then(|| self.best_node(args.values().flatten()))
            .flatten()
            .map(|to| (to, owned_call(&name, &args, &options)));
        // Run here only if that node cannot be reached: then all of it.
        options.here_only = elsewhere.is_some();
        let me = self.clone();
        let run = async move {
            let dag = match local {
                Some(dag) => dag,
                None => me.fetch_dag(&name).await?,
            };
            me.run_call(dag, args, &options).await
        };
        let reply: Pin<Box<dyn Future<Output = Result<w::Response, NodeError>>>> = match elsewhere {
            Some((to, call)) => Box::pin(self.clone().forwarded(to, call, run)),
            None => Box::pin(async move { run.await.map(w::Response::Output) }),
        };
        if output_key.is_empty() {
            return Answer::Later(reply);
        }
        let error_key = [wire::ERROR_KEY_PREFIX.as_bytes(), &output_key].concat();
        if let Err(e) = kvs_core::partition::check_key(&error_key) {
            return Answer::Now(Err(e.into()));
        }
        let running = self.background_calls.get();
        if running >= BACKGROUND_CALLS_PER_SHARD_MAX {
            let msg = format!(
                "{running} calls with output keys are running on this shard; try again later"
            );
            return Answer::fail(Status::Overloaded, msg);
        }
        self.background_calls.set(running + 1);
        let me = self.clone();
        let reply_key = output_key.clone();
        glommio::spawn_local(async move {
            let outcome = match reply.await {
                Ok(w::Response::Output(out)) => Ok(out),
                Ok(other) => Err(NodeError::internal(format!("unexpected reply {other:?}"))),
                Err(e) => Err(e),
            };
            me.store_outcome(output_key, outcome).await;
            me.background_calls.set(me.background_calls.get() - 1);
        })
        .detach();
        Answer::Now(Ok(w::Response::Pending(reply_key)))
    }
}
