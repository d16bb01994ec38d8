//! The RESP2 listener (`--resp-listen`): Redis's commands on the node's
//! LWW keys through real sockets — keys on every shard and on another
//! node, pipelined replies in order, values the native client wrote and
//! other lattices (`WRONGTYPE`), limits and malformed input, `AUTH` and
//! roles, acknowledged writes surviving `kill -9`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use wire::message::Value;

use crate::cluster::start_at;
use crate::harness::{connect, lww, rt, temp_dir, Node};
use crate::placement::up;

/// A RESP reply, as a test reads it.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

use Reply::{Array, Bulk, Error, Int, Simple};

fn bulk(s: &str) -> Reply {
    Bulk(Some(s.as_bytes().to_vec()))
}

struct Redis {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Redis {
    fn connect(addr: &str) -> Redis {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Redis {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = Vec::new();
        wire::resp::encode_command(&mut out, args);
        self.w.write_all(&out).unwrap();
    }

    fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "reply line {line:?}");
        let (kind, rest) = line.trim_end().split_at(1);
        match kind {
            "+" => Simple(rest.to_owned()),
            "-" => Error(rest.to_owned()),
            ":" => Int(rest.parse().unwrap()),
            "$" if rest == "-1" => Bulk(None),
            "$" => {
                let mut b = vec![0; rest.parse::<usize>().unwrap() + 2];
                self.r.read_exact(&mut b).unwrap();
                assert_eq!(b.split_off(b.len() - 2), b"\r\n");
                Bulk(Some(b))
            }
            "*" => Array((0..rest.parse().unwrap()).map(|_| self.read()).collect()),
            _ => panic!("not a RESP reply: {line:?}"),
        }
    }

    fn call(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read()
    }

    /// Whether the server closed the connection (after any replies).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest).is_ok()
    }
}

fn resp_addr(node: &Node) -> String {
    node.ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("resp="))
        .expect("resp= in the ready line")
        .to_owned()
}

fn start(shards: usize, fsync: &str, dir: &std::path::Path, extra: &[&str]) -> Node {
    let mut args = vec!["--resp-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Node::try_start(shards, fsync, dir, &args).unwrap()
}

#[test]
fn redis_commands_read_and_write_the_stores_lww_keys() {
    let node = start(2, "never", &temp_dir("resp-commands"), &[]);
    let mut r = Redis::connect(&resp_addr(&node));
    assert_eq!(r.call(&["PING"]), Simple("PONG".into()));
    assert_eq!(r.call(&["SET", "greeting", "hello"]), Simple("OK".into()));
    assert_eq!(r.call(&["get", "greeting"]), bulk("hello"));
    assert_eq!(r.call(&["GET", "nobody"]), Bulk(None));
    // Binary values, CR LF included, byte for byte.
    r.send(&[b"SET", b"bin", b"a\r\nb\0c\xff"]);
    assert_eq!(r.read(), Simple("OK".into()));
    assert_eq!(
        r.call(&["GET", "bin"]),
        Bulk(Some(b"a\r\nb\0c\xff".to_vec()))
    );
    // Sixty keys: both shards own some.
    let mut mset = vec!["MSET"];
    let names: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let values: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    for (k, v) in names.iter().zip(&values) {
        mset.extend([k.as_str(), v.as_str()]);
    }
    assert_eq!(r.call(&mset), Simple("OK".into()));
    let mut mget = vec!["MGET"];
    mget.extend(names.iter().map(String::as_str));
    mget.push("nobody");
    let mut expect: Vec<Reply> = values.iter().map(|v| bulk(v)).collect();
    expect.push(Bulk(None));
    assert_eq!(r.call(&mget), Array(expect));
    assert_eq!(r.call(&["EXISTS", "k1", "k59", "nobody", "k1"]), Int(3));
    assert_eq!(r.call(&["DEL", "k1", "k2", "nobody"]), Int(2));
    assert_eq!(r.call(&["EXISTS", "k1", "k2", "k3"]), Int(1));

    // The same keys through the native protocol, both ways; another
    // lattice is WRONGTYPE to GET and SET, nil in MGET, counted by EXISTS.
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        let got = c.get(b"k3").await.unwrap();
        assert!(matches!(got, Some(Value::Lww(l)) if l.bytes == b"v3"));
        c.put(b"native", lww("from the native client"))
            .await
            .unwrap();
        c.put(b"a-set", Value::Set(vec![b"x".to_vec()]))
            .await
            .unwrap();
    });
    assert_eq!(r.call(&["GET", "native"]), bulk("from the native client"));
    let Error(e) = r.call(&["GET", "a-set"]) else {
        panic!()
    };
    assert!(e.starts_with("WRONGTYPE ") && e.contains("set"), "{e}");
    let Error(e) = r.call(&["SET", "a-set", "x"]) else {
        panic!()
    };
    assert!(e.starts_with("WRONGTYPE "), "{e}");
    assert_eq!(
        r.call(&["MGET", "a-set", "native"]),
        Array(vec![Bulk(None), bulk("from the native client")])
    );
    assert_eq!(r.call(&["EXISTS", "a-set"]), Int(1));

    // Pipelined: 400 commands over both shards in one write, replies in
    // their order.
    let mut batch = Vec::new();
    for i in 0..200 {
        let (k, v) = (format!("p{i}"), format!("value-{i}"));
        wire::resp::encode_command(&mut batch, &[b"SET", k.as_bytes(), v.as_bytes()]);
        wire::resp::encode_command(&mut batch, &[b"GET", format!("p{}", i / 2).as_bytes()]);
    }
    r.w.write_all(&batch).unwrap();
    for i in 0..200 {
        assert_eq!(r.read(), Simple("OK".into()));
        assert_eq!(r.read(), bulk(&format!("value-{}", i / 2)), "reply {i}");
    }

    // Refusals keep the connection open; each names its limit or rule.
    let big = "x".repeat(1 << 20 | 1);
    let Error(e) = r.call(&["SET", "big", &big]) else {
        panic!()
    };
    assert!(e.starts_with("VALUE_TOO_LARGE "), "{e}");
    let Error(e) = r.call(&["SET", "", "v"]) else {
        panic!()
    };
    assert!(e.starts_with("INVALID_ARGUMENT "), "{e}");
    let Error(e) = r.call(&["GET", &"k".repeat(1025)]) else {
        panic!()
    };
    assert!(e.starts_with("KEY_TOO_LARGE "), "{e}");
    let Error(e) = r.call(&["FLUSHALL"]) else {
        panic!()
    };
    assert!(e.starts_with("ERR unknown command 'FLUSHALL'"), "{e}");
    let Error(e) = r.call(&["GET"]) else { panic!() };
    assert_eq!(e, "ERR wrong number of arguments for 'get' command");
    let Error(e) = r.call(&["AUTH", "secret"]) else {
        panic!()
    };
    assert!(e.contains("without"), "{e}");
    assert_eq!(
        r.call(&["CONFIG", "GET", "appendonly"]),
        Array(vec![bulk("appendonly"), bulk("yes")])
    );
    assert_eq!(r.call(&["GET", "greeting"]), bulk("hello"));
    // Inline commands, as `telnet` sends them.
    r.w.write_all(b"GET greeting\r\n").unwrap();
    assert_eq!(r.read(), bulk("hello"));
    // QUIT answers, then closes.
    assert_eq!(r.call(&["QUIT"]), Simple("OK".into()));
    assert!(r.closed());

    // A malformed stream is answered and closed; a bystander is served.
    let mut bad = Redis::connect(&resp_addr(&node));
    bad.w.write_all(b"*1\r\n$-5\r\n").unwrap();
    let Error(e) = bad.read() else { panic!() };
    assert!(e.starts_with("ERR Protocol error"), "{e}");
    assert!(bad.closed());
    let mut other = Redis::connect(&resp_addr(&node));
    assert_eq!(other.call(&["GET", "greeting"]), bulk("hello"));
}

#[test]
fn acknowledged_sets_survive_kill_9() {
    let dir = temp_dir("resp-durable");
    let mut node = start(2, "always", &dir, &[]);
    let mut r = Redis::connect(&resp_addr(&node));
    let mut batch = Vec::new();
    for i in 0..300 {
        let (k, v) = (format!("d{i}"), format!("durable-{i}"));
        wire::resp::encode_command(&mut batch, &[b"SET", k.as_bytes(), v.as_bytes()]);
    }
    r.w.write_all(&batch).unwrap();
    for _ in 0..300 {
        assert_eq!(r.read(), Simple("OK".into()));
    }
    node.kill();
    let node = start(2, "always", &dir, &[]);
    let mut r = Redis::connect(&resp_addr(&node));
    for i in (0..300).step_by(7) {
        assert_eq!(
            r.call(&["GET", &format!("d{i}")]),
            bulk(&format!("durable-{i}"))
        );
    }
}

#[test]
fn auth_grants_the_tokens_role_and_nothing_runs_before_it() {
    const READ: &str = "resp-read-secret-0123456789";
    const WRITE: &str = "resp-write-secret-0123456789";
    let dir = temp_dir("resp-auth");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("read {READ}\nwrite {WRITE}\n")).unwrap();
    let node = start(
        1,
        "never",
        &dir.join("data"),
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--hello-timeout-ms",
            "1000",
        ],
    );
    let addr = resp_addr(&node);
    let mut r = Redis::connect(&addr);
    assert_eq!(
        r.call(&["GET", "k"]),
        Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        r.call(&["PING"]),
        Error("NOAUTH Authentication required.".into())
    );
    let Error(e) = r.call(&["AUTH", "not-a-secret-of-this-node"]) else {
        panic!()
    };
    assert!(e.starts_with("WRONGPASS "), "{e}");
    assert_eq!(r.call(&["AUTH", READ]), Simple("OK".into()));
    assert_eq!(r.call(&["GET", "k"]), Bulk(None));
    let Error(e) = r.call(&["SET", "k", "v"]) else {
        panic!()
    };
    assert!(e.starts_with("NOPERM ") && e.contains("write"), "{e}");
    // Redis 6's form, with a user name.
    assert_eq!(r.call(&["AUTH", "default", WRITE]), Simple("OK".into()));
    assert_eq!(r.call(&["SET", "k", "v"]), Simple("OK".into()));
    assert_eq!(r.call(&["GET", "k"]), bulk("v"));
    // Code keys need admin, as natively.
    let Error(e) = r.call(&["SET", "squall:fn:evil", "x"]) else {
        panic!()
    };
    assert!(e.starts_with("NOPERM ") && e.contains("admin"), "{e}");
    // A connection that never authenticates is closed.
    let mut silent = Redis::connect(&addr);
    let t = std::time::Instant::now();
    assert!(silent.closed());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn limits_apply_to_resp_connections() {
    let node = start(
        1,
        "never",
        &temp_dir("resp-limits"),
        &[
            "--connections-max",
            "2",
            "--partial-frame-timeout-ms",
            "300",
        ],
    );
    let addr = resp_addr(&node);
    // A command started and never finished: closed at its deadline.
    let mut slow = Redis::connect(&addr);
    slow.w.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nke").unwrap();
    let t = std::time::Instant::now();
    assert!(slow.closed());
    assert!(t.elapsed() >= Duration::from_millis(250));
    // Past the connection limit (shared with native connections).
    let _native = TcpStream::connect(node.addr()).unwrap();
    let mut first = Redis::connect(&addr);
    assert_eq!(first.call(&["PING"]), Simple("PONG".into()));
    let mut refused = Redis::connect(&addr);
    let Error(e) = refused.read() else { panic!() };
    assert!(e.starts_with("OVERLOADED ") && e.contains("limit"), "{e}");
}

#[test]
fn keys_another_node_owns_are_read_and_written_there() {
    let a = start_at(
        "127.0.0.186",
        &temp_dir("resp-a"),
        &["--resp-listen", "127.0.0.186:0"],
    );
    let b = start_at(
        "127.0.0.187",
        &temp_dir("resp-b"),
        &["--resp-listen", "127.0.0.187:0", "--join", a.addr()],
    );
    let addrs = [a.addr(), b.addr()];
    crate::cluster::wait_for("the nodes agree", || {
        crate::cluster::agreed(&addrs, &up(&[&a, &b]), None).is_some()
    });
    let mut ra = Redis::connect(&resp_addr(&a));
    let mut rb = Redis::connect(&resp_addr(&b));
    let mut batch = Vec::new();
    for i in 0..100 {
        let (k, v) = (format!("c{i}"), format!("cv{i}"));
        wire::resp::encode_command(&mut batch, &[b"SET", k.as_bytes(), v.as_bytes()]);
    }
    ra.w.write_all(&batch).unwrap();
    for _ in 0..100 {
        assert_eq!(ra.read(), Simple("OK".into()));
    }
    // Each node holds a share, and each reads them all, in order.
    let held = |addr: &str| {
        rt().block_on(async {
            let mut c = connect(addr).await;
            c.stats()
                .await
                .unwrap()
                .iter()
                .map(|s| s.live_keys)
                .sum::<u64>()
        })
    };
    let (ha, hb) = (held(a.addr()), held(b.addr()));
    assert!(ha > 0 && hb > 0 && ha + hb == 100, "held {ha} + {hb}");
    let mut mget = vec!["MGET".to_owned()];
    mget.extend((0..100).map(|i| format!("c{i}")));
    let mget: Vec<&str> = mget.iter().map(String::as_str).collect();
    let expect = Array((0..100).map(|i| bulk(&format!("cv{i}"))).collect());
    assert_eq!(rb.call(&mget), expect);
    assert_eq!(ra.call(&mget), expect);
    assert_eq!(rb.call(&["DEL", "c1", "c2", "c3", "c4"]), Int(4));
    assert_eq!(ra.call(&["EXISTS", "c1", "c2", "c3", "c4", "c5"]), Int(1));
}
