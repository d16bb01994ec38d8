//! Messages between shards disturbed on purpose (`SQUALL_FAULTS`, the
//! fault-injecting transport): forwarded requests still come out right
//! when delayed and duplicated, a dropped one fails with `timeout` and a
//! clear sentence, and a bad fault spec stops the node at start.

use std::time::{Duration, Instant};

use wire::message::{KvDelete, KvGet, KvPut, Request, Response, Value};
use wire::Status;

use crate::harness::{connect, key_on, lww, rt, temp_dir, Node};

#[test]
fn forwarded_requests_come_out_right_when_delayed_and_duplicated() {
    let dir = temp_dir("faults-dup");
    let faults = [("SQUALL_FAULTS", "seed=5,duplicate=30,delay_ms=3")];
    let node = Node::try_start_env(2, "never", &dir, &[], &faults).unwrap();
    assert!(
        node.stderr().contains("disturbed on purpose"),
        "{}",
        node.stderr()
    );
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        // Keys shard 1 owns, all written and deleted through shard 0.
        let keys: Vec<Vec<u8>> = (0..40)
            .map(|i| key_on(&c, 1, &format!("f{i}-")).into_bytes())
            .collect();
        for k in &keys {
            let put = Request::Put(KvPut {
                key: k.clone(),
                value: lww(&String::from_utf8_lossy(k)),
            });
            assert_eq!(c.call(0, put).await.unwrap(), Response::Stored);
        }
        for k in &keys[..10] {
            let del = Request::Delete(KvDelete { key: k.clone() });
            let Response::Deleted(d) = c.call(0, del).await.unwrap() else {
                panic!("deleted")
            };
            assert!(d.removed, "the first delete's reply is the one returned");
        }
        let get = Request::Get(KvGet { keys: keys.clone() });
        let Response::Values(values) = c.call(0, get).await.unwrap() else {
            panic!("values")
        };
        for (i, (k, v)) in keys.iter().zip(values).enumerate() {
            match v {
                None => assert!(i < 10, "key {i} lost"),
                Some(Value::Lww(v)) => {
                    assert!(i >= 10, "key {i} deleted but back");
                    assert_eq!(&v.bytes, k);
                }
                Some(other) => panic!("{other:?}"),
            }
        }
        let stats = c.stats().await.unwrap();
        assert!(
            stats[1].forwarded_in > stats[0].forwarded_out,
            "duplicates arrived: {stats:?}"
        );
    });
}

#[test]
fn a_dropped_forward_fails_with_timeout_and_direct_requests_still_work() {
    let dir = temp_dir("faults-drop");
    let faults = [("SQUALL_FAULTS", "drop=100,lost_reply_ms=300")];
    let node = Node::try_start_env(2, "never", &dir, &[], &faults).unwrap();
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let k = key_on(&c, 1, "lost-").into_bytes();
        let put = |key: &[u8]| {
            Request::Put(KvPut {
                key: key.to_vec(),
                value: lww("v"),
            })
        };
        let started = Instant::now();
        let err = c.call(0, put(&k)).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Timeout), "{err}");
        assert!(err.to_string().contains("dropped"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The owner itself still takes it.
        assert_eq!(c.call(1, put(&k)).await.unwrap(), Response::Stored);
    });
}

#[test]
fn a_bad_fault_spec_stops_the_node_at_start() {
    let dir = temp_dir("faults-bad");
    let faults = [("SQUALL_FAULTS", "jitter=3")];
    let Err(err) = Node::try_start_env(1, "never", &dir, &[], &faults) else {
        panic!("the node started with a bad fault spec")
    };
    assert!(
        err.contains("SQUALL_FAULTS") && err.contains("jitter"),
        "{err}"
    );
}
