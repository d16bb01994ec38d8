//! WebAssembly functions in-thread: compiling an upload, instantiating from
//! the pool, and a warm call, beside the native built-in doing the same
//! work. Needs the example guests (`scripts/build-guests.sh`).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use executor::function::{Context, Function};
use executor::instances::Instances;
use executor::message::Postbox;
use executor::registry::{Registry, SandboxLimits, WasmModule};
use executor::store::LocalStore;
use wasm_host::{Compiler, WasmRuntime};

fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../guests/target/wasm32-unknown-unknown/release/{name}.wasm"
    ));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the guests with scripts/build-guests.sh)",
            path.display()
        )
    })
}

fn wasm(c: &mut Criterion) {
    let bytes = guest("increment");
    let module = WasmModule {
        bytes: bytes.clone(),
        limits: SandboxLimits::default(),
        precompiled: None,
    };
    let store = LocalStore::default();
    let post = Postbox::default();
    let arg = vec![b"41".to_vec()];
    for (label, compiler) in [
        ("winch", Compiler::Winch),
        ("cranelift", Compiler::Cranelift),
    ] {
        let runtime = WasmRuntime::new(compiler).expect("runtime");
        c.bench_function(&format!("wasm/{label}/compile_increment_guest"), |b| {
            b.iter(|| runtime.compile_uncached(&bytes).expect("compiles"))
        });
        let mut f = runtime.function(&module).expect("function");
        c.bench_function(&format!("wasm/{label}/instantiate_from_pool"), |b| {
            b.iter(|| f.reinstantiate().expect("instance"))
        });
        c.bench_function(&format!("wasm/{label}/warm_call_increment"), |b| {
            b.iter(|| {
                let mut cx = Context::new("increment", 1, &store, &post);
                f.call(&mut cx, &arg).expect("call")
            })
        });
    }
    let mut native = Instances::new(1, Arc::new(Registry::with_builtins()));
    c.bench_function("wasm/native_call_increment", |b| {
        b.iter(|| native.call("increment", &store, &arg).expect("call"))
    });
}

criterion_group!(benches, wasm);
criterion_main!(benches);
