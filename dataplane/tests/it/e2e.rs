//! Put/get/delete of every lattice type through the client and the CLI, on
//! a two-shard node, including requests sent to the wrong shard.

use client::ClientError;
use wire::message::{
    CausalVersion, ClockEntry, Dependency, KvGet, KvPut, LwwValue, PriorityValue, Request,
    Response, Value,
};
use wire::Status;

use crate::harness::{cli, cli_ok, connect, rt, temp_dir, Node};

fn lww(s: &str) -> Value {
    Value::Lww(LwwValue {
        timestamp: 0,
        writer: 0,
        bytes: s.as_bytes().to_vec(),
    })
}

fn bytes(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Keys owned by shard 0 and by shard 1, `n` of each.
fn keys_per_shard(c: &client::Client, n: usize) -> [Vec<String>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for i in 0.. {
        let k = format!("key-{i}");
        let s = usize::from(c.shard_for(k.as_bytes()));
        if out[s].len() < n {
            out[s].push(k);
        }
        if out.iter().all(|v| v.len() == n) {
            return out;
        }
    }
    unreachable!()
}

#[test]
fn every_lattice_round_trips_through_the_client_on_both_shards() {
    let dir = temp_dir("e2e");
    let node = Node::start(2, "always", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        assert_eq!(c.topology().shards.len(), 2);
        for keys in keys_per_shard(&c, 1) {
            let k = &keys[0];
            let key = |suffix: &str| format!("{k}-{suffix}");
            // Which shard owns each derived key varies; both are exercised.
            c.put(key("lww").as_bytes(), lww("one")).await.unwrap();
            c.put(key("lww").as_bytes(), lww("two")).await.unwrap();
            let Some(Value::Lww(v)) = c.get(key("lww").as_bytes()).await.unwrap() else {
                panic!("lww")
            };
            assert_eq!(v.bytes, b"two", "a later put wins");
            assert!(v.timestamp > 0, "the node stamps timestamp 0");

            // An explicit older timestamp loses to the node-stamped one.
            c.put(
                key("lww").as_bytes(),
                Value::Lww(LwwValue {
                    timestamp: 1,
                    writer: 1,
                    bytes: b"old".to_vec(),
                }),
            )
            .await
            .unwrap();
            let Some(Value::Lww(v)) = c.get(key("lww").as_bytes()).await.unwrap() else {
                panic!("lww")
            };
            assert_eq!(v.bytes, b"two");

            c.put(key("set").as_bytes(), Value::Set(bytes(&["b", "a"])))
                .await
                .unwrap();
            c.put(key("set").as_bytes(), Value::Set(bytes(&["c"])))
                .await
                .unwrap();
            let Some(Value::Set(mut s)) = c.get(key("set").as_bytes()).await.unwrap() else {
                panic!("set")
            };
            s.sort();
            assert_eq!(s, bytes(&["a", "b", "c"]));

            c.put(
                key("oset").as_bytes(),
                Value::OrderedSet(bytes(&["z", "m"])),
            )
            .await
            .unwrap();
            c.put(key("oset").as_bytes(), Value::OrderedSet(bytes(&["a"])))
                .await
                .unwrap();
            assert_eq!(
                c.get(key("oset").as_bytes()).await.unwrap(),
                Some(Value::OrderedSet(bytes(&["a", "m", "z"]))),
                "ordered sets read back sorted"
            );

            c.put(key("max").as_bytes(), Value::Max(7)).await.unwrap();
            c.put(key("max").as_bytes(), Value::Max(3)).await.unwrap();
            assert_eq!(
                c.get(key("max").as_bytes()).await.unwrap(),
                Some(Value::Max(7))
            );

            let prio = |p, s: &str| {
                Value::Priority(PriorityValue {
                    priority: p,
                    bytes: s.as_bytes().to_vec(),
                })
            };
            c.put(key("prio").as_bytes(), prio(5, "five"))
                .await
                .unwrap();
            c.put(key("prio").as_bytes(), prio(2, "two")).await.unwrap();
            c.put(key("prio").as_bytes(), prio(9, "nine"))
                .await
                .unwrap();
            assert_eq!(
                c.get(key("prio").as_bytes()).await.unwrap(),
                Some(prio(2, "two"))
            );

            let ver = |node, counter, s: &str, deps: Vec<Dependency>| CausalVersion {
                clock: vec![ClockEntry { node, counter }],
                deps,
                bytes: s.as_bytes().to_vec(),
            };
            c.put(
                key("skc").as_bytes(),
                Value::SingleKeyCausal(vec![ver(1, 1, "a", vec![])]),
            )
            .await
            .unwrap();
            c.put(
                key("skc").as_bytes(),
                Value::SingleKeyCausal(vec![ver(2, 1, "b", vec![])]),
            )
            .await
            .unwrap();
            let Some(Value::SingleKeyCausal(vs)) = c.get(key("skc").as_bytes()).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(vs.len(), 2, "concurrent versions are kept: {vs:?}");

            let dep = Dependency {
                key: b"other".to_vec(),
                clock: vec![ClockEntry {
                    node: 1,
                    counter: 1,
                }],
            };
            c.put(
                key("mkc").as_bytes(),
                Value::MultiKeyCausal(vec![ver(1, 1, "a", vec![dep.clone()])]),
            )
            .await
            .unwrap();
            let newer = CausalVersion {
                clock: vec![ClockEntry {
                    node: 1,
                    counter: 2,
                }],
                deps: vec![],
                bytes: b"b".to_vec(),
            };
            c.put(
                key("mkc").as_bytes(),
                Value::MultiKeyCausal(vec![newer.clone()]),
            )
            .await
            .unwrap();
            assert_eq!(
                c.get(key("mkc").as_bytes()).await.unwrap(),
                Some(Value::MultiKeyCausal(vec![newer]))
            );

            // Type mismatch: a stable status and a sentence.
            let err = c.put(key("max").as_bytes(), lww("x")).await.unwrap_err();
            assert_eq!(err.status(), Some(Status::TypeMismatch), "{err}");
            assert!(err.to_string().contains("max"), "{err}");

            // Delete.
            assert!(c.delete(key("set").as_bytes()).await.unwrap());
            assert_eq!(c.get(key("set").as_bytes()).await.unwrap(), None);
            assert!(
                !c.delete(key("set").as_bytes()).await.unwrap(),
                "second delete removes nothing"
            );
            assert!(c.delete(key("lww").as_bytes()).await.unwrap());
            assert_eq!(c.get(key("lww").as_bytes()).await.unwrap(), None);
            c.put(key("lww").as_bytes(), lww("back")).await.unwrap();
            assert!(
                c.get(key("lww").as_bytes()).await.unwrap().is_some(),
                "a newer put revives the key"
            );
        }
        let stats = c.stats().await.unwrap();
        assert_eq!(stats.len(), 2);
        assert!(
            stats.iter().all(|s| s.puts > 0),
            "both shards took writes: {stats:?}"
        );
        // A lone node is the primary of every key it holds.
        assert!(
            stats
                .iter()
                .all(|s| s.live_keys > 0 && s.primary_keys == s.live_keys),
            "{stats:?}"
        );
    });
}

#[test]
fn limits_and_bad_arguments_get_clear_errors() {
    let dir = temp_dir("limits");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let check = |r: Result<Response, ClientError>, want: Status| {
            let err = r.unwrap_err();
            assert_eq!(err.status(), Some(want), "{err}");
        };
        check(
            c.call(0, Request::Get(KvGet { keys: vec![] })).await,
            Status::InvalidArgument,
        );
        check(
            c.call(
                0,
                Request::Get(KvGet {
                    keys: vec![vec![1]; 2000],
                }),
            )
            .await,
            Status::InvalidArgument,
        );
        check(
            c.call(
                0,
                Request::Put(KvPut {
                    key: vec![],
                    value: Value::Max(1),
                }),
            )
            .await,
            Status::InvalidArgument,
        );
        check(
            c.call(
                0,
                Request::Put(KvPut {
                    key: vec![b'k'; 5000],
                    value: Value::Max(1),
                }),
            )
            .await,
            Status::KeyTooLarge,
        );
        let big = Value::Lww(LwwValue {
            timestamp: 0,
            writer: 0,
            bytes: vec![0; 2 << 20],
        });
        check(
            c.call(
                0,
                Request::Put(KvPut {
                    key: b"k".to_vec(),
                    value: big,
                }),
            )
            .await,
            Status::ValueTooLarge,
        );
        // The connection is still good afterwards.
        c.ping(0).await.unwrap();
    });
}

#[test]
fn a_request_sent_to_the_wrong_shard_is_forwarded_and_answered() {
    let dir = temp_dir("misroute");
    let node = Node::start(2, "always", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let [k0, k1] = keys_per_shard(&c, 3);
        // Write shard-1 keys through shard 0 and vice versa.
        for (keys, wrong) in [(&k1, 0u16), (&k0, 1u16)] {
            for k in keys {
                let put = Request::Put(KvPut {
                    key: k.as_bytes().to_vec(),
                    value: lww(k),
                });
                assert_eq!(c.call(wrong, put).await.unwrap(), Response::Stored);
            }
        }
        // Read them back through the routing client (from their owners)...
        for k in k0.iter().chain(&k1) {
            let Some(Value::Lww(v)) = c.get(k.as_bytes()).await.unwrap() else {
                panic!("{k} missing")
            };
            assert_eq!(v.bytes, k.as_bytes());
        }
        // ...and with one multi-key get spanning both shards, sent to shard 1.
        let all: Vec<Vec<u8>> = k0
            .iter()
            .chain(&k1)
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let Response::Values(vals) = c
            .call(1, Request::Get(KvGet { keys: all.clone() }))
            .await
            .unwrap()
        else {
            panic!("values")
        };
        for (k, v) in all.iter().zip(vals) {
            let Some(Value::Lww(v)) = v else {
                panic!("missing")
            };
            assert_eq!(&v.bytes, k, "values come back in request order");
        }
        let stats = c.stats().await.unwrap();
        assert!(
            stats[0].forwarded_out >= 3 && stats[1].forwarded_in >= 3,
            "{stats:?}"
        );
        assert!(
            stats[1].forwarded_out >= 3 && stats[0].forwarded_in >= 3,
            "{stats:?}"
        );
    });
}

#[test]
fn the_cli_puts_gets_and_deletes_every_cli_lattice() {
    let dir = temp_dir("cli");
    let node = Node::start(2, "always", &dir);
    let addr = node.addr().to_owned();
    let run = |args: &[&str]| cli_ok(&addr, args);
    run(&["kv", "put", "greeting", "hello"]);
    assert_eq!(run(&["kv", "get", "greeting"]).trim(), "hello");
    let json: serde_json::Value =
        serde_json::from_str(&run(&["kv", "get", "greeting", "--json"])).unwrap();
    assert_eq!(json["value"], "hello");
    assert_eq!(json["lattice"], "lww");

    run(&["kv", "put", "fruit", "pear", "apple", "--lattice", "set"]);
    run(&["kv", "put", "fruit", "fig", "--lattice", "set"]);
    let mut fruit: Vec<String> = run(&["kv", "get", "fruit"])
        .lines()
        .map(str::to_owned)
        .collect();
    fruit.sort();
    assert_eq!(fruit, ["apple", "fig", "pear"]);

    run(&[
        "kv",
        "put",
        "letters",
        "c",
        "a",
        "b",
        "--lattice",
        "ordered-set",
    ]);
    assert_eq!(run(&["kv", "get", "letters"]), "a\nb\nc\n");

    run(&["kv", "put", "hits", "10", "--lattice", "max"]);
    run(&["kv", "put", "hits", "4", "--lattice", "max"]);
    assert_eq!(run(&["kv", "get", "hits"]).trim(), "10");

    run(&[
        "kv",
        "put",
        "route",
        "slow",
        "--lattice",
        "priority",
        "--priority",
        "9",
    ]);
    run(&[
        "kv",
        "put",
        "route",
        "fast",
        "--lattice",
        "priority",
        "--priority",
        "1",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&run(&["kv", "get", "route", "--json"])).unwrap();
    assert_eq!(
        (json["value"].as_str(), json["priority"].as_u64()),
        (Some("fast"), Some(1))
    );

    let json: serde_json::Value =
        serde_json::from_str(&run(&["kv", "del", "fruit", "--json"])).unwrap();
    assert_eq!(json["removed"], true);
    let (code, out, _) = cli(&["kv", "get", "fruit", "--addr", &addr]);
    assert_eq!((code, out.trim()), (1, "(not found)"));

    let (code, _, err) = cli(&[
        "kv",
        "put",
        "hits",
        "x",
        "--lattice",
        "set",
        "--addr",
        &addr,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("type_mismatch (8)"), "{err}");

    let json: serde_json::Value = serde_json::from_str(&run(&["kv", "stats", "--json"])).unwrap();
    assert_eq!(json["shards"].as_array().map(Vec::len), Some(2));

    let (code, _, err) = cli(&[
        "kv",
        "get",
        "k",
        "--addr",
        "127.0.0.1:1",
        "--client-timeout-ms",
        "500",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("127.0.0.1:1"),
        "errors name the address: {err}"
    );
}

#[test]
fn connections_over_the_limit_are_refused_with_overloaded() {
    use std::io::Read;
    let dir = temp_dir("overload");
    let node = Node::try_start(1, "never", &dir, &["--connections-max", "2"]).unwrap();
    rt().block_on(async {
        let mut a = connect(node.addr()).await;
        let mut b = connect(node.addr()).await;
        // The third connection is answered with one error frame and closed.
        let mut s = std::net::TcpStream::connect(node.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let h = wire::frame::FrameHeader::parse(&buf).unwrap().unwrap();
        let resp = wire::frame::decode_response_owned(
            &buf[wire::frame::FRAME_HEADER_BYTES..h.frame_len()],
        )
        .unwrap();
        let Response::Error(e) = resp else {
            panic!("expected an error, got {resp:?}")
        };
        assert_eq!(e.code, Status::Overloaded.code());
        assert!(String::from_utf8_lossy(&e.message).contains("limit"));
        // The admitted ones keep working, and a slot frees when one closes.
        a.ping(0).await.unwrap();
        b.ping(0).await.unwrap();
        let stats = a.stats().await.unwrap();
        assert_eq!(stats[0].connections_refused, 1);
        drop(b);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        connect(node.addr()).await.ping(0).await.unwrap();
    });
}
