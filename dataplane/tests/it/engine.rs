//! The DAG engine through a running node: competitive execution, batching,
//! continuations, reference arguments and locality, send/recv with the
//! inbox fallback, re-runs, output keys with futures, parallel branches,
//! registered functions across a restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use client::{Client, ClientError};
use wire::message::{Arg, DagCall, DagDef, SourceArgs, Value};
use wire::Status;

use crate::harness::{arg, cli_ok, connect, key_on, lww, rt, temp_dir, Node};

#[test]
fn competing_replicas_first_valid_result_wins_on_whichever_executor_gives_it() {
    let dir = temp_dir("engine-race");
    let node = Node::start(2, "batch", &dir);
    let addr = node.addr().to_owned();
    // `valid_on ID` is valid only on executor ID: with two replicas on the
    // two executors, exactly one of them answers.
    cli_ok(
        &addr,
        &[
            "dag",
            "create",
            "race",
            "--function",
            "valid_on",
            "--replicas",
            "valid_on=2",
        ],
    );
    rt().block_on(async {
        let mut c = connect(&addr).await;
        for id in ["0", "1"] {
            assert_eq!(
                c.call_dag("race", arg("valid_on", id), 0).await.unwrap(),
                id.as_bytes()
            );
        }
        let err = c
            .call_dag("race", arg("valid_on", "7"), 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        assert!(err.to_string().contains("all 2 replicas failed"), "{err}");
        assert!(err.to_string().contains("invalid result"), "{err}");
        // Without replicas, the one run is invalid on one of them.
        c.register_dag(DagDef::new("solo", &["valid_on"], &[]))
            .await
            .unwrap();
        let results: Vec<bool> = futures_join(&addr, 2, |mut c, i| async move {
            c.call_dag("solo", arg("valid_on", &i.to_string()), 0)
                .await
                .is_ok()
        })
        .await;
        assert!(
            results.contains(&false),
            "a single replica runs on one executor only"
        );
    });
}

/// Runs `f` on `n` fresh clients at once; results in client order.
async fn futures_join<F, Fut, T>(addr: &str, n: usize, f: F) -> Vec<T>
where
    F: Fn(Client, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(addr).await);
    }
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(f(c, i)))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn queued_triggers_of_a_batching_function_reach_one_invocation() {
    let dir = temp_dir("engine-batch");
    let node = Node::start(1, "batch", &dir);
    let addr = node.addr().to_owned();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        let mut batched = DagDef::new("batched", &["batch_size"], &[]);
        batched.functions[0].batch_max = 8;
        c.register_dag(batched).await.unwrap();
        c.register_dag(DagDef::new("unbatched", &["batch_size"], &[]))
            .await
            .unwrap();
        for (dag, want) in [("batched", "5"), ("unbatched", "1")] {
            // Keep the only executor busy while five calls queue behind it.
            let mut sleeper = connect(&addr).await;
            let busy = tokio::spawn(async move {
                sleeper
                    .call_function("sleep_ms", vec![b"400".to_vec()], 0)
                    .await
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let results = futures_join(&addr, 5, |mut c, _| async move {
                c.call_dag(dag, vec![], 0).await.unwrap()
            })
            .await;
            assert_eq!(busy.await.unwrap().unwrap(), b"400");
            for r in results {
                assert_eq!(r, want.as_bytes(), "{dag}");
            }
        }
    });
}

#[test]
fn continuations_references_locality_and_parallel_branches() {
    let dir = temp_dir("engine-flow");
    let node = Node::start(2, "batch", &dir);
    let addr = node.addr().to_owned();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        c.register_dag(DagDef::new(
            "compose",
            &["increment", "square"],
            &[("increment", "square")],
        ))
        .await
        .unwrap();
        c.register_dag(DagDef::new("inc", &["increment"], &[]))
            .await
            .unwrap();
        // Continuation: increment(square(increment(3))) = 17, then 18.
        let mut call = DagCall::new("compose", arg("increment", "3"));
        call.then = vec![b"inc".to_vec(), b"inc".to_vec()];
        assert_eq!(c.call_dag_with(call.clone()).await.unwrap(), b"18");
        call.then = vec![b"nope".to_vec()];
        let err = c.call_dag_with(call).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownDag), "{err}");

        // Through the engine (a re-run allowed keeps a DAG off the
        // in-request path) fan-in order is still the list order.
        let edges = [
            ("sum", "square"),
            ("sum", "increment"),
            ("square", "echo"),
            ("increment", "echo"),
        ];
        for (name, list, want) in [
            ("sq-first", ["sum", "square", "increment", "echo"], "94"),
            ("inc-first", ["sum", "increment", "square", "echo"], "49"),
        ] {
            c.register_dag(DagDef::new(name, &list, &edges))
                .await
                .unwrap();
            let mut call = DagCall::new(name, arg("sum", "3"));
            call.retries = 1;
            assert_eq!(
                c.call_dag_with(call).await.unwrap(),
                want.as_bytes(),
                "{name}"
            );
        }

        // References are read just before the call, from any shard.
        let (k0, k1) = (key_on(&c, 0, "ref-"), key_on(&c, 1, "ref-"));
        c.put(k0.as_bytes(), lww("6")).await.unwrap();
        c.put(k1.as_bytes(), lww("10")).await.unwrap();
        let refs = vec![SourceArgs {
            function: b"increment".to_vec(),
            args: vec![Arg::Ref(k1.clone().into_bytes())],
        }];
        assert_eq!(c.call_dag("compose", refs, 0).await.unwrap(), b"121");
        let out = c
            .call_function_with(
                "sum",
                vec![Arg::Ref(k0.clone().into_bytes()), Arg::value("1")],
                0,
            )
            .await
            .unwrap();
        assert_eq!(out, b"7");
        let err = c
            .call_function_with("increment", vec![Arg::Ref(b"missing".to_vec())], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        assert!(
            err.to_string().contains("\"missing\", which has no value"),
            "{err}"
        );
        // Locality: the call runs on the executor beside the shard owning
        // the referenced key, whichever shard took the request.
        for (key, want) in [(&k0, "0"), (&k1, "1")] {
            let out = c
                .call_function_with("whoami", vec![Arg::Ref(key.clone().into_bytes())], 0)
                .await
                .unwrap();
            assert_eq!(out, want.as_bytes(), "{key}");
        }
        // The CLI passes references too.
        assert_eq!(
            cli_ok(
                &addr,
                &[
                    "dag",
                    "call",
                    "compose",
                    "--ref",
                    &format!("increment={k0}")
                ]
            )
            .trim(),
            "49"
        );

        // Parallel branches go to different executors.
        c.register_function("who_a", "whoami").await.unwrap();
        c.register_function("who_b", "whoami").await.unwrap();
        c.register_dag(DagDef::new(
            "fan",
            &["echo", "who_a", "who_b", "sum"],
            &[
                ("echo", "who_a"),
                ("echo", "who_b"),
                ("who_a", "sum"),
                ("who_b", "sum"),
            ],
        ))
        .await
        .unwrap();
        c.register_function("echo2", "echo").await.unwrap();
        c.register_dag(DagDef::new(
            "fan-ids",
            &["echo", "who_a", "who_b", "echo2"],
            &[
                ("echo", "who_a"),
                ("echo", "who_b"),
                ("who_a", "echo2"),
                ("who_b", "echo2"),
            ],
        ))
        .await
        .unwrap();
        let ids = c.call_dag("fan-ids", arg("echo", "x"), 0).await.unwrap();
        let ids: BTreeSet<u8> = ids.into_iter().collect();
        assert_eq!(
            ids,
            BTreeSet::from([b'0', b'1']),
            "one branch on each executor"
        );
        assert_eq!(c.call_dag("fan", arg("echo", "x"), 0).await.unwrap(), b"1");
    });
}

#[test]
fn send_and_recv_between_running_functions_and_the_inbox_fallback() {
    let dir = temp_dir("engine-msg");
    let node = Node::start(2, "batch", &dir);
    let addr = node.addr().to_owned();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        // Arguments by reference place each call beside its key's shard:
        // the receiver on executor 1, the sender on executor 0.
        let (wait1, hi0) = (key_on(&c, 1, "wait-"), key_on(&c, 0, "hi-"));
        c.put(wait1.as_bytes(), lww("5000")).await.unwrap();
        c.put(hi0.as_bytes(), lww("hello")).await.unwrap();
        let mut receiver = connect(&addr).await;
        let wait_ref = vec![Arg::Ref(wait1.clone().into_bytes())];
        let waiting =
            tokio::spawn(
                async move { receiver.call_function_with("recv_wait", wait_ref, 0).await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = c
            .call_function_with(
                "send_to",
                vec![Arg::value("1"), Arg::Ref(hi0.into_bytes())],
                0,
            )
            .await
            .unwrap();
        assert_eq!(sent, b"direct");
        assert_eq!(waiting.await.unwrap().unwrap(), b"hello");

        // No executor 77 on this node: the message waits in its inbox key.
        let sent = c
            .call_function("send_to", vec![b"77".to_vec(), b"later".to_vec()], 0)
            .await
            .unwrap();
        assert_eq!(sent, b"inbox");
        match c.get(b"squall:inbox:77").await.unwrap() {
            Some(Value::OrderedSet(elements)) => {
                assert_eq!(elements.len(), 1);
                assert!(elements[0].ends_with(b"later"));
            }
            other => panic!("inbox of 77 holds {other:?}"),
        }
        // recv drains the inbox key: a message another node left there.
        let mut element = 42u64.to_be_bytes().to_vec();
        element.extend_from_slice(&1u64.to_be_bytes());
        element.extend_from_slice(b"from-the-store");
        c.put(b"squall:inbox:1", Value::OrderedSet(vec![element]))
            .await
            .unwrap();
        c.put(wait1.as_bytes(), lww("2000")).await.unwrap();
        let got = c
            .call_function_with("recv_wait", vec![Arg::Ref(wait1.into_bytes())], 0)
            .await
            .unwrap();
        assert_eq!(got, b"from-the-store");
        assert_eq!(c.get(b"squall:inbox:1").await.unwrap(), None, "taken");
    });
}

#[test]
fn failed_and_timed_out_runs_are_rerun_then_fail_clearly_and_the_node_stays_healthy() {
    let dir = temp_dir("engine-rerun");
    let node = Node::start(2, "batch", &dir);
    let addr = node.addr().to_owned();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        c.register_dag(DagDef::new("flaky", &["fail_first"], &[]))
            .await
            .unwrap();
        c.register_dag(DagDef::new("slow", &["sleep_ms"], &[]))
            .await
            .unwrap();
        // The first run panics; the re-run (a fresh instance) succeeds.
        let mut call = DagCall::new("flaky", arg("fail_first", "attempts-a"));
        call.retries = 1;
        assert_eq!(c.call_dag_with(call.clone()).await.unwrap(), b"2");
        // Without re-runs the panic is the answer, naming the function.
        call.args = arg("fail_first", "attempts-b");
        call.retries = 0;
        let err = c.call_dag_with(call).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        assert!(
            err.to_string().contains("function fail_first: panicked"),
            "{err}"
        );

        // A function sleeping past the deadline: every run times out.
        let mut call = DagCall::new("slow", arg("sleep_ms", "400"));
        call.timeout_ms = 100;
        call.retries = 2;
        let t0 = Instant::now();
        let err = c.call_dag_with(call).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Timeout), "{err}");
        assert!(err.to_string().contains("after 3 runs"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5), "no hang");
        // Too many re-runs asked for is refused.
        let mut call = DagCall::new("slow", arg("sleep_ms", "1"));
        call.retries = 99;
        let err = c.call_dag_with(call).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        // The node serves on: store, inline and executor functions.
        c.put(b"after", lww("ok")).await.unwrap();
        assert_eq!(
            c.call_function("increment", vec![b"1".to_vec()], 0)
                .await
                .unwrap(),
            b"2"
        );
        assert_eq!(
            c.call_dag("slow", arg("sleep_ms", "1"), 5_000)
                .await
                .unwrap(),
            b"1"
        );
    });
}

#[test]
fn output_keys_store_results_and_errors_and_futures_wait_with_a_timeout() {
    let dir = temp_dir("engine-future");
    let node = Node::start(2, "batch", &dir);
    let addr = node.addr().to_owned();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        c.register_dag(DagDef::new(
            "compose",
            &["increment", "square"],
            &[("increment", "square")],
        ))
        .await
        .unwrap();
        let mut call = DagCall::new("compose", arg("increment", "41"));
        call.output_key = b"result-1".to_vec();
        c.call_dag_to_key(call.clone()).await.unwrap();
        let out = c
            .wait_for(b"result-1", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, b"1764");
        // A failing call stores its error; the future reports it.
        call.args = arg("increment", "x");
        call.output_key = b"result-2".to_vec();
        c.call_dag_to_key(call).await.unwrap();
        let err = c
            .wait_for(b"result-2", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::FunctionFailed), "{err}");
        assert!(
            err.to_string().contains("expected a decimal integer"),
            "{err}"
        );
        // Nothing will ever arrive here: the future times out, it never hangs.
        let t0 = Instant::now();
        let err = c
            .wait_for(b"never", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    });
    assert_eq!(
        cli_ok(
            &addr,
            &[
                "dag",
                "call",
                "compose",
                "--arg",
                "increment=2",
                "--output-key",
                "r3"
            ]
        )
        .trim(),
        "9"
    );
}

#[test]
fn registered_functions_are_stored_survive_restart_and_can_be_deleted() {
    let dir = temp_dir("engine-registry");
    let node = Node::start(2, "always", &dir);
    let addr = node.addr().to_owned();
    assert_eq!(
        cli_ok(
            &addr,
            &["fn", "register", "plus_one", "--builtin", "increment"]
        )
        .trim(),
        "OK"
    );
    rt().block_on(async {
        let mut c = connect(&addr).await;
        c.register_function("tally", "incr_key").await.unwrap();
        assert!(c
            .list_functions()
            .await
            .unwrap()
            .contains(&"plus_one".to_owned()));
        c.register_dag(DagDef::new(
            "p1sq",
            &["plus_one", "square"],
            &[("plus_one", "square")],
        ))
        .await
        .unwrap();
        assert_eq!(
            c.call_dag("p1sq", arg("plus_one", "4"), 0).await.unwrap(),
            b"25"
        );
        // Refusals: a built-in's name, an unknown built-in, a bad name.
        let err = c
            .register_function("square", "increment")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        let err = c.register_function("f", "nope").await.unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownFunction), "{err}");
        let err = c.register_function("bad name", "echo").await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        let err = c.delete_function("square").await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
    });
    drop(node);
    let node = Node::start(2, "always", &dir);
    let addr = node.addr().to_owned();
    rt().block_on(async {
        let mut c = connect(&addr).await;
        let names = c.list_functions().await.unwrap();
        assert!(names.contains(&"plus_one".to_owned()) && names.contains(&"tally".to_owned()));
        assert_eq!(
            c.call_dag("p1sq", arg("plus_one", "4"), 0).await.unwrap(),
            b"25",
            "after restart"
        );
        assert_eq!(
            c.call_function("tally", vec![b"t".to_vec()], 0)
                .await
                .unwrap(),
            b"1"
        );
        assert!(c.delete_function("plus_one").await.unwrap());
        let err = c
            .call_function("plus_one", vec![b"1".to_vec()], 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownFunction), "{err}");
        let err = c
            .call_dag("p1sq", arg("plus_one", "4"), 0)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidDag), "{err}");
    });
    assert_eq!(cli_ok(&addr, &["fn", "delete", "tally"]).trim(), "deleted");
}
