//! Function calls through the node: executors beside the shards, the state
//! API over the real store, errors and deadlines.

use wire::message::Value;
use wire::Status;

use crate::harness::{cli_ok, connect, rt, temp_dir, Node};

#[test]
fn the_cli_lists_and_calls_built_in_functions() {
    let dir = temp_dir("fn-cli");
    let node = Node::start(2, "never", &dir);
    let addr = node.addr().to_owned();
    let run = |args: &[&str]| cli_ok(&addr, args).trim().to_owned();
    let list = run(&["fn", "list"]);
    for f in ["increment", "square", "sum", "echo", "sleep_ms", "incr_key"] {
        assert!(list.lines().any(|l| l == f), "{f} missing from {list}");
    }
    assert_eq!(run(&["fn", "call", "increment", "41"]), "42");
    assert_eq!(run(&["fn", "call", "square", "12"]), "144");
    assert_eq!(run(&["fn", "call", "sum", "1", "2", "3"]), "6");
    let json: serde_json::Value =
        serde_json::from_str(&run(&["fn", "call", "echo", "hi", "--json"])).unwrap();
    assert_eq!(json["result"], "hi");
}

#[test]
fn test_fixtures_exist_only_on_a_node_started_with_the_flag() {
    let dir = temp_dir("fn-plain");
    let node = Node::try_start_plain(1, "never", &dir, &[], &[]).unwrap();
    let list = cli_ok(node.addr(), &["fn", "list"]);
    assert!(list.lines().any(|l| l == "increment"), "{list}");
    for fixture in ["sleep_ms", "whoami", "valid_on", "fail_first"] {
        assert!(!list.lines().any(|l| l == fixture), "{fixture} in {list}");
    }
    let (code, _, err) = crate::harness::cli(&["fn", "call", "whoami", "--addr", node.addr()]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown_function"), "{err}");
}

#[test]
fn functions_keep_state_in_the_store_on_every_shard_and_it_survives_restart() {
    let dir = temp_dir("fn-state");
    let node = Node::start(2, "always", &dir);
    let keys: Vec<String> = rt().block_on(async {
        let mut c = connect(node.addr()).await;
        // Keys owned by each shard: the executor beside shard 0 reaches both.
        let mut keys = Vec::new();
        for want in [0u16, 1] {
            keys.push(
                (0..)
                    .map(|i| format!("visits-{i}"))
                    .find(|k| c.shard_for(k.as_bytes()) == want)
                    .unwrap(),
            );
        }
        for k in &keys {
            for want in ["1", "2", "3"] {
                let out = c
                    .call_function("incr_key", vec![k.as_bytes().to_vec()], 0)
                    .await
                    .unwrap();
                assert_eq!(out, want.as_bytes());
            }
            let Some(Value::Lww(v)) = c.get(k.as_bytes()).await.unwrap() else {
                panic!("{k} not stored")
            };
            assert_eq!(v.bytes, b"3", "a function's put is visible to clients");
        }
        keys
    });
    drop(node);
    let node = Node::start(2, "always", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        for k in &keys {
            assert_eq!(
                c.call_function("incr_key", vec![k.as_bytes().to_vec()], 0)
                    .await
                    .unwrap(),
                b"4"
            );
        }
    });
}

#[test]
fn failures_unknown_functions_and_deadlines_get_their_status_and_the_node_stays_healthy() {
    let dir = temp_dir("fn-errors");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let err = c
            .call_function("increment", vec![b"x".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed));
        assert!(
            err.to_string()
                .contains("function increment: expected a decimal integer"),
            "{err}"
        );

        let err = c.call_function("nope", vec![], 0).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownFunction));

        let started = std::time::Instant::now();
        let err = c
            .call_function("sleep_ms", vec![b"1500".to_vec()], 200)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::Timeout), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1400),
            "the deadline, not the sleep"
        );
        // The store keeps serving while the executor is busy.
        c.ping(0).await.unwrap();
        c.put(b"k", Value::Max(1)).await.unwrap();
        // Inline functions do not wait for the busy executor thread...
        let quick = std::time::Instant::now();
        assert_eq!(
            c.call_function("increment", vec![b"1".to_vec()], 0)
                .await
                .unwrap(),
            b"2"
        );
        assert!(
            quick.elapsed() < std::time::Duration::from_millis(500),
            "inline calls skip the executor queue"
        );
        // ...and the executor thread serves again once the sleep is over.
        assert_eq!(
            c.call_function("counter", vec![], 5000).await.unwrap(),
            b"1"
        );
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(1500),
            "queued behind the sleep"
        );
    });
}
