//! A crash at each step of the hand-off, placed exactly with fail points
//! (`fail` crate, compiled into the test build's node; `crash_point!` in
//! the node): a node alone with its keys is joined by a second one (one
//! copy of each key, so nothing else holds them), the sender or the
//! receiver dies at the step, restarts on its data and address, and the
//! hand-off completes: every key is readable with its value, and each is
//! held by exactly one node, its owner.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wire::message::{Value, MEMBER_UP};

use crate::cluster::{agreed, states, view};
use crate::harness::{connect, connect_pinned, lww, rt, temp_dir, Node};

const KEYS: usize = 300;

/// Which node carries the fail point.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Carrier {
    /// The node that holds the keys and hands half of them over.
    Sender,
    /// The node that joins and takes them.
    Receiver,
}

fn start(
    ip: usize,
    dir: &Path,
    listen_port: Option<&str>,
    join: Option<&str>,
    point: Option<&str>,
) -> Node {
    let listen = listen_port.map_or_else(|| format!("127.0.0.{ip}:0"), str::to_owned);
    let mut args = vec!["--listen", listen.as_str()];
    if let Some(j) = join {
        args.extend(["--join", j]);
    }
    let failpoints = point.map(|p| format!("{p}=return"));
    let env: Vec<(&str, &str)> = failpoints
        .iter()
        .map(|f| ("FAILPOINTS", f.as_str()))
        .collect();
    Node::try_start_env(1, "always", dir, &args, &env).unwrap()
}

fn crash_at(ip: usize, point: &str, carrier: Carrier) {
    let what = format!("{point} on the {carrier:?}");
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| temp_dir(&format!("failpoint-{ip}-{i}")))
        .collect();
    let sender_point = (carrier == Carrier::Sender).then_some(point);
    let receiver_point = (carrier == Carrier::Receiver).then_some(point);
    let mut a = start(ip, &dirs[0], None, None, sender_point);
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("fp-{i}"), format!("v{i}")))
        .collect();
    rt().block_on(async {
        let mut c = connect_pinned(a.addr()).await;
        for (k, v) in &keys {
            c.put(k.as_bytes(), lww(v)).await.unwrap();
        }
    });
    let seed = a.addr().to_owned();
    let mut b = start(ip + 1, &dirs[1], None, Some(&seed), receiver_point);
    let b_addr = b.addr().to_owned();

    // The carrier dies at the point, with a sentence saying where.
    let dying = if carrier == Carrier::Sender {
        &mut a
    } else {
        &mut b
    };
    let status = dying.wait_exit();
    assert!(!status.success(), "{what}: exited with {status}");
    assert!(
        dying
            .stderr()
            .contains(&format!("fail point {point} reached")),
        "{what}: {}",
        dying.stderr()
    );

    // It restarts on its data and address, without the fail point.
    let _restarted = match carrier {
        Carrier::Sender => start(ip, &dirs[0], Some(&seed), Some(&b_addr), None),
        Carrier::Receiver => start(ip + 1, &dirs[1], Some(&b_addr), Some(&seed), None),
    };
    let all = [seed.as_str(), b_addr.as_str()];
    let mut both: Vec<(String, u8, u64)> = vec![
        (
            seed.clone(),
            MEMBER_UP,
            if carrier == Carrier::Sender { 2 } else { 1 },
        ),
        (
            b_addr.clone(),
            MEMBER_UP,
            if carrier == Carrier::Receiver { 2 } else { 1 },
        ),
    ];
    // In the order views list members: by address.
    both.sort_by_key(|(a, _, _)| a.parse::<std::net::SocketAddr>().unwrap());
    let t = std::time::Instant::now();
    while agreed(&all, &both, None).is_none() {
        if t.elapsed() > Duration::from_secs(15) {
            let views: Vec<_> = all
                .iter()
                .map(|a| view(a, None).map(|v| states(&v)))
                .collect();
            panic!("{what}: views {views:?}, expected {both:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every key readable with its value; each held by exactly one node.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (wrong, copies) = rt().block_on(async {
            let mut routed = connect(&seed).await;
            let mut wrong = Vec::new();
            for (k, v) in &keys {
                match routed.get(k.as_bytes()).await {
                    Ok(Some(Value::Lww(l))) if l.bytes == v.as_bytes() => {}
                    other => wrong.push(format!("{k} read as {other:?}")),
                }
            }
            let mut copies = vec![0usize; KEYS];
            for addr in all {
                let mut c = connect(addr).await;
                for (i, (k, _)) in keys.iter().enumerate() {
                    if c.get_local(k.as_bytes()).await.unwrap().is_some() {
                        copies[i] += 1;
                    }
                }
            }
            (wrong, copies)
        });
        let not_one: Vec<usize> = (0..KEYS).filter(|&i| copies[i] != 1).collect();
        if wrong.is_empty() && not_one.is_empty() {
            let on_b = rt().block_on(async {
                let mut c = connect(&b_addr).await;
                let mut n = 0;
                for (k, _) in &keys {
                    n += usize::from(c.get_local(k.as_bytes()).await.unwrap().is_some());
                }
                n
            });
            assert!(
                on_b > 0 && on_b < KEYS,
                "{what}: {on_b} of {KEYS} keys moved"
            );
            eprintln!("{what}: no key lost, {on_b} of {KEYS} moved");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: after 15 s, {} keys wrong (first {:?}), {} keys not on exactly one node",
            wrong.len(),
            &wrong[..wrong.len().min(3)],
            not_one.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_crash_at_any_hand_off_step_loses_no_key() {
    let points = [
        ("handoff::before-send", Carrier::Sender),
        ("handoff::before-drop", Carrier::Sender),
        ("handoff::after-drop", Carrier::Sender),
        ("merge::before-apply", Carrier::Receiver),
        ("merge::before-reply", Carrier::Receiver),
    ];
    for (i, (point, carrier)) in points.into_iter().enumerate() {
        crash_at(91 + 2 * i, point, carrier);
    }
}
