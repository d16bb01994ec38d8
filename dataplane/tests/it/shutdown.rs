//! Graceful shutdown and start-up checks.

use std::time::Duration;

use crate::crash::{assert_all_present, stream_puts};
use crate::harness::{rt, temp_dir, Node, SQUALL};

#[test]
fn sigterm_under_load_exits_zero_and_loses_no_acknowledged_write() {
    for fsync in ["batch", "always"] {
        let dir = temp_dir("sigterm");
        let mut node = Node::start(2, fsync, &dir);
        let addr = node.addr().to_owned();
        let pid = node.pid();
        let acked = rt().block_on(async {
            let sent = std::cell::Cell::new(false);
            stream_puts(&addr, Duration::from_secs(30), |n| {
                if n >= 300 && !sent.replace(true) {
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
            })
            .await
        });
        let status = node.wait_exit(); // the TERM was sent mid-stream
        assert!(status.success(), "exit status {status} ({fsync})");
        assert!(
            node.stderr().contains("node stopped cleanly"),
            "{}",
            node.stderr()
        );
        let node = Node::start(2, fsync, &dir);
        rt().block_on(assert_all_present(node.addr(), &acked));
    }
}

#[test]
fn too_little_locked_memory_is_refused_with_advice() {
    let dir = temp_dir("memlock");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 1024 && exec {SQUALL} node --shards 4 --listen 127.0.0.1:0 --data-dir {}",
            dir.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("locked-memory limit") && err.contains("--shards 2"),
        "{err}"
    );
}
