//! Atomic calls (`DagCall.txn`, `squall dag call --atomic`): a call's
//! writes are committed once, however often it runs. The first run of each
//! call fails on purpose (fail points) before or after its record is
//! applied, or its node dies right after applying it; the re-run must not
//! add a second effect. `incr_key` makes a second effect visible: a re-run
//! reads the counter its first run already raised.

use std::path::Path;

use wire::message::{Arg, Consistency, DagCall, DagDef, SourceArgs, Value};

use crate::cluster::{agreed, primary_addrs, wait_for};
use crate::harness::{cli, cli_ok, connect, connect_pinned, lww, rt, temp_dir, Node};
use crate::placement::{local_text, up};

fn count(key: &str, txn: u64) -> DagCall {
    let args = vec![SourceArgs::values(
        "incr_key",
        vec![key.as_bytes().to_vec()],
    )];
    let mut call = DagCall::new("count", args).with_txn(txn);
    call.retries = 1;
    call
}

fn text(v: Option<Value>) -> String {
    match v {
        Some(Value::Lww(l)) => String::from_utf8(l.bytes).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn start_failing(dir: &Path, point: &str) -> Node {
    let failpoints = format!("{point}=return");
    Node::try_start_env(1, "never", dir, &[], &[("FAILPOINTS", failpoints.as_str())]).unwrap()
}

#[test]
fn a_call_whose_first_run_fails_at_its_commit_takes_effect_once() {
    // 40 calls per point in CI; `scripts/bench-atomic.sh` runs 500.
    let calls: u64 = std::env::var("SQUALL_ATOMIC_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    for point in ["atomic::before-apply", "atomic::after-apply"] {
        let dir = temp_dir(&format!("atomic-{}", point.replace("::", "-")));
        let node = start_failing(&dir, point);
        rt().block_on(async {
            let mut c = connect(node.addr()).await;
            let dag = DagDef::new("count", &["incr_key"], &[]);
            c.register_dag(dag).await.unwrap();
            for i in 1..=calls {
                let out = c.call_dag_with(count("ctr", 0xa700 + i)).await.unwrap();
                assert_eq!(out, i.to_string().as_bytes(), "{point}: call {i}");
            }
            assert_eq!(text(c.get(b"ctr").await.unwrap()), calls.to_string());
            // Sent again with a used id: the record's result, no effect.
            let again = c.call_dag_with(count("ctr", 0xa701)).await.unwrap();
            assert_eq!(again, b"1", "{point}");
            assert_eq!(text(c.get(b"ctr").await.unwrap()), calls.to_string());
            // Not atomic: no commit, no fail point.
            let plain = c.call_dag_with(count("ctr", 0)).await.unwrap();
            assert_eq!(plain, (calls + 1).to_string().as_bytes());
        });
        let reached = format!("fail point {point} reached");
        let runs_failed = node.stderr().matches(&reached).count();
        println!(
            "atomic: {point}: {calls} calls, {runs_failed} first runs failed there and ran \
             again, counter {calls}: 0 duplicate effects"
        );
        assert_eq!(
            runs_failed,
            calls as usize + 1,
            "{point}: every atomic call's first run failed there (the re-sent one too), \
             and only those"
        );
    }
}

#[test]
fn an_atomic_run_that_fails_writes_nothing() {
    let dir = temp_dir("atomic-fails");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        // incr_key writes n + 1, then square overflows on it and fails.
        let edges = [("incr_key", "square")];
        let dag = DagDef::new("count_square", &["incr_key", "square"], &edges);
        c.register_dag(dag).await.unwrap();
        let call = |txn| {
            let args = vec![SourceArgs::values("incr_key", vec![b"n".to_vec()])];
            DagCall::new("count_square", args).with_txn(txn)
        };
        c.put(b"n", lww("3037000499")).await.unwrap(); // 3037000500² > i64::MAX
        let err = c.call_dag_with(call(9)).await.unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
        assert_eq!(
            text(c.get(b"n").await.unwrap()),
            "3037000499",
            "nothing written"
        );
        assert!(c
            .get(b"squall:txn:0000000000000009:0")
            .await
            .unwrap()
            .is_none());
        // An mk or dsc call is atomic without an id: it leaves nothing either.
        for mode in [
            Consistency::MultiKeyCausal,
            Consistency::DistributedSessionCausal,
        ] {
            let err = c
                .call_dag_with(call(0).with_consistency(mode))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("overflow"), "{mode:?}: {err}");
            assert_eq!(text(c.get(b"n").await.unwrap()), "3037000499", "{mode:?}");
        }
        // Without --atomic the same failing call leaves its increment.
        c.call_dag_with(call(0)).await.unwrap_err();
        assert_eq!(text(c.get(b"n").await.unwrap()), "3037000500");
        c.put(b"n", lww("7")).await.unwrap();
        assert_eq!(c.call_dag_with(call(10)).await.unwrap(), b"64");
        assert_eq!(text(c.get(b"n").await.unwrap()), "8");
        assert!(c
            .get(b"squall:txn:000000000000000a:0")
            .await
            .unwrap()
            .is_some());
        // An mk call's write is stamped by a commit: its version names the
        // record of an id the node drew.
        c.put(b"n", lww("2")).await.unwrap();
        let mk = call(0).with_consistency(Consistency::MultiKeyCausal);
        assert_eq!(c.call_dag_with(mk).await.unwrap(), b"9");
        let Some(Value::Lww(l)) = c.get(b"n").await.unwrap() else {
            panic!("n holds no LWW value")
        };
        assert_eq!(l.bytes, b"3");
        let (txn, stage) = kvs_core::ids::txn_of_writer(l.writer).expect("a commit's stamp");
        assert_eq!(stage, 0);
        let record = executor::txn::record_key(txn, 0);
        assert!(c.get(&record).await.unwrap().is_some(), "its record stands");
    });
}

#[test]
fn the_cli_and_the_client_send_atomic_calls_and_puts_if_absent() {
    let dir = temp_dir("atomic-cli");
    let node = Node::start(1, "never", &dir);
    let addr = node.addr();
    cli_ok(addr, &["dag", "create", "count", "--function", "incr_key"]);
    let call = |extra: &[&str]| {
        let mut args = vec!["dag", "call", "count", "--arg", "incr_key=cli-ctr"];
        args.extend_from_slice(extra);
        cli_ok(addr, &args).trim().to_owned()
    };
    assert_eq!(call(&["--txn", "2a"]), "1");
    assert_eq!(
        call(&["--txn", "0x2a"]),
        "1",
        "the same id: no second effect"
    );
    assert_eq!(call(&["--atomic"]), "2", "a random id: a new call");
    assert_eq!(call(&[]), "3");
    for bad in ["0", "400000000000000", "xyz"] {
        let (code, _, err) = cli(&["dag", "call", "count", "--txn", bad, "--addr", addr]);
        assert_eq!(code, 2, "--txn {bad}: {err}");
        assert!(err.contains("transaction id is a hex number"), "{err}");
    }
    // A node refuses an id past 58 bits from any client.
    let err = rt().block_on(async {
        let mut c = connect(addr).await;
        c.call_dag_with(count("cli-ctr", 1 << 58))
            .await
            .unwrap_err()
    });
    assert_eq!(err.status(), Some(wire::Status::InvalidArgument), "{err}");
    // PutIfAbsent, what commits use, for anyone.
    assert_eq!(
        cli_ok(addr, &["kv", "put", "once", "a", "--if-absent"]).trim(),
        "OK"
    );
    let (code, out, err) = cli(&["kv", "put", "once", "b", "--if-absent", "--addr", addr]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("not stored"), "{out}");
    assert_eq!(cli_ok(addr, &["kv", "get", "once"]).trim(), "a");
    rt().block_on(async {
        let mut c = connect(addr).await;
        assert_eq!(c.put_if_absent(b"twice", lww("x")).await.unwrap(), None);
        let held = c.put_if_absent(b"twice", lww("y")).await.unwrap();
        assert_eq!(text(held), "x");
    });
}

#[test]
fn a_commit_record_is_deleted_after_its_time() {
    let dir = temp_dir("atomic-ttl");
    let node = Node::try_start(1, "never", &dir, &["--txn-record-ttl-ms", "1000"]).unwrap();
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let dag = DagDef::new("count", &["incr_key"], &[]);
        c.register_dag(dag).await.unwrap();
        assert_eq!(c.call_dag_with(count("t", 5)).await.unwrap(), b"1");
        assert_eq!(c.call_dag_with(count("t", 5)).await.unwrap(), b"1");
        let record = b"squall:txn:0000000000000005:0";
        assert!(c.get(record).await.unwrap().is_some());
        let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.get(record).await.unwrap().is_some() {
            assert!(
                std::time::Instant::now() < gone,
                "the record outlived its time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Past its time the same id is a new call.
        assert_eq!(c.call_dag_with(count("t", 5)).await.unwrap(), b"2");
    });
}

#[test]
fn an_atomic_call_whose_node_dies_after_applying_runs_again_and_takes_effect_once() {
    // Two copies of each key on three nodes. A call arriving at C goes to
    // P, the primary of the key `p` it reads (not held by C); `p` names
    // the counter `k`, whose primary is C and which P does not hold. P's
    // run raises k at C (800 → 801), so its effect is on a surviving copy,
    // and dies. C runs the call again: it reads 801, and a second effect
    // would make 802; its commit must find P's record (stored on every
    // holder first) and apply that instead.
    let dirs: Vec<_> = (0..3)
        .map(|i| temp_dir(&format!("atomic-dies-{i}")))
        .collect();
    let dies = [("FAILPOINTS", "atomic::crash-after-apply=return")];
    let start = |ip: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let listen = format!("{ip}:0");
        let mut args = vec!["--listen", listen.as_str(), "--replication", "2"];
        args.extend_from_slice(extra);
        Node::try_start_env(1, "never", dir, &args, env).unwrap()
    };
    let mut a = start("127.0.0.161", &dirs[0], &[], &dies);
    let seed = a.addr().to_owned();
    let mut b = start("127.0.0.162", &dirs[1], &["--join", &seed], &dies);
    let c = start("127.0.0.163", &dirs[2], &["--join", &seed], &[]);
    let three = [a.addr(), b.addr(), c.addr()];
    wait_for("three nodes agree", || {
        agreed(&three, &up(&[&a, &b, &c]), None).is_some()
    });
    let keys: Vec<String> = (0..60).map(|i| format!("ad-{i}")).collect();
    rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("800")).await.unwrap();
        }
        let dag = DagDef::new("count_via", &["echo", "incr_key"], &[("echo", "incr_key")]);
        routed.register_dag(dag).await.unwrap();
    });
    let primaries = primary_addrs(a.addr(), &keys);
    let (p, primary_p) = keys
        .iter()
        .zip(&primaries)
        .find(|(k, _)| local_text(c.addr(), k).is_none())
        .map(|(k, n)| (k.clone(), n.clone()))
        .expect("a key C does not hold");
    let k = keys
        .iter()
        .zip(&primaries)
        .find(|(k, n)| *n == c.addr() && local_text(&primary_p, k).is_none())
        .map(|(k, _)| k.clone())
        .expect("a key C is the primary of and P does not hold");
    rt().block_on(async {
        connect(a.addr())
            .await
            .put(p.as_bytes(), lww(&k))
            .await
            .unwrap();
    });
    let call = || {
        let args = vec![SourceArgs {
            function: b"echo".to_vec(),
            args: vec![Arg::Ref(p.clone().into_bytes())],
        }];
        let mut call = DagCall::new("count_via", args).with_txn(0x00de_ad00);
        call.retries = 1;
        call
    };
    let out = rt().block_on(async {
        let mut cc = connect_pinned(c.addr()).await;
        cc.call_dag_with(call()).await.unwrap()
    });
    let dead = if primary_p == a.addr() {
        &mut a
    } else {
        &mut b
    };
    assert!(!dead.is_running(), "the node the call went to died");
    assert!(
        dead.stderr()
            .contains("fail point atomic::crash-after-apply reached"),
        "it died after applying its record"
    );
    assert_eq!(out, b"801", "run again on C: the first run's record, once");
    wait_for("C's log of the call it ran itself", || {
        c.stderr().contains("runs here instead")
    });
    assert_eq!(local_text(c.addr(), &k).as_deref(), Some("801"));
    // The same call again, at C: the record stands, nothing changes.
    let again = rt().block_on(async {
        let mut cc = connect_pinned(c.addr()).await;
        cc.call_dag_with(call()).await.unwrap()
    });
    assert_eq!(again, b"801");
    assert_eq!(local_text(c.addr(), &k).as_deref(), Some("801"));
}

/// Measurement (`scripts/bench-atomic.sh`): what `--atomic` costs a call
/// that reads and writes one key (`incr_key`), on a lone node and with the
/// key and record spread over two nodes; plain and atomic calls
/// alternate, SQUALL_ATOMIC_COST_CALLS (2000) of each.
#[test]
#[ignore = "a measurement: scripts/bench-atomic.sh"]
fn cost() {
    let calls: u64 = std::env::var("SQUALL_ATOMIC_COST_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let pct = |v: &mut Vec<u64>, q: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    };
    let dirs: Vec<_> = (0..3)
        .map(|i| temp_dir(&format!("atomic-cost-{i}")))
        .collect();
    let lone = Node::start(1, "never", &dirs[0]);
    let listen = |ip: &str| format!("{ip}:0");
    let (l1, l2) = (listen("127.0.0.164"), listen("127.0.0.165"));
    let a = Node::try_start(1, "never", &dirs[1], &["--listen", &l1]).unwrap();
    let b = Node::try_start(1, "never", &dirs[2], &["--listen", &l2, "--join", a.addr()]).unwrap();
    wait_for("two nodes agree", || {
        agreed(&[a.addr(), b.addr()], &up(&[&a, &b]), None).is_some()
    });
    for (what, node) in [("one node", &lone), ("two nodes", &a)] {
        let (mut plain, mut atomic) = (Vec::new(), Vec::new());
        rt().block_on(async {
            let mut c = connect(node.addr()).await;
            let dag = DagDef::new("count", &["incr_key"], &[]);
            c.register_dag(dag).await.unwrap();
            let mut pinned = connect_pinned(node.addr()).await;
            for i in 0..calls + 100 {
                // A fresh key each call: on two nodes, half live on the
                // other one, as do half the records.
                // Which goes first alternates.
                let key = format!("cost-{i}");
                let mut timed = [(0, 0u64), (0x0c05_0000 + i, 0)];
                if i % 2 == 1 {
                    timed.reverse();
                }
                for (txn, us) in &mut timed {
                    let t = std::time::Instant::now();
                    pinned.call_dag_with(count(&key, *txn)).await.unwrap();
                    *us = t.elapsed().as_micros() as u64;
                }
                timed.sort_unstable();
                if i >= 100 {
                    plain.push(timed[0].1);
                    atomic.push(timed[1].1);
                }
            }
        });
        let (p50, a50) = (pct(&mut plain, 0.5), pct(&mut atomic, 0.5));
        let (p99, a99) = (pct(&mut plain, 0.99), pct(&mut atomic, 0.99));
        println!(
            "atomic cost, {what}: {calls} calls each; plain p50 {p50} us p99 {p99} us; \
             atomic p50 {a50} us p99 {a99} us; atomic / plain p50 {:.2}x p99 {:.2}x",
            a50 as f64 / p50 as f64,
            a99 as f64 / p99 as f64
        );
    }
}
