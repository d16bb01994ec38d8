//! Defects found by trying Squall as an integrator and an operator would
//! (issue 10): each test failed before its fix.

use std::time::Duration;

use kvs_core::lattice::{Lww, Timestamp};
use kvs_core::partition::Mutation;
use kvs_core::wal::{encode_record, SEGMENT_MAGIC};
use kvs_core::{Lsn, Value as CoreValue};
use wire::message::{LwwValue, Value};
use wire::Status;

use std::io::Write;

use wire::frame::encode_frame;
use wire::message::{Arg, DagDef, FnCall, Request, Response};

use crate::bad_input::{closed, error_code, hello, raw, read_response};
use crate::harness::{connect, rt, temp_dir, Node};

fn lww_at(timestamp: u64, v: &str) -> Value {
    Value::Lww(LwwValue {
        timestamp,
        writer: 1,
        bytes: v.as_bytes().to_vec(),
    })
}

fn bytes_of(v: Option<Value>) -> Option<Vec<u8>> {
    match v {
        Some(Value::Lww(l)) => Some(l.bytes),
        None => None,
        other => panic!("unexpected {other:?}"),
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A put stamped `u64::MAX` is refused with `clock_skew` and leaves the
/// shard's clock alone: later node-stamped writes still win, a write after
/// a delete is readable, before and after a restart.
#[test]
fn a_client_timestamp_far_ahead_is_refused_and_cannot_poison_the_clock() {
    let dir = temp_dir("clock");
    let mut node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let err = c.put(b"k", lww_at(u64::MAX, "zzzz")).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::ClockSkew), "{err}");
        assert!(err.to_string().contains("ahead"), "{err}");
        // Within the bound a client's clock is accepted (a second ahead).
        c.put(b"near", lww_at(now_us() + 1_000_000, "near"))
            .await
            .unwrap();
        // Node-stamped writes order as written.
        c.put(b"k", crate::harness::lww("b-larger")).await.unwrap();
        c.put(b"k", crate::harness::lww("a-later")).await.unwrap();
        assert_eq!(bytes_of(c.get(b"k").await.unwrap()).unwrap(), b"a-later");
        assert!(c.delete(b"k").await.unwrap());
        c.put(b"k", crate::harness::lww("revived")).await.unwrap();
        assert_eq!(bytes_of(c.get(b"k").await.unwrap()).unwrap(), b"revived");
    });
    node.signal_and_wait("TERM");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        c.put(b"k", crate::harness::lww("after-restart"))
            .await
            .unwrap();
        assert_eq!(
            bytes_of(c.get(b"k").await.unwrap()).unwrap(),
            b"after-restart"
        );
    });
}

/// A data directory whose log holds timestamps from the far future (written
/// before the bound existed) is healed at start: those entries move back to
/// now, and later writes win again — also after another restart.
#[test]
fn a_clock_poisoned_on_disk_is_recovered() {
    let dir = temp_dir("poisoned");
    let shard_dir = dir.join("shard-0");
    std::fs::create_dir_all(&shard_dir).unwrap();
    let mut log = SEGMENT_MAGIC.to_vec();
    let put = |key: &str, v: &str| Mutation::Put {
        key: key.as_bytes().to_vec(),
        value: CoreValue::Lww(Lww::new(
            Timestamp {
                clock: u64::MAX,
                writer: 1,
            },
            v.as_bytes().to_vec(),
        )),
    };
    encode_record(Lsn(1), &put("k", "poisoned"), &mut log);
    encode_record(Lsn(2), &put("gone", "x"), &mut log);
    let del = Mutation::Delete {
        key: b"gone".to_vec(),
        ts: Timestamp {
            clock: u64::MAX,
            writer: 1 << 63,
        },
    };
    encode_record(Lsn(3), &del, &mut log);
    std::fs::write(shard_dir.join("wal-0000000001.log"), log).unwrap();

    let mut node = Node::start(1, "never", &dir);
    assert!(node.stderr().contains("re-stamped"), "{}", node.stderr());
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        assert_eq!(bytes_of(c.get(b"k").await.unwrap()).unwrap(), b"poisoned");
        c.put(b"k", crate::harness::lww("new")).await.unwrap();
        c.put(b"gone", crate::harness::lww("back")).await.unwrap();
        assert_eq!(bytes_of(c.get(b"k").await.unwrap()).unwrap(), b"new");
        assert_eq!(bytes_of(c.get(b"gone").await.unwrap()).unwrap(), b"back");
    });
    node.signal_and_wait("TERM");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        assert_eq!(bytes_of(c.get(b"k").await.unwrap()).unwrap(), b"new");
        assert_eq!(bytes_of(c.get(b"gone").await.unwrap()).unwrap(), b"back");
    });
}

/// `Limits.value_bytes_max` is exactly the largest LWW value a client may
/// send: that many bytes are stored, one more is refused.
#[test]
fn the_reported_value_limit_is_exact() {
    let dir = temp_dir("value-limit");
    let node = Node::start(1, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let max = c.topology().limits.value_bytes_max as usize;
        assert_eq!(max, 1 << 20);
        let value = |n: usize| {
            Value::Lww(LwwValue {
                timestamp: 0,
                writer: 0,
                bytes: vec![7; n],
            })
        };
        c.put(b"big", value(max)).await.unwrap();
        assert_eq!(bytes_of(c.get(b"big").await.unwrap()).unwrap().len(), max);
        let err = c.put(b"big", value(max + 1)).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::ValueTooLarge), "{err}");
        // A set's limit counts its elements' bytes.
        let set = Value::Set(vec![vec![1; max / 2], vec![2; max / 2]]);
        c.put(b"set", set).await.unwrap();
        let set = Value::Set(vec![vec![1; max / 2], vec![2; max / 2 + 1]]);
        let err = c.put(b"set2", set).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::ValueTooLarge), "{err}");
    });
}

fn call(function: &str, arg: &str, timeout_ms: u32) -> Request {
    Request::Call(FnCall {
        function: function.as_bytes().to_vec(),
        args: vec![Arg::Value(arg.as_bytes().to_vec())],
        timeout_ms,
    })
}

/// A `Ping` pipelined behind a slow call on the same connection is answered
/// at once, in the same batch or a later one; the call answers when done.
/// (Before, every reply waited for the slowest request of its batch, and
/// the connection read nothing more meanwhile.)
#[test]
fn a_slow_call_does_not_hold_up_the_requests_behind_it() {
    let dir = temp_dir("hol");
    let node = Node::start(1, "never", &dir);
    let mut s = raw(node.addr());
    hello(&mut s);
    let mut buf = Vec::new();
    encode_frame(2, &call("sleep_ms", "4000", 0), &mut buf).unwrap();
    encode_frame(3, &Request::Ping, &mut buf).unwrap();
    encode_frame(4, &call("increment", "41", 0), &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    // Far less than the call's 4 s: a reply held behind it misses this.
    s.set_read_timeout(Some(Duration::from_millis(2000)))
        .unwrap();
    assert!(matches!(read_response(&mut s), Some((3, Response::Pong))));
    match read_response(&mut s) {
        Some((4, Response::Output(o))) => assert_eq!(o, b"42"),
        other => panic!("unexpected {other:?}"),
    }
    // A request sent after the slow one was read: answered at once too.
    buf.clear();
    encode_frame(5, &Request::Ping, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    assert!(matches!(read_response(&mut s), Some((5, Response::Pong))));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(
        read_response(&mut s),
        Some((2, Response::Output(_)))
    ));
}

/// After a call times out, its native function keeps running (it cannot be
/// stopped), but new work is routed to another executor: before, the next
/// call on that shard waited behind it.
#[test]
fn an_executor_still_running_a_timed_out_call_gets_no_new_work() {
    let dir = temp_dir("stuck");
    // Two shards with one executor each; every call goes to shard 0.
    let node = Node::start(2, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let err = c.call(0, call("sleep_ms", "3000", 200)).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::Timeout), "{err}");
        for _ in 0..3 {
            // Would time out behind the sleep on shard 0's executor.
            match c.call(0, call("whoami", "", 1000)).await.unwrap() {
                Response::Output(id) => assert_eq!(id, b"1", "ran on the busy executor"),
                other => panic!("whoami failed: {other:?}"),
            }
        }
    });
}

/// Replicas run on different executors: asking for more than the node has
/// is refused at registration, saying why.
#[test]
fn more_replicas_than_executors_are_refused() {
    let dir = temp_dir("replicas");
    let node = Node::start(2, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let mut def = DagDef::new("wide", &["increment"], &[]);
        def.functions[0].replicas = 8;
        let err = c.register_dag(def).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::InvalidDag), "{err}");
        assert!(err.to_string().contains("this node has 2"), "{err}");
        let mut def = DagDef::new("fits", &["increment"], &[]);
        def.functions[0].replicas = 2;
        c.register_dag(def).await.unwrap();
    });
}

/// Connections that never send `Hello` are closed after the handshake
/// deadline, so they cannot lock other clients out.
#[test]
fn silent_connections_are_closed_and_free_their_slots() {
    let dir = temp_dir("silent");
    let node = Node::try_start(
        1,
        "never",
        &dir,
        &["--connections-max", "4", "--hello-timeout-ms", "500"],
    )
    .unwrap();
    let mut silent: Vec<_> = (0..4).map(|_| raw(node.addr())).collect();
    // Full: a new client is refused with `overloaded` (request id 0).
    let mut refused = raw(node.addr());
    let (id, resp) = read_response(&mut refused).expect("an overloaded reply");
    assert_eq!(
        (id, error_code(&resp)),
        (0, Some(Status::Overloaded.code()))
    );
    for s in &mut silent {
        assert!(closed(s), "a silent connection stayed open");
    }
    let mut fresh = raw(node.addr());
    hello(&mut fresh);
}

/// When a shard nears its connection limit, connections idle for longer
/// than `--idle-reclaim-ms` make room for new ones; busy ones stay.
#[test]
fn idle_connections_are_reclaimed_near_the_limit() {
    let dir = temp_dir("reclaim");
    let node = Node::try_start(
        1,
        "never",
        &dir,
        &["--connections-max", "4", "--idle-reclaim-ms", "300"],
    )
    .unwrap();
    let mut idle: Vec<_> = (0..4)
        .map(|_| {
            let mut s = raw(node.addr());
            hello(&mut s);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    // The arrival that finds the shard full starts a reclaim pass.
    let mut served = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let mut s = raw(node.addr());
        let mut buf = Vec::new();
        let req = Request::Hello(wire::message::Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            client_name: b"late".to_vec(),
        });
        encode_frame(1, &req, &mut buf).unwrap();
        s.write_all(&buf).unwrap();
        if let Some((1, Response::Hello(_))) = read_response(&mut s) {
            served = true;
            break;
        }
    }
    assert!(served, "no room was made for a new client");
    assert!(
        idle.iter_mut().any(closed),
        "no idle connection was reclaimed"
    );
}

/// Before `Hello` a frame may be only a few KiB: a stranger announcing a
/// 4 MiB frame is refused at its header, not buffered.
#[test]
fn frames_before_hello_are_small() {
    let dir = temp_dir("prehello");
    let node = Node::start(1, "never", &dir);
    let mut s = raw(node.addr());
    let mut header = ((4u32 << 20) - 1).to_le_bytes().to_vec();
    header.extend_from_slice(&9u64.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes()); // epoch
    s.write_all(&header).unwrap();
    s.write_all(&[0u8; 1000]).unwrap();
    let (id, resp) = read_response(&mut s).expect("a frame_too_large reply");
    assert_eq!(id, 9);
    assert_eq!(error_code(&resp), Some(Status::FrameTooLarge.code()));
    assert!(closed(&mut s));
}

/// Large frames arriving slowly share a node-wide budget: past it, a
/// connection gets `overloaded` and is closed; memory comes back.
#[test]
fn partial_large_frames_share_a_bounded_budget() {
    let dir = temp_dir("budget");
    let node = Node::try_start(1, "never", &dir, &["--read-buffers-mb", "8"]).unwrap();
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let mut s = raw(node.addr());
        hello(&mut s);
        // A 3 MiB put announced, 2.5 MiB of it sent, then silence.
        let mut header = (3u32 << 20).to_le_bytes().to_vec();
        header.extend_from_slice(&5u64.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes()); // epoch
        s.write_all(&header).unwrap();
        let _ = s.write_all(&vec![0u8; 5 << 19]);
        conns.push(s);
    }
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Some((5, resp)) = read_response(s) {
            assert_eq!(error_code(&resp), Some(Status::Overloaded.code()));
            refused += 1;
        }
    }
    // 8 MiB hold at most three connections' grown buffers (up to 4 MiB
    // each as they double): at least three of six are refused.
    assert!(refused >= 3, "only {refused} of 6 refused");
    let mut c = raw(node.addr());
    hello(&mut c);
}

/// A small tmpfs mounted for one test; unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root).
    fn mount(path: &std::path::Path, size_mb: u64) -> Option<SmallDisk> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            path: path.to_owned(),
        })
    }

    fn resize(&self, size_mb: u64) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// A full disk: the write that failed is never readable (memory is rebuilt
/// from the log), no partial snapshot is left behind, reads go on, and once
/// there is room again the shard resumes writes by itself; a restart finds
/// every acknowledged write and nothing else.
#[test]
fn a_full_disk_loses_nothing_acknowledged_and_recovers_by_itself() {
    let dir = temp_dir("diskfull");
    // The tests run as root (CI too); a tmpfs is the only full disk
    // within reach, so without one this test fails rather than pass blind.
    let disk = SmallDisk::mount(&dir, 3).expect("mounting a 3 MB tmpfs (the tests need root)");
    let args = ["--snapshot-wal-mb", "1"];
    let mut node = Node::try_start(1, "always", &dir, &args).unwrap();
    let value = |i: usize| {
        Value::Lww(LwwValue {
            timestamp: 0,
            writer: 0,
            bytes: vec![i as u8; 200 << 10],
        })
    };
    let (acked, failed) = rt().block_on(async {
        let mut acked = Vec::new();
        for i in 0..100 {
            let key = format!("k{i}");
            let mut c = connect(node.addr()).await;
            match c.put(key.as_bytes(), value(i)).await {
                Ok(()) => acked.push(key),
                Err(e) => {
                    eprintln!("put {key} failed: {e}");
                    return (acked, key);
                }
            }
        }
        panic!("a 3 MB disk took 20 MB of puts");
    });
    assert!(
        acked.len() >= 3,
        "only {} puts before the disk filled",
        acked.len()
    );
    let shard_dir = dir.join("shard-0");
    let leftovers: Vec<_> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        assert_eq!(
            c.get(failed.as_bytes()).await.unwrap(),
            None,
            "the write that failed is readable"
        );
        for k in &acked {
            assert!(c.get(k.as_bytes()).await.unwrap().is_some(), "{k} lost");
        }
        let err = c.put(b"while-full", value(1)).await.unwrap_err();
        assert_eq!(err.status(), Some(Status::StorageFailure), "{err}");
    });
    disk.resize(64);
    rt().block_on(async {
        let mut resumed = false;
        for _ in 0..100 {
            let mut c = connect(node.addr()).await;
            if c.put(b"after", value(7)).await.is_ok() {
                resumed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            resumed,
            "writes did not resume within 10 s of freeing space"
        );
    });
    assert!(node.signal_and_wait("TERM").success(), "{}", node.stderr());
    assert!(!node.stderr().contains("final WAL flush failed"));
    let node = Node::try_start(1, "always", &dir, &args).unwrap();
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        for k in acked.iter().chain([&"after".to_owned()]) {
            assert!(c.get(k.as_bytes()).await.unwrap().is_some(), "{k} lost");
        }
        assert_eq!(c.get(failed.as_bytes()).await.unwrap(), None);
    });
    drop(node);
}

pub(crate) fn rss_mb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// Memory held for slow large frames returns to the OS when their
/// connections close, also after an earlier large frame came and went
/// (which made the allocator keep later buffers in its heap).
#[test]
fn memory_of_partial_frames_is_returned_when_connections_close() {
    let dir = temp_dir("rss");
    let node = Node::start(1, "never", &dir);
    let frame_header = |len: u32, id: u64| {
        let mut h = len.to_le_bytes().to_vec();
        h.extend_from_slice(&id.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // epoch
        h
    };
    // One complete large (invalid) frame: its buffer grows, then is freed.
    let mut first = raw(node.addr());
    hello(&mut first);
    first.write_all(&frame_header(3 << 20, 2)).unwrap();
    first.write_all(&vec![0xffu8; 3 << 20]).unwrap();
    let (id, _) = read_response(&mut first).expect("a bad_frame reply");
    assert_eq!(id, 2);
    let before = rss_mb(node.pid());
    let mut slow = Vec::new();
    for _ in 0..24 {
        let mut s = raw(node.addr());
        hello(&mut s);
        s.write_all(&frame_header(3 << 20, 3)).unwrap();
        s.write_all(&vec![0u8; (3 << 20) - 1]).unwrap();
        slow.push(s);
    }
    // Let the node read it all.
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_mb(node.pid());
    assert!(
        held >= before + 48,
        "{before} MB -> {held} MB: frames not buffered?"
    );
    drop(slow);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_mb(node.pid());
    assert!(
        after <= before + 16,
        "{before} MB before, {held} MB with 24 slow frames, {after} MB after they closed"
    );
}

/// Statements of `docs/wire-protocol.md` that are behaviour: the ring's
/// tokens come sorted, `echo` concatenates, `incr_key` counts a missing key
/// as 0, and a `BadFrame` sentence says what was wrong, with the frame's id.
#[test]
fn documented_contracts_hold() {
    let dir = temp_dir("contracts");
    let node = Node::start(2, "never", &dir);
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let tokens = &c.topology().ring.tokens;
        assert!(tokens.windows(2).all(|w| w[0].position <= w[1].position));
        let out = c
            .call_function("echo", vec![b"ab".to_vec(), b"cd".to_vec()], 0)
            .await
            .unwrap();
        assert_eq!(out, b"abcd");
        let out = c
            .call_function("incr_key", vec![b"never-written".to_vec()], 0)
            .await
            .unwrap();
        assert_eq!(out, b"1");
    });
    let mut s = raw(node.addr());
    hello(&mut s);
    let mut frame = 16u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&77u64.to_le_bytes());
    frame.extend_from_slice(&0u64.to_le_bytes()); // epoch
    frame.extend_from_slice(&[0xee; 16]);
    s.write_all(&frame).unwrap();
    match read_response(&mut s) {
        Some((77, Response::Error(e))) => {
            assert_eq!(e.code, Status::BadFrame.code());
            let msg = String::from_utf8_lossy(&e.message);
            assert!(!msg.contains("debug assertions"), "{msg}");
            assert!(msg.len() > 20, "{msg}");
        }
        other => panic!("expected bad_frame, got {other:?}"),
    }
}

/// A frame's deadline counts from its first byte: trickling one byte at a
/// time does not keep a started frame (and its buffer) alive.
#[test]
fn a_trickled_frame_is_cut_off_at_its_deadline() {
    let dir = temp_dir("trickle");
    let node = Node::try_start(1, "never", &dir, &["--partial-frame-timeout-ms", "600"]).unwrap();
    let mut s = raw(node.addr());
    hello(&mut s);
    let mut frame = 1000u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&3u64.to_le_bytes());
    frame.extend_from_slice(&0u64.to_le_bytes()); // epoch
    frame.extend_from_slice(&[0u8; 1000]);
    let started = std::time::Instant::now();
    let mut cut = false;
    for b in frame.chunks(1) {
        if s.write_all(b).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(
        cut || closed(&mut s),
        "a trickled frame kept its connection for 5 s"
    );
}
