//! One DAG call's functions on several nodes: a function whose referenced
//! keys another node holds runs there (beside them, not through the
//! calling node's cache); under `--spread-functions` each function goes to
//! the next member, its trigger carrying the call's session — an atomic
//! call's writes made elsewhere come back and take effect once; a chain of
//! functions goes node to node, and the calling node runs the part a node
//! refuses; a node
//! lost midway (or started again at its address while it held a chain):
//! the call runs again on the calling node; `RunStep`'s
//! answers to bad input and past its deadline; a node whose executors are
//! all over the load threshold refuses other nodes' functions (the caller
//! runs them) and sends its own to others. The `#[ignore]`d
//! ones are measurements (`bench-cluster-functions.sh`).

use wire::message::{Arg, DagCall, DagDef, Request, Response, RunStep, SourceArgs, Value};
use wire::Status;

use crate::cluster::{agreed, start_at, wait_for};
use crate::harness::{connect, connect_pinned, lww, rt, temp_dir, Node};
use crate::placement::up;
use crate::spread::held_only_by;

fn text(v: Option<Value>) -> String {
    match v {
        Some(Value::Lww(l)) => String::from_utf8(l.bytes).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Steps and calls a node sent to other nodes, and the keys in its cache.
async fn sent_and_missed(addr: &str) -> (u64, u64) {
    let mut c = connect_pinned(addr).await;
    let stats = c.stats().await.unwrap();
    (
        stats.iter().map(|s| s.node_forwards).sum(),
        stats.iter().map(|s| s.cache_keys).sum(),
    )
}

/// Steps and calls each node sent to other nodes.
async fn sent_by(addrs: &[&str]) -> Vec<u64> {
    let mut sent = Vec::new();
    for addr in addrs {
        sent.push(sent_and_missed(addr).await.0);
    }
    sent
}

fn cluster(ips: &[&str], extra: &[&str]) -> Vec<Node> {
    let mut nodes = vec![start_at(
        ips[0],
        &temp_dir(&format!("across-{}", ips[0])),
        extra,
    )];
    let seed = nodes[0].addr().to_owned();
    for ip in &ips[1..] {
        let mut args = vec!["--join", seed.as_str()];
        args.extend_from_slice(extra);
        nodes.push(start_at(ip, &temp_dir(&format!("across-{ip}")), &args));
    }
    let addrs: Vec<&str> = nodes.iter().map(Node::addr).collect();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for("the nodes agree", || {
        agreed(&addrs, &up(&refs), None).is_some()
    });
    nodes
}

#[test]
fn a_function_runs_on_the_node_holding_the_keys_it_references() {
    let nodes = cluster(&["127.0.0.171", "127.0.0.172"], &[]);
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let keys: Vec<String> = (0..40).map(|i| format!("x-{i}")).collect();
    rt().block_on(async {
        let mut c = connect(a).await;
        for k in &keys {
            c.put(k.as_bytes(), lww("6")).await.unwrap();
        }
    });
    let on_a = held_only_by(a, &[a, b], &keys);
    let on_b = held_only_by(b, &[a, b], &keys);
    rt().block_on(async {
        let mut c = connect(a).await;
        c.put(on_b.as_bytes(), lww("7")).await.unwrap();
        let edges = [("echo#a", "sum"), ("echo#b", "sum")];
        let dag = DagDef::new("pair", &["echo#a", "echo#b", "sum"], &edges);
        c.register_dag(dag).await.unwrap();
        let call = DagCall::new(
            "pair",
            vec![
                SourceArgs {
                    function: b"echo#a".to_vec(),
                    args: vec![Arg::Ref(on_a.clone().into_bytes())],
                },
                SourceArgs {
                    function: b"echo#b".to_vec(),
                    args: vec![Arg::Ref(on_b.clone().into_bytes())],
                },
            ],
        );
        // Each node runs the call (one key here, one there: a tie stays),
        // and sends the function reading the other's key to the other.
        for (at, there) in [(a, b), (b, a)] {
            let before = sent_and_missed(at).await;
            let mut pinned = connect_pinned(at).await;
            assert_eq!(pinned.call_dag_with(call.clone()).await.unwrap(), b"13");
            let after = sent_and_missed(at).await;
            assert_eq!(after.0, before.0 + 1, "one step sent to {there}");
            assert_eq!(
                after.1, 0,
                "{at} read nothing of {there}'s: its cache is empty"
            );
        }
        // What a node answers to `RunStep`: the result and what the step
        // added to the session; clear errors for bad input; a deadline.
        let mut cb = connect_pinned(b).await;
        let step = |function: &str, arg: Arg, timeout_ms: u32, session: &[u8]| {
            Request::RunStep(RunStep {
                function: function.as_bytes().to_vec(),
                args: vec![arg],
                timeout_ms,
                session: session.to_vec(),
            })
        };
        let value = |s: &str| Arg::Value(s.as_bytes().to_vec());
        match cb
            .call(0, step("increment", value("5"), 0, b""))
            .await
            .unwrap()
        {
            Response::Stepped(s) => assert_eq!(s.output, b"6"),
            other => panic!("{other:?}"),
        }
        let refs = Arg::Ref(on_b.clone().into_bytes());
        let err = cb
            .call(0, step("echo", refs, 0, b"junk"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidArgument), "{err}");
        assert!(err.to_string().contains("not a session"), "{err}");
        let err = cb
            .call(0, step("nope", value("1"), 0, b""))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(Status::UnknownFunction), "{err}");
        // An empty lww session, as a trigger carries it.
        let lww_session = executor::session::Session::default().encode().unwrap();
        let slow = step("sleep_ms", value("2000"), 100, &lww_session);
        let err = cb.call(0, slow).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Timeout), "{err}");
    });
}

#[test]
fn spread_functions_carry_the_call_and_its_atomic_writes_from_node_to_node() {
    let mut nodes = cluster(
        &["127.0.0.173", "127.0.0.174", "127.0.0.175"],
        // Without the cache every read is the holder's: each call sees
        // the last one's increment (a cache may lag by a push).
        &["--spread-functions", "--cache-mb", "0"],
    );
    let a = nodes[0].addr().to_owned();
    let addrs: Vec<&str> = nodes.iter().map(Node::addr).collect();
    // The counter lives on the calling node (it outlives the others).
    let keys: Vec<String> = (0..40).map(|i| format!("ctr-{i}")).collect();
    rt().block_on(async {
        let mut c = connect(&a).await;
        for k in &keys {
            c.put(k.as_bytes(), lww("0")).await.unwrap();
        }
    });
    let ctr = held_only_by(&a, &addrs, &keys);
    rt().block_on(async {
        let mut c = connect(&a).await;
        c.register_dag(DagDef::new(
            "inc_sq",
            &["increment", "square"],
            &[("increment", "square")],
        ))
        .await
        .unwrap();
        let edges = [("echo#1", "echo#2"), ("echo#2", "incr_key")];
        let dag = DagDef::new("hop3", &["echo#1", "echo#2", "incr_key"], &edges);
        c.register_dag(dag).await.unwrap();
        let mut at_a = connect_pinned(&a).await;
        let before = sent_and_missed(&a).await.0;
        let args = vec![SourceArgs::values("increment", vec![b"5".to_vec()])];
        assert_eq!(at_a.call_dag("inc_sq", args, 0).await.unwrap(), b"36");
        assert_eq!(
            sent_and_missed(&a).await.0,
            before + 1,
            "square ran elsewhere"
        );
        // echo here, echo on the second node, incr_key on the third: its
        // writes are kept in the session that comes back, and committed
        // here, once per call (a re-sent call: no second effect).
        let hop3 = |txn: u64| {
            let args = vec![SourceArgs::values("echo#1", vec![ctr.as_bytes().to_vec()])];
            let mut call = DagCall::new("hop3", args).with_txn(txn);
            call.retries = 1;
            call
        };
        for txn in 1..=10 {
            let out = at_a.call_dag_with(hop3(txn)).await.unwrap();
            assert_eq!(out, txn.to_string().as_bytes());
            assert_eq!(at_a.call_dag_with(hop3(txn)).await.unwrap(), out, "re-sent");
        }
        assert_eq!(text(c.get(ctr.as_bytes()).await.unwrap()), "10");
        // Without --atomic the third node writes at once.
        assert_eq!(at_a.call_dag_with(hop3(0)).await.unwrap(), b"11");

        // echo#2 → sleep_ms is a chain: A sends it once, to the second
        // node, which sends sleep_ms on to the third.
        let edges = [("echo#1", "echo#2"), ("echo#2", "sleep_ms")];
        let dag = DagDef::new("naps", &["echo#1", "echo#2", "sleep_ms"], &edges);
        c.register_dag(dag).await.unwrap();
        let naps = || {
            let args = vec![SourceArgs::values("echo#1", vec![b"1".to_vec()])];
            let mut call = DagCall::new("naps", args);
            call.timeout_ms = 700;
            call
        };
        let before = sent_by(&addrs).await;
        assert_eq!(at_a.call_dag_with(naps()).await.unwrap(), b"1");
        let after = sent_by(&addrs).await;
        assert_eq!(after[0], before[0] + 1, "A sent the chain once");
        let second = (1..3)
            .find(|&i| after[i] == before[i] + 1)
            .expect("a node sent the chain on");
        let third = 3 - second;
        assert_eq!(after[third], before[third], "the chain ended there");
        // The third node's executor busy past the call's 700 ms: it
        // refuses sleep_ms, and tells A, which runs it (no retries: a
        // refusal taken as a failure would fail the call).
        saturate(addrs[third], 1500).await;
        let before = sent_by(&addrs).await;
        assert_eq!(at_a.call_dag_with(naps()).await.unwrap(), b"1");
        let after = sent_by(&addrs).await;
        assert_eq!(after[0], before[0] + 1, "A sent the chain once");
        assert_eq!(after[second], before[second] + 1);
    });
    // The third node dies: a call planned on it runs again, here. (Its
    // commit record, spread like users' keys, must not live on the dead
    // node, whose keys have no other copy.)
    let records: Vec<String> = (100..140)
        .map(|t| format!("squall:txn:{t:016x}:0"))
        .collect();
    let holders = crate::cluster::primary_addrs(&a, &records);
    let txn = (100..140)
        .zip(&holders)
        .find(|(_, h)| **h == a)
        .map(|(t, _)| t)
        .expect("a record key on A");
    nodes[2].kill();
    rt().block_on(async {
        let mut at_a = connect_pinned(&a).await;
        let args = vec![SourceArgs::values("echo#1", vec![ctr.as_bytes().to_vec()])];
        let mut call = DagCall::new("hop3", args).with_txn(txn);
        call.retries = 1;
        assert_eq!(at_a.call_dag_with(call).await.unwrap(), b"12");
    });
}

#[test]
fn a_chain_held_by_a_node_started_again_at_its_address_runs_again_at_once() {
    // The node holding a chain is killed and started again on its data at
    // its address before the others see it down: the view shows a new
    // incarnation at the same address, and the call runs again at once
    // (here, on the calling node) instead of waiting out its deadline.
    let ips = ["127.0.0.187", "127.0.0.188", "127.0.0.189"];
    let dirs: Vec<_> = ips
        .iter()
        .map(|ip| temp_dir(&format!("again-{ip}")))
        .collect();
    let spread = "--spread-functions";
    let mut nodes = vec![start_at(ips[0], &dirs[0], &[spread])];
    let seed = nodes[0].addr().to_owned();
    for (ip, dir) in ips[1..].iter().zip(&dirs[1..]) {
        nodes.push(start_at(ip, dir, &["--join", &seed, spread]));
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_owned()).collect();
    let all: Vec<&str> = addrs.iter().map(String::as_str).collect();
    wait_for("the nodes agree", || {
        agreed(&all, &up(&nodes.iter().collect::<Vec<_>>()), None).is_some()
    });
    let naps = |ms: &str| {
        let args = vec![SourceArgs::values("echo#1", vec![ms.as_bytes().to_vec()])];
        let mut call = DagCall::new("naps", args);
        call.timeout_ms = 8_000;
        call.retries = 1;
        call
    };
    let third = rt().block_on(async {
        let edges = [("echo#1", "echo#2"), ("echo#2", "sleep_ms")];
        let dag = DagDef::new("naps", &["echo#1", "echo#2", "sleep_ms"], &edges);
        connect(&seed).await.register_dag(dag).await.unwrap();
        let before = sent_by(&all).await;
        assert_eq!(
            connect_pinned(&seed)
                .await
                .call_dag_with(naps("1"))
                .await
                .unwrap(),
            b"1"
        );
        let after = sent_by(&all).await;
        assert_eq!(after[0], before[0] + 1, "A sent the chain");
        3 - (1..3)
            .find(|&i| after[i] == before[i] + 1)
            .expect("sent on")
    });
    let call = std::thread::spawn({
        let (seed, call) = (seed.clone(), naps("2000"));
        move || rt().block_on(async { connect_pinned(&seed).await.call_dag_with(call).await })
    });
    std::thread::sleep(std::time::Duration::from_millis(500)); // sleep_ms runs there
    nodes[third].kill();
    let args = ["--listen", &addrs[third], "--join", &seed, spread];
    nodes[third] = Node::try_start(1, "never", &dirs[third], &args).unwrap();
    let out = call.join().unwrap();
    assert_eq!(out.unwrap(), b"2000", "run again, not timed out");
    let log = nodes[0].stderr();
    assert!(
        log.contains("restarted, while a chain of this call went through it"),
        "{log}"
    );
}

/// Keeps the only executor of the node at `addr` busy for `ms` past its
/// call's deadline: it counts as over the load threshold meanwhile.
async fn saturate(addr: &str, ms: u32) {
    let mut c = connect_pinned(addr).await;
    let err = c
        .call_function("sleep_ms", vec![ms.to_string().into_bytes()], 100)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::Timeout), "{err}");
}

#[test]
fn a_saturated_node_refuses_functions_and_sends_its_own_away() {
    let nodes = cluster(&["127.0.0.179", "127.0.0.180"], &[]);
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let keys: Vec<String> = (0..40).map(|i| format!("y-{i}")).collect();
    rt().block_on(async {
        let mut c = connect(a).await;
        for k in &keys {
            c.put(k.as_bytes(), lww("6")).await.unwrap();
        }
    });
    let on_a = held_only_by(a, &[a, b], &keys);
    let on_b = held_only_by(b, &[a, b], &keys);
    rt().block_on(async {
        let mut c = connect(a).await;
        c.put(on_b.as_bytes(), lww("7")).await.unwrap();
        let edges = [("echo#a", "sum"), ("echo#b", "sum")];
        let pair = DagDef::new("pair", &["echo#a", "echo#b", "sum"], &edges);
        c.register_dag(pair).await.unwrap();
        c.register_dag(DagDef::new("one", &["echo"], &[]))
            .await
            .unwrap();
        let source = |function: &str, key: &str| SourceArgs {
            function: function.as_bytes().to_vec(),
            args: vec![Arg::Ref(key.as_bytes().to_vec())],
        };
        let pair = DagCall::new(
            "pair",
            vec![source("echo#a", &on_a), source("echo#b", &on_b)],
        );
        let mut at_a = connect_pinned(a).await;
        // B's executor busy: echo#b, planned beside its key on B, is
        // refused there and runs here, reading the key through A's cache.
        saturate(b, 1000).await;
        let (sent, cached) = sent_and_missed(a).await;
        assert_eq!(cached, 0);
        assert_eq!(at_a.call_dag_with(pair).await.unwrap(), b"13");
        assert_eq!(sent_and_missed(a).await, (sent + 1, 1), "refused, run on A");
        // Once B's sleep is over (a step queued behind it has run), A's
        // executor busy: echo of A's own key runs on B, which reads it
        // through its cache.
        let mut at_b = connect_pinned(b).await;
        at_b.call_function("sleep_ms", vec![b"1".to_vec()], 10_000)
            .await
            .unwrap();
        saturate(a, 3000).await;
        let (sent, _) = sent_and_missed(a).await;
        let one = DagCall::new("one", vec![source("echo", &on_a)]);
        assert_eq!(at_a.call_dag_with(one).await.unwrap(), b"6");
        assert_eq!(sent_and_missed(a).await.0, sent + 1, "echo sent to B");
        assert_eq!(sent_and_missed(b).await.1, 1, "B read A's key");
        // Two functions in a row sent to B: in one request, a chain.
        let edges = [("sleep_ms#1", "sleep_ms#2")];
        let naps = DagDef::new("naps", &["sleep_ms#1", "sleep_ms#2"], &edges);
        c.register_dag(naps).await.unwrap();
        let naps = DagCall::new(
            "naps",
            vec![SourceArgs::values("sleep_ms#1", vec![b"1".to_vec()])],
        );
        let before = sent_by(&[a, b]).await;
        assert_eq!(at_a.call_dag_with(naps).await.unwrap(), b"1");
        let after = sent_by(&[a, b]).await;
        assert_eq!(after, [before[0] + 1, before[1]], "both sent at once");
    });
}

/// Calls of each kind the measurements make: `SQUALL_ACROSS_CALLS`, 2000.
fn across_calls() -> usize {
    (std::env::var("SQUALL_ACROSS_CALLS").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// The `q` quantile of `v`.
fn pct(v: &[u64], q: f64) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// The trigger path measured: `square(increment(5))` called at node A of
/// a pair under `--spread-functions` (increment runs at A, square at B,
/// its trigger sent with the call's session), beside the loopback floor of
/// that path — a ping to A and then one to B, the call's two round trips
/// (client ↔ A, A ↔ B) — and the same call on a node alone (no hop),
/// alternating, in one run; `SQUALL_ACROSS_CALLS` (default 2000) of each.
/// Prints p50/p99 and the ratios; run by `scripts/bench-cluster-functions.sh`.
#[test]
#[ignore = "a measurement, not a check: scripts/bench-cluster-functions.sh runs it"]
fn across_cost() {
    let calls = across_calls();
    let nodes = cluster(&["127.0.0.176", "127.0.0.177"], &["--spread-functions"]);
    let alone = start_at("127.0.0.178", &temp_dir("across-alone"), &[]);
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let dag = DagDef::new(
        "inc_sq",
        &["increment", "square"],
        &[("increment", "square")],
    );
    let [mut split, mut floor, mut ping, mut local] = [(); 4].map(|()| Vec::new());
    rt().block_on(async {
        connect(a).await.register_dag(dag.clone()).await.unwrap();
        connect(alone.addr()).await.register_dag(dag).await.unwrap();
        let (mut ca, mut cb) = (connect_pinned(a).await, connect_pinned(b).await);
        let mut cl = connect_pinned(alone.addr()).await;
        let args = || vec![SourceArgs::values("increment", vec![b"5".to_vec()])];
        let us = |t: std::time::Instant| t.elapsed().as_micros() as u64;
        for i in 0..calls + 100 {
            let t = std::time::Instant::now();
            assert_eq!(ca.call_dag("inc_sq", args(), 0).await.unwrap(), b"36");
            let t_split = us(t);
            let t = std::time::Instant::now();
            ca.ping(0).await.unwrap();
            let t_ping = us(t);
            cb.ping(0).await.unwrap();
            let t_floor = us(t);
            let t = std::time::Instant::now();
            assert_eq!(cl.call_dag("inc_sq", args(), 0).await.unwrap(), b"36");
            let t_local = us(t);
            if i >= 100 {
                split.push(t_split);
                floor.push(t_floor);
                ping.push(t_ping);
                local.push(t_local);
            }
        }
    });
    let (s50, f50, p50, l50) = (
        pct(&split, 0.5),
        pct(&floor, 0.5),
        pct(&ping, 0.5),
        pct(&local, 0.5),
    );
    println!(
        "across: {calls} calls each; split over two nodes p50 {s50} us p99 {} us; \
         its path's floor (ping A + ping B) p50 {f50} us p99 {} us; one ping p50 {p50} us; \
         on one node p50 {l50} us p99 {} us; split / floor {:.2}x, split / one ping {:.2}x, \
         split / one node {:.2}x",
        pct(&split, 0.99),
        pct(&floor, 0.99),
        pct(&local, 0.99),
        s50 as f64 / f50 as f64,
        s50 as f64 / p50 as f64,
        s50 as f64 / l50 as f64
    );
}

/// A chain sent node to node, measured: `sum(square(increment(5)))` called
/// at node A of three under `--spread-functions` (increment at A, square
/// at B, sum at C). As a chain (`chain3`) A sends square and sum to B in
/// one request, B sends sum on to C, and C hands the result to A's wait:
/// A → B → C → A. Beside it, in the same loop, the same functions with one
/// more edge (increment → sum, so sum has two inputs: no chain, `star3`):
/// each trigger goes from A and its answer back, A → B → A → C → A; and a
/// ping to each node. `SQUALL_ACROSS_CALLS` (default 2000) of each. Prints
/// p50/p99 and the ratio; run by `scripts/bench-cluster-functions.sh`.
#[test]
#[ignore = "a measurement, not a check: scripts/bench-cluster-functions.sh runs it"]
fn chain_cost() {
    let calls = across_calls();
    let nodes = cluster(
        &["127.0.0.184", "127.0.0.185", "127.0.0.186"],
        &["--spread-functions"],
    );
    let addrs: Vec<&str> = nodes.iter().map(Node::addr).collect();
    let edges = [("increment", "square"), ("square", "sum")];
    let chain3 = DagDef::new("chain3", &["increment", "square", "sum"], &edges);
    let edges = [
        ("increment", "square"),
        ("square", "sum"),
        ("increment", "sum"),
    ];
    let star3 = DagDef::new("star3", &["increment", "square", "sum"], &edges);
    let [mut chain, mut star, mut ping] = [(); 3].map(|()| Vec::new());
    rt().block_on(async {
        let mut c = connect(addrs[0]).await;
        c.register_dag(chain3).await.unwrap();
        c.register_dag(star3).await.unwrap();
        let mut ca = connect_pinned(addrs[0]).await;
        let mut pinged = Vec::new();
        for addr in &addrs {
            pinged.push(connect_pinned(addr).await);
        }
        let args = || vec![SourceArgs::values("increment", vec![b"5".to_vec()])];
        let us = |t: std::time::Instant| t.elapsed().as_micros() as u64;
        for i in 0..calls + 100 {
            let t = std::time::Instant::now();
            assert_eq!(ca.call_dag("chain3", args(), 0).await.unwrap(), b"36");
            let t_chain = us(t);
            let t = std::time::Instant::now();
            assert_eq!(ca.call_dag("star3", args(), 0).await.unwrap(), b"42");
            let t_star = us(t);
            let t = std::time::Instant::now();
            for p in &mut pinged {
                p.ping(0).await.unwrap();
            }
            let t_ping = us(t) / 3;
            if i >= 100 {
                chain.push(t_chain);
                star.push(t_star);
                ping.push(t_ping);
            }
        }
    });
    let (c50, s50) = (pct(&chain, 0.5), pct(&star, 0.5));
    println!(
        "chain: {calls} calls each over three nodes; chain (A -> B -> C -> A) p50 {c50} us \
         p99 {} us; star (A -> B -> A -> C -> A) p50 {s50} us p99 {} us; one ping p50 {} us; \
         chain / star {:.2}x",
        pct(&chain, 0.99),
        pct(&star, 0.99),
        pct(&ping, 0.5),
        c50 as f64 / s50 as f64
    );
}

/// Work sent away from a saturated node, measured: `SQUALL_SHED_CLIENTS`
/// (default 32) clients call a DAG of `sleep_ms(5)` at node A for
/// `SQUALL_SHED_SECS` (default 3) seconds — once at a node alone, once at
/// A of a pair (whose executor, over the load threshold, sends functions
/// to B until B refuses them), alternating, twice. One executor each:
/// about 200 calls/s alone. Prints calls/s, p50/p99 and the pair / alone
/// ratio; run by `scripts/bench-cluster-functions.sh`.
#[test]
#[ignore = "a measurement, not a check: scripts/bench-cluster-functions.sh runs it"]
fn shed_gain() {
    let env = |name: &str, default: u64| {
        (std::env::var(name).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (clients, secs) = (env("SQUALL_SHED_CLIENTS", 32), env("SQUALL_SHED_SECS", 3));
    let nodes = cluster(&["127.0.0.181", "127.0.0.182"], &[]);
    let alone = start_at("127.0.0.183", &temp_dir("across-shed-alone"), &[]);
    let dag = DagDef::new("nap", &["sleep_ms"], &[]);
    let run = |addr: String| async move {
        let mut tasks = tokio::task::JoinSet::new();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        for _ in 0..clients {
            let addr = addr.clone();
            tasks.spawn(async move {
                let mut c = connect_pinned(&addr).await;
                let mut took_us = Vec::new();
                while std::time::Instant::now() < end {
                    let args = vec![SourceArgs::values("sleep_ms", vec![b"5".to_vec()])];
                    let t = std::time::Instant::now();
                    c.call_dag("nap", args, 0).await.unwrap();
                    took_us.push(t.elapsed().as_micros() as u64);
                }
                took_us
            });
        }
        let mut all: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
        all.sort_unstable();
        let pct = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        (all.len() as f64 / secs as f64, pct(0.5), pct(0.99))
    };
    rt().block_on(async {
        for addr in [nodes[0].addr(), alone.addr()] {
            connect(addr).await.register_dag(dag.clone()).await.unwrap();
        }
        for round in 1..=2 {
            let (lone, l50, l99) = run(alone.addr().to_owned()).await;
            let (pair, p50, p99) = run(nodes[0].addr().to_owned()).await;
            println!(
                "shed: round {round}, {clients} clients, sleep_ms(5), one executor per node: \
                 alone {lone:.0} calls/s p50 {l50} us p99 {l99} us; at A of a pair {pair:.0} \
                 calls/s p50 {p50} us p99 {p99} us; pair / alone {:.2}x",
                pair / lone
            );
        }
    });
}
