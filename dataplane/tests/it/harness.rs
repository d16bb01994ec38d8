//! Starts and stops `squall node` processes for tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use client::{Client, ClientOptions};

pub const SQUALL: &str = env!("CARGO_BIN_EXE_squall");

/// A running node; killed when dropped.
pub struct Node {
    pub child: Option<Child>,
    pub addrs: Vec<String>,
    pub stderr_path: PathBuf,
    /// The node's `ready` line, after `squall ready `.
    pub ready: String,
}

fn unique() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A fresh temporary directory (left behind for post-mortems; under /tmp).
/// Runs `loadgen ARGS…` (built beside `squall` by `cargo test
/// --workspace`) and returns the JSON report on its last line.
pub fn loadgen_report(args: &[&str]) -> serde_json::Value {
    let loadgen = std::path::Path::new(SQUALL).with_file_name("loadgen");
    assert!(
        loadgen.exists(),
        "{} is missing: build it with `cargo build --release -p loadgen`",
        loadgen.display()
    );
    let out = std::process::Command::new(&loadgen)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "squall-it-{}-{name}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Node {
    pub fn start(shards: usize, fsync: &str, data_dir: &Path) -> Node {
        Node::try_start(shards, fsync, data_dir, &[]).expect("node starts")
    }

    /// Starts a node; `Err(stderr)` if it exits before it is ready.
    pub fn try_start(
        shards: usize,
        fsync: &str,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<Node, String> {
        Node::try_start_env(shards, fsync, data_dir, extra, &[])
    }

    /// As `try_start`, with extra environment variables for the node.
    pub fn try_start_env(
        shards: usize,
        fsync: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        let mut args = vec!["--test-fixtures"];
        args.extend_from_slice(extra);
        Node::try_start_plain(shards, fsync, data_dir, &args, env)
    }

    /// As `try_start_env`, without the test fixtures (`sleep_ms`,
    /// `whoami`, …) the other starts register: the node as users run it.
    pub fn try_start_plain(
        shards: usize,
        fsync: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        Node::try_start_via(&[], shards, fsync, data_dir, extra, env)
    }

    /// As `try_start_plain`, the node run by a `wrapper` command (its
    /// words, then `squall node …`; e.g. `ip netns exec NS`).
    pub fn try_start_via(
        wrapper: &[&str],
        shards: usize,
        fsync: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        let stderr_path = data_dir.with_extension(format!("stderr-{}", unique()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        // `--listen` in `extra` replaces the default.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(SQUALL);
                c
            }
            None => Command::new(SQUALL),
        };
        let mut child = cmd
            .args(["node", "--shards", &shards.to_string(), "--fsync", fsync])
            .args(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn squall");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("squall ready ") {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                let addrs = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addrs="))
                    .expect("addrs in ready line")
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                return Ok(Node {
                    child: Some(child),
                    addrs,
                    stderr_path,
                    ready: line,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(format!(
                    "node exited with {status} before it was ready:\n{err}"
                ));
            }
            assert!(Instant::now() < deadline, "node not ready within 30 s");
        }
    }

    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL, no warning.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal and waits (≤ 30 s) for the exit status.
    pub fn signal_and_wait(&mut self, sig: &str) -> ExitStatus {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        self.wait_exit()
    }

    /// Waits (≤ 30 s) for the process to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub async fn connect(addr: &str) -> Client {
    Client::connect(
        addr,
        ClientOptions {
            timeout: Duration::from_secs(10),
            client_name: "it".into(),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("connect")
}

/// A client whose every request goes to `addr`'s node (no routing across
/// nodes: that node forwards what it does not hold).
pub async fn connect_pinned(addr: &str) -> Client {
    Client::connect(
        addr,
        ClientOptions {
            timeout: Duration::from_secs(10),
            client_name: "it-pinned".into(),
            route_across_nodes: false,
            ..ClientOptions::default()
        },
    )
    .await
    .expect("connect")
}

/// Runs the CLI; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SQUALL)
        .args(args)
        .output()
        .expect("run squall");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI against `addr` and returns its stdout; fails the test if
/// the command fails.
pub fn cli_ok(addr: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--addr", addr]);
    let (code, out, err) = cli(&all);
    assert_eq!(code, 0, "squall {args:?} failed: {err}");
    out
}

/// WAL segments of one shard, oldest first.
pub fn segments(data_dir: &Path, shard: usize) -> Vec<PathBuf> {
    let dir = data_dir.join(format!("shard-{shard}"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("shard dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// The path of example guest `name` (`guests/`), built on first use with
/// `scripts/build-guests.sh` (which test.sh has usually run already).
pub fn guest_path(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(format!(
        "guests/target/wasm32-unknown-unknown/release/{name}.wasm"
    ));
    BUILT.get_or_init(|| {
        let status = Command::new(root.join("scripts/build-guests.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/build-guests.sh");
        assert!(status.success(), "scripts/build-guests.sh failed");
    });
    assert!(
        path.exists(),
        "{} missing after building the guests",
        path.display()
    );
    path
}

/// The bytes of example guest `name`.
pub fn guest(name: &str) -> Vec<u8> {
    std::fs::read(guest_path(name)).expect("read guest")
}

/// An LWW value the node stamps.
pub fn lww(v: &str) -> wire::message::Value {
    wire::message::Value::Lww(wire::message::LwwValue {
        timestamp: 0,
        writer: 0,
        bytes: v.as_bytes().to_vec(),
    })
}

/// One text argument for source function `function`.
pub fn arg(function: &str, value: &str) -> Vec<wire::message::SourceArgs> {
    vec![wire::message::SourceArgs::values(
        function,
        vec![value.as_bytes().to_vec()],
    )]
}

/// A key (`prefix` + a number) that shard `shard` owns.
pub fn key_on(c: &Client, shard: u16, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| c.shard_for(k.as_bytes()) == shard)
        .unwrap_or_default()
}
