//! A real cut, made by the kernel rather than by fault injection: two
//! nodes, each in a network namespace of its own, reach each other (and
//! the test) through a bridge in the test's namespace over veth pairs.
//! Taking one node's link down partitions it: its packets vanish and TCP
//! connections to it hang, so only deadlines notice. Writes go on at the
//! other side; once the link is back, both copies hold every write.
//! Needs root (`ip netns`, as on the machines that run this suite);
//! without it the test says so and checks nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use wire::message::{Value, MEMBER_DOWN, MEMBER_UP, WRITE_CONCERN_ALL};

use crate::cluster::{agreed, view, wait_for};
use crate::harness::{connect_pinned, lww, rt, temp_dir, Node};

const SUBNET: &str = "10.213.7";

/// Two namespaces on a bridge; removed when dropped.
struct Net {
    bridge: String,
    ns: [String; 2],
    host_ends: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    fn new() -> Result<Net, String> {
        let tag = std::process::id() % 100_000;
        let net = Net {
            bridge: format!("sqbr{tag}"),
            ns: [format!("sq{tag}a"), format!("sq{tag}b")],
            host_ends: [format!("sqh{tag}a"), format!("sqh{tag}b")],
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{SUBNET}.1/24"), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..2 {
            let (ns, host) = (&net.ns[i], &net.host_ends[i]);
            let inner = format!("sqn{tag}{i}");
            ip(&["netns", "add", ns])?;
            ip(&["link", "add", host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", ns])?;
            let addr = format!("{SUBNET}.{}/24", 2 + i);
            ip(&["-n", ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", ns, "link", "set", &inner, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["link", "set", host, "master", &net.bridge])?;
            ip(&["link", "set", host, "up"])?;
        }
        Ok(net)
    }

    /// Node `i`'s link: down cuts it off, up heals.
    fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.host_ends[i], state]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

#[test]
fn a_node_cut_off_by_the_kernel_catches_up_once_its_link_is_back() {
    let net = match Net::new() {
        Ok(net) => net,
        Err(e) => {
            eprintln!("netns test skipped: no network namespaces here ({e})");
            return;
        }
    };
    let dirs: Vec<_> = (0..2).map(|i| temp_dir(&format!("netns-{i}"))).collect();
    let addr = |i: usize| format!("{SUBNET}.{}:7400", 2 + i);
    let start = |i: usize| {
        let listen = addr(i);
        let seed = addr(0);
        let mut args = vec!["--listen", listen.as_str(), "--replication", "2"];
        if i > 0 {
            args.extend(["--join", seed.as_str()]);
        }
        let wrapper = ["ip", "netns", "exec", net.ns[i].as_str()];
        Node::try_start_via(&wrapper, 1, "never", &dirs[i], &args, &[]).unwrap()
    };
    let a = start(0);
    let b = start(1);
    let (a_addr, b_addr) = (addr(0), addr(1));
    let both = vec![
        (a_addr.clone(), MEMBER_UP, 1),
        (b_addr.clone(), MEMBER_UP, 1),
    ];
    wait_for("both nodes agree across the bridge", || {
        agreed(&[&a_addr, &b_addr], &both, None).is_some()
    });
    let value = |i: usize| format!("v{i}");
    rt().block_on(async {
        let mut c = connect_pinned(&a_addr).await;
        for i in 0..50 {
            let k = format!("cut-{i}");
            c.put_with_concern(k.as_bytes(), lww(&value(i)), WRITE_CONCERN_ALL)
                .await
                .unwrap();
        }
    });

    // The cut: B's link goes down. A notices by failure detection only.
    net.link(1, false);
    let cut_at = Instant::now();
    wait_for("A marks B down", || {
        view(&a_addr, None).is_some_and(|v| {
            v.members
                .iter()
                .any(|m| m.state == MEMBER_DOWN && String::from_utf8_lossy(&m.addr) == b_addr)
        })
    });
    eprintln!("netns: B seen down {:?} after the cut", cut_at.elapsed());
    rt().block_on(async {
        let mut c = connect_pinned(&a_addr).await;
        for i in 50..100 {
            let k = format!("cut-{i}");
            c.put(k.as_bytes(), lww(&value(i))).await.unwrap();
        }
    });

    // The heal: B is back in A's view, and B's copy gets every write.
    net.link(1, true);
    let healed_at = Instant::now();
    wait_for("both nodes agree again", || {
        agreed(&[&a_addr, &b_addr], &both, None).is_some()
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing = rt().block_on(async {
            let mut c = connect_pinned(&b_addr).await;
            let mut missing = 0;
            for i in 0..100 {
                let got = c.get_local(format!("cut-{i}").as_bytes()).await.unwrap();
                let ok = matches!(&got, Some(Value::Lww(l)) if l.bytes == value(i).as_bytes());
                missing += usize::from(!ok);
            }
            missing
        });
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of 100 writes missing at B 15 s after the heal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "netns: B holds every write {:?} after the heal",
        healed_at.elapsed()
    );
    drop((a, b));
}
