//! A history checker over a cluster under faults: every client operation
//! is recorded with its outcome (acknowledged or not); at the end, with
//! the faults switched off, every acknowledged write must be readable
//! through every surviving node, and every surviving holder of a key must
//! hold the same value (the replicas converged). Faults are seeded and
//! switched at run time (`SQUALL_LINK_FAULTS_FILE`): requests between
//! nodes dropped (before or after the peer applied them), duplicated and
//! delayed, membership packets dropped; one node is killed midway and
//! never comes back.

use std::collections::BTreeSet;
use std::path::PathBuf;

use wire::message::{Value, WRITE_CONCERN_QUORUM};

use crate::cluster::{agreed, wait_for};
use crate::harness::{connect, connect_pinned, lww, rt, temp_dir, Node};

/// What the clients did, and what the cluster answered.
#[derive(Default)]
struct History {
    /// LWW keys written once each: (key, value) acknowledged.
    acked: Vec<(String, String)>,
    /// Writes answered with an error (their outcome is unknown).
    failed: usize,
    /// Elements acknowledged into the set under `SET_KEY`.
    set_acked: BTreeSet<String>,
}

const SET_KEY: &str = "history-set";

impl History {
    /// Checks the final state through `addr`'s node: every acknowledged
    /// write is there. Returns what is missing (empty: the history holds).
    fn missing_via(&self, addr: &str) -> Vec<String> {
        rt().block_on(async {
            let mut c = connect_pinned(addr).await;
            let mut missing = Vec::new();
            for (k, v) in &self.acked {
                match c.get(k.as_bytes()).await {
                    Ok(Some(Value::Lww(l))) if l.bytes == v.as_bytes() => {}
                    other => missing.push(format!("{k}={v} read as {other:?}")),
                }
            }
            let members: BTreeSet<String> = match c.get(SET_KEY.as_bytes()).await {
                Ok(Some(Value::Set(members))) => members
                    .into_iter()
                    .map(|m| String::from_utf8(m).unwrap())
                    .collect(),
                other => {
                    missing.push(format!("{SET_KEY} read as {other:?}"));
                    BTreeSet::new()
                }
            };
            for e in self.set_acked.difference(&members) {
                missing.push(format!("{SET_KEY} lacks {e}"));
            }
            missing
        })
    }
}

/// Each node's own copies of `keys` (`GetLocal`), by node.
fn local_copies(addrs: &[&str], keys: &[String]) -> Vec<Vec<Option<Value>>> {
    rt().block_on(async {
        let mut out = Vec::new();
        for a in addrs {
            let mut c = connect(a).await;
            let mut mine = Vec::new();
            for k in keys {
                mine.push(c.get_local(k.as_bytes()).await.unwrap());
            }
            out.push(mine);
        }
        out
    })
}

fn set_of(element: &str) -> Value {
    Value::Set(vec![element.as_bytes().to_vec()])
}

#[test]
fn under_faults_and_a_lost_node_no_acknowledged_write_is_lost_and_replicas_converge() {
    const WRITES: usize = 240;
    let dirs: Vec<PathBuf> = (0..4).map(|i| temp_dir(&format!("history-{i}"))).collect();
    let faults: Vec<PathBuf> = dirs.iter().map(|d| d.with_extension("faults")).collect();
    let start = |i: usize, join: Option<&str>| {
        let listen = format!("127.0.0.{}:0", 51 + i);
        let mut args = vec![
            "--listen",
            &listen,
            "--replication",
            "3",
            "--write-concern",
            "quorum",
        ];
        if let Some(j) = join {
            args.extend(["--join", j]);
        }
        let env = [("SQUALL_LINK_FAULTS_FILE", faults[i].to_str().unwrap())];
        Node::try_start_env(1, "never", &dirs[i], &args, &env).unwrap()
    };
    let a = start(0, None);
    let seed = a.addr().to_owned();
    let b = start(1, Some(&seed));
    let c = start(2, Some(&seed));
    let mut d = start(3, Some(&seed));
    let all = [a.addr(), b.addr(), c.addr(), d.addr()];
    let mut four: Vec<_> = [&a, &b, &c, &d]
        .iter()
        .map(|n| (n.addr().to_owned(), wire::message::MEMBER_UP, 1))
        .collect();
    four.sort();
    wait_for("four nodes agree", || agreed(&all, &four, None).is_some());

    // Seeded faults on every node, switched on now.
    for (i, f) in faults.iter().enumerate() {
        std::fs::write(
            f,
            format!("seed={},drop=10,duplicate=10,delay_ms=3", 100 + i),
        )
        .unwrap();
    }
    let mut h = History::default();
    rt().block_on(async {
        // Two clients: one routes itself to the keys' holders, one sends
        // everything to B (which forwards); one node dies for good halfway.
        let mut ca = connect(a.addr()).await;
        let mut cb = connect_pinned(b.addr()).await;
        for i in 0..WRITES {
            if i == WRITES / 2 {
                d.kill();
            }
            let c = if i % 2 == 0 { &mut ca } else { &mut cb };
            let (k, v) = (format!("h-{i}"), format!("v{i}"));
            match c
                .put_with_concern(k.as_bytes(), lww(&v), WRITE_CONCERN_QUORUM)
                .await
            {
                Ok(()) => h.acked.push((k, v)),
                Err(_) => h.failed += 1,
            }
            let e = format!("e{i}");
            match c
                .put_with_concern(SET_KEY.as_bytes(), set_of(&e), WRITE_CONCERN_QUORUM)
                .await
            {
                Ok(()) => {
                    h.set_acked.insert(e);
                }
                Err(_) => h.failed += 1,
            }
        }
    });
    eprintln!(
        "history: {} writes acknowledged, {} set elements, {} failed (outcome unknown)",
        h.acked.len(),
        h.set_acked.len(),
        h.failed
    );
    assert!(
        h.acked.len() > WRITES / 2,
        "most writes succeed under 10% loss"
    );

    // Faults off: the history must hold through every survivor, and the
    // survivors' copies converge (all three hold every key, the same).
    for f in &faults {
        std::fs::write(f, "").unwrap();
    }
    let live = [a.addr(), b.addr(), c.addr()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let missing: Vec<(String, Vec<String>)> = live
            .iter()
            .map(|n| (n.to_string(), h.missing_via(n)))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged writes missing after 15 s (views: {:?}): {:?}",
            live.iter()
                .map(|n| crate::cluster::view(n, None).map(|v| crate::cluster::states(&v)))
                .collect::<Vec<_>>(),
            missing
                .iter()
                .map(|(n, m)| format!(
                    "via {n}: {} missing, first {:?}",
                    m.len(),
                    &m[..m.len().min(3)]
                ))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut keys: Vec<String> = h.acked.iter().map(|(k, _)| k.clone()).collect();
    keys.push(SET_KEY.to_owned());
    wait_for("the three survivors hold the same copies", || {
        let copies = local_copies(&live, &keys);
        copies
            .iter()
            .all(|c| c == &copies[0] && c.iter().all(Option::is_some))
    });
}
