//! The cluster: a node's identity (a node id kept in the data directory,
//! an incarnation bumped at every start); membership between node
//! processes on their own loopback addresses (joining through a seed, one
//! view and one epoch everywhere, kill -9 and SIGTERM seen by the others,
//! a restart rejoining with its data; packets of another cluster's secret
//! refused).

use std::path::Path;
use std::time::{Duration, Instant};

use client::{Client, ClientOptions};
use wire::auth::Secret;
use wire::message::{ClusterView, MEMBER_DOWN, MEMBER_UP};

use crate::harness::{cli, connect, lww, rt, temp_dir, Node};

/// The address of each key's primary, as a client routed through the
/// node at `addr` places it.
pub fn primary_addrs(addr: &str, keys: &[String]) -> Vec<String> {
    let members = view(addr, None).unwrap().members;
    let routed = rt().block_on(connect(addr));
    keys.iter()
        .map(|k| {
            let node = routed.dest_for(k.as_bytes()).node;
            let m = members.iter().find(|m| m.node == node).unwrap();
            String::from_utf8(m.addr.clone()).unwrap()
        })
        .collect()
}

/// The view of the node at `addr`, asked with `secret` (`None`: open node).
pub fn view(addr: &str, secret: Option<&str>) -> Option<ClusterView> {
    rt().block_on(async {
        let opts = ClientOptions {
            timeout: Duration::from_secs(2),
            client_name: "it-cluster".into(),
            token: secret.map(|s| Secret::new(s).unwrap()),
            ..ClientOptions::default()
        };
        let mut c = Client::connect(addr, opts).await.ok()?;
        c.cluster_status().await.ok()
    })
}

/// Polls until `done` holds (≤ 15 s); how long it took.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(15), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// `(addr, state, incarnation)` of every member in a view, by address.
pub fn states(v: &ClusterView) -> Vec<(String, u8, u64)> {
    v.members
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.addr).into_owned(),
                m.state,
                m.incarnation,
            )
        })
        .collect()
}

/// Whether every node in `addrs` reports exactly `expected` and the same
/// epoch; that epoch.
pub fn agreed(addrs: &[&str], expected: &[(String, u8, u64)], secret: Option<&str>) -> Option<u64> {
    let views: Vec<ClusterView> = addrs
        .iter()
        .map(|a| view(a, secret))
        .collect::<Option<_>>()?;
    let epoch = views[0].epoch;
    views
        .iter()
        .all(|v| v.epoch == epoch && states(v) == expected)
        .then_some(epoch)
}

pub fn start_at(ip: &str, dir: &Path, extra: &[&str]) -> Node {
    let listen = format!("{ip}:0");
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(extra);
    Node::try_start(1, "never", dir, &args).unwrap()
}

/// `node=` and `incarnation=` of a ready line.
fn identity(node: &Node) -> (String, u64) {
    let field = |name: &str| {
        node.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", node.ready))
            .to_owned()
    };
    (field("node="), field("incarnation=").parse().unwrap())
}

#[test]
fn a_restarted_node_keeps_its_id_with_a_higher_incarnation() {
    let dir = temp_dir("identity");
    let mut node = Node::start(1, "never", &dir);
    let (id, incarnation) = identity(&node);
    assert_eq!(incarnation, 1);
    assert_eq!(id.len(), 16, "{id}");
    assert!(node.stderr().contains(&format!("node-{id}, incarnation 1")));
    assert!(node.signal_and_wait("TERM").success());
    let mut again = Node::start(1, "never", &dir);
    assert_eq!(identity(&again), (id.clone(), 2));
    assert!(again.signal_and_wait("TERM").success());
    // Another data directory is another node.
    let other = Node::start(1, "never", &temp_dir("identity-other"));
    assert_ne!(identity(&other).0, id);
}

#[test]
fn a_damaged_identity_file_stops_the_node_at_start() {
    let dir = temp_dir("identity-bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node.id"), "not an identity\n").unwrap();
    let Err(err) = Node::try_start(1, "never", &dir, &[]) else {
        panic!("the node started with a damaged identity")
    };
    assert!(
        err.contains("node.id") && err.contains("remove it"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("node.id")).unwrap(),
        "not an identity\n",
        "the file is left as it was"
    );
}

#[test]
fn nodes_join_through_a_seed_agree_and_see_kills_stops_and_restarts() {
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("members-{i}"))).collect();
    let a = start_at("127.0.0.21", &dirs[0], &[]);
    let seed = a.addr().to_owned();
    let b = start_at("127.0.0.22", &dirs[1], &["--join", &seed]);
    // A seed list may name unreachable members and this node itself.
    let joins = format!("127.0.0.29:1,{seed}");
    let mut c = start_at("127.0.0.23", &dirs[2], &["--join", &joins]);
    let (a_addr, b_addr, c_addr) = (seed.clone(), b.addr().to_owned(), c.addr().to_owned());
    let all = [a_addr.as_str(), b_addr.as_str(), c_addr.as_str()];
    let up = |addr: &str, inc: u64| (addr.to_owned(), MEMBER_UP, inc);
    let down = |addr: &str, inc: u64| (addr.to_owned(), MEMBER_DOWN, inc);
    let three = vec![up(&a_addr, 1), up(&b_addr, 1), up(&c_addr, 1)];
    let took = wait_for("three members agree", || {
        agreed(&all, &three, None).is_some()
    });
    eprintln!("3 nodes agreed {took:?} after the last started");
    let epoch_three = agreed(&all, &three, None).unwrap();

    // kill -9: the others mark it down, and agree on a new epoch.
    c.kill();
    let two = vec![up(&a_addr, 1), up(&b_addr, 1), down(&c_addr, 1)];
    let took = wait_for("the killed node is down everywhere", || {
        agreed(&all[..2], &two, None).is_some()
    });
    eprintln!("kill -9 seen by both survivors after {took:?}");
    let epoch_two = agreed(&all[..2], &two, None).unwrap();
    assert_ne!(epoch_two, epoch_three);

    // A restart on the same data and address: the same node, incarnation 2.
    let c_ip_port = c_addr.clone();
    let again = Node::try_start(
        1,
        "never",
        &dirs[2],
        &["--listen", &c_ip_port, "--join", &seed],
    )
    .unwrap();
    let restarted = vec![up(&a_addr, 1), up(&b_addr, 1), up(&c_addr, 2)];
    wait_for("the restarted node is up everywhere", || {
        agreed(&all, &restarted, None).is_some()
    });
    let epoch_back = agreed(&all, &restarted, None).unwrap();
    assert!(epoch_back != epoch_three && epoch_back != epoch_two);
    let node_c = view(&c_addr, None).unwrap().node;
    assert!(again
        .ready
        .contains(&format!("node={node_c:016x} incarnation=2")));

    // The CLI shows the same.
    let (code, out, err) = cli(&["cluster", "status", "--addr", &b_addr]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("epoch {epoch_back:016x} ")),
        "{out}"
    );
    assert!(out.contains("3 up, 0 down"), "{out}");
    assert!(
        out.contains(&format!("node-{node_c:016x}  {c_addr}")),
        "{out}"
    );
    let (code, json, _) = cli(&["cluster", "status", "--addr", &a_addr, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["members"].as_array().unwrap().len(), 3, "{json}");
    assert_eq!(json["epoch"], format!("{epoch_back:016x}"));

    // SIGTERM: the node leaves on purpose; the others see it down.
    let mut b = b;
    assert!(b.signal_and_wait("TERM").success());
    assert!(b.stderr().contains("left the cluster"), "{}", b.stderr());
    let left = vec![up(&a_addr, 1), down(&b_addr, 1), up(&c_addr, 2)];
    let took = wait_for("the stopped node is down everywhere", || {
        agreed(&[&a_addr, &c_addr], &left, None).is_some()
    });
    eprintln!("SIGTERM seen by both others after {took:?}");

    // `squall leave --wait`: the node leaves and stops; the last one sees it.
    let mut a = a;
    let (code, out, err) = cli(&["leave", "--addr", &a_addr, "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("left (stopped after "), "{out}");
    assert!(a.wait_exit().success());
    assert!(a.stderr().contains("leave requested"), "{}", a.stderr());
    let last = vec![down(&a_addr, 1), down(&b_addr, 1), up(&c_addr, 2)];
    wait_for("the node that left is down", || {
        agreed(&[&c_addr], &last, None).is_some()
    });
    drop(again);
}

#[test]
fn membership_packets_of_another_secret_are_refused() {
    let tokens = |dir: &Path, admin: &str| {
        let path = dir.join("tokens");
        std::fs::write(
            &path,
            format!("read read-secret-0123456789\nadmin {admin}\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    const ADMIN: &str = "cluster-admin-0123456789";
    let dirs: Vec<_> = (0..3)
        .map(|i| temp_dir(&format!("members-auth-{i}")))
        .collect();
    let (ta, tb) = (tokens(&dirs[0], ADMIN), tokens(&dirs[1], ADMIN));
    let tx = tokens(&dirs[2], "another-cluster-admin-0123");
    let a = start_at(
        "127.0.0.24",
        &dirs[0].join("data"),
        &["--auth-token-file", &ta],
    );
    let seed = a.addr().to_owned();
    let b = start_at(
        "127.0.0.25",
        &dirs[1].join("data"),
        &["--auth-token-file", &tb, "--join", &seed],
    );
    let x = start_at(
        "127.0.0.26",
        &dirs[2].join("data"),
        &["--auth-token-file", &tx, "--join", &seed],
    );
    let ab = vec![
        (a.addr().to_owned(), MEMBER_UP, 1),
        (b.addr().to_owned(), MEMBER_UP, 1),
    ];
    wait_for("the two nodes of one secret agree", || {
        agreed(&[a.addr(), b.addr()], &ab, Some(ADMIN)).is_some()
    });
    // Long enough for x to have announced itself a few times.
    wait_for("the seed refused packets", || {
        a.stderr().contains("was not signed by an admin secret")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(agreed(&[a.addr(), b.addr()], &ab, Some(ADMIN)).is_some());
    let alone = view(x.addr(), Some("another-cluster-admin-0123")).unwrap();
    assert_eq!(alone.members.len(), 1, "{alone:?}");
    // The read secret may ask for the view, not make the node leave.
    assert!(view(a.addr(), Some("read-secret-0123456789")).is_some());
    let (code, _, err) = cli(&["leave", "--addr", a.addr()]);
    assert_eq!(code, 2);
    assert!(err.contains("unauthenticated"), "{err}");
    let reader = std::process::Command::new(crate::harness::SQUALL)
        .args(["leave", "--addr", a.addr()])
        .env("SQUALL_TOKEN", "read-secret-0123456789")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&reader.stderr);
    assert!(err.contains("needs the admin role"), "{err}");
    assert!(view(a.addr(), Some(ADMIN)).is_some(), "still running");
}

#[test]
fn a_relative_data_directory_works() {
    let dir = temp_dir("relative");
    let mut child = std::process::Command::new(crate::harness::SQUALL)
        .args([
            "node",
            "--shards",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--fsync",
            "never",
        ])
        .args(["--data-dir", "data"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("squall ready "), "{line:?}");
    assert!(dir.join("data/shard-0").is_dir());
}

/// A node paused (SIGSTOP) for longer than the suspicion timeout is marked
/// down by the others; once it runs again (SIGCONT) it is up everywhere
/// again, and keys go through it to their holders.
#[test]
fn a_paused_node_is_marked_down_and_is_back_when_it_continues() {
    let dirs: Vec<_> = (0..3).map(|i| temp_dir(&format!("pause-{i}"))).collect();
    let a = start_at("127.0.0.81", &dirs[0], &[]);
    let b = start_at("127.0.0.82", &dirs[1], &["--join", a.addr()]);
    let c = start_at("127.0.0.83", &dirs[2], &["--join", a.addr()]);
    let all = [a.addr(), b.addr(), c.addr()];
    let up = |addr: &str| (addr.to_owned(), MEMBER_UP, 1);
    let mut three = vec![up(a.addr()), up(b.addr()), up(c.addr())];
    three.sort();
    wait_for("three members agree", || {
        agreed(&all, &three, None).is_some()
    });
    let signal = |sig: &str| {
        let pid = c.pid().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    let mut paused: Vec<_> = three.clone();
    for m in &mut paused {
        if m.0 == c.addr() {
            m.1 = MEMBER_DOWN;
        }
    }
    let took = wait_for("the paused node is down for the others", || {
        agreed(&all[..2], &paused, None).is_some()
    });
    eprintln!("SIGSTOP seen as down after {took:?}");
    signal("-CONT");
    let took = wait_for("the node is back everywhere", || {
        agreed(&all, &three, None).is_some()
    });
    eprintln!("back {took:?} after SIGCONT");
    rt().block_on(async {
        let mut via_c = connect(c.addr()).await;
        for i in 0..100 {
            let k = format!("pause-{i}");
            via_c.put(k.as_bytes(), lww("v")).await.unwrap();
        }
        let mut via_a = connect(a.addr()).await;
        for i in 0..100 {
            let got = via_a.get(format!("pause-{i}").as_bytes()).await.unwrap();
            assert!(got.is_some(), "pause-{i}");
        }
    });
}

#[test]
fn a_node_with_other_placement_settings_is_left_out_with_a_sentence() {
    let dirs: Vec<_> = (0..4)
        .map(|i| temp_dir(&format!("members-layout-{i}")))
        .collect();
    let a = start_at("127.0.0.88", &dirs[0], &["--replication", "2"]);
    let seed = a.addr().to_owned();
    let b = start_at(
        "127.0.0.89",
        &dirs[1],
        &["--replication", "2", "--join", &seed],
    );
    // Another replication factor, then other vnodes: neither may place keys.
    let x = start_at(
        "127.0.0.90",
        &dirs[2],
        &["--replication", "3", "--join", &seed],
    );
    let y = start_at(
        "127.0.0.101",
        &dirs[3],
        &["--replication", "2", "--vnodes", "128", "--join", &seed],
    );
    let ab = vec![
        (a.addr().to_owned(), MEMBER_UP, 1),
        (b.addr().to_owned(), MEMBER_UP, 1),
    ];
    let refused_y = format!(
        "at {} runs with --replication 2 --vnodes 128, this node with --replication 2 --vnodes 256",
        y.addr()
    );
    wait_for("the seed refuses other vnodes", || {
        a.stderr().contains(&refused_y)
    });
    wait_for(
        "the seed names the refused member and both settings",
        || {
            a.stderr().contains(&format!(
            "at {} runs with --replication 3 --vnodes 256, this node with --replication 2 --vnodes 256",
            x.addr()
        ))
        },
    );
    wait_for("the refused member says it too", || {
        x.stderr()
            .contains("runs with --replication 2 --vnodes 256, this node with --replication 3")
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        agreed(&[a.addr(), b.addr()], &ab, None).is_some(),
        "x is not a member"
    );
    let alone = view(x.addr(), None).unwrap();
    assert_eq!(alone.members.len(), 1, "{alone:?}");
    assert_eq!(
        a.stderr().matches("member refused").count(),
        2,
        "logged once per identity: {}",
        a.stderr()
    );
}
