//! Keys spread over a cluster's nodes (one copy each for now): any node
//! serves any key (forwarding to its owner), every key lives on exactly one
//! node, a joining node takes its share (hand-off in acknowledged
//! batches), a leaving node gives all of its keys away before it stops,
//! and `kv get --local` reads one node's own copy. Bad input on the
//! node-to-node messages changes nothing. A hot key gets copies of its
//! own, on every node, and gives them back.

use std::time::Duration;

use client::Client;
use wire::message::{
    KvPut, KvPutConcern, MergeBatch, MergeEntry, Request, Response, Value, WRITE_CONCERN_ALL,
};

use crate::cluster::{agreed, start_at, wait_for};
use crate::harness::{cli, cli_ok, connect, connect_pinned, key_on, lww, rt, temp_dir, Node};

const KEYS: usize = 600;

fn key(i: usize) -> String {
    format!("key-{i}")
}

/// Live keys a node holds itself, over its shards.
fn held(addr: &str) -> u64 {
    rt().block_on(async {
        let mut c = connect(addr).await;
        c.stats().await.unwrap().iter().map(|s| s.live_keys).sum()
    })
}

/// Whether every key reads through `addr`'s node (which forwards what it
/// does not hold) with its value, but key 0 (deleted), which must stay
/// deleted.
fn all_readable(addr: &str) -> bool {
    rt().block_on(async {
        let mut c: Client = connect_pinned(addr).await;
        for i in 0..KEYS {
            let got = c.get(key(i).as_bytes()).await.unwrap();
            if i == 0 {
                assert!(got.is_none(), "the deleted key is back via {addr}");
            } else if text(got) != Some(format!("v{i}")) {
                return false;
            }
        }
        true
    })
}

/// Waits until the hand-offs have settled: every key readable through
/// each of `addrs` and held exactly once (a key in flight is held twice).
fn settled(addrs: &[&str]) {
    wait_for("every key readable, held once", || {
        addrs.iter().map(|n| held(n)).sum::<u64>() == KEYS as u64 - 1
            && addrs.iter().all(|n| all_readable(n))
    });
}

/// An LWW value's bytes, as text.
pub fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::Lww(l)) => Some(String::from_utf8(l.bytes).unwrap()),
        None => None,
        other => panic!("not an LWW value: {other:?}"),
    }
}

pub fn up(nodes: &[&Node]) -> Vec<(String, u8, u64)> {
    let mut v: Vec<_> = nodes
        .iter()
        .map(|n| (n.addr().to_owned(), wire::message::MEMBER_UP, 1))
        .collect();
    v.sort();
    v
}

#[test]
fn keys_spread_over_the_nodes_and_move_when_nodes_join_and_leave() {
    let dirs: Vec<_> = (0..4).map(|i| temp_dir(&format!("place-{i}"))).collect();
    let a = start_at("127.0.0.31", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = start_at("127.0.0.32", &dirs[1], &["--join", &seed]);
    let c = start_at("127.0.0.33", &dirs[2], &["--join", &seed]);
    let three = [a.addr(), b.addr(), c.addr()];
    wait_for("three nodes agree", || {
        agreed(&three, &up(&[&a, &b, &c]), None).is_some()
    });

    // Writes through one node, a delete through another.
    rt().block_on(async {
        let mut ca = connect(a.addr()).await;
        for i in 0..KEYS {
            ca.put(key(i).as_bytes(), lww(&format!("v{i}")))
                .await
                .unwrap();
        }
        let mut cb = connect(b.addr()).await;
        assert!(cb.delete(key(0).as_bytes()).await.unwrap());
    });
    for n in three {
        assert!(all_readable(n), "via {n}");
    }
    let counts: Vec<u64> = three.iter().map(|n| held(n)).collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        KEYS as u64 - 1,
        "one copy each: {counts:?}"
    );
    assert!(
        counts.iter().all(|&n| n > 0),
        "every node holds a share: {counts:?}"
    );
    // `--local`: one node's own copy, no routing.
    let holders = three
        .iter()
        .filter(|n| {
            let (code, out, err) = cli(&["kv", "get", &key(5), "--local", "--addr", n]);
            // 0: found; 1: not found here.
            assert!(
                code == 0 || (code == 1 && out.trim() == "(not found)"),
                "{code} {err}"
            );
            out.trim() == "v5"
        })
        .count();
    assert_eq!(holders, 1, "key-5 lives on exactly one node");

    // A fourth node joins: it takes its share; nothing is lost or doubled.
    let d = start_at("127.0.0.34", &dirs[3], &["--join", &seed]);
    let four = [a.addr(), b.addr(), c.addr(), d.addr()];
    wait_for("four nodes agree", || {
        agreed(&four, &up(&[&a, &b, &c, &d]), None).is_some()
    });
    settled(&four);
    assert!(held(d.addr()) > 0, "the new node took its share");

    // B leaves: its keys go to the others before it stops.
    let mut b = b;
    let (code, _, err) = cli(&["leave", "--addr", b.addr(), "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(b.wait_exit().success());
    assert!(b.stderr().contains("handed over"), "{}", b.stderr());
    let rest = [a.addr(), c.addr(), d.addr()];
    wait_for("the others see B gone", || {
        let mut want = up(&[&a, &c, &d]);
        want.push((b.addr().to_owned(), wire::message::MEMBER_DOWN, 1));
        want.sort();
        agreed(&rest, &want, None).is_some()
    });
    settled(&rest);
}

/// Requests the nodes sent on to other nodes, and requests they got with
/// an epoch not their own, summed over `addrs`.
fn forwards(addrs: &[&str]) -> (u64, u64) {
    rt().block_on(async {
        let mut sum = (0, 0);
        for a in addrs {
            for s in connect_pinned(a).await.stats().await.unwrap() {
                sum.0 += s.node_forwards;
                sum.1 += s.stale_epoch;
            }
        }
        sum
    })
}

/// Reads every key but key 0 through `c`, checking its value.
async fn read_all(c: &mut Client, keys: usize) {
    for i in 1..keys {
        let got = c.get(key(i).as_bytes()).await.unwrap();
        assert_eq!(text(got), Some(format!("v{i}")), "{}", key(i));
    }
}

/// Passes of reads through `client` until one where no node forwarded a
/// request and none came with a stale epoch (membership may flap for a
/// moment on a loaded machine: each flap is a new epoch). Panics after 5.
fn quiet_pass(rt: &tokio::runtime::Runtime, client: &mut Client, addrs: &[&str]) {
    for _ in 0..5 {
        let before = forwards(addrs);
        rt.block_on(read_all(client, KEYS));
        if forwards(addrs) == before {
            return;
        }
    }
    panic!(
        "no pass without forwards in 5 ({:?})",
        client.routing_stats()
    );
}

#[test]
fn a_client_sends_keys_to_their_holders_and_follows_a_changed_view() {
    let dirs: Vec<_> = (0..4).map(|i| temp_dir(&format!("route-{i}"))).collect();
    let a = start_at("127.0.0.71", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = start_at("127.0.0.72", &dirs[1], &["--join", &seed]);
    let c = start_at("127.0.0.73", &dirs[2], &["--join", &seed]);
    let three = [a.addr(), b.addr(), c.addr()];
    wait_for("three nodes agree", || {
        agreed(&three, &up(&[&a, &b, &c]), None).is_some()
    });
    // One runtime for the client's whole life (its sockets belong to it).
    let rt = rt();
    let mut client = rt.block_on(connect(a.addr()));
    rt.block_on(async {
        for i in 0..KEYS {
            let v = lww(&format!("v{i}"));
            client.put(key(i).as_bytes(), v).await.unwrap();
        }
        assert!(client.delete(key(0).as_bytes()).await.unwrap());
    });
    // Every key straight to its holder, in the nodes' epoch.
    quiet_pass(&rt, &mut client, &three);
    assert_eq!(
        Some(client.epoch()),
        crate::cluster::view(a.addr(), None).map(|v| v.epoch)
    );
    // A pinned client's requests do go through a node (and carry epoch 0).
    let (f0, s0) = forwards(&three);
    rt.block_on(async { read_all(&mut connect_pinned(a.addr()).await, KEYS).await });
    let (f1, s1) = forwards(&three);
    assert!(
        f1 > f0 && s1 == s0,
        "{} forwarded, {} stale",
        f1 - f0,
        s1 - s0
    );

    // A fourth node joins. The client's next reply carries the new epoch;
    // it asks for the view, and sends every key to its new holder.
    let d = start_at("127.0.0.74", &dirs[3], &["--join", &seed]);
    let four = [a.addr(), b.addr(), c.addr(), d.addr()];
    wait_for("four nodes agree", || {
        agreed(&four, &up(&[&a, &b, &c, &d]), None).is_some()
    });
    settled(&four);
    let r0 = client.routing_stats();
    let (f2, s2) = forwards(&four);
    rt.block_on(read_all(&mut client, KEYS));
    let (f3, s3) = forwards(&four);
    let r = client.routing_stats();
    assert!(r.stale_batches > r0.stale_batches, "{r:?}");
    assert!(r.refreshes > r0.refreshes, "{r:?}");
    // Only a request sent by an old view is forwarded: one read (and the
    // request for the view) per epoch change.
    assert!(
        f3 - f2 <= s3 - s2,
        "{} forwarded, {} stale",
        f3 - f2,
        s3 - s2
    );
    assert!(s3 - s2 >= 2, "{} stale", s3 - s2);
    quiet_pass(&rt, &mut client, &four);
    assert_eq!(
        Some(client.epoch()),
        crate::cluster::view(d.addr(), None).map(|v| v.epoch)
    );
}

#[test]
fn node_messages_with_bad_input_change_nothing() {
    let dirs: Vec<_> = (0..2)
        .map(|i| temp_dir(&format!("place-bad-{i}")))
        .collect();
    let a = start_at("127.0.0.35", &dirs[0], &[]);
    let b = start_at("127.0.0.36", &dirs[1], &["--join", a.addr()]);
    let both = [a.addr(), b.addr()];
    wait_for("two nodes agree", || {
        agreed(&both, &up(&[&a, &b]), None).is_some()
    });
    rt().block_on(async {
        // A key B owns, found by asking each node for its own copy.
        let mut ca = connect(a.addr()).await;
        let mut owned_by_b = None;
        for i in 0..200 {
            ca.put(key(i).as_bytes(), lww("x")).await.unwrap();
        }
        for i in 0..200 {
            let (_, out, _) = cli(&["kv", "get", &key(i), "--local", "--addr", b.addr()]);
            if out.trim() == "x" {
                owned_by_b = Some(key(i));
                break;
            }
        }
        let k = owned_by_b.expect("B owns some key");

        // A node link (client name `squall-node`) is never forwarded on: a
        // request for a key the node does not own is `wrong_owner`.
        let link = client::ClientOptions {
            timeout: Duration::from_secs(5),
            client_name: "squall-node".into(),
            route_across_nodes: false,
            ..client::ClientOptions::default()
        };
        let mut as_node = Client::connect(a.addr(), link).await.unwrap();
        let put = Request::Put(KvPut {
            key: k.as_bytes().to_vec(),
            value: lww("forged"),
        });
        let err = as_node.call(0, put).await.unwrap_err();
        assert_eq!(err.status(), Some(wire::Status::WrongOwner), "{err}");
        assert!(err.to_string().contains(b.addr()), "names the owner: {err}");

        // A hand-off batch with a bad entry is refused whole.
        let bad = Request::Merge(MergeBatch {
            entries: vec![
                MergeEntry {
                    key: b"fine".to_vec(),
                    value: Some(lww("m")),
                    deleted: None,
                },
                MergeEntry {
                    key: vec![b'k'; 5000],
                    value: Some(lww("m")),
                    deleted: None,
                },
            ],
        });
        let err = as_node.call(0, bad).await.unwrap_err();
        assert_eq!(err.status(), Some(wire::Status::KeyTooLarge), "{err}");
        let neither = Request::Merge(MergeBatch {
            entries: vec![MergeEntry {
                key: b"fine".to_vec(),
                value: None,
                deleted: None,
            }],
        });
        let err = as_node.call(0, neither).await.unwrap_err();
        assert_eq!(err.status(), Some(wire::Status::InvalidArgument), "{err}");
        // Nothing of either batch was applied; B's key kept its value.
        let mut cb = connect(b.addr()).await;
        assert_eq!(cb.get(b"fine").await.unwrap(), None);
        assert_eq!(text(cb.get(k.as_bytes()).await.unwrap()), Some("x".into()));
    });
}

/// How many of `addrs` hold `k` themselves (`GetLocal`).
fn copies(addrs: &[&str], k: &str) -> usize {
    rt().block_on(async {
        let mut n = 0;
        for a in addrs {
            let mut c = connect(a).await;
            if c.get_local(k.as_bytes()).await.unwrap().is_some() {
                n += 1;
            }
        }
        n
    })
}

#[test]
fn with_two_copies_every_key_survives_a_killed_node() {
    const N: usize = 200;
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("place-r2-{i}"))).collect();
    let flags = ["--replication", "2", "--write-concern", "all"];
    let a = start_at("127.0.0.41", &dirs[0], &flags);
    let seed = a.addr().to_owned();
    let mut with_join = flags.to_vec();
    with_join.extend(["--join", &seed]);
    let b = start_at("127.0.0.42", &dirs[1], &with_join);
    let mut c = start_at("127.0.0.43", &dirs[2], &with_join);
    let three = [a.addr(), b.addr(), c.addr()];
    wait_for("three nodes agree", || {
        agreed(&three, &up(&[&a, &b, &c]), None).is_some()
    });
    // Acknowledged under `all`: both holders have each key at once.
    rt().block_on(async {
        let mut ca = connect(a.addr()).await;
        for i in 0..N {
            ca.put(key(i).as_bytes(), lww(&format!("v{i}")))
                .await
                .unwrap();
        }
    });
    for i in (0..N).step_by(7) {
        assert_eq!(copies(&three, &key(i)), 2, "{}", key(i));
    }
    let total: u64 = three.iter().map(|n| held(n)).sum();
    assert_eq!(total, 2 * N as u64, "two copies of each key");
    // `cluster status`: each key counted once as a primary, once as a copy.
    let (code, json, err) = cli(&["cluster", "status", "--addr", a.addr(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sum = |field: &str| -> u64 {
        json["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("primary_keys"), sum("replica_keys")),
        (N as u64, N as u64),
        "{json}"
    );
    let (_, text_out, _) = cli(&["cluster", "status", "--addr", a.addr()]);
    assert!(text_out.contains("KEYS   REPLICAS"), "{text_out}");

    // One node dies. At once, before the others notice, a client that
    // routes itself reads every key: those whose first holder was C from
    // their other holder (a failover).
    c.kill();
    rt().block_on(async {
        let mut routed = connect(a.addr()).await;
        for i in 0..N {
            let got = routed.get(key(i).as_bytes()).await.unwrap();
            assert_eq!(text(got), Some(format!("v{i}")), "{}", key(i));
        }
        let r = routed.routing_stats();
        assert!(r.failovers >= 1, "{r:?}");
    });
    // Every key stays readable through each node, and gets its second
    // copy back on the two that are left.
    let two = [a.addr(), b.addr()];
    wait_for("the survivors re-replicate", || {
        two.iter().map(|n| held(n)).sum::<u64>() == 2 * N as u64
    });
    rt().block_on(async {
        for addr in two {
            let mut cl = connect_pinned(addr).await;
            for i in 0..N {
                let got = cl.get(key(i).as_bytes()).await.unwrap();
                assert_eq!(text(got), Some(format!("v{i}")), "{} via {addr}", key(i));
            }
        }
        // Writes under `all` go on with the holders that are left.
        let mut cb = connect(b.addr()).await;
        cb.put(b"after", lww("x")).await.unwrap();
    });
    assert_eq!(copies(&two, "after"), 2);
    // A write concern per request (`kv put --w`), and a bad one refused.
    let (code, _, err) = cli(&["kv", "put", "q", "v", "--w", "quorum", "--addr", a.addr()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(copies(&two, "q"), 2);
    rt().block_on(async {
        let mut ca = connect(a.addr()).await;
        let err = ca.put_with_concern(b"bad", lww("x"), 9).await.unwrap_err();
        assert_eq!(err.status(), Some(wire::Status::InvalidArgument), "{err}");
    });
    assert_eq!(copies(&two, "bad"), 0, "nothing written");
}

/// An LWW value stamped now (microseconds), by writer 99.
fn lww_now(v: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Value::Lww(wire::message::LwwValue {
        timestamp: u64::try_from(now.as_micros()).unwrap(),
        writer: 99,
        bytes: v.as_bytes().to_vec(),
    })
}

/// `key`'s copy on `addr`'s node, as text.
pub fn local_text(addr: &str, key: &str) -> Option<String> {
    rt().block_on(async { text(connect(addr).await.get_local(key.as_bytes()).await.unwrap()) })
}

#[test]
fn copies_that_differ_without_a_new_write_converge_by_anti_entropy() {
    // Two pairs of nodes (two shards each) keeping two copies of each key:
    // with anti-entropy every 200 ms, and without (the copies stay apart:
    // the check can fail).
    for (interval_ms, ips) in [
        ("200", ["127.0.0.75", "127.0.0.76"]),
        ("0", ["127.0.0.77", "127.0.0.78"]),
    ] {
        let dirs: Vec<_> = (0..2)
            .map(|i| temp_dir(&format!("ae-{interval_ms}-{i}")))
            .collect();
        let start = |i: usize, join: Option<&str>| {
            let listen = format!("{}:0", ips[i]);
            let mut args = vec!["--listen", &listen, "--replication", "2"];
            args.extend(["--anti-entropy-ms", interval_ms]);
            if let Some(j) = join {
                args.extend(["--join", j]);
            }
            Node::try_start(2, "never", &dirs[i], &args).unwrap()
        };
        let a = start(0, None);
        let b = start(1, Some(a.addr()));
        let both = [a.addr(), b.addr()];
        wait_for("two nodes agree", || {
            agreed(&both, &up(&[&a, &b]), None).is_some()
        });
        let keys: Vec<String> = (0..40).map(key).collect();
        rt().block_on(async {
            let mut c = connect(a.addr()).await;
            // Acknowledged by both copies: no push of these is pending.
            for k in &keys {
                let all = wire::message::WRITE_CONCERN_ALL;
                c.put_with_concern(k.as_bytes(), lww("old"), all)
                    .await
                    .unwrap();
            }
            // Newer values merged into B's copies only (as an operator's
            // `Merge` would be): nothing pushes them on.
            let link = client::ClientOptions {
                client_name: "squall-node".into(),
                route_across_nodes: false,
                ..client::ClientOptions::default()
            };
            let mut as_node = Client::connect(b.addr(), link).await.unwrap();
            let entries = keys
                .iter()
                .map(|k| MergeEntry {
                    key: k.as_bytes().to_vec(),
                    value: Some(lww_now("new")),
                    deleted: None,
                })
                .collect();
            let merged = as_node.call(0, Request::Merge(MergeBatch { entries }));
            assert_eq!(merged.await.unwrap(), wire::message::Response::Stored);
        });
        assert!(keys
            .iter()
            .all(|k| local_text(b.addr(), k).as_deref() == Some("new")));
        let started = std::time::Instant::now();
        if interval_ms == "0" {
            std::thread::sleep(Duration::from_millis(1000));
            assert!(
                keys.iter()
                    .all(|k| local_text(a.addr(), k).as_deref() == Some("old")),
                "without anti-entropy (or a write) A's copies stay as they were"
            );
        } else {
            wait_for("A's copies converge", || {
                keys.iter()
                    .all(|k| local_text(a.addr(), k).as_deref() == Some("new"))
            });
            eprintln!("anti-entropy: copies converged in {:?}", started.elapsed());
            assert!(a.stderr().contains("anti-entropy") || b.stderr().contains("anti-entropy"));
        }
    }
}

#[test]
fn a_hot_key_gets_copies_of_its_own_and_gives_them_back() {
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("hot-{i}"))).collect();
    let a = start_at("127.0.0.102", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = start_at("127.0.0.103", &dirs[1], &["--join", &seed]);
    let c = start_at("127.0.0.104", &dirs[2], &["--join", &seed]);
    let nodes = [&a, &b, &c];
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr()).collect();
    wait_for("three nodes agree", || {
        agreed(&addrs, &up(&nodes), None).is_some()
    });
    rt().block_on(async {
        let mut cl = connect(&seed).await;
        cl.put(b"hot", lww("v1")).await.unwrap();
        cl.put(b"cold", lww("c1")).await.unwrap();
    });
    assert_eq!(copies(&addrs, "hot"), 1, "--replication 1");

    // Bad settings are refused with a sentence and change nothing.
    for (key, value, why) in [
        ("squall:replicas:hot", "0", "a number from 1 to 7"),
        ("squall:replicas:hot", "many", "a number from 1 to 7"),
        ("squall:replicas:squall:fn:x", "2", "outside squall:"),
    ] {
        let (code, _, err) = cli(&["kv", "put", key, value, "--addr", &seed]);
        assert!(code != 0 && err.contains(why), "{key}={value}: {err}");
    }
    let (code, _, err) = cli(&["cluster", "replicate", "hot", "9", "--addr", &seed]);
    assert!(code != 0 && err.contains("0..=7"), "{err}");

    // Three copies: every node gets one, and a write reaches all three;
    // every node holds the setting; other keys keep one copy.
    let out = cli_ok(&seed, &["cluster", "replicate", "hot", "3"]);
    assert_eq!(out.trim(), "hot: 3 copies");
    let took = wait_for("every node holds the hot key", || {
        copies(&addrs, "hot") == 3
    });
    eprintln!("hot key on 3 nodes {took:?} after the setting");
    rt().block_on(async { connect(&seed).await.put(b"hot", lww("v2")).await.unwrap() });
    wait_for("the write reached every copy", || {
        addrs
            .iter()
            .all(|a| local_text(a, "hot").as_deref() == Some("v2"))
    });
    for a in &addrs {
        assert_eq!(local_text(a, "squall:replicas:hot").as_deref(), Some("3"));
    }
    assert_eq!(copies(&addrs, "cold"), 1);

    // Back to --replication: the extra copies go, the value stays.
    let out = cli_ok(&seed, &["cluster", "replicate", "hot", "0"]);
    assert_eq!(out.trim(), "hot: the cluster's --replication");
    wait_for("one copy again", || copies(&addrs, "hot") == 1);
    for a in &addrs {
        let got = rt().block_on(async { text(connect_pinned(a).await.get(b"hot").await.unwrap()) });
        assert_eq!(got.as_deref(), Some("v2"), "via {a}");
    }
}

#[test]
fn a_write_sent_to_the_wrong_shard_waits_for_its_write_concern() {
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("wc-fwd-{i}"))).collect();
    let start = |i: usize, join: Option<&str>| {
        let listen = format!("127.0.0.{}:0", 105 + i);
        let mut args = vec!["--listen", &listen, "--replication", "2"];
        if let Some(j) = join {
            args.extend(["--join", j]);
        }
        Node::try_start(2, "never", &dirs[i], &args).unwrap()
    };
    let a = start(0, None);
    let b = start(1, Some(a.addr()));
    wait_for("two nodes agree", || {
        agreed(&[a.addr(), b.addr()], &up(&[&a, &b]), None).is_some()
    });
    rt().block_on(async {
        let mut ca = connect_pinned(a.addr()).await;
        let mut cb = connect_pinned(b.addr()).await;
        for i in 0..40 {
            // A key of A's shard 1, sent to A's shard 0 (which forwards).
            let k = key_on(&ca, 1, &format!("wc-{i}-"));
            let put = Request::PutConcern(KvPutConcern {
                key: k.as_bytes().to_vec(),
                value: lww(&k),
                concern: WRITE_CONCERN_ALL,
            });
            assert_eq!(ca.call(0, put).await.unwrap(), Response::Stored);
            // W=all: B's copy has it the moment the write is acknowledged.
            let copy = text(cb.get_local(k.as_bytes()).await.unwrap());
            assert_eq!(copy.as_deref(), Some(k.as_str()), "write {i}");
        }
        let stats = ca.stats().await.unwrap();
        assert!(stats[0].forwarded_out >= 40, "{stats:?}");
    });
}
