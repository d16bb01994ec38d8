//! The runtime against hand-written guests (WAT): the ABI, every host call,
//! limits, traps, and upload checks. The Rust guests of `guests/` are tested
//! through a running node (`dataplane/tests/it/wasm.rs`).

use std::sync::Arc;

use executor::function::FnError;
use executor::instances::Instances;
use executor::message::Postbox;
use executor::registry::{FunctionBody, Registry, SandboxLimits, WasmModule};
use executor::store::{LocalStore, Store};
use kvs_core::lattice::Value;

use super::*;

/// A bump allocator and the exports every guest needs; `body` defines
/// `squall_call`.
fn guest(imports: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            {imports}
            (memory (export "memory") 1)
            (global $next (mut i32) (i32.const 1024))
            (func (export "squall_alloc") (param $len i32) (result i32)
              (local $p i32)
              (local.set $p (global.get $next))
              (global.set $next (i32.add (global.get $next) (local.get $len)))
              (local.get $p))
            {body})"#
    ))
    .expect("valid WAT")
}

/// Returns its encoded arguments as the result.
const ECHO_ARGS: &str = r#"(func (export "squall_call") (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))"#;

fn registry(
    name: &str,
    bytes: Vec<u8>,
    limits: SandboxLimits,
) -> (Arc<Registry>, Result<(), String>) {
    let runtime = WasmRuntime::new(Compiler::Winch).expect("runtime");
    let reg = Registry::with_builtins().with_wasm(runtime);
    let outcome = reg
        .define(
            name,
            &FunctionBody::Wasm(WasmModule {
                bytes,
                limits,
                precompiled: None,
            }),
        )
        .map_err(|e| e.to_string());
    (Arc::new(reg), outcome)
}

#[test]
fn a_guest_gets_its_arguments_and_returns_bytes_and_its_instance_is_reused() {
    let (reg, ok) = registry("echo_args", guest("", ECHO_ARGS), SandboxLimits::default());
    ok.unwrap();
    let mut ex = Instances::new(3, reg);
    let store = LocalStore::default();
    let out = ex
        .call("echo_args", &store, &[b"ab".to_vec(), b"c".to_vec()])
        .unwrap();
    assert_eq!(out, abi::encode_args(&[b"ab".to_vec(), b"c".to_vec()]));
    // Same instance: its bump allocator moved on, results still right.
    for _ in 0..100 {
        assert_eq!(
            ex.call("echo_args", &store, &[b"x".to_vec()]).unwrap(),
            abi::encode_args(&[b"x".to_vec()])
        );
    }
}

#[test]
fn every_host_call_works_from_a_guest() {
    // put("k", Max 5); get("k") → pending; take_pending into 2048; delete;
    // send to executor 9 (no mailbox: inbox key); recv; log; get_id; the
    // result is the 9 bytes of the encoded Max value read back.
    let imports = r#"
        (import "squall" "get" (func $get (param i32 i32) (result i32)))
        (import "squall" "put" (func $put (param i32 i32 i32 i32)))
        (import "squall" "delete" (func $delete (param i32 i32) (result i32)))
        (import "squall" "take_pending" (func $take (param i32)))
        (import "squall" "send" (func $send (param i64 i32 i32) (result i32)))
        (import "squall" "recv" (func $recv (result i32)))
        (import "squall" "log" (func $log (param i32 i32 i32)))
        (import "squall" "get_id" (func $get_id (result i64)))"#;
    let body = r#"
        (data (i32.const 16) "k")
        (data (i32.const 32) "\03\05\00\00\00\00\00\00\00")
        (data (i32.const 64) "hi")
        (func (export "squall_call") (param i32 i32) (result i64)
          (local $n i32)
          (call $put (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 9))
          (local.set $n (call $get (i32.const 16) (i32.const 1)))
          (call $take (i32.const 2048))
          (drop (call $delete (i32.const 16) (i32.const 1)))
          (drop (call $send (i64.const 9) (i32.const 64) (i32.const 2)))
          (drop (call $recv))
          (call $log (i32.const 2) (i32.const 64) (i32.const 2))
          (if (i64.ne (call $get_id) (i64.const 3)) (then unreachable))
          (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.extend_i32_u (local.get $n))))"#;
    let (reg, ok) = registry("kitchen", guest(imports, body), SandboxLimits::default());
    ok.unwrap();
    let post = Arc::new(Postbox::new([3], 4, 0));
    let mut ex = Instances::with_post(3, reg, post);
    let store = LocalStore::default();
    let out = ex.call("kitchen", &store, &[]).unwrap();
    assert_eq!(out, abi::encode_value(&Value::Max(5)).unwrap());
    assert_eq!(store.get(b"k").unwrap(), None, "deleted");
    let Some(Value::OrderedSet(inbox)) = store.get(b"squall:inbox:9").unwrap() else {
        panic!("the message to 9 waits in its inbox key")
    };
    assert!(inbox.iter().next().unwrap().ends_with(b"hi"));
}

#[test]
fn limits_and_traps_end_the_call_with_the_reason_and_the_next_call_works() {
    let limits = SandboxLimits::new(0, 50, 0).unwrap();
    let (reg, ok) = registry("spin", guest("", SPIN), limits);
    ok.unwrap();
    let mut ex = Instances::new(1, reg);
    let store = LocalStore::default();
    let t0 = std::time::Instant::now();
    // One argument of 0 bytes encodes to 8 bytes: the loop.
    let err = ex.call("spin", &store, &[vec![]]).unwrap_err();
    assert!(matches!(err, FnError::LimitExceeded { .. }), "{err}");
    assert!(err.to_string().contains("CPU time limit of 50 ms"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        ex.call("spin", &store, &[]).unwrap(),
        b"",
        "a fresh instance serves the next call"
    );

    let grow = r#"(func (export "squall_call") (param i32 i32) (result i64)
        (drop (memory.grow (i32.const 1000)))
        (i64.const 0))"#;
    let (reg, ok) = registry(
        "grow",
        guest("", grow),
        SandboxLimits::new(16, 0, 0).unwrap(),
    );
    ok.unwrap();
    let err = Instances::new(1, reg)
        .call("grow", &store, &[])
        .unwrap_err();
    assert!(matches!(err, FnError::LimitExceeded { .. }), "{err}");
    assert!(err.to_string().contains("memory limit of 16 MiB"), "{err}");

    let trap = r#"(func (export "squall_call") (param i32 i32) (result i64) unreachable)"#;
    let (reg, ok) = registry("trap", guest("", trap), SandboxLimits::default());
    ok.unwrap();
    let err = Instances::new(1, reg)
        .call("trap", &store, &[])
        .unwrap_err();
    assert!(err.to_string().contains("function trap: trapped"), "{err}");

    let big = r#"(func (export "squall_call") (param i32 i32) (result i64) (i64.const 100))"#;
    let (reg, ok) = registry("big", guest("", big), SandboxLimits::new(0, 0, 10).unwrap());
    ok.unwrap();
    let err = Instances::new(1, reg).call("big", &store, &[]).unwrap_err();
    assert!(
        err.to_string().contains("result limit is 10 bytes"),
        "{err}"
    );
}

#[test]
fn a_guest_can_fail_or_declare_its_result_invalid() {
    let imports = r#"(import "squall" "fail" (func $fail (param i32 i32 i32)))"#;
    let body = r#"(data (i32.const 16) "nope")
        (func (export "squall_call") (param $p i32) (param $n i32) (result i64)
          (call $fail (i32.eq (local.get $n) (i32.const 8)) (i32.const 16) (i32.const 4))
          (i64.const 0))"#;
    let (reg, ok) = registry("picky", guest(imports, body), SandboxLimits::default());
    ok.unwrap();
    let mut ex = Instances::new(1, reg);
    let store = LocalStore::default();
    // No arguments (4 encoded bytes): an error; one empty argument (8
    // bytes): an invalid result.
    let err = ex.call("picky", &store, &[]).unwrap_err();
    assert_eq!(
        err,
        FnError::Failed {
            function: "picky".into(),
            message: "nope".into()
        }
    );
    let err = ex.call("picky", &store, &[b"".to_vec()]).unwrap_err();
    assert_eq!(
        err,
        FnError::Invalid {
            function: "picky".into(),
            reason: "nope".into()
        }
    );
}

#[test]
fn uploads_that_are_not_guests_are_refused_with_the_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello".to_vec(), "not a WebAssembly module"),
        (b"\0asm\x01\0\0\0\x99".to_vec(), "does not compile"),
        (
            wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap(),
            "missing export function `squall_alloc`",
        ),
        (
            guest(
                r#"(import "squall" "get" (func (param i32) (result i32)))"#,
                ECHO_ARGS,
            ),
            "imports",
        ),
        (
            guest(r#"(import "env" "clock" (func (result i64)))"#, ECHO_ARGS),
            "imports",
        ),
        (
            guest(
                "",
                r#"(func (export "squall_call") (param i32) (result i64) (i64.const 0))"#,
            ),
            "it must be (i32 i32) -> i64",
        ),
    ];
    for (bytes, want) in cases {
        let (_, outcome) = registry("bad", bytes, SandboxLimits::default());
        let err = outcome.unwrap_err();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
    assert!(SandboxLimits::new(100_000, 0, 0).is_err());
}

#[test]
fn both_compilers_run_guests() {
    let runtime = WasmRuntime::new(Compiler::Cranelift).expect("runtime");
    let reg = Arc::new(Registry::with_builtins().with_wasm(runtime));
    let module = WasmModule {
        bytes: guest("", ECHO_ARGS),
        limits: SandboxLimits::default(),
        precompiled: None,
    };
    reg.define("e", &FunctionBody::Wasm(module)).unwrap();
    let out = Instances::new(1, reg)
        .call("e", &LocalStore::default(), &[b"z".to_vec()])
        .unwrap();
    assert_eq!(out, abi::encode_args(&[b"z".to_vec()]));
}

#[test]
fn pure_short_guests_run_inline_and_the_rest_on_executor_threads() {
    use executor::function::Placement;
    let store_import = r#"(import "squall" "get" (func (param i32 i32) (result i32)))"#;
    for (imports, timeout_ms, want) in [
        ("", 5, Placement::Inline),
        ("", 0, Placement::Executor),
        (store_import, 5, Placement::Executor),
    ] {
        let limits = SandboxLimits::new(0, timeout_ms, 0).unwrap();
        let (reg, ok) = registry("f", guest(imports, ECHO_ARGS), limits);
        ok.unwrap();
        assert_eq!(
            reg.placement("f"),
            Some(want),
            "imports {imports:?}, timeout {timeout_ms}"
        );
    }
}

/// Spins forever when given one argument (8 encoded bytes).
const SPIN: &str = r#"(func (export "squall_call") (param $p i32) (param $n i32) (result i64)
    (if (i32.eq (local.get $n) (i32.const 8)) (then (loop (br 0))))
    (i64.const 0))"#;

/// Waits until `runtime`'s epoch has not moved for 4 ticks (at most 2 s)
/// and returns it.
fn settled_ticks(runtime: &WasmRuntime) -> u64 {
    let tick = std::time::Duration::from_millis(WASM_EPOCH_TICK_MS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut last = runtime.epoch_ticks();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(4 * tick);
        let now = runtime.epoch_ticks();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

#[test]
fn the_epoch_advances_only_while_guest_code_runs() {
    let runtime = WasmRuntime::new(Compiler::Winch).expect("runtime");
    let reg = Registry::with_builtins().with_wasm(runtime.clone());
    let limits = SandboxLimits::new(0, 50, 0).unwrap();
    let module = WasmModule {
        bytes: guest("", SPIN),
        limits,
        precompiled: None,
    };
    reg.define("spin", &FunctionBody::Wasm(module)).unwrap();
    let mut ex = Instances::new(1, Arc::new(reg));
    let store = LocalStore::default();
    let idle = std::time::Duration::from_millis(20 * WASM_EPOCH_TICK_MS);

    // Started, a function compiled and registered, nothing run: no tick.
    std::thread::sleep(idle);
    assert_eq!(runtime.epoch_ticks(), 0, "no guest has run yet");

    for round in 1..=2 {
        let before = runtime.epoch_ticks();
        let err = ex.call("spin", &store, &[vec![]]).unwrap_err();
        assert!(
            err.to_string().contains("CPU time limit of 50 ms"),
            "round {round}: {err}"
        );
        let during = runtime.epoch_ticks() - before;
        assert!(
            during >= epoch_ticks(50),
            "round {round}: the loop was interrupted after {during} ticks"
        );
        // Short calls between: they wake the ticker, which sleeps again.
        for _ in 0..10 {
            ex.call("spin", &store, &[]).unwrap();
        }
        // Idle: the ticker sleeps; the epoch stays where it is.
        let settled = settled_ticks(&runtime);
        std::thread::sleep(idle);
        assert_eq!(
            runtime.epoch_ticks(),
            settled,
            "round {round}: the epoch advanced while no guest ran"
        );
    }
}

#[test]
fn a_start_function_that_loops_is_interrupted_at_the_cpu_limit() {
    // Instantiation runs `start`: the ticker must be awake for it too.
    let body = r#"(func $forever (loop (br 0)))
        (start $forever)"#;
    let body = format!("{body}\n{ECHO_ARGS}");
    let (reg, ok) = registry(
        "starts",
        guest("", &body),
        SandboxLimits::new(0, 30, 0).unwrap(),
    );
    ok.unwrap();
    let err = Instances::new(1, reg)
        .call("starts", &LocalStore::default(), &[])
        .unwrap_err();
    assert!(matches!(err, FnError::LimitExceeded { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "function starts: ran past its CPU time limit of 30 ms"
    );
}

#[test]
fn a_store_refusal_names_the_function_once() {
    // put("k", Max 5) onto an LWW key: the store refuses the type.
    let imports = r#"(import "squall" "put" (func $put (param i32 i32 i32 i32)))"#;
    let body = r#"
        (data (i32.const 16) "k")
        (data (i32.const 32) "\03\05\00\00\00\00\00\00\00")
        (func (export "squall_call") (param i32 i32) (result i64)
          (call $put (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 9))
          (i64.const 0))"#;
    let (reg, ok) = registry("typed_put", guest(imports, body), SandboxLimits::default());
    ok.unwrap();
    let store = LocalStore::default();
    store
        .put(
            b"k",
            Value::Lww(kvs_core::lattice::Lww::new(
                Default::default(),
                b"v".to_vec(),
            )),
        )
        .unwrap();
    let refusal = store.put(b"k", Value::Max(5)).unwrap_err();
    let err = Instances::new(1, reg)
        .call("typed_put", &store, &[])
        .unwrap_err();
    assert_eq!(
        err,
        FnError::Store {
            function: "typed_put".into(),
            source: refusal.clone()
        }
    );
    assert_eq!(
        err.to_string(),
        format!("function typed_put: store: {refusal}")
    );
    assert_eq!(err.to_string().matches("typed_put").count(), 1, "{err}");
}

#[test]
fn an_oversized_module_is_refused_with_a_hint_to_build_for_release() {
    let mut bytes = guest("", ECHO_ARGS);
    bytes.resize(WASM_MODULE_BYTES_MAX + 1, 0);
    let (_, outcome) = registry("huge", bytes, SandboxLimits::default());
    assert_eq!(
        outcome.unwrap_err(),
        format!(
            "module refused: a module is at most {WASM_MODULE_BYTES_MAX} bytes, not {}: \
             build it with `cargo build --release` (a debug build is many times larger)",
            WASM_MODULE_BYTES_MAX + 1
        )
    );
}

#[test]
fn a_runtime_loads_another_ones_machine_code_only_when_its_engine_matches() {
    let module = |precompiled| WasmModule {
        bytes: guest("", ECHO_ARGS),
        limits: SandboxLimits::default(),
        precompiled,
    };
    let first = WasmRuntime::new(Compiler::Winch).expect("runtime");
    let code = WasmCompiler::precompile(&*first, &module(None)).expect("serialises");
    assert_eq!(first.loads(), (1, 0), "compiled once, by the first");
    // Another node's runtime, same engine settings: loads, compiles nothing.
    let second = WasmRuntime::new(Compiler::Winch).expect("runtime");
    let reg = Arc::new(Registry::with_builtins().with_wasm(second.clone()));
    reg.define("e", &FunctionBody::Wasm(module(Some(code.clone()))))
        .unwrap();
    assert_eq!(second.loads(), (0, 1));
    let out = Instances::new(1, reg)
        .call("e", &LocalStore::default(), &[b"z".to_vec()])
        .unwrap();
    assert_eq!(out, abi::encode_args(&[b"z".to_vec()]));
    // Another engine (Cranelift) compiles for itself.
    let other = WasmRuntime::new(Compiler::Cranelift).expect("runtime");
    WasmCompiler::compile(&*other, "e", &module(Some(code.clone()))).unwrap();
    assert_eq!(other.loads(), (1, 0));
    // Code that does not load (same hash, not machine code) compiles too.
    let bogus = executor::registry::Precompiled {
        engine: code.engine,
        code: b"not machine code".to_vec(),
    };
    let third = WasmRuntime::new(Compiler::Winch).expect("runtime");
    WasmCompiler::compile(&*third, "e", &module(Some(bogus))).unwrap();
    assert_eq!(third.loads(), (1, 0));
}
