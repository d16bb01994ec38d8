"""Fixtures: real `squall node` processes started by the test session.

The binary is target/release/squall (built by scripts/test.sh before
pytest runs), or $SQUALL_BIN.
"""

import os
import pathlib
import queue
import subprocess
import threading
import time

import pytest

import squall

ROOT = pathlib.Path(__file__).resolve().parents[2]
SQUALL = os.environ.get("SQUALL_BIN", str(ROOT / "target" / "release" / "squall"))
MODELS = ROOT.parent / "shared" / "models"
GUESTS = ROOT / "guests" / "target" / "wasm32-unknown-unknown" / "release"


class Node:
    """A node on a loopback port of its own, with the test fixtures
    (sleep_ms, ...) registered; stopped at the end of the session."""

    def __init__(self, data_dir: pathlib.Path, *extra: str) -> None:
        self.stderr_path = data_dir.with_suffix(".stderr")
        self.proc = subprocess.Popen(
            [SQUALL, "node", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
             "--shards", "1", "--fsync", "never", "--test-fixtures", *extra],
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "w"),
            text=True,
        )
        lines: "queue.Queue[str]" = queue.Queue()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("squall ready "):
                    lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=0.05)
                break
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited: {self.stderr_path.read_text()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("node not ready within 30 s")
        addrs = next(w for w in line.split() if w.startswith("addrs="))
        self.addr = addrs[len("addrs="):].split(",")[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory):
    n = Node(tmp_path_factory.mktemp("node") / "data")
    yield n
    n.stop()


@pytest.fixture
def conn(node: Node):
    c = squall.connect(node.addr)
    yield c
    c.close()
