//! The function requests a connection hands over: registering, listing and
//! deleting functions and DAGs, and calls. Each returns an [`Answer`]; the
//! connection writes it (registrations are ordinary writes of their keys,
//! so they go through the connection's write path: forwarding to the
//! owner, group commit).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use executor::dag::{stored, Dag, DagSpec, FunctionOptions};
use executor::limits::{CONTINUATIONS_MAX, RETRIES_MAX};
use executor::registry::{
    stored as fn_stored, FunctionBody, RegistryError, SandboxLimits, WasmModule,
};
use executor::run::{check_sources, Arg};
use kvs_core::lattice::{Lww, Timestamp};
use kvs_core::Value;
use wire::message::{self as w, ArchivedRequest};
use wire::Status;

use super::call::CallOptions;
use super::pool::CallResult;
use super::ShardFunctions;
use crate::error::NodeError;
use crate::limits::BACKGROUND_CALLS_PER_SHARD_MAX;

/// How a request is answered.
pub(crate) enum Answer {
    /// At once, in this batch.
    Now(Result<w::Response, NodeError>),
    /// By storing `value` under `key` (`None`: deleting it).
    Write(Vec<u8>, Option<Value>),
    /// When this completes; requests behind it do not wait.
    Later(Pin<Box<dyn Future<Output = Result<w::Response, NodeError>>>>),
}

impl Answer {
    fn fail(status: Status, message: impl Into<String>) -> Answer {
        Answer::Now(Err(NodeError::new(status, message)))
    }

    fn output(result: CallResult) -> Answer {
        Answer::Now(result.map(w::Response::Output))
    }
}

/// The node's form of wire arguments.
fn args_of(args: &wire::rkyv::vec::ArchivedVec<w::ArchivedArg>) -> Vec<Arg> {
    args.iter()
        .map(|a| match a {
            w::ArchivedArg::Value(v) => Arg::Value(v.to_vec()),
            w::ArchivedArg::Ref(k) => Arg::Ref(k.to_vec()),
        })
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A registration stored as an LWW value the shard stamps.
fn stamped(bytes: Vec<u8>) -> Option<Value> {
    Some(Value::Lww(Lww::new(Timestamp::default(), bytes)))
}

impl ShardFunctions {
    /// The answer to one of the platform's requests.
    pub fn request(self: &Rc<Self>, req: &ArchivedRequest) -> Answer {
        match req {
            ArchivedRequest::Call(c) => self.call(c),
            ArchivedRequest::CallDag(c) => self.call_dag(c),
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
            let args: Vec<Vec<u8>> = args
                .into_iter()
                .map(|a| match a {
                    Arg::Value(v) | Arg::Ref(v) => v,
                })
                .collect();
            return Answer::output(self.invoke_inline(&name, &args));
        }
        let dag = match Dag::single(&name, |f| registry.contains(f)) {
            Ok(dag) => dag,
            Err(e) => return Answer::fail(Status::InvalidArgument, e.to_string()),
        };
        let options = CallOptions {
            timeout_ms: call.timeout_ms.to_native(),
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
        Answer::Write(fn_stored::key(&name), stamped(fn_stored::encode(&body)))
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
    /// when the call names an output key (the outcome is stored there).
    fn call_dag(self: &Rc<Self>, call: &w::ArchivedDagCall) -> Answer {
        let name = text(call.name.as_slice());
        let retries = call.retries.to_native();
        if retries > RETRIES_MAX || call.then.len() > CONTINUATIONS_MAX {
            let msg = format!(
                "a call asks for 0 to {RETRIES_MAX} retries and 0 to {CONTINUATIONS_MAX} continuations, not {retries} and {}",
                call.then.len()
            );
            return Answer::fail(Status::InvalidArgument, msg);
        }
        let options = CallOptions {
            timeout_ms: call.timeout_ms.to_native(),
            retries,
            then: call.then.iter().map(|t| text(t.as_slice())).collect(),
        };
        let mut args: HashMap<String, Vec<Arg>> = HashMap::new();
        for a in call.args.iter() {
            args.entry(text(a.function.as_slice()))
                .or_default()
                .extend(args_of(&a.args));
        }
        let output_key = call.output_key.to_vec();
        if crate::auth::is_code_key(&output_key) {
            let msg = format!(
                "output key {:?} is under a prefix that holds code or models; choose another",
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
            if plain && inline {
                // Pure built-ins only: run the whole DAG now on this thread
                // and answer in this batch (no run state, no hand-off).
                return Answer::output(self.run_inline(dag, args));
            }
        }
        let me = self.clone();
        let run = async move {
            let dag = match local {
                Some(dag) => dag,
                None => me.fetch_dag(&name).await?,
            };
            me.run_call(dag, args, &options).await
        };
        if output_key.is_empty() {
            return Answer::Later(Box::pin(async move { run.await.map(w::Response::Output) }));
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
            let outcome = run.await;
            me.store_outcome(output_key, outcome).await;
            me.background_calls.set(me.background_calls.get() - 1);
        })
        .detach();
        Answer::Now(Ok(w::Response::Pending(reply_key)))
    }
}
