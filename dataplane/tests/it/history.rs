//! A history checker over a cluster under faults: every client operation
//! is recorded with its outcome (acknowledged or not); at the end, with
//! the faults switched off, every acknowledged write must be readable
//! through every surviving node, and every surviving holder of a key must
//! hold the same value (the replicas converged). Faults are seeded and
//! switched at run time (`SQUALL_LINK_FAULTS_FILE`): requests between
//! nodes dropped (before or after the peer applied them), duplicated and
//! delayed, membership packets dropped. Four runs (`Fault`): with
//! W=quorum, a node killed midway for good, and a node joining while
//! another leaves; with W=1, a node killed and restarted on its data (its
//! acknowledged writes survive in its WAL and reach the others again
//! though its push queues were lost), and a partition that heals (writes
//! acknowledged on both sides all end up in every copy).

use std::collections::BTreeSet;
use std::path::PathBuf;

use wire::message::{Value, MEMBER_DOWN, WRITE_CONCERN_ONE, WRITE_CONCERN_QUORUM};

use crate::cluster::{agreed, wait_for};
use crate::harness::{cli, connect, connect_pinned, lww, rt, temp_dir, Node};

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
    history_under_faults(51, "quorum", WRITE_CONCERN_QUORUM, Fault::LostForGood);
}

#[test]
fn under_faults_with_w1_and_a_restart_no_acknowledged_write_is_lost() {
    history_under_faults(85, "1", WRITE_CONCERN_ONE, Fault::Restart);
}

#[test]
fn under_faults_while_a_node_joins_and_another_leaves_no_acknowledged_write_is_lost() {
    history_under_faults(111, "quorum", WRITE_CONCERN_QUORUM, Fault::JoinAndLeave);
}

#[test]
fn with_w1_on_both_sides_of_a_partition_that_heals_no_acknowledged_write_is_lost() {
    history_under_faults(115, "1", WRITE_CONCERN_ONE, Fault::Partition);
}

/// What happens to the cluster during the writes. At the end, three
/// nodes are up, each holding a copy of every key (three copies).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Four nodes; the last is killed (-9) halfway, for good.
    LostForGood,
    /// Three nodes; the last is killed halfway and restarts on its data
    /// and address a quarter later.
    Restart,
    /// Three nodes; a fourth joins at a quarter, the third leaves
    /// (`squall leave`) halfway.
    JoinAndLeave,
    /// Three nodes; the third is cut off from the others (links and
    /// membership, both ways) from a third to two thirds, while clients
    /// still reach every node.
    Partition,
}

/// The nodes on 127.0.0.`ip`…, writes with `concern` (`concern_flag` is
/// the nodes' default), under seeded link faults and `fault`.
fn history_under_faults(ip: usize, concern_flag: &str, concern: u8, fault: Fault) {
    const WRITES: usize = 240;
    let (n, first) = match fault {
        Fault::LostForGood => (4, 4),
        Fault::Restart | Fault::Partition => (3, 3),
        Fault::JoinAndLeave => (4, 3),
    };
    let dirs: Vec<PathBuf> = (0..n)
        .map(|i| temp_dir(&format!("history-{ip}-{i}")))
        .collect();
    let faults: Vec<PathBuf> = dirs.iter().map(|d| d.with_extension("faults")).collect();
    let start = |i: usize, listen: &str, join: Option<&str>| {
        let mut args = vec![
            "--listen",
            listen,
            "--replication",
            "3",
            "--write-concern",
            concern_flag,
        ];
        if let Some(j) = join {
            args.extend(["--join", j]);
        }
        let env = [("SQUALL_LINK_FAULTS_FILE", faults[i].to_str().unwrap())];
        // With a restart, fsync=always: an acknowledgement means the WAL
        // holds the write.
        let fsync = if fault == Fault::Restart {
            "always"
        } else {
            "never"
        };
        Node::try_start_env(1, fsync, &dirs[i], &args, &env).unwrap()
    };
    let listen = |i: usize| format!("127.0.0.{}:0", ip + i);
    let first_node = start(0, &listen(0), None);
    let seed = first_node.addr().to_owned();
    let mut nodes = vec![first_node];
    for i in 1..first {
        nodes.push(start(i, &listen(i), Some(&seed)));
    }
    let mut addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_owned()).collect();
    {
        let all: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let mut everyone: Vec<_> = all
            .iter()
            .map(|a| (a.to_string(), wire::message::MEMBER_UP, 1))
            .collect();
        everyone.sort();
        wait_for("the nodes agree", || {
            agreed(&all, &everyone, None).is_some()
        });
    }

    // Seeded faults on every node, switched on now.
    let seeded = |i: usize| format!("seed={},drop=10,duplicate=10,delay_ms=3", 100 + i);
    for (i, f) in faults.iter().enumerate() {
        std::fs::write(f, seeded(i)).unwrap();
    }
    let mut h = History::default();
    let last = first - 1;
    rt().block_on(async {
        // Two clients: one routes itself to the keys' holders, one sends
        // everything to the second node (which forwards when it must).
        let mut routed = connect(&addrs[0]).await;
        let mut pinned = connect_pinned(&addrs[1]).await;
        for i in 0..WRITES {
            match (fault, i) {
                (Fault::LostForGood | Fault::Restart, _) if i == WRITES / 2 => nodes[last].kill(),
                (Fault::Restart, _) if i == WRITES * 3 / 4 => {
                    nodes[last] = start(last, &addrs[last], Some(&seed));
                }
                (Fault::JoinAndLeave, _) if i == WRITES / 4 => {
                    nodes.push(start(3, &listen(3), Some(&seed)));
                    addrs.push(nodes[3].addr().to_owned());
                }
                (Fault::JoinAndLeave, _) if i == WRITES / 2 => {
                    let (code, _, err) = cli(&["leave", "--addr", &addrs[2]]);
                    assert_eq!(code, 0, "{err}");
                }
                (Fault::Partition, _) if i == WRITES / 3 => {
                    let cut = |peers: &[&String]| {
                        let peers: Vec<String> =
                            peers.iter().map(|p| format!("peer={p}")).collect();
                        format!("drop=100,{}", peers.join(","))
                    };
                    std::fs::write(&faults[0], cut(&[&addrs[2]])).unwrap();
                    std::fs::write(&faults[1], cut(&[&addrs[2]])).unwrap();
                    std::fs::write(&faults[2], cut(&[&addrs[0], &addrs[1]])).unwrap();
                }
                (Fault::Partition, _) if i == WRITES * 2 / 3 => {
                    // The cut was real: the cut-off node saw the others go.
                    let v = connect_pinned(&addrs[2])
                        .await
                        .cluster_status()
                        .await
                        .unwrap();
                    let down = v.members.iter().filter(|m| m.state == MEMBER_DOWN).count();
                    assert_eq!(down, 2, "{:?}", crate::cluster::states(&v));
                    for (j, f) in faults.iter().enumerate() {
                        std::fs::write(f, seeded(j)).unwrap();
                    }
                }
                // The cut lasts ≥ 2 s, past failure detection.
                (Fault::Partition, _) if i > WRITES / 3 && i < WRITES * 2 / 3 => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                _ => {}
            }
            let c = if i % 2 == 0 { &mut routed } else { &mut pinned };
            let (k, v) = (format!("h-{i}"), format!("v{i}"));
            match c.put_with_concern(k.as_bytes(), lww(&v), concern).await {
                Ok(()) => h.acked.push((k, v)),
                Err(_) => h.failed += 1,
            }
            let e = format!("e{i}");
            match c
                .put_with_concern(SET_KEY.as_bytes(), set_of(&e), concern)
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
    // survivors' copies converge (each holds every key, the same).
    for f in &faults {
        std::fs::write(f, "").unwrap();
    }
    let live: Vec<&str> = match fault {
        Fault::LostForGood => addrs[..3].iter().map(String::as_str).collect(),
        Fault::Restart | Fault::Partition => addrs.iter().map(String::as_str).collect(),
        Fault::JoinAndLeave => {
            assert!(nodes[2].wait_exit().success(), "the node that left stopped");
            [0, 1, 3].iter().map(|&i| addrs[i].as_str()).collect()
        }
    };
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
    wait_for("the survivors hold the same copies", || {
        let copies = local_copies(&live, &keys);
        copies
            .iter()
            .all(|c| c == &copies[0] && c.iter().all(Option::is_some))
    });
}
