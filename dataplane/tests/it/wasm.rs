//! Uploaded WebAssembly functions through a running node: upload, call,
//! compose, every host call, refusals, sandbox limits, restart.

use std::time::{Duration, Instant};

use wire::message::{Arg, DagDef, Value};
use wire::Status;

use crate::harness::{arg, cli_ok, connect, guest, guest_path, key_on, lww, rt, temp_dir, Node};

#[test]
fn uploaded_guests_run_compose_in_a_dag_and_survive_restart() {
    let dir = temp_dir("wasm-upload");
    let node = Node::start(2, "always", &dir);
    let addr = node.addr().to_owned();
    let inc = guest_path("increment");
    let inc = inc.to_str().unwrap();
    assert_eq!(cli_ok(&addr, &["fn", "register", "winc", inc]).trim(), "OK");
    assert_eq!(cli_ok(&addr, &["fn", "call", "winc", "41"]).trim(), "42");
    rt().block_on(async {
        let mut c = connect(&addr).await;
        c.register_wasm("wsq", guest("square"), 0, 0).await.unwrap();
        c.register_dag(DagDef::new(
            "wcompose",
            &["winc", "wsq"],
            &[("winc", "wsq")],
        ))
        .await
        .unwrap();
        assert_eq!(
            c.call_dag("wcompose", arg("winc", "41"), 0).await.unwrap(),
            b"1764"
        );
        // Pure guests with a short CPU limit run inline on the shard: same
        // answers through the in-request path.
        c.register_wasm("pinc", guest("increment"), 0, 10)
            .await
            .unwrap();
        c.register_wasm("psq", guest("square"), 0, 10)
            .await
            .unwrap();
        c.register_dag(DagDef::new(
            "pcompose",
            &["pinc", "psq"],
            &[("pinc", "psq")],
        ))
        .await
        .unwrap();
        assert_eq!(
            c.call_dag("pcompose", arg("pinc", "41"), 0).await.unwrap(),
            b"1764"
        );
        assert_eq!(
            c.call_function("pinc", vec![b"1".to_vec()], 0)
                .await
                .unwrap(),
            b"2"
        );
        // Guest errors come back with the guest's message.
        let err = c
            .call_function("winc", vec![b"x".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        assert!(
            err.to_string()
                .contains("function winc: expected a decimal integer"),
            "{err}"
        );
        let names = c.list_functions().await.unwrap();
        assert!(names.contains(&"winc".to_owned()) && names.contains(&"wsq".to_owned()));
    });
    drop(node);
    let node = Node::start(2, "always", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        assert_eq!(
            c.call_dag("wcompose", arg("winc", "2"), 0).await.unwrap(),
            b"9",
            "modules survive a restart"
        );
        // Re-registering a name with another module replaces it.
        c.register_wasm("winc", guest("square"), 0, 0)
            .await
            .unwrap();
        assert_eq!(
            c.call_function("winc", vec![b"5".to_vec()], 0)
                .await
                .unwrap(),
            b"25"
        );
        assert!(c.delete_function("wsq").await.unwrap());
        let err = c
            .call_function("wsq", vec![b"5".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownFunction), "{err}");
    });
}

#[test]
fn guests_use_the_whole_state_api() {
    let dir = temp_dir("wasm-api");
    let node = Node::start(2, "batch", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        for g in ["kitchen", "wordcount", "pingpong"] {
            c.register_wasm(g, guest(g), 0, 0).await.unwrap();
        }
        let out = c
            .call_function("kitchen", vec![b"kx:".to_vec()], 0)
            .await
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let id = lines[0].strip_prefix("id=").unwrap();
        assert!(id == "0" || id == "1", "{out}");
        assert_eq!(
            &lines[1..],
            [
                "lww=v1",
                "set=3",
                "max=3",
                "prio=1:one",
                "deleted=true",
                "after_delete=true",
                "missing=true",
                "send=direct",
                &format!("recv={id}:hello self"),
            ],
            "{out}"
        );
        // Its writes are in the store for everyone.
        assert_eq!(c.get(b"kx:max").await.unwrap(), Some(Value::Max(3)));
        assert_eq!(c.get(b"kx:lww").await.unwrap(), None);

        // Word count over KVS values.
        c.put(b"doc1", lww("the quick brown fox")).await.unwrap();
        c.put(b"doc2", lww("jumps  over\nit")).await.unwrap();
        let args = vec![b"doc1".to_vec(), b"doc2".to_vec(), b"nothing".to_vec()];
        assert_eq!(c.call_function("wordcount", args, 0).await.unwrap(), b"7");
        assert_eq!(c.get(b"wc:doc1").await.unwrap(), Some(Value::Max(4)));
        assert_eq!(c.get(b"wc:nothing").await.unwrap(), Some(Value::Max(0)));

        // send/recv between guests on the two executors: arguments by
        // reference place each call beside its key's shard.
        let (send0, recv1) = (key_on(&c, 0, "op-"), key_on(&c, 1, "op-"));
        c.put(send0.as_bytes(), lww("send")).await.unwrap();
        c.put(recv1.as_bytes(), lww("recv")).await.unwrap();
        let sent = c
            .call_function_with(
                "pingpong",
                vec![
                    Arg::Ref(send0.into_bytes()),
                    Arg::value("1"),
                    Arg::value("ping"),
                ],
                0,
            )
            .await
            .unwrap();
        assert_eq!(sent, b"direct");
        let got = c
            .call_function_with("pingpong", vec![Arg::Ref(recv1.clone().into_bytes())], 0)
            .await
            .unwrap();
        assert_eq!(got, b"0:ping");
        let err = c
            .call_function_with("pingpong", vec![Arg::Ref(recv1.into_bytes())], 0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no message"), "{err}");
    });
}

#[test]
fn modules_that_are_not_squall_guests_are_refused_at_upload_with_the_reason() {
    let dir = temp_dir("wasm-refuse");
    let node = Node::start(1, "batch", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let truncated = guest("increment")[..100].to_vec();
        let cases: Vec<(Vec<u8>, u32, &str)> = vec![
            (b"print('hi')".to_vec(), 0, "not a WebAssembly module"),
            (truncated, 0, "does not compile"),
            (b"\0asm\x01\0\0\0".to_vec(), 0, "missing export `memory`"),
            (guest("increment"), 100_000, "memory_mb is at most 256"),
        ];
        for (bytes, memory_mb, want) in cases {
            let err = c
                .register_wasm("bad", bytes, memory_mb, 0)
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
            assert!(err.to_string().contains(want), "{err} should say {want:?}");
        }
        let err = c
            .register_wasm("square", guest("square"), 0, 0)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("built-in"), "{err}");
        assert!(!c
            .list_functions()
            .await
            .unwrap()
            .contains(&"bad".to_owned()));
    });
}

#[test]
fn a_guest_that_loops_grows_or_traps_ends_its_call_and_other_calls_keep_succeeding() {
    let dir = temp_dir("wasm-limits");
    let node = Node::start(2, "batch", &dir);
    let addr = node.addr().to_owned();
    let bad = guest_path("misbehave");
    cli_ok(
        &addr,
        &[
            "fn",
            "register",
            "bad",
            bad.to_str().unwrap(),
            "--memory-mb",
            "16",
            "--timeout-ms",
            "100",
        ],
    );
    rt().block_on(async {
        let mut c = connect(&addr).await;
        c.register_wasm("winc", guest("increment"), 0, 0)
            .await
            .unwrap();
        // Good calls run alongside every misbehaving one.
        let mut good = connect(&addr).await;
        let steady = tokio::spawn(async move {
            for i in 0..200u64 {
                let out = good
                    .call_function("winc", vec![i.to_string().into_bytes()], 0)
                    .await
                    .unwrap();
                assert_eq!(out, (i + 1).to_string().as_bytes());
            }
        });
        let cases: Vec<(Vec<&str>, Status, &str)> = vec![
            (
                vec!["loop"],
                Status::LimitExceeded,
                "ran past its CPU time limit of 100 ms",
            ),
            (
                vec!["grow"],
                Status::LimitExceeded,
                "grew past its memory limit of 16 MiB",
            ),
            (
                vec!["trap"],
                Status::FunctionFailed,
                "function bad: panicked: ",
            ),
            (
                vec!["big", "2000000"],
                Status::LimitExceeded,
                "its result limit is 1048576 bytes",
            ),
            (
                vec!["invalid"],
                Status::FunctionFailed,
                "invalid result: asked to be invalid",
            ),
        ];
        for (args, status, want) in cases {
            let t0 = Instant::now();
            let args = args.iter().map(|a| a.as_bytes().to_vec()).collect();
            let err = c.call_function("bad", args, 0).await.unwrap_err();
            assert_eq!(err.status(), Some(status), "{err}");
            assert!(err.to_string().contains(want), "{err} should say {want:?}");
            assert!(t0.elapsed() < Duration::from_secs(5), "no hang");
            // The same function works again right after (a fresh instance).
            assert_eq!(
                c.call_function("bad", vec![b"fine".to_vec()], 0)
                    .await
                    .unwrap(),
                b"ok"
            );
        }
        steady.await.unwrap();
    });
}

#[test]
fn guest_errors_name_the_stored_type_the_function_once_and_the_release_build() {
    let dir = temp_dir("wasm-errors");
    let node = Node::start(1, "batch", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        c.register_wasm("wordcount", guest("wordcount"), 0, 0)
            .await
            .unwrap();
        // The SDK's get_bytes tells a key of another type from a missing one.
        c.put(b"counter", Value::Max(3)).await.unwrap();
        let err = c
            .call_function("wordcount", vec![b"counter".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        assert!(
            err.to_string().contains(
                r#"function wordcount: key "counter" holds a value of type max, not lww"#
            ),
            "{err}"
        );
        assert_eq!(
            c.call_function("wordcount", vec![b"absent".to_vec()], 0)
                .await
                .unwrap(),
            b"0"
        );
        // A store refusal inside the guest (it puts a max onto an LWW key)
        // names the function once.
        c.put(b"doc", lww("two words")).await.unwrap();
        c.put(b"wc:doc", lww("not a max")).await.unwrap();
        let err = c
            .call_function("wordcount", vec![b"doc".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("function wordcount: store: refused: type mismatch on key"),
            "{text}"
        );
        assert_eq!(text.matches("wordcount").count(), 1, "{text}");
        // A module over the size limit (what a debug build is) is refused
        // with the hint to build for release.
        let mut big = guest("increment");
        big.resize(executor::limits::WASM_MODULE_BYTES_MAX + 1, 0);
        let err = c.register_wasm("big", big, 0, 0).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        assert!(
            err.to_string()
                .contains("build it with `cargo build --release`"),
            "{err}"
        );
    });
}
