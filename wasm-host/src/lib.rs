//! # wasm-host — uploaded WebAssembly functions, sandboxed
//!
//! Runs guest modules with wasmtime behind the executor's
//! [`executor::function::Function`] trait, so they register, call, batch and
//! compose in DAGs exactly like native functions.
//!
//! * [`WasmRuntime`]: one per node. One wasmtime engine (Winch or Cranelift,
//!   epoch interruption, pooling instance allocator), one linker with the host API,
//!   a cache of compiled modules (a module is compiled once at upload; a
//!   node given the upload's machine code with it loads that instead:
//!   compile once per cluster, see [`WasmRuntime::compile`]), and a
//!   thread that advances the epoch every `WASM_EPOCH_TICK_MS` while guest
//!   code runs (it sleeps, costing nothing, while none does).
//! * [`WasmFunction`]: one per thread (executor, or shard for inline guests)
//!   and function. It instantiates the module once (from an `InstancePre`,
//!   from the pool) and reuses the instance for every call — like a class function, its memory persists —
//!   until a call traps or breaks a limit; then the instance is dropped and
//!   the next call gets a fresh one.
//!
//! The guest ABI (module `squall`) is specified in `docs/functions.md`; the
//! guest SDK in `guests/sdk` implements its other side.
//!
//! ## Boundary
//! Depends on `executor` (the Function trait, the state API) and wasmtime;
//! never on the node or a network runtime. `scripts/check-deps.sh` checks it.

mod abi;
mod host;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use executor::function::{Context, Factory, FnError, Function, Placement};
use executor::limits::{
    WASM_EPOCH_TICK_MS, WASM_INLINE_TIMEOUT_MS_MAX, WASM_INSTANCES_MAX, WASM_MEMORY_MB_MAX,
    WASM_MODULE_BYTES_MAX,
};
use executor::registry::{Precompiled, SandboxLimits, WasmCompiler, WasmModule};
use thiserror::Error;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, Store, Trap, TypedFunc,
};

use crate::host::{Host, HostError};

/// The runtime could not start.
#[derive(Debug, Error)]
#[error("WebAssembly runtime: {0}")]
pub struct RuntimeError(String);

/// Which compiler turns uploads into machine code. Measured on the example
/// guests (`docs/benchmarks.md`): Winch compiles ≈ 3× faster, Cranelift's
/// code runs ≈ 2.4× faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// Baseline compiler: uploads are ready in milliseconds.
    Winch,
    /// Optimising compiler: faster guest code, slower uploads.
    Cranelift,
}

/// `(module (func (export "f") (result i32) i32.const 1))`.
const WARM_UP_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // types: () -> i32
    0x03, 0x02, 0x01, 0x00, // functions: one of type 0
    0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, // exports: "f" = function 0
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x01, 0x0b, // code: i32.const 1
];

/// Ticks the epoch thread keeps running after the last guest left before
/// it sleeps (20 × 5 ms = 100 ms).
const WASM_EPOCH_IDLE_TICKS: u32 = 20;

/// Compiled modules kept for re-registration and restarts of a name.
const MODULE_CACHE_MAX: usize = 64;

/// Guest code running now, and the epoch ticks while it runs.
///
/// Epoch interruption needs a clock that advances while a guest runs; an
/// idle node should not pay for one. The `wasm-epoch` thread therefore
/// waits on `wake` while `running` is 0, and every entry into guest code
/// (a call, an instantiation, which may run a start function) holds a
/// [`Running`] guard. CPU limits stay exact: the thread ticks without pause
/// from the moment the first guest enters until the last one leaves.
#[derive(Debug, Default)]
struct Ticker {
    /// Entries into guest code in progress.
    running: AtomicUsize,
    /// Whether the ticker waits on `wake` (or is about to).
    asleep: std::sync::atomic::AtomicBool,
    /// Taken by the ticker to check `running` and wait, and by an entry
    /// that finds it asleep, to wake it (no lost wake-up).
    lock: Mutex<()>,
    wake: Condvar,
    /// Times the epoch advanced.
    ticks: AtomicU64,
}

impl Ticker {
    /// Marks guest code running until the guard drops.
    fn enter(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        // Only a sleeping ticker needs a wake-up (a syscall): back-to-back
        // calls find it awake. Either the ticker sees `running` > 0 after
        // announcing sleep, or this sees `asleep` (both SeqCst) and
        // notifies under the lock it holds until it waits.
        if self.asleep.load(Ordering::SeqCst) {
            let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_one();
        }
        Running(self)
    }

    /// The `wasm-epoch` thread: advances `engine`'s epoch every tick while
    /// guest code runs; waits, without waking, while none does.
    fn run(&self, engine: &Engine) -> ! {
        let mut idle_ticks = WASM_EPOCH_IDLE_TICKS; // asleep until a guest runs
        loop {
            if self.running.load(Ordering::SeqCst) > 0 {
                idle_ticks = 0;
            } else if idle_ticks < WASM_EPOCH_IDLE_TICKS {
                // Keep ticking a little while after the last guest left, so
                // a stream of calls never pays for a wake-up.
                idle_ticks += 1;
            } else {
                let mut held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
                self.asleep.store(true, Ordering::SeqCst);
                while self.running.load(Ordering::SeqCst) == 0 {
                    held = self.wake.wait(held).unwrap_or_else(PoisonError::into_inner);
                }
                self.asleep.store(false, Ordering::SeqCst);
                idle_ticks = 0;
            }
            std::thread::sleep(Duration::from_millis(WASM_EPOCH_TICK_MS));
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Guest code running (see [`Ticker`]).
struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The node's WebAssembly engine, host API and compiled modules.
pub struct WasmRuntime {
    engine: Engine,
    ticker: Arc<Ticker>,
    linker: Linker<Host>,
    /// Compiled modules by content hash (upload and each shard's apply of
    /// the stored registration compile once).
    cache: Mutex<HashMap<u64, Module>>,
    /// The engine's compatibility hash (`Precompiled::engine`).
    engine_hash: u64,
    /// Modules compiled here, and loaded from precompiled code.
    compiled: AtomicU64,
    loaded: AtomicU64,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").finish_non_exhaustive()
    }
}

impl WasmRuntime {
    /// Starts the engine (compiling with `compiler`) and its epoch thread
    /// (which sleeps until a guest runs).
    pub fn new(compiler: Compiler) -> Result<Arc<WasmRuntime>, RuntimeError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(WASM_INSTANCES_MAX)
            .total_tables(WASM_INSTANCES_MAX)
            .total_core_instances(WASM_INSTANCES_MAX)
            .max_memory_size(WASM_MEMORY_MB_MAX as usize * 1024 * 1024);
        let mut config = Config::new();
        config
            .strategy(match compiler {
                Compiler::Winch => wasmtime::Strategy::Winch,
                Compiler::Cranelift => wasmtime::Strategy::Cranelift,
            })
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| RuntimeError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::define(&mut linker).map_err(|e| RuntimeError(format!("{e:#}")))?;
        // Warm the compiler (its thread pool, code memory) now, so the
        // first upload pays only for its own module.
        Module::new(&engine, WARM_UP_MODULE)
            .map_err(|e| RuntimeError(format!("compiler warm-up: {e:#}")))?;
        let ticker = Arc::new(Ticker::default());
        let (t, e) = (ticker.clone(), engine.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || t.run(&e))
            .map_err(|e| RuntimeError(format!("starting the epoch thread: {e}")))?;
        let engine_hash = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
            std::hash::Hasher::finish(&h)
        };
        Ok(Arc::new(WasmRuntime {
            engine,
            ticker,
            linker,
            cache: Mutex::new(HashMap::new()),
            engine_hash,
            compiled: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
        }))
    }

    /// How many times the epoch has advanced since the runtime started: it
    /// advances only while guest code runs (for tests and diagnostics).
    #[must_use]
    pub fn epoch_ticks(&self) -> u64 {
        self.ticker.ticks.load(Ordering::Relaxed)
    }

    /// Modules compiled here, and modules loaded from their precompiled
    /// code, since the runtime started.
    #[must_use]
    pub fn loads(&self) -> (u64, u64) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.loaded.load(Ordering::Relaxed),
        )
    }

    /// Compiles `bytes` (or takes it from the cache) and checks that it is
    /// a Squall guest: only `squall` imports of the right types, and the
    /// `memory`, `squall_alloc` and `squall_call` exports.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Module, InstancePre<Host>), String> {
        self.compile_or_load(bytes, None)
    }

    /// As [`compile`](Self::compile), loading `precompiled` instead of
    /// compiling when this engine can (same compatibility hash; a load that
    /// fails compiles). The caller vouches for the code: it must be what
    /// `Module::serialize` of an engine of this cluster produced (the node
    /// takes it only from registration records, which only its cluster's
    /// nodes write).
    pub fn compile_or_load(
        &self,
        bytes: &[u8],
        precompiled: Option<&Precompiled>,
    ) -> Result<(Module, InstancePre<Host>), String> {
        if bytes.len() > WASM_MODULE_BYTES_MAX {
            return Err(too_large(bytes.len()));
        }
        if !bytes.starts_with(b"\0asm") {
            return Err("not a WebAssembly module (no \\0asm header)".to_owned());
        }
        let key = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(bytes, &mut h);
            std::hash::Hasher::finish(&h)
        };
        let cached = self.lock_cache().get(&key).cloned();
        let loaded = precompiled
            .filter(|p| cached.is_none() && p.engine == self.engine_hash)
            .and_then(|p| {
                // SAFETY: `Module::deserialize` runs the code it is given.
                // This code comes from a registration record, which only
                // the cluster's own nodes write (registrations need the
                // admin role, node-to-node messages the admin secret, and
                // the node trusts records only when it runs with
                // authentication); it is what `Module::serialize` of an
                // engine with this very compatibility hash produced, and
                // the record's checksum guards it against damage. wasmtime
                // still checks its header, version and settings.
                #[allow(unsafe_code)]
                let m = unsafe { Module::deserialize(&self.engine, &p.code) };
                m.ok()
            });
        let module = match (cached, loaded) {
            (Some(m), _) => m,
            (None, made) => {
                let m = match made {
                    Some(m) => {
                        self.loaded.fetch_add(1, Ordering::Relaxed);
                        m
                    }
                    None => {
                        let m = Module::new(&self.engine, bytes)
                            .map_err(|e| format!("does not compile: {e:#}"))?;
                        self.compiled.fetch_add(1, Ordering::Relaxed);
                        m
                    }
                };
                let mut cache = self.lock_cache();
                if cache.len() >= MODULE_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, m.clone());
                m
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| format!("imports: {e:#}"))?;
        abi::check_exports(&module)?;
        Ok((module, pre))
    }

    /// Compiles `bytes` bypassing the cache (what an upload of new bytes
    /// costs; for benchmarks).
    pub fn compile_uncached(&self, bytes: &[u8]) -> Result<(), String> {
        let module =
            Module::new(&self.engine, bytes).map_err(|e| format!("does not compile: {e:#}"))?;
        abi::check_exports(&module)
    }

    /// A function of `module` outside any registry (for benchmarks and
    /// embedders).
    pub fn function(&self, module: &WasmModule) -> Result<WasmFunction, String> {
        let (_, pre) = WasmRuntime::compile(self, &module.bytes)?;
        Ok(WasmFunction {
            pre,
            engine: self.engine.clone(),
            ticker: self.ticker.clone(),
            limits: module.limits,
            live: None,
        })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Module>> {
        // Inserts and clears cannot be interrupted halfway.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl WasmCompiler for WasmRuntime {
    fn compile(&self, _name: &str, module: &WasmModule) -> Result<(Factory, Placement), String> {
        let (compiled, pre) = self.compile_or_load(&module.bytes, module.precompiled.as_ref())?;
        let limits = module.limits;
        // Pure (no store or messaging imports) and short: like a pure
        // built-in, it may run on the shard's own thread.
        let pure = compiled
            .imports()
            .all(|i| abi::PURE_IMPORTS.contains(&i.name()));
        let placement = if pure && limits.timeout_ms <= WASM_INLINE_TIMEOUT_MS_MAX {
            Placement::Inline
        } else {
            Placement::Executor
        };
        let (engine, ticker) = (self.engine.clone(), self.ticker.clone());
        let factory: Factory = Arc::new(move || {
            Box::new(WasmFunction {
                pre: pre.clone(),
                engine: engine.clone(),
                ticker: ticker.clone(),
                limits,
                live: None,
            }) as Box<dyn Function>
        });
        Ok((factory, placement))
    }

    fn precompile(&self, module: &WasmModule) -> Option<Precompiled> {
        let (compiled, _) = self.compile_or_load(&module.bytes, None).ok()?;
        let code = compiled.serialize().ok()?;
        Some(Precompiled {
            engine: self.engine_hash,
            code,
        })
    }
}

/// One executor's instance of a WebAssembly function.
pub struct WasmFunction {
    pre: InstancePre<Host>,
    engine: Engine,
    ticker: Arc<Ticker>,
    limits: SandboxLimits,
    live: Option<Live>,
}

impl std::fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmFunction")
            .field("limits", &self.limits)
            .field("instantiated", &self.live.is_some())
            .finish()
    }
}

/// A live instance and its entry points.
struct Live {
    store: Store<Host>,
    alloc: TypedFunc<i32, i32>,
    call: TypedFunc<(i32, i32), i64>,
    memory: Memory,
}

impl WasmFunction {
    /// Drops the live instance (if any) and makes a new one from the pool
    /// now (what a call after a trap pays; for benchmarks).
    pub fn reinstantiate(&mut self) -> Result<(), String> {
        self.live = None;
        self.live = Some(self.instantiate().map_err(|e| format!("{e:#}"))?);
        Ok(())
    }

    fn instantiate(&self) -> wasmtime::Result<Live> {
        let mut store = Store::new(&self.engine, Host::new(self.limits));
        store.limiter(|h| &mut h.limiter);
        store.set_epoch_deadline(epoch_ticks(self.limits.timeout_ms));
        // Instantiation runs the module's start function, if any.
        let instance = {
            let _running = self.ticker.enter();
            self.pre.instantiate(&mut store)?
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
        store.data_mut().memory = Some(memory);
        Ok(Live {
            alloc: instance.get_typed_func(&mut store, "squall_alloc")?,
            call: instance.get_typed_func(&mut store, "squall_call")?,
            memory,
            store,
        })
    }

    fn run(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        if self.live.is_none() {
            let live = self.instantiate().map_err(|e| self.error(cx, &e, None))?;
            self.live = Some(live);
        }
        let Some(live) = self.live.as_mut() else {
            return Err(cx.fail("no instance"));
        };
        let input = abi::encode_args(args);
        let len = i32::try_from(input.len()).map_err(|_| cx.fail("arguments exceed 2 GiB"))?;
        live.store
            .set_epoch_deadline(epoch_ticks(self.limits.timeout_ms));
        let running = self.ticker.enter();
        let outcome = host::with_context(&mut live.store, cx, |store| {
            let ptr = live.alloc.call(&mut *store, len)?;
            live.memory
                .write(&mut *store, ptr as u32 as usize, &input)
                .map_err(|_| wasmtime::Error::msg("squall_alloc returned memory out of bounds"))?;
            live.call.call(&mut *store, (ptr, len))
        });
        drop(running);
        let host = live.store.data_mut();
        let declared = host.outcome.take();
        let memory_denied = std::mem::take(&mut host.limiter.denied);
        match outcome {
            Ok(packed) => {
                if let Some((kind, message)) = declared {
                    return Err(if kind == abi::FAIL_INVALID {
                        cx.invalid(message)
                    } else {
                        cx.fail(message)
                    });
                }
                let (ptr, len) = ((packed >> 32) as u32 as usize, packed as u32 as usize);
                if len > self.limits.result_bytes_max as usize {
                    self.live = None;
                    return Err(limit(
                        cx,
                        format!(
                            "returned {len} bytes; its result limit is {} bytes",
                            self.limits.result_bytes_max
                        ),
                    ));
                }
                let data = live.memory.data(&live.store);
                data.get(ptr..ptr.saturating_add(len))
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| cx.fail("returned a result outside its memory"))
            }
            Err(e) => {
                self.live = None; // state unknown after a trap: start afresh
                let interrupted = matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt));
                match declared {
                    // The SDK's panic hook reported the panic, then trapped.
                    Some((_, message)) if !memory_denied && !interrupted => {
                        Err(match cx.fail(message) {
                            FnError::Failed { function, message } => {
                                FnError::Panicked { function, message }
                            }
                            other => other,
                        })
                    }
                    _ => Err(self.error(cx, &e, Some(memory_denied))),
                }
            }
        }
    }

    fn error(&self, cx: &Context<'_>, e: &wasmtime::Error, memory_denied: Option<bool>) -> FnError {
        if memory_denied == Some(true) || e.downcast_ref::<host::MemoryLimit>().is_some() {
            return limit(
                cx,
                format!(
                    "grew past its memory limit of {} MiB",
                    self.limits.memory_mb
                ),
            );
        }
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return limit(
                cx,
                format!(
                    "ran past its CPU time limit of {} ms",
                    self.limits.timeout_ms
                ),
            );
        }
        // A failed state call (a store refusal) already names the function.
        if let Some(fn_error) = e.downcast_ref::<FnError>() {
            return fn_error.clone();
        }
        if let Some(HostError(message)) = e.downcast_ref::<HostError>() {
            return cx.fail(message.clone());
        }
        if let Some(trap) = e.downcast_ref::<Trap>() {
            return cx.fail(format!("trapped: {trap}"));
        }
        cx.fail(format!("{e:#}"))
    }
}

/// Why a module over `WASM_MODULE_BYTES_MAX` is refused, and what to do:
/// a debug build is many times the size of a release build.
fn too_large(len: usize) -> String {
    format!(
        "a module is at most {WASM_MODULE_BYTES_MAX} bytes, not {len}: build it with \
         `cargo build --release` (a debug build is many times larger)"
    )
}

fn limit(cx: &Context<'_>, message: String) -> FnError {
    match cx.fail(message) {
        FnError::Failed { function, message } => FnError::LimitExceeded { function, message },
        other => other,
    }
}

/// Epoch ticks for `timeout_ms` (at least one whole tick beyond it).
fn epoch_ticks(timeout_ms: u32) -> u64 {
    u64::from(timeout_ms).div_ceil(WASM_EPOCH_TICK_MS) + 1
}

impl Function for WasmFunction {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        self.run(cx, args)
    }
}

#[cfg(test)]
mod tests;
