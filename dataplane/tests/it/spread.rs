//! Functions across a cluster's nodes: what one node registers, every node
//! runs at once (and a node that joins later too); functions read and write
//! keys other nodes hold at their holder (no stray copy where the function
//! ran), reads through a cache kept fresh by push; an output key lands on
//! its holder; a call goes to the node holding its data (or runs where it
//! arrived when that node is cut off or dies midway — reading the other
//! copy — or when its data is cached there); a cache starts over when the
//! holder restarts (its leases were in memory only); an
//! upload's machine code is loaded, not compiled, by the other members.
//! The `#[ignore]`d ones are measurements (`bench-cluster-functions.sh`).

use std::time::Duration;

use client::Client;
use wire::message::{Arg, DagCall, DagDef, SourceArgs};

use crate::cluster::{agreed, primary_addrs, start_at, wait_for};
use crate::harness::{connect, connect_pinned, guest, lww, rt, temp_dir, Node};
use crate::placement::{local_text, up};

/// A key among `keys` that only `holder` holds of `nodes`.
pub(crate) fn held_only_by(holder: &str, nodes: &[&str], keys: &[String]) -> String {
    keys.iter()
        .find(|k| {
            nodes
                .iter()
                .all(|n| local_text(n, k).is_some() == (*n == holder))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no key of {} only on {holder}", keys.len()))
}

/// Requests a node sent on to other nodes (its `node_forwards`).
pub(crate) async fn sent_on(c: &mut Client) -> u64 {
    c.stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.node_forwards)
        .sum()
}

fn bump(key: &str) -> Vec<SourceArgs> {
    vec![SourceArgs::values("bump", vec![key.as_bytes().to_vec()])]
}

#[test]
fn functions_registered_on_one_node_run_on_every_node_against_keys_others_hold() {
    let dirs: Vec<_> = (0..4).map(|i| temp_dir(&format!("spread-{i}"))).collect();
    let a = start_at("127.0.0.121", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = start_at("127.0.0.122", &dirs[1], &["--join", &seed]);
    let c = start_at("127.0.0.123", &dirs[2], &["--join", &seed]);
    let three = [a.addr(), b.addr(), c.addr()];
    wait_for("three nodes agree", || {
        agreed(&three, &up(&[&a, &b, &c]), None).is_some()
    });
    let keys: Vec<String> = (0..40).map(|i| format!("n-{i}")).collect();
    rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("5")).await.unwrap();
        }
    });
    let on_b = held_only_by(b.addr(), &three, &keys);
    let on_a = held_only_by(a.addr(), &three, &keys);
    // Another of B's keys, which C has not read (so not cached there).
    let others: Vec<String> = keys.iter().filter(|k| **k != on_b).cloned().collect();
    let on_b2 = held_only_by(b.addr(), &three, &others);

    rt().block_on(async {
        // Registered on A: answered once every member has it, so C runs it
        // at once.
        let mut ca = connect_pinned(a.addr()).await;
        ca.register_function("bump", "incr_key").await.unwrap();
        for (dag, first) in [("bump_sq", "bump"), ("inc_sq", "increment")] {
            ca.register_dag(DagDef::new(dag, &[first, "square"], &[(first, "square")]))
                .await
                .unwrap();
        }
        let mut cc: Client = connect_pinned(c.addr()).await;
        // C's executor reads and writes a key only B holds.
        let out = cc.call_dag("bump_sq", bump(&on_b), 0).await.unwrap();
        assert_eq!(out, b"36", "square(5 + 1)");
        // A call referring to a key of B's that C has not cached, made on
        // C, runs on B.
        let before = sent_on(&mut cc).await;
        let refs = vec![SourceArgs {
            function: b"increment".to_vec(),
            args: vec![Arg::Ref(on_b2.clone().into_bytes())],
        }];
        let out = cc.call_dag("inc_sq", refs.clone(), 0).await.unwrap();
        assert_eq!(out, b"36", "square(5 + 1)");
        assert_eq!(sent_on(&mut cc).await, before + 1, "C sent the call to B");
        // With an output key too: run on B, the outcome stored from C.
        let mut call = DagCall::new("inc_sq", refs);
        call.output_key = b"inc-sq-out".to_vec();
        cc.call_dag_to_key(call).await.unwrap();
        // (Read by key, not through C: C sends on no other request.)
        let mut routed = connect(c.addr()).await;
        let out = routed
            .wait_for(b"inc-sq-out", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out, b"36");
        assert_eq!(sent_on(&mut cc).await, before + 2, "C sent that call to B");
        // A reference to B's key, read from A.
        let out = ca
            .call_function_with("square", vec![Arg::Ref(on_b.clone().into_bytes())], 0)
            .await
            .unwrap();
        assert_eq!(out, b"36");
        // An output key only A holds, from a call on C.
        let mut call = DagCall::new("bump_sq", bump(&on_b));
        call.output_key = on_a.clone().into_bytes();
        cc.call_dag_to_key(call).await.unwrap();
    });
    wait_for("the outcome on A", || {
        local_text(a.addr(), &on_a).as_deref() == Some("49")
    });
    assert_eq!(local_text(b.addr(), &on_b).as_deref(), Some("7"));
    for n in [a.addr(), c.addr()] {
        assert_eq!(local_text(n, &on_b), None, "no stray copy of {on_b} on {n}");
    }
    assert_eq!(local_text(c.addr(), &on_a), None, "no stray outcome on C");

    // An open cluster does not trust machine code in records: C compiles
    // an upload to A itself.
    rt().block_on(async {
        let mut ca = connect_pinned(a.addr()).await;
        ca.register_wasm("winc", guest("increment"), 0, 0)
            .await
            .unwrap();
    });
    wait_for("winc compiled on C", || {
        c.stderr()
            .contains("WebAssembly function \"winc\" ready in")
    });
    assert!(
        c.stderr().contains("(compiled here)") && !c.stderr().contains("loaded its machine code"),
        "{}",
        c.stderr()
    );

    // A node that joins later gets the registrations with its hand-off.
    let d = start_at("127.0.0.124", &dirs[3], &["--join", &seed]);
    let four = [a.addr(), b.addr(), c.addr(), d.addr()];
    wait_for("four nodes agree", || {
        agreed(&four, &up(&[&a, &b, &c, &d]), None).is_some()
    });
    let out = rt().block_on(async {
        let mut cd = connect_pinned(d.addr()).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match cd.call_dag("bump_sq", bump(&on_b), 0).await {
                Ok(out) => break out,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("not yet on D: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("D never ran bump_sq: {e}"),
            }
        }
    });
    assert_eq!(out, b"64", "square(7 + 1), from D");
}

#[test]
fn a_call_goes_to_its_data_or_runs_here_when_that_node_is_cut_off_or_cached() {
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("fallback-{i}"))).collect();
    let faults = dirs[0].join("link-faults");
    let a = Node::try_start_env(
        1,
        "never",
        &dirs[0],
        &["--listen", "127.0.0.137:0"],
        &[("SQUALL_LINK_FAULTS_FILE", faults.to_str().unwrap())],
    )
    .unwrap();
    let b = start_at("127.0.0.138", &dirs[1], &["--join", a.addr()]);
    let two = [a.addr(), b.addr()];
    wait_for("two nodes agree", || {
        agreed(&two, &up(&[&a, &b]), None).is_some()
    });
    let keys: Vec<String> = (0..40).map(|i| format!("fb-{i}")).collect();
    rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("6")).await.unwrap();
        }
        let mut ca = connect_pinned(a.addr()).await;
        ca.register_dag(DagDef::new(
            "inc_sq",
            &["increment", "square"],
            &[("increment", "square")],
        ))
        .await
        .unwrap();
    });
    let k = held_only_by(b.addr(), &two, &keys);
    let call = || {
        rt().block_on(async {
            let mut ca = connect_pinned(a.addr()).await;
            let refs = vec![SourceArgs {
                function: b"increment".to_vec(),
                args: vec![Arg::Ref(k.clone().into_bytes())],
            }];
            ca.call_dag("inc_sq", refs, 0).await
        })
    };
    // A loses B: the call meant for B runs on A, which cannot read B's key
    // either: an error, at once, never a hang.
    std::fs::write(&faults, format!("drop=100,peer={}", b.addr())).unwrap();
    std::thread::sleep(Duration::from_millis(150)); // A re-reads its faults file
    let err = call().unwrap_err();
    std::fs::remove_file(&faults).unwrap();
    assert!(err.to_string().contains("unavailable"), "{err}");
    wait_for("A's log of the call it ran itself", || {
        a.stderr().contains("runs here instead")
    });
    // B is back: the call runs there.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(call().unwrap(), b"49", "square(6 + 1)");
    // With B's key in A's cache (a function on A read it), A runs the call
    // itself.
    assert_eq!(read_by_function(a.addr(), &k), "6");
    let sent = || rt().block_on(async { sent_on(&mut connect_pinned(a.addr()).await).await });
    let before = sent();
    assert_eq!(call().unwrap(), b"49");
    assert_eq!(sent(), before, "run on A, from its cache");
}

#[test]
fn a_call_whose_node_dies_midway_runs_again_here_on_the_other_copy() {
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("midway-{i}"))).collect();
    let r2 = ["--replication", "2"];
    let mut a = start_at("127.0.0.141", &dirs[0], &r2);
    let seed = a.addr().to_owned();
    let join = ["--replication", "2", "--join", &seed];
    let mut b = start_at("127.0.0.142", &dirs[1], &join);
    let c = start_at("127.0.0.143", &dirs[2], &join);
    let three = [a.addr(), b.addr(), c.addr()];
    wait_for("three nodes agree", || {
        agreed(&three, &up(&[&a, &b, &c]), None).is_some()
    });
    let keys: Vec<String> = (0..40).map(|i| format!("mw-{i}")).collect();
    rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("800")).await.unwrap();
        }
        routed
            .register_dag(DagDef::new("slow", &["sleep_ms"], &[]))
            .await
            .unwrap();
    });
    // Each key's primary, as a routed client places it.
    let primaries = primary_addrs(a.addr(), &keys);
    // A key on A and B, not on C; its primary is the node the call goes to.
    let (k, primary) = keys
        .iter()
        .zip(&primaries)
        .map(|(k, p)| (k.clone(), p.clone()))
        .find(|(k, _)| local_text(c.addr(), k).is_none())
        .expect("a key C does not hold");
    let (dying, other) = if primary == a.addr() {
        (&mut a, b.addr().to_owned())
    } else {
        (&mut b, a.addr().to_owned())
    };
    assert_eq!(dying.addr(), primary);
    assert_eq!(
        local_text(&other, &k).as_deref(),
        Some("800"),
        "the other copy"
    );
    let call = {
        let (c_addr, k) = (c.addr().to_owned(), k.clone());
        std::thread::spawn(move || {
            rt().block_on(async {
                let mut cc = connect_pinned(&c_addr).await;
                let refs = vec![SourceArgs {
                    function: b"sleep_ms".to_vec(),
                    args: vec![Arg::Ref(k.into_bytes())],
                }];
                cc.call_dag("slow", refs, 0).await
            })
        })
    };
    // The call sleeps on the primary; it dies in the middle.
    std::thread::sleep(Duration::from_millis(300));
    dying.kill();
    assert_eq!(call.join().unwrap().unwrap(), b"800", "run again on C");
    wait_for("C's log of the call it ran itself", || {
        c.stderr().contains("runs here instead")
    });
}

/// Reads the key holder's shard answered (its `gets`).
fn gets(addr: &str) -> u64 {
    rt().block_on(async {
        let mut c = connect_pinned(addr).await;
        c.stats().await.unwrap().iter().map(|s| s.gets).sum()
    })
}

/// `key`'s value as a function on `addr`'s node reads it.
fn read_by_function(addr: &str, key: &str) -> String {
    rt().block_on(async {
        let mut c = connect_pinned(addr).await;
        let out = c
            .call_function_with("echo", vec![Arg::Ref(key.as_bytes().to_vec())], 0)
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    })
}

#[test]
fn other_nodes_keys_are_cached_kept_fresh_by_push_and_a_lost_push_heals() {
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("cache-{i}"))).collect();
    let faults = dirs[1].join("link-faults");
    let a = start_at("127.0.0.125", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = Node::try_start_env(
        1,
        "never",
        &dirs[1],
        &["--listen", "127.0.0.126:0", "--join", &seed],
        &[("SQUALL_LINK_FAULTS_FILE", faults.to_str().unwrap())],
    )
    .unwrap();
    let two = [a.addr(), b.addr()];
    wait_for("two nodes agree", || {
        agreed(&two, &up(&[&a, &b]), None).is_some()
    });
    let keys: Vec<String> = (0..40).map(|i| format!("c-{i}")).collect();
    rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("v0")).await.unwrap();
        }
    });
    let k = held_only_by(b.addr(), &two, &keys);
    let put_on_b = |v: &str| {
        rt().block_on(async {
            let mut cb = connect_pinned(b.addr()).await;
            cb.put(k.as_bytes(), lww(v)).await.unwrap();
        });
    };

    // The first read fills A's cache; the next ones do not reach B.
    assert_eq!(read_by_function(a.addr(), &k), "v0");
    let filled = gets(b.addr());
    for _ in 0..20 {
        assert_eq!(read_by_function(a.addr(), &k), "v0");
    }
    assert_eq!(gets(b.addr()), filled, "reads of a cached key stay on A");
    let cache = rt().block_on(async {
        let mut ca = connect_pinned(a.addr()).await;
        ca.stats().await.unwrap()[0]
    });
    assert_eq!(cache.cache_keys, 1, "{cache:?}");
    assert!(cache.cache_bytes > 0 && cache.cache_hits >= 20, "{cache:?}");
    assert!(cache.cache_misses >= 1, "the first read missed: {cache:?}");

    // A write at B reaches A's cache by push: fresh, and still no read of B.
    put_on_b("v1");
    wait_for("the pushed value on A", || {
        read_by_function(a.addr(), &k) == "v1"
    });
    assert_eq!(
        gets(b.addr()),
        filled,
        "fresh by push, not by reading again"
    );

    // A's own writes of the key go through its cache: stored at B, then
    // merged into A's copy (stamped on A: the very value B stores). A's
    // next reads see them without asking B again.
    put_on_b("10");
    wait_for("10 on A", || read_by_function(a.addr(), &k) == "10");
    let before = gets(b.addr());
    for want in ["11", "12", "13"] {
        let got = rt().block_on(async {
            let mut ca = connect_pinned(a.addr()).await;
            ca.call_function_with("incr_key", vec![Arg::Value(k.as_bytes().to_vec())], 0)
                .await
                .unwrap()
        });
        assert_eq!(got, want.as_bytes(), "each write read back from A's cache");
    }
    assert_eq!(read_by_function(a.addr(), &k), "13");
    assert_eq!(gets(b.addr()), before, "written through, not read again");
    assert_eq!(local_text(b.addr(), &k).as_deref(), Some("13"));

    // Pushes lost (never sent, or applied with the reply lost: the link
    // faults pick either): A may read the old value until its lease ends
    // (or the cache starts over), then reads B again: never stale for good.
    std::fs::write(&faults, format!("drop=100,peer={}", a.addr())).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // B re-reads its faults file
    put_on_b("v2");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_file(&faults).unwrap();
    let healed = wait_for("v2 on A", || read_by_function(a.addr(), &k) == "v2");
    eprintln!(
        "v2 on A after {healed:?}; B answered {} reads for A's cache since",
        gets(b.addr()) - filled
    );

    // The holder restarts (kill -9, same data and address) and forgets its
    // leases (they live in memory only): it would push A nothing. But it
    // comes back as a new incarnation, a new view: A's cache starts over,
    // and the value written after the restart is what A's functions read.
    let b_addr = b.addr().to_owned();
    let mut b = b;
    b.kill();
    let b = Node::try_start(
        1,
        "never",
        &dirs[1],
        &["--listen", &b_addr, "--join", &seed],
    )
    .unwrap();
    let mut restarted = vec![
        (seed.clone(), wire::message::MEMBER_UP, 1),
        (b_addr.clone(), wire::message::MEMBER_UP, 2),
    ];
    restarted.sort();
    wait_for("B's second incarnation in both views", || {
        agreed(&[a.addr(), b.addr()], &restarted, None).is_some()
    });
    let cache = rt().block_on(async { connect_pinned(a.addr()).await.stats().await.unwrap()[0] });
    assert_eq!(cache.cache_keys, 0, "A's cache started over: {cache:?}");
    rt().block_on(async {
        let mut cb = connect_pinned(b.addr()).await;
        cb.put(k.as_bytes(), lww("v3")).await.unwrap();
    });
    assert_eq!(read_by_function(a.addr(), &k), "v3");
}

/// Write → subscribed cache, over `SQUALL_FRESHNESS_ROUNDS` writes (default
/// 500): each round writes a new value at the holder and times until a
/// function on the other node reads it. Prints p50/p99; run by
/// `scripts/bench-cluster-functions.sh`.
#[test]
#[ignore = "a measurement, not a check: scripts/bench-cluster-functions.sh runs it"]
fn freshness() {
    let rounds: usize = std::env::var("SQUALL_FRESHNESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("fresh-{i}"))).collect();
    let a = start_at("127.0.0.127", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = start_at("127.0.0.128", &dirs[1], &["--join", &seed]);
    let two = [a.addr(), b.addr()];
    wait_for("two nodes agree", || {
        agreed(&two, &up(&[&a, &b]), None).is_some()
    });
    let keys: Vec<String> = (0..40).map(|i| format!("f-{i}")).collect();
    let (mut samples_us, mut polls) = rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("0")).await.unwrap();
        }
        (Vec::new(), 0u64)
    });
    let k = held_only_by(b.addr(), &two, &keys);
    rt().block_on(async {
        let mut ca = connect_pinned(a.addr()).await;
        let mut cb = connect_pinned(b.addr()).await;
        let read = Arg::Ref(k.as_bytes().to_vec());
        for i in 1..=rounds {
            let want = i.to_string();
            cb.put(k.as_bytes(), lww(&want)).await.unwrap();
            let t0 = std::time::Instant::now();
            loop {
                let out = ca
                    .call_function_with("echo", vec![read.clone()], 0)
                    .await
                    .unwrap();
                polls += 1;
                if out == want.as_bytes() {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "round {i} never fresh"
                );
            }
            samples_us.push(t0.elapsed().as_micros() as u64);
        }
    });
    samples_us.sort_unstable();
    let at =
        |q: f64| samples_us[((samples_us.len() as f64 * q) as usize).min(samples_us.len() - 1)];
    let b_gets = gets(b.addr());
    println!(
        "freshness: {rounds} writes, write→cache p50 {} µs p99 {} µs max {} µs \
         ({polls} reads on A, {b_gets} answered by B)",
        at(0.5),
        at(0.99),
        samples_us[samples_us.len() - 1]
    );
}

const ADMIN: &str = "admin-secret-0123456789";

fn with_tokens(dir: &std::path::Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("admin {ADMIN}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn admin(addr: &str) -> Client {
    let opts = client::ClientOptions {
        timeout: Duration::from_secs(10),
        client_name: "it-admin".into(),
        token: Some(wire::auth::Secret::new(ADMIN).unwrap()),
        route_across_nodes: false,
    };
    Client::connect(addr, opts).await.unwrap()
}

#[test]
fn a_module_compiled_on_one_node_is_loaded_on_the_others_and_at_restart() {
    let dirs: Vec<_> = (0..2)
        .map(|i| temp_dir(&format!("precompiled-{i}")))
        .collect();
    let tokens: Vec<String> = dirs.iter().map(|d| with_tokens(d)).collect();
    let start = |ip: &str, i: usize, join: &[&str]| {
        let listen = format!("{ip}:0");
        let mut args = vec!["--listen", listen.as_str(), "--auth-token-file", &tokens[i]];
        args.extend_from_slice(join);
        Node::try_start(1, "never", &dirs[i].join("data"), &args).unwrap()
    };
    let a = start("127.0.0.131", 0, &[]);
    let seed = a.addr().to_owned();
    let mut b = start("127.0.0.132", 1, &["--join", &seed]);
    wait_for("two nodes agree", || {
        agreed(&[a.addr(), b.addr()], &up(&[&a, &b]), Some(ADMIN)).is_some()
    });
    rt().block_on(async {
        let mut ca = admin(a.addr()).await;
        ca.register_wasm("winc", guest("increment"), 0, 0)
            .await
            .unwrap();
        // Answered once B has it: B runs it at once, compiled by A.
        let out = admin(b.addr())
            .await
            .call_function("winc", vec![b"41".to_vec()], 0)
            .await;
        assert_eq!(out.unwrap(), b"42");
    });
    let loaded = "WebAssembly function \"winc\" ready in";
    assert!(b.stderr().contains(loaded), "{}", b.stderr());
    assert!(
        b.stderr().contains("(loaded its machine code)"),
        "{}",
        b.stderr()
    );
    assert!(!b.stderr().contains("(compiled here)"), "{}", b.stderr());
    // A restarted node loads it from its own record too.
    b.kill();
    let b = start("127.0.0.132", 1, &["--join", &seed]);
    wait_for("winc recovered on B", || {
        b.stderr().contains("\"winc\" registered (recovered)")
    });
    assert!(
        b.stderr().contains("(loaded its machine code)"),
        "{}",
        b.stderr()
    );
    assert!(!b.stderr().contains("(compiled here)"), "{}", b.stderr());
}

/// `module` with a custom section naming `round`: other bytes, same code
/// (defeats every cache keyed by the module's bytes).
fn variant(module: &[u8], round: usize) -> Vec<u8> {
    let name = format!("r{round}");
    let mut section = vec![u8::try_from(name.len()).unwrap()];
    section.extend_from_slice(name.as_bytes());
    let mut out = module.to_vec();
    out.push(0); // custom section
    out.push(u8::try_from(section.len()).unwrap());
    out.extend_from_slice(&section);
    out
}

/// Compile once per cluster, measured: `SQUALL_PRECOMPILED_ROUNDS` (default
/// 20) uploads of the `increment` guest (each with other bytes) to node A of
/// an open pair (the other node compiles) and of a pair with
/// authentication (it loads A's machine code). Prints the registration's
/// round trip (answered once both nodes have the function), the other
/// node's time to make it ready (from its log) and its first call's round
/// trip right after; run by
/// `scripts/bench-cluster-functions.sh`.
#[test]
#[ignore = "a measurement, not a check: scripts/bench-cluster-functions.sh runs it"]
fn precompiled_cost() {
    let rounds: usize = std::env::var("SQUALL_PRECOMPILED_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let module = guest("increment");
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    for (label, ips, auth) in [
        ("open (compiles)", ["127.0.0.133", "127.0.0.134"], false),
        (
            "authenticated (loads)",
            ["127.0.0.135", "127.0.0.136"],
            true,
        ),
    ] {
        let dirs: Vec<_> = (0..2)
            .map(|i| temp_dir(&format!("pc-{auth}-{i}")))
            .collect();
        let start = |i: usize, join: &[&str]| {
            let listen = format!("{}:0", ips[i]);
            let tokens = with_tokens(&dirs[i]);
            let mut args = vec!["--listen", listen.as_str()];
            if auth {
                args.extend(["--auth-token-file", tokens.as_str()]);
            }
            args.extend_from_slice(join);
            Node::try_start(1, "never", &dirs[i].join("data"), &args).unwrap()
        };
        let a = start(0, &[]);
        let seed = a.addr().to_owned();
        let b = start(1, &["--join", &seed]);
        let secret = auth.then_some(ADMIN);
        wait_for("two nodes agree", || {
            agreed(&[a.addr(), b.addr()], &up(&[&a, &b]), secret).is_some()
        });
        let (register_us, first_call_us) = rt().block_on(async {
            let (mut ca, mut cb) = if auth {
                (admin(a.addr()).await, admin(b.addr()).await)
            } else {
                (
                    connect_pinned(a.addr()).await,
                    connect_pinned(b.addr()).await,
                )
            };
            let (mut register, mut first) = (Vec::new(), Vec::new());
            for r in 0..rounds {
                let t0 = std::time::Instant::now();
                ca.register_wasm(&format!("k{r}"), variant(&module, r), 0, 0)
                    .await
                    .unwrap();
                register.push(t0.elapsed().as_micros() as u64);
                let t1 = std::time::Instant::now();
                let out = cb
                    .call_function(&format!("k{r}"), vec![b"41".to_vec()], 0)
                    .await;
                first.push(t1.elapsed().as_micros() as u64);
                assert_eq!(out.unwrap(), b"42");
            }
            (register, first)
        });
        let log = b.stderr();
        let ready_us: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("WebAssembly function \"k"))
            .filter_map(|l| l.split("ready in ").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        assert_eq!(ready_us.len(), rounds, "{log}");
        println!(
            "precompiled: {label}: {rounds} uploads of {} bytes; registration p50 {} us; \
             the other node ready in p50 {} us, its first call p50 {} us",
            module.len(),
            median(register_us),
            median(ready_us),
            median(first_call_us)
        );
    }
}

/// A call sent to the node holding its data, measured: `inc_sq` of a
/// reference to a key node B holds, called at B and at C (which sends it
/// to B), beside a `Ping` to C (the loopback floor), alternating, in one
/// run; `SQUALL_FORWARD_CALLS` (default 2000) of each. Prints p50/p99 and
/// the ratios; run by `scripts/bench-cluster-functions.sh`.
#[test]
#[ignore = "a measurement, not a check: scripts/bench-cluster-functions.sh runs it"]
fn forwarded_cost() {
    let calls: usize = std::env::var("SQUALL_FORWARD_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("fwd-{i}"))).collect();
    let b = start_at("127.0.0.139", &dirs[0], &[]);
    let c = start_at("127.0.0.140", &dirs[1], &["--join", b.addr()]);
    let two = [b.addr(), c.addr()];
    wait_for("two nodes agree", || {
        agreed(&two, &up(&[&b, &c]), None).is_some()
    });
    let keys: Vec<String> = (0..40).map(|i| format!("fc-{i}")).collect();
    let pct = |mut v: Vec<u64>, q: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    };
    let (at_b, at_c, ping) = rt().block_on(async {
        let mut routed = connect(b.addr()).await;
        for k in &keys {
            routed.put(k.as_bytes(), lww("6")).await.unwrap();
        }
        routed
            .register_dag(DagDef::new(
                "inc_sq",
                &["increment", "square"],
                &[("increment", "square")],
            ))
            .await
            .unwrap();
        (Vec::new(), Vec::new(), Vec::new())
    });
    let k = held_only_by(b.addr(), &two, &keys);
    let (mut at_b, mut at_c, mut ping) = (at_b, at_c, ping);
    rt().block_on(async {
        let mut cb = connect_pinned(b.addr()).await;
        let mut cc = connect_pinned(c.addr()).await;
        let refs = vec![SourceArgs {
            function: b"increment".to_vec(),
            args: vec![Arg::Ref(k.clone().into_bytes())],
        }];
        for i in 0..calls + 100 {
            let t = std::time::Instant::now();
            assert_eq!(cb.call_dag("inc_sq", refs.clone(), 0).await.unwrap(), b"49");
            let t_b = t.elapsed().as_micros() as u64;
            let t = std::time::Instant::now();
            assert_eq!(cc.call_dag("inc_sq", refs.clone(), 0).await.unwrap(), b"49");
            let t_c = t.elapsed().as_micros() as u64;
            let t = std::time::Instant::now();
            cc.ping(0).await.unwrap();
            let t_p = t.elapsed().as_micros() as u64;
            if i >= 100 {
                at_b.push(t_b);
                at_c.push(t_c);
                ping.push(t_p);
            }
        }
    });
    let (b50, c50, p50) = (
        pct(at_b.clone(), 0.5),
        pct(at_c.clone(), 0.5),
        pct(ping.clone(), 0.5),
    );
    println!(
        "forwarded: {calls} calls each; at the data's node p50 {b50} us p99 {} us; \
         sent there by another node p50 {c50} us p99 {} us; ping p50 {p50} us; \
         forwarded / local {:.2}x, forwarded / ping {:.2}x",
        pct(at_b, 0.99),
        pct(at_c, 0.99),
        c50 as f64 / b50 as f64,
        c50 as f64 / p50 as f64
    );
}
