//! Durability: SIGKILL mid-stream loses no acknowledged put; a torn WAL
//! tail is cut and reported; corruption in the middle refuses to start.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use client::Op;
use wire::message::{KvPut, LwwValue, Request, Response, Value};

use crate::harness::{connect, rt, segments, temp_dir, Node};

fn lww(s: String) -> Value {
    Value::Lww(LwwValue {
        timestamp: 0,
        writer: 0,
        bytes: s.into_bytes(),
    })
}

/// Streams pipelined puts (`key-i` = `value-i`) until the node dies or
/// `limit` passes; returns the indices whose put was acknowledged.
pub async fn stream_puts(addr: &str, limit: Duration, on_progress: impl Fn(usize)) -> Vec<usize> {
    let mut c = connect(addr).await;
    let mut acked = Vec::new();
    let mut i = 0usize;
    let start = Instant::now();
    while start.elapsed() < limit {
        let batch: Vec<usize> = (i..i + 8).collect();
        i += 8;
        let ops = batch
            .iter()
            .map(|&j| {
                let key = format!("key-{j}").into_bytes();
                Op {
                    dest: c.dest_for(&key),
                    request: Request::Put(KvPut {
                        key,
                        value: lww(format!("value-{j}")),
                    }),
                }
            })
            .collect();
        match c.execute(ops).await {
            Ok(replies) => {
                for (j, r) in batch.into_iter().zip(replies) {
                    if matches!(r, Ok(Response::Stored)) {
                        acked.push(j);
                    }
                }
                on_progress(acked.len());
            }
            Err(_) => break, // the node died: what was acknowledged stands
        }
    }
    acked
}

pub async fn assert_all_present(addr: &str, acked: &[usize]) {
    let mut c = connect(addr).await;
    for chunk in acked.chunks(200) {
        let keys: Vec<Vec<u8>> = chunk
            .iter()
            .map(|j| format!("key-{j}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let values = c.get_many(&refs).await.expect("get_many");
        for (j, v) in chunk.iter().zip(values) {
            let Some(Value::Lww(v)) = v else {
                panic!("acknowledged put of key-{j} was lost")
            };
            assert_eq!(v.bytes, format!("value-{j}").into_bytes());
        }
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_put() {
    let dir = temp_dir("sigkill");
    let mut node = Node::start(2, "always", &dir);
    let addr = node.addr().to_owned();
    let pid = node.pid();
    let acked = rt().block_on(async {
        let killed = Rc::new(RefCell::new(false));
        let k = killed.clone();
        stream_puts(&addr, Duration::from_secs(30), move |n| {
            if n >= 400 && !*k.borrow() {
                // Kill while puts are in flight (the client keeps streaming).
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                *k.borrow_mut() = true;
            }
        })
        .await
    });
    node.kill();
    assert!(acked.len() >= 400, "only {} puts acknowledged", acked.len());
    let node = Node::start(2, "always", &dir);
    rt().block_on(assert_all_present(node.addr(), &acked));
}

/// Writes `key-0..10` on a fresh 1-shard node, stops it cleanly, and
/// returns its last WAL segment.
fn ten_puts_then_sigterm(dir: &std::path::Path) -> std::path::PathBuf {
    let mut node = Node::start(1, "always", dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        for j in 0..10 {
            c.put(format!("key-{j}").as_bytes(), lww(format!("value-{j}")))
                .await
                .unwrap();
        }
    });
    assert!(node.signal_and_wait("TERM").success());
    segments(dir, 0).pop().expect("a segment")
}

#[test]
fn a_torn_wal_tail_is_cut_and_reported_and_whole_records_kept() {
    let dir = temp_dir("torn");
    let seg = ten_puts_then_sigterm(&dir);
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap(); // tear the last record
    drop(f);

    let node = Node::start(1, "always", &dir);
    let log = node.stderr();
    assert!(
        log.contains("cut torn WAL tail"),
        "the cut is reported:\n{log}"
    );
    rt().block_on(async {
        assert_all_present(node.addr(), &(0..9).collect::<Vec<_>>()).await;
        let mut c = connect(node.addr()).await;
        assert_eq!(
            c.get(b"key-9").await.unwrap(),
            None,
            "the torn record is gone"
        );
        // Appends continue after the cut, and survive another restart.
        c.put(b"after", lww("cut".into())).await.unwrap();
    });
    drop(node);
    let node = Node::start(1, "always", &dir);
    rt().block_on(assert_all_present(node.addr(), &(0..9).collect::<Vec<_>>()));
    rt().block_on(async {
        assert!(connect(node.addr())
            .await
            .get(b"after")
            .await
            .unwrap()
            .is_some());
    });
}

#[test]
fn corruption_in_the_middle_of_the_wal_refuses_to_start() {
    let dir = temp_dir("corrupt");
    let seg = ten_puts_then_sigterm(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[30] ^= 0xff; // inside the first record's payload
    std::fs::write(&seg, bytes).unwrap();
    let err = Node::try_start(1, "always", &dir, &[])
        .err()
        .expect("start must fail");
    assert!(err.contains("corrupt record"), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}

#[test]
fn snapshots_bound_the_wal_and_restart_from_them() {
    let dir = temp_dir("snapshot");
    let node = Node::try_start(1, "batch", &dir, &["--snapshot-wal-mb", "1"]).unwrap();
    let value = "v".repeat(1000);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        for j in 0..3000 {
            c.put(
                format!("key-{}", j % 500).as_bytes(),
                lww(format!("{value}{j}")),
            )
            .await
            .unwrap();
        }
        let stats = c.stats().await.unwrap();
        assert!(stats[0].snapshots >= 1, "{stats:?}");
    });
    drop(node);
    let segs = segments(&dir, 0);
    assert!(
        segs.len() <= 2,
        "old segments are deleted after a snapshot: {segs:?}"
    );
    let node = Node::start(1, "batch", &dir);
    assert!(
        node.stderr().contains("snapshot snap-"),
        "{}",
        node.stderr()
    );
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        for j in 2500..3000 {
            let Some(Value::Lww(v)) = c.get(format!("key-{}", j % 500).as_bytes()).await.unwrap()
            else {
                panic!("key lost")
            };
            assert_eq!(v.bytes, format!("{value}{j}").into_bytes());
        }
    });
}

#[test]
fn puts_acknowledged_while_snapshots_are_taken_survive_sigkill() {
    // A snapshot every MiB of WAL: several are taken (a part at a time,
    // beside the puts) before the kill, and one may be under way at it.
    let dir = temp_dir("snapshot-sigkill");
    let mut node = Node::try_start(1, "batch", &dir, &["--snapshot-wal-mb", "1"]).unwrap();
    let addr = node.addr().to_owned();
    let pid = node.pid();
    let acked = rt().block_on(async {
        let killed = Rc::new(RefCell::new(false));
        let k = killed.clone();
        stream_puts(&addr, Duration::from_secs(60), move |n| {
            if n >= 80_000 && !*k.borrow() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                *k.borrow_mut() = true;
            }
        })
        .await
    });
    let before = node.stderr();
    node.kill();
    assert!(
        acked.len() >= 80_000,
        "only {} puts acknowledged",
        acked.len()
    );
    assert!(
        before.contains("snapshot snap-"),
        "no snapshot was taken:\n{before}"
    );
    let node = Node::start(1, "batch", &dir);
    assert!(
        node.stderr().contains("snapshot snap-"),
        "{}",
        node.stderr()
    );
    rt().block_on(assert_all_present(node.addr(), &acked));
}
