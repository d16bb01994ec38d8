//! The function registry: names → factories and placements.
//!
//! The registry holds the built-ins (compiled into the node, with the test
//! fixtures when asked: [`Registry::with_fixtures`]) and the functions users
//! register by name. A registration is stored in the KVS under
//! `squall:fn:<name>` ([`stored`]), so it survives restarts and every shard
//! sees it: the node applies each write of such a key to its one shared
//! [`Registry`]. A registered function binds a name to a built-in
//! ([`FunctionBody::Builtin`]), an uploaded WebAssembly module
//! ([`FunctionBody::Wasm`], compiled by a [`WasmCompiler`]) or a stored model
//! ([`FunctionBody::Model`], run by a [`ModelRuntime`]).
//!
//! The registry makes no instances: each thread that runs functions keeps
//! its own in an [`Instances`](crate::instances::Instances).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use thiserror::Error;

use crate::function::{builtins, fixtures, Factory, Placement};
use crate::limits::{
    NAME_BYTES_MAX, WASM_MEMORY_MB_DEFAULT, WASM_MEMORY_MB_MAX, WASM_RESULT_BYTES_DEFAULT,
    WASM_RESULT_BYTES_MAX, WASM_TIMEOUT_MS_DEFAULT, WASM_TIMEOUT_MS_MAX,
};

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
    /// Its machine code, compiled by the node that took the upload: a node
    /// whose engine matches loads it instead of compiling (see
    /// [`WasmCompiler::precompile`]).
    pub precompiled: Option<Precompiled>,
}

/// A module's machine code, as an engine serialised it.
#[derive(Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// The compiling engine's compatibility hash (its version, settings
    /// and CPU features): only an engine with the same one may load it.
    pub engine: u64,
    pub code: Vec<u8>,
}

impl std::fmt::Debug for Precompiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Precompiled({:016x}, {} bytes)",
            self.engine,
            self.code.len()
        )
    }
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
    /// the factory makes one sandboxed instance per thread that calls it
    /// (each [`Instances`](crate::instances::Instances) makes its own), and
    /// the placement says where it may run.
    /// The module's code is taken from `module.precompiled` when its
    /// engine matches (the caller vouches that it is what an engine of
    /// this cluster produced: see `wasm-host`'s `Module::deserialize`).
    fn compile(&self, name: &str, module: &WasmModule) -> Result<(Factory, Placement), String>;

    /// The machine code of `module` (compiled, or from the cache), for
    /// storing beside it; `None` when the runtime cannot serialise it.
    fn precompile(&self, _module: &WasmModule) -> Option<Precompiled> {
        None
    }
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
    const KIND_WASM_PRECOMPILED: u8 = 4;

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
    /// with its machine code (kind 4), the module's length (u32 LE) comes
    /// before it, and after it the engine hash, a checksum of the code
    /// (u64 LE each) and the code. A model body is the model's name.
    #[must_use]
    pub fn encode(body: &FunctionBody) -> Vec<u8> {
        match body {
            FunctionBody::Builtin(b) => [&[VERSION, KIND_BUILTIN][..], b.as_bytes()].concat(),
            FunctionBody::Model(m) => [&[VERSION, KIND_MODEL][..], m.as_bytes()].concat(),
            FunctionBody::Wasm(m) => {
                let code = m.precompiled.as_ref().map_or(0, |p| 20 + p.code.len());
                let mut out = Vec::with_capacity(14 + m.bytes.len() + code);
                let kind = match m.precompiled {
                    Some(_) => KIND_WASM_PRECOMPILED,
                    None => KIND_WASM,
                };
                out.extend_from_slice(&[VERSION, kind]);
                for v in [
                    m.limits.memory_mb,
                    m.limits.timeout_ms,
                    m.limits.result_bytes_max,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                if let Some(p) = &m.precompiled {
                    let len = u32::try_from(m.bytes.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&m.bytes);
                    out.extend_from_slice(&p.engine.to_le_bytes());
                    out.extend_from_slice(&checksum(&p.code).to_le_bytes());
                    out.extend_from_slice(&p.code);
                } else {
                    out.extend_from_slice(&m.bytes);
                }
                out
            }
        }
    }

    /// Guards stored machine code against damage (not against forgery:
    /// only the cluster's nodes write these records).
    fn checksum(code: &[u8]) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(code, &mut h);
        std::hash::Hasher::finish(&h)
    }

    fn u32_at(b: &[u8], i: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
    }

    fn u64_at(b: &[u8], i: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
    }

    fn limits_at(b: &[u8]) -> Option<super::SandboxLimits> {
        Some(super::SandboxLimits {
            memory_mb: u32_at(b, 0)?,
            timeout_ms: u32_at(b, 4)?,
            result_bytes_max: u32_at(b, 8)?,
        })
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
                Ok(FunctionBody::Wasm(super::WasmModule {
                    limits: limits_at(rest).ok_or("function record too short")?,
                    bytes: rest[12..].to_vec(),
                    precompiled: None,
                }))
            }
            [VERSION, KIND_WASM_PRECOMPILED, rest @ ..] => {
                let short = || "function record too short".to_owned();
                let limits = limits_at(rest).ok_or_else(short)?;
                let len = u32_at(rest, 12).ok_or_else(short)? as usize;
                let module = rest.get(16..16 + len).ok_or_else(short)?;
                let tail = &rest[16 + len..];
                let (engine, sum) = (u64_at(tail, 0), u64_at(tail, 8));
                let (Some(engine), Some(sum)) = (engine, sum) else {
                    return Err(short());
                };
                let code = &tail[16..];
                Ok(FunctionBody::Wasm(super::WasmModule {
                    limits,
                    bytes: module.to_vec(),
                    // Damaged code is left out: the module compiles again.
                    precompiled: (checksum(code) == sum).then(|| super::Precompiled {
                        engine,
                        code: code.to_vec(),
                    }),
                }))
            }
            [v, k, ..] => Err(format!("unknown function record version {v} kind {k}")),
            _ => Err("function record too short".to_owned()),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) factory: Factory,
    pub(crate) placement: Placement,
    /// Which implementation: instances are kept per (name, implementation).
    pub(crate) implementation: Arc<str>,
}

/// Function names → factories and placements. Shared by every shard and
/// executor thread of a node; registrations from the store are applied to
/// it at run time.
#[derive(Default)]
pub struct Registry {
    /// Compiled in (built-ins, test fixtures if added, and what the
    /// embedding program registered).
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
        Registry::default().with_fixed(builtins())
    }

    /// Adds the test fixtures ([`fixtures`]): functions that sleep, report
    /// the executor id, fail on purpose and the like. They count as
    /// built-ins (cannot be replaced or deleted). A node registers them
    /// only with `--test-fixtures`.
    #[must_use]
    pub fn with_fixtures(self) -> Registry {
        self.with_fixed(fixtures())
    }

    fn with_fixed(mut self, functions: Vec<(&'static str, Factory, Placement)>) -> Registry {
        for (name, factory, placement) in functions {
            let implementation: Arc<str> = Arc::from(name);
            self.fixed.insert(
                name.to_owned(),
                Entry {
                    factory,
                    placement,
                    implementation,
                },
            );
        }
        self
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

    /// The machine code of an uploaded module, to store beside it (`None`
    /// without a WebAssembly runtime, or when it cannot serialise it).
    #[must_use]
    pub fn precompile(&self, module: &WasmModule) -> Option<Precompiled> {
        self.wasm.as_ref()?.precompile(module)
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
        self.changed();
        Ok(())
    }

    /// Removes a user registration; `true` if there was one.
    pub fn undefine(&self, name: &str) -> bool {
        let removed = self.defined_mut().remove(name).is_some();
        self.changed();
        removed
    }

    /// Moves the generation, after the change (the write lock released): a
    /// reader loads the generation before it reads the map, so whatever it
    /// derives from the old map carries the old generation and is stale.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes with every user registration or removal.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn defined_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (single insert/remove), so a poisoned lock is still consistent.
        self.defined
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A built-in's implementation (it never changes); none for other
    /// names.
    pub(crate) fn builtin_implementation(&self, name: &str) -> Option<Arc<str>> {
        self.fixed.get(name).map(|e| e.implementation.clone())
    }

    /// The current entry of `name` (built-in, then user).
    pub(crate) fn entry(&self, name: &str) -> Option<Entry> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instances::Instances;
    use crate::store::LocalStore;

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
        assert!(!reg.contains("sleep_ms"), "fixtures only when asked for");
        let reg = reg.with_fixtures();
        assert!(reg.names().contains(&"sleep_ms".to_owned()));
        assert!(reg.is_builtin("sleep_ms"));
        assert_eq!(
            reg.define("sleep_ms", &FunctionBody::Builtin("echo".into())),
            Err(RegistryError::Builtin("sleep_ms".into()))
        );
    }

    #[test]
    fn registered_names_bind_builtins_and_round_trip_through_their_stored_form() {
        let reg = Registry::with_builtins();
        let body = FunctionBody::Builtin("increment".into());
        assert_eq!(stored::decode(&stored::encode(&body)).unwrap(), body);
        assert_eq!(stored::name_of(&stored::key("plus_one")), Some("plus_one"));
        reg.define("plus_one", &body).unwrap();
        assert_eq!(reg.placement("plus_one"), Some(Placement::Inline));
        let mut ex = Instances::new(1, Arc::new(reg));
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
    fn a_module_and_its_machine_code_round_trip_and_damaged_code_is_left_out() {
        let limits = SandboxLimits::default();
        let plain = WasmModule {
            bytes: b"\0asm-module".to_vec(),
            limits,
            precompiled: None,
        };
        let body = FunctionBody::Wasm(plain.clone());
        assert_eq!(stored::decode(&stored::encode(&body)).unwrap(), body);
        let with_code = FunctionBody::Wasm(WasmModule {
            precompiled: Some(Precompiled {
                engine: 0x1234,
                code: b"machine code".to_vec(),
            }),
            ..plain.clone()
        });
        let mut record = stored::encode(&with_code);
        assert_eq!(stored::decode(&record).unwrap(), with_code);
        let last = record.len() - 1;
        record[last] ^= 1;
        assert_eq!(
            stored::decode(&record).unwrap(),
            body,
            "code damaged: left out"
        );
        for cut in [2, 13, 17, record.len() - 13] {
            assert!(stored::decode(&record[..cut]).is_err(), "cut at {cut}");
        }
    }
}
