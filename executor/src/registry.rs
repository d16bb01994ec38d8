//! The function registry and one executor's instances.
//!
//! The registry holds the built-ins (compiled into the node) and the
//! functions users register by name. A registration is stored in the KVS
//! under `squall:fn:<name>` ([`stored`]), so it survives restarts and every
//! shard sees it: the node applies each write of such a key to its one
//! shared [`Registry`]. Today a registered function binds a name to a
//! built-in ([`FunctionBody::Builtin`]); uploaded WebAssembly modules come as
//! another body kind, without reshaping the rest.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use thiserror::Error;

use crate::dag::Dag;
use crate::function::{builtins, Context, Factory, FnError, Function, Placement};
use crate::limits::{
    NAME_BYTES_MAX, WASM_MEMORY_MB_DEFAULT, WASM_MEMORY_MB_MAX, WASM_RESULT_BYTES_DEFAULT,
    WASM_RESULT_BYTES_MAX, WASM_TIMEOUT_MS_DEFAULT, WASM_TIMEOUT_MS_MAX,
};
use crate::message::Postbox;
use crate::run::{Arg, DagRun, Progress};
use crate::store::Store;

/// A registration that was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("function names are 1 to {NAME_BYTES_MAX} bytes of [A-Za-z0-9_.-], not {0:?}")]
    BadName(String),
    #[error("a function named {0:?} is already registered")]
    Exists(String),
    #[error("{0:?} is a built-in function; built-ins cannot be replaced or deleted")]
    Builtin(String),
    #[error("there is no built-in function named {0:?}")]
    UnknownBuiltin(String),
    #[error("module refused: {0}")]
    InvalidModule(String),
    #[error("this node runs no WebAssembly")]
    NoWasm,
    #[error("model {0:?}: {1}")]
    InvalidModel(String, String),
    #[error("this node runs no models")]
    NoModels,
}

/// What a registered function runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FunctionBody {
    /// A built-in function, under another name.
    Builtin(String),
    /// An uploaded WebAssembly module, run sandboxed.
    Wasm(WasmModule),
    /// Inference with the model stored under this name.
    Model(String),
}

/// An uploaded module and the limits it runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmModule {
    pub bytes: Vec<u8>,
    pub limits: SandboxLimits,
}

/// What one WebAssembly function may use; set at registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    pub memory_mb: u32,
    pub timeout_ms: u32,
    pub result_bytes_max: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_mb: WASM_MEMORY_MB_DEFAULT,
            timeout_ms: WASM_TIMEOUT_MS_DEFAULT,
            result_bytes_max: WASM_RESULT_BYTES_DEFAULT,
        }
    }
}

impl SandboxLimits {
    /// Limits asked for (0 = default), checked against the maxima.
    pub fn new(
        memory_mb: u32,
        timeout_ms: u32,
        result_bytes_max: u32,
    ) -> Result<SandboxLimits, String> {
        let d = SandboxLimits::default();
        let pick = |v: u32, default: u32| if v == 0 { default } else { v };
        let l = SandboxLimits {
            memory_mb: pick(memory_mb, d.memory_mb),
            timeout_ms: pick(timeout_ms, d.timeout_ms),
            result_bytes_max: pick(result_bytes_max, d.result_bytes_max),
        };
        for (what, v, max) in [
            ("memory_mb", l.memory_mb, WASM_MEMORY_MB_MAX),
            ("timeout_ms", l.timeout_ms, WASM_TIMEOUT_MS_MAX),
            (
                "result_bytes_max",
                l.result_bytes_max,
                WASM_RESULT_BYTES_MAX,
            ),
        ] {
            if v > max {
                return Err(format!("{what} is at most {max}, not {v}"));
            }
        }
        Ok(l)
    }
}

/// Turns uploaded modules into functions (implemented by `wasm-host`, so
/// this crate does not depend on a WebAssembly runtime).
pub trait WasmCompiler: Send + Sync {
    /// Compiles and checks `module` (imports, exports) for function `name`;
    /// the factory makes one sandboxed instance per executor, and the
    /// placement says where it may run.
    fn compile(&self, name: &str, module: &WasmModule) -> Result<(Factory, Placement), String>;
}

/// Turns model registrations into functions (implemented by `models`, so
/// this crate does not depend on an inference engine).
pub trait ModelRuntime: Send + Sync {
    /// The factory of instances running model `model`; each instance loads
    /// the model from the store on its first call (and again when the
    /// stored model changes).
    fn function(&self, model: &str) -> Result<(Factory, Placement), String>;
}

/// A registered function's stored form.
pub mod stored {
    use super::FunctionBody;

    /// Key prefix of registered functions (`squall:fn:<name>`).
    pub const KEY_PREFIX: &str = "squall:fn:";
    const VERSION: u8 = 1;
    const KIND_BUILTIN: u8 = 1;
    const KIND_WASM: u8 = 2;
    const KIND_MODEL: u8 = 3;

    #[must_use]
    pub fn key(name: &str) -> Vec<u8> {
        format!("{KEY_PREFIX}{name}").into_bytes()
    }

    /// The function name in a registry key, if it is one.
    #[must_use]
    pub fn name_of(key: &[u8]) -> Option<&str> {
        key.strip_prefix(KEY_PREFIX.as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
    }

    /// `[version, kind, body...]`; a WebAssembly body is its three limits
    /// (u32 LE each: memory MiB, timeout ms, result bytes) then the module;
    /// a model body is the model's name.
    #[must_use]
    pub fn encode(body: &FunctionBody) -> Vec<u8> {
        match body {
            FunctionBody::Builtin(b) => [&[VERSION, KIND_BUILTIN][..], b.as_bytes()].concat(),
            FunctionBody::Model(m) => [&[VERSION, KIND_MODEL][..], m.as_bytes()].concat(),
            FunctionBody::Wasm(m) => {
                let mut out = Vec::with_capacity(14 + m.bytes.len());
                out.extend_from_slice(&[VERSION, KIND_WASM]);
                for v in [
                    m.limits.memory_mb,
                    m.limits.timeout_ms,
                    m.limits.result_bytes_max,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&m.bytes);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<FunctionBody, String> {
        match bytes {
            [VERSION, KIND_BUILTIN, rest @ ..] => std::str::from_utf8(rest)
                .map(|b| FunctionBody::Builtin(b.to_owned()))
                .map_err(|_| "built-in name is not UTF-8".to_owned()),
            [VERSION, KIND_MODEL, rest @ ..] => std::str::from_utf8(rest)
                .map(|m| FunctionBody::Model(m.to_owned()))
                .map_err(|_| "model name is not UTF-8".to_owned()),
            [VERSION, KIND_WASM, rest @ ..] if rest.len() >= 12 => {
                let u =
                    |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
                Ok(FunctionBody::Wasm(super::WasmModule {
                    limits: super::SandboxLimits {
                        memory_mb: u(0),
                        timeout_ms: u(4),
                        result_bytes_max: u(8),
                    },
                    bytes: rest[12..].to_vec(),
                }))
            }
            [v, k, ..] => Err(format!("unknown function record version {v} kind {k}")),
            _ => Err("function record too short".to_owned()),
        }
    }
}

#[derive(Clone)]
struct Entry {
    factory: Factory,
    placement: Placement,
    /// Which implementation: instances are kept per (name, implementation).
    implementation: Arc<str>,
}

/// Function names → factories and placements. Shared by every shard and
/// executor of a node; registrations from the store are applied to it at
/// run time.
#[derive(Default)]
pub struct Registry {
    /// Compiled in (built-ins, and what the embedding program registered).
    fixed: HashMap<String, Entry>,
    /// Registered by users, mirrored from the store.
    defined: RwLock<HashMap<String, Entry>>,
    /// Bumped by every change of `defined`: what was validated against an
    /// older generation must be validated again.
    generation: AtomicU64,
    /// Compiles uploaded WebAssembly; none: such registrations are refused.
    wasm: Option<Arc<dyn WasmCompiler>>,
    /// Runs models; none: model registrations are refused.
    models: Option<Arc<dyn ModelRuntime>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.names())
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(RegistryError::BadName(name.to_owned()))
    }
}

impl Registry {
    /// A registry holding the built-in functions.
    #[must_use]
    pub fn with_builtins() -> Registry {
        let mut r = Registry::default();
        for (name, factory, placement) in builtins() {
            let implementation: Arc<str> = Arc::from(name);
            r.fixed.insert(
                name.to_owned(),
                Entry {
                    factory,
                    placement,
                    implementation,
                },
            );
        }
        r
    }

    /// Accepts WebAssembly registrations, compiled by `compiler`.
    #[must_use]
    pub fn with_wasm(mut self, compiler: Arc<dyn WasmCompiler>) -> Registry {
        self.wasm = Some(compiler);
        self
    }

    /// Accepts model registrations, run by `runtime`.
    #[must_use]
    pub fn with_models(mut self, runtime: Arc<dyn ModelRuntime>) -> Registry {
        self.models = Some(runtime);
        self
    }

    /// Compiles in a function that runs on executor threads.
    pub fn register(&mut self, name: &str, factory: Factory) -> Result<(), RegistryError> {
        self.register_with(name, factory, Placement::Executor)
    }

    /// Compiles in a function with an explicit placement.
    pub fn register_with(
        &mut self,
        name: &str,
        factory: Factory,
        placement: Placement,
    ) -> Result<(), RegistryError> {
        check_name(name)?;
        if self.contains(name) {
            return Err(RegistryError::Exists(name.to_owned()));
        }
        let implementation: Arc<str> = Arc::from(name);
        self.fixed.insert(
            name.to_owned(),
            Entry {
                factory,
                placement,
                implementation,
            },
        );
        Ok(())
    }

    /// Checks a user registration without applying it (before it is
    /// stored): the name, the built-in, or the module (compiled here).
    pub fn check_definition(&self, name: &str, body: &FunctionBody) -> Result<(), RegistryError> {
        self.entry_for(name, body).map(|_| ())
    }

    fn entry_for(&self, name: &str, body: &FunctionBody) -> Result<Entry, RegistryError> {
        check_name(name)?;
        if self.fixed.contains_key(name) {
            return Err(RegistryError::Builtin(name.to_owned()));
        }
        match body {
            FunctionBody::Builtin(b) => {
                let mut entry = self
                    .fixed
                    .get(b)
                    .cloned()
                    .ok_or_else(|| RegistryError::UnknownBuiltin(b.clone()))?;
                entry.implementation = Arc::from(format!("builtin:{b}"));
                Ok(entry)
            }
            FunctionBody::Model(model) => {
                check_name(model)?;
                let runtime = self.models.as_ref().ok_or(RegistryError::NoModels)?;
                let (factory, placement) = runtime
                    .function(model)
                    .map_err(|e| RegistryError::InvalidModel(model.clone(), e))?;
                Ok(Entry {
                    factory,
                    placement,
                    implementation: Arc::from(format!("model:{model}")),
                })
            }
            FunctionBody::Wasm(module) => {
                let compiler = self.wasm.as_ref().ok_or(RegistryError::NoWasm)?;
                let (factory, placement) = compiler
                    .compile(name, module)
                    .map_err(RegistryError::InvalidModule)?;
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&module.bytes, &mut h);
                std::hash::Hash::hash(
                    &(
                        module.limits.memory_mb,
                        module.limits.timeout_ms,
                        module.limits.result_bytes_max,
                    ),
                    &mut h,
                );
                Ok(Entry {
                    factory,
                    placement,
                    implementation: Arc::from(format!(
                        "wasm:{:016x}",
                        std::hash::Hasher::finish(&h)
                    )),
                })
            }
        }
    }

    /// Applies a user registration (replacing any earlier one of the name).
    pub fn define(&self, name: &str, body: &FunctionBody) -> Result<(), RegistryError> {
        let entry = self.entry_for(name, body)?;
        self.defined_mut().insert(name.to_owned(), entry);
        Ok(())
    }

    /// Removes a user registration; `true` if there was one.
    pub fn undefine(&self, name: &str) -> bool {
        self.defined_mut().remove(name).is_some()
    }

    /// Changes with every user registration or removal.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn defined_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // A panic while holding the lock cannot leave the map half-updated
        // (single insert/remove), so a poisoned lock is still consistent.
        self.defined
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, name: &str) -> Option<Entry> {
        if let Some(e) = self.fixed.get(name) {
            return Some(e.clone());
        }
        self.defined
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Whether `name` is compiled in (cannot be replaced or deleted).
    #[must_use]
    pub fn is_builtin(&self, name: &str) -> bool {
        self.fixed.contains_key(name)
    }

    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.placement(name).is_some()
    }

    /// Where `name` runs, if registered.
    #[must_use]
    pub fn placement(&self, name: &str) -> Option<Placement> {
        if let Some(e) = self.fixed.get(name) {
            return Some(e.placement);
        }
        self.defined
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .map(|e| e.placement)
    }

    /// Registered names (built-in and user), sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fixed.keys().cloned().collect();
        v.extend(
            self.defined
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keys()
                .cloned(),
        );
        v.sort();
        v
    }
}

/// One executor: its id, its live function instances, and the mailboxes.
pub struct Executor {
    id: u64,
    registry: Arc<Registry>,
    post: Arc<Postbox>,
    /// By name: the implementation the instance came from, and the instance.
    instances: HashMap<String, (Arc<str>, Box<dyn Function>)>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("id", &self.id).finish()
    }
}

/// What one invocation receives: one trigger's arguments, or a batch.
#[derive(Clone, Copy)]
enum Input<'a> {
    One(&'a [Vec<u8>]),
    Batch(&'a [Vec<Vec<u8>>]),
}

impl Input<'_> {
    fn len(self) -> usize {
        match self {
            Input::One(_) => 1,
            Input::Batch(b) => b.len(),
        }
    }
}

fn not_registered(name: &str) -> FnError {
    FnError::Failed {
        function: name.to_owned(),
        message: "not registered".to_owned(),
    }
}

impl Executor {
    /// An executor with no mailboxes (`send` goes to inbox keys).
    #[must_use]
    pub fn new(id: u64, registry: Arc<Registry>) -> Executor {
        Executor::with_post(id, registry, Arc::new(Postbox::default()))
    }

    #[must_use]
    pub fn with_post(id: u64, registry: Arc<Registry>, post: Arc<Postbox>) -> Executor {
        Executor {
            id,
            registry,
            post,
            instances: HashMap::new(),
        }
    }

    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Calls one function.
    pub fn call(
        &mut self,
        name: &str,
        store: &dyn Store,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, FnError> {
        self.invoke(name, store, Input::One(args))
            .pop()
            .unwrap_or_else(|| Err(not_registered(name)))
    }

    /// Calls one function with several triggers at once (one result each).
    /// A panic fails every trigger of the batch with an error naming the
    /// function, and the instance is discarded (the next call gets a fresh
    /// one).
    pub fn call_batch(
        &mut self,
        name: &str,
        store: &dyn Store,
        batch: &[Vec<Vec<u8>>],
    ) -> Vec<Result<Vec<u8>, FnError>> {
        match batch {
            [one] => self.invoke(name, store, Input::One(one)),
            _ => self.invoke(name, store, Input::Batch(batch)),
        }
    }

    fn invoke(
        &mut self,
        name: &str,
        store: &dyn Store,
        input: Input<'_>,
    ) -> Vec<Result<Vec<u8>, FnError>> {
        let n = input.len();
        let fail = |e: FnError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        // The current implementation of `name`: a fresh instance if it
        // changed (re-registered) or none exists yet.
        let current = self
            .registry
            .fixed
            .get(name)
            .map(|e| e.implementation.clone());
        let stale = match (self.instances.get(name), &current) {
            (Some((have, _)), Some(now)) => have != now,
            (Some(_), None) | (None, _) => true,
        };
        if stale {
            let Some(entry) = self.registry.entry(name) else {
                self.instances.remove(name);
                return fail(not_registered(name));
            };
            let fresh = match self.instances.get(name) {
                Some((have, _)) => *have != entry.implementation,
                None => true,
            };
            if fresh {
                self.instances
                    .insert(name.to_owned(), (entry.implementation, (entry.factory)()));
            }
        }
        let Some((_, instance)) = self.instances.get_mut(name) else {
            return fail(not_registered(name));
        };
        let mut cx = Context::new(name, self.id, store, &self.post);
        let outcome = catch_unwind(AssertUnwindSafe(|| match input {
            Input::One(args) => vec![instance.call(&mut cx, args)],
            Input::Batch(batch) => instance.call_batch(&mut cx, batch),
        }));
        match outcome {
            Ok(results) if results.len() == n => results,
            Ok(results) => fail(FnError::Failed {
                function: name.to_owned(),
                message: format!("returned {} results for a batch of {n}", results.len()),
            }),
            Err(panic) => {
                self.instances.remove(name);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic payload".to_owned());
                fail(FnError::Panicked {
                    function: name.to_owned(),
                    message,
                })
            }
        }
    }

    /// Runs a whole DAG on this executor, one function after another
    /// (replicas too, in turn). `args` gives source functions their
    /// arguments by name; references are read from `store`. Returns the
    /// sink's result.
    pub fn run_dag(
        &mut self,
        dag: &Arc<Dag>,
        store: &dyn Store,
        args: HashMap<String, Vec<Arg>>,
    ) -> Result<Vec<u8>, FnError> {
        let (mut run, mut ready) =
            DagRun::start(dag.clone(), args).map_err(|message| FnError::Failed {
                function: dag.name().to_owned(),
                message,
            })?;
        while let Some(t) = ready.pop() {
            let name = dag.node(t.node).function.clone();
            for _ in 0..dag.node(t.node).options.replicas {
                let result =
                    resolve(&name, store, &t.args).and_then(|a| self.call(&name, store, &a));
                match run.complete(t.node, result) {
                    Progress::Ready(more) => ready.extend(more),
                    Progress::Finished(out) => return out,
                    Progress::Ignored => {}
                }
            }
        }
        Err(FnError::Failed {
            function: dag.name().to_owned(),
            message: "the DAG stopped before its sink ran".to_owned(),
        })
    }
}

/// Resolves references among `args` (each must name a key holding an LWW
/// value) for a call to `function`.
pub fn resolve(function: &str, store: &dyn Store, args: &[Arg]) -> Result<Vec<Vec<u8>>, FnError> {
    args.iter()
        .map(|a| match a {
            Arg::Value(v) => Ok(v.clone()),
            Arg::Ref(key) => {
                let fail = |message: String| FnError::Failed {
                    function: function.to_owned(),
                    message,
                };
                let shown = String::from_utf8_lossy(key);
                match store.get(key) {
                    Ok(Some(kvs_core::lattice::Value::Lww(l))) => Ok(l.value().to_vec()),
                    Ok(Some(other)) => Err(fail(format!(
                        "argument references key {shown:?}, which holds a {} value; references read LWW values",
                        other.kind()
                    ))),
                    Ok(None) => Err(fail(format!(
                        "argument references key {shown:?}, which has no value"
                    ))),
                    Err(e) => Err(FnError::Store {
                        function: function.to_owned(),
                        source: e,
                    }),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::DagSpec;
    use crate::function::factory_of;
    use crate::store::LocalStore;
    use kvs_core::lattice::Value;

    fn validated(spec: &DagSpec, known: impl Fn(&str) -> bool) -> Arc<Dag> {
        Arc::new(Dag::validate(spec, known).unwrap())
    }

    fn args(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<Arg>> {
        pairs
            .iter()
            .map(|(f, a)| {
                (
                    (*f).to_owned(),
                    a.iter()
                        .map(|s| Arg::Value(s.as_bytes().to_vec()))
                        .collect(),
                )
            })
            .collect()
    }

    fn setup() -> (Executor, Arc<Registry>, LocalStore) {
        let mut reg = Registry::with_builtins();
        // A function that stores its argument, one that reads it back, and
        // one that panics.
        reg.register(
            "remember",
            factory_of(|cx: &mut Context<'_>, args: &[Vec<u8>]| {
                cx.put_bytes(b"memo", args.concat())?;
                Ok(b"ok".to_vec())
            }),
        )
        .unwrap();
        reg.register(
            "recall",
            factory_of(
                |cx: &mut Context<'_>, _: &[Vec<u8>]| match cx.get(b"memo")? {
                    Some(Value::Lww(l)) => Ok(l.value().to_vec()),
                    other => Err(cx.fail(format!("memo is {other:?}"))),
                },
            ),
        )
        .unwrap();
        reg.register(
            "explode",
            factory_of(
                |_: &mut Context<'_>, _: &[Vec<u8>]| -> Result<Vec<u8>, FnError> { panic!("boom") },
            ),
        )
        .unwrap();
        let reg = Arc::new(reg);
        (Executor::new(7, reg.clone()), reg, LocalStore::default())
    }

    #[test]
    fn square_of_increment() {
        let (mut ex, reg, store) = setup();
        let dag = validated(&DagSpec::chain("compose", &["increment", "square"]), |f| {
            reg.contains(f)
        });
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("increment", &["41"])]))
                .unwrap(),
            b"1764"
        );
    }

    #[test]
    fn diamond_fans_out_and_in_with_list_order_arguments() {
        let (mut ex, reg, store) = setup();
        // echo → increment, echo → square; both → echo2 (concatenates in list order).
        let mut spec = DagSpec::chain("diamond", &["echo", "square", "increment"]);
        spec.functions.push(("sum".into(), Default::default()));
        spec.edges = vec![
            ("echo".into(), "square".into()),
            ("echo".into(), "increment".into()),
            ("square".into(), "sum".into()),
            ("increment".into(), "sum".into()),
        ];
        let dag = validated(&spec, |f| reg.contains(f));
        // sum(square(3), increment(3)) = 9 + 4
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("echo", &["3"])])).unwrap(),
            b"13"
        );
        // Argument order is the function-list order: check with echo as the sink.
        let mut spec2 = spec.clone();
        spec2.functions[3].0 = "echo2".into();
        reg.define("echo2", &FunctionBody::Builtin("echo".into()))
            .unwrap();
        for e in &mut spec2.edges {
            if e.1 == "sum" {
                e.1 = "echo2".into();
            }
        }
        let dag2 = validated(&spec2, |f| reg.contains(f));
        let mut ex2 = Executor::new(1, reg.clone());
        assert_eq!(
            ex2.run_dag(&dag2, &store, args(&[("echo", &["3"])]))
                .unwrap(),
            b"94",
            "square's 9, then increment's 4"
        );
    }

    #[test]
    fn state_written_by_one_function_is_visible_to_the_next() {
        let (mut ex, reg, store) = setup();
        let dag = validated(&DagSpec::chain("memo", &["remember", "recall"]), |f| {
            reg.contains(f)
        });
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("remember", &["hello"])]))
                .unwrap(),
            b"hello"
        );
    }

    #[test]
    fn errors_and_panics_name_the_function_and_the_executor_recovers() {
        let (mut ex, _reg, store) = setup();
        let err = ex.call("increment", &store, &[b"x".to_vec()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function increment: expected a decimal integer, got \"x\""
        );
        let err = ex.call("explode", &store, &[]).unwrap_err();
        assert_eq!(err.to_string(), "function explode: panicked: boom");
        assert_eq!(
            ex.call("increment", &store, &[b"1".to_vec()]).unwrap(),
            b"2"
        );
        assert!(ex
            .call("nope", &store, &[])
            .unwrap_err()
            .to_string()
            .contains("not registered"));
    }

    #[test]
    fn a_function_reads_several_keys_at_once() {
        let (_, _, store) = setup();
        let mut reg = Registry::with_builtins();
        reg.register(
            "pair",
            factory_of(|cx: &mut Context<'_>, _: &[Vec<u8>]| {
                let found = cx.get_many(&[b"a", b"missing", b"b"])?;
                Ok(found
                    .iter()
                    .map(|v| match v {
                        Some(Value::Max(n)) => n.to_string(),
                        _ => "-".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes())
            }),
        )
        .unwrap();
        store.put(b"a", Value::Max(1)).unwrap();
        store.put(b"b", Value::Max(2)).unwrap();
        let mut ex = Executor::new(1, Arc::new(reg));
        assert_eq!(ex.call("pair", &store, &[]).unwrap(), b"1,-,2");
    }

    #[test]
    fn incr_key_keeps_state_in_the_store() {
        let (mut ex, _reg, store) = setup();
        for want in ["1", "2"] {
            assert_eq!(
                ex.call("incr_key", &store, &[b"n".to_vec()]).unwrap(),
                want.as_bytes()
            );
        }
        store.put(b"s", Value::Max(3)).unwrap();
        let err = ex.call("incr_key", &store, &[b"s".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("holds a max value"), "{err}");
    }

    #[test]
    fn inline_functions_run_against_a_store_that_refuses() {
        let (mut ex, _reg, _store) = setup();
        let err = ex
            .call("incr_key", &crate::store::NoStore, &[b"k".to_vec()])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("inline functions have no store access"),
            "{err}"
        );
        let reg = Registry::with_builtins();
        assert_eq!(reg.placement("increment"), Some(Placement::Inline));
        assert_eq!(reg.placement("incr_key"), Some(Placement::Executor));
        assert_eq!(reg.placement("sleep_ms"), Some(Placement::Executor));
        assert_eq!(reg.placement("nope"), None);
    }

    #[test]
    fn class_functions_keep_state_per_executor() {
        let (mut ex, reg, store) = setup();
        let mut other = Executor::new(8, reg);
        for want in ["1", "2", "3"] {
            assert_eq!(ex.call("counter", &store, &[]).unwrap(), want.as_bytes());
        }
        assert_eq!(
            other.call("counter", &store, &[]).unwrap(),
            b"1",
            "each executor has its own instance"
        );
    }

    #[test]
    fn registration_checks_names() {
        let mut reg = Registry::with_builtins();
        let f = builtins().remove(0).1;
        assert_eq!(
            reg.register("increment", f.clone()),
            Err(RegistryError::Exists("increment".into()))
        );
        assert!(matches!(
            reg.register("bad name", f.clone()),
            Err(RegistryError::BadName(_))
        ));
        assert!(matches!(
            reg.register("", f),
            Err(RegistryError::BadName(_))
        ));
        assert!(reg.names().contains(&"sleep_ms".to_owned()));
    }

    #[test]
    fn registered_names_bind_builtins_and_round_trip_through_their_stored_form() {
        let reg = Registry::with_builtins();
        let body = FunctionBody::Builtin("increment".into());
        assert_eq!(stored::decode(&stored::encode(&body)).unwrap(), body);
        assert_eq!(stored::name_of(&stored::key("plus_one")), Some("plus_one"));
        reg.define("plus_one", &body).unwrap();
        assert_eq!(reg.placement("plus_one"), Some(Placement::Inline));
        let mut ex = Executor::new(1, Arc::new(reg));
        assert_eq!(
            ex.call("plus_one", &LocalStore::default(), &[b"1".to_vec()])
                .unwrap(),
            b"2"
        );
        let reg = Registry::with_builtins();
        assert_eq!(
            reg.define("square", &body),
            Err(RegistryError::Builtin("square".into()))
        );
        assert_eq!(
            reg.define("x", &FunctionBody::Builtin("nope".into())),
            Err(RegistryError::UnknownBuiltin("nope".into()))
        );
        assert!(stored::decode(&[9, 9]).is_err());
        let model = FunctionBody::Model("squeezenet".into());
        assert_eq!(stored::decode(&stored::encode(&model)).unwrap(), model);
        assert_eq!(reg.define("m", &model), Err(RegistryError::NoModels));
        reg.define("x", &body).unwrap();
        assert!(reg.undefine("x") && !reg.contains("x"));
    }

    #[test]
    fn a_redefined_name_gets_a_fresh_instance_of_the_new_builtin() {
        let reg = Arc::new(Registry::with_builtins());
        reg.define("f", &FunctionBody::Builtin("counter".into()))
            .unwrap();
        let mut ex = Executor::new(1, reg.clone());
        let store = LocalStore::default();
        assert_eq!(ex.call("f", &store, &[]).unwrap(), b"1");
        assert_eq!(ex.call("f", &store, &[]).unwrap(), b"2");
        reg.define("f", &FunctionBody::Builtin("square".into()))
            .unwrap();
        assert_eq!(ex.call("f", &store, &[b"3".to_vec()]).unwrap(), b"9");
    }

    #[test]
    fn competitive_replicas_in_thread_first_valid_result_wins() {
        let (mut ex, reg, store) = setup();
        let mut spec = DagSpec::chain("race", &["valid_on"]);
        spec.functions[0].1.replicas = 3;
        let dag = validated(&spec, |f| reg.contains(f));
        // valid only on executor 7 (this one): every replica is valid.
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("valid_on", &["7"])]))
                .unwrap(),
            b"7"
        );
        let err = ex
            .run_dag(&dag, &store, args(&[("valid_on", &["8"])]))
            .unwrap_err();
        assert!(err.to_string().contains("all 3 replicas failed"), "{err}");
    }

    #[test]
    fn reference_arguments_are_read_before_the_call() {
        let (mut ex, reg, store) = setup();
        let dag = validated(&DagSpec::chain("r", &["increment", "square"]), |f| {
            reg.contains(f)
        });
        store
            .put(
                b"x",
                Value::Lww(kvs_core::lattice::Lww::new(
                    Default::default(),
                    b"4".to_vec(),
                )),
            )
            .unwrap();
        let refs = HashMap::from([("increment".to_owned(), vec![Arg::Ref(b"x".to_vec())])]);
        assert_eq!(ex.run_dag(&dag, &store, refs).unwrap(), b"25");
        let missing = HashMap::from([("increment".to_owned(), vec![Arg::Ref(b"y".to_vec())])]);
        let err = ex.run_dag(&dag, &store, missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function increment: argument references key \"y\", which has no value"
        );
        store.put(b"s", Value::Max(1)).unwrap();
        let err = resolve("f", &store, &[Arg::Ref(b"s".to_vec())]).unwrap_err();
        assert!(err.to_string().contains("holds a max value"), "{err}");
    }

    #[test]
    fn batches_reach_functions_that_take_them_and_panics_fail_the_whole_batch() {
        let (mut ex, _reg, store) = setup();
        let batch = vec![vec![], vec![], vec![]];
        let out = ex.call_batch("batch_size", &store, &batch);
        assert_eq!(out, vec![Ok(b"3".to_vec()); 3]);
        // Functions without a batch form see each trigger in turn.
        let out = ex.call_batch(
            "increment",
            &store,
            &[vec![b"1".to_vec()], vec![b"5".to_vec()]],
        );
        assert_eq!(out, vec![Ok(b"2".to_vec()), Ok(b"6".to_vec())]);
        let out = ex.call_batch("explode", &store, &batch);
        assert!(out
            .iter()
            .all(|r| matches!(r, Err(FnError::Panicked { .. }))));
    }

    #[test]
    fn send_and_recv_between_executors() {
        let reg = Arc::new(Registry::with_builtins());
        let post = Arc::new(Postbox::new([1, 2], 8, 0));
        let store = LocalStore::default();
        let mut a = Executor::with_post(1, reg.clone(), post.clone());
        let mut b = Executor::with_post(2, reg, post);
        assert_eq!(
            a.call("send_to", &store, &[b"2".to_vec(), b"hi".to_vec()])
                .unwrap(),
            b"direct"
        );
        assert_eq!(
            a.call("send_to", &store, &[b"5".to_vec(), b"later".to_vec()])
                .unwrap(),
            b"inbox"
        );
        assert_eq!(
            b.call("recv_wait", &store, &[b"100".to_vec()]).unwrap(),
            b"hi"
        );
        let err = b.call("recv_wait", &store, &[b"1".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("no message within 1 ms"), "{err}");
    }
}
