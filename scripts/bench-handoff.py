#!/usr/bin/env python3
"""Hand-off figures of issue #12, on a local cluster (scripts/cluster.sh):
how long a node joining, and one leaving, take to move their share of
--keys keys, and that no key is lost or left twice.

  ./scripts/bench-handoff.py [--nodes 3] [--keys 100000]

1. Start --nodes nodes, write --keys keys through node 1 (loadgen's
   preload: every key once, 100-byte values).
2. Join: start one more node; time from its `ready` line until the
   cluster holds every key exactly once again, with the new node holding
   its share (live keys summed over the nodes, polled every 20 ms, the
   same for 300 ms; the figure is when that stable state began).
3. Leave: `squall leave --addr <node 2> --wait`; time until it returns (its
   keys handed over and acknowledged, the node stopped), and until the
   others hold every key once (what the leaving node sent by an older
   view moves on once more).

Writes bench-results/handoff-<time>.json. SQUALL_BIN / LOADGEN_BIN pick the
binaries (default target/release/...); PORT (default 7460).
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUALL = os.environ.get("SQUALL_BIN", os.path.join(ROOT, "target/release/squall"))
LOADGEN = os.environ.get("LOADGEN_BIN", os.path.join(ROOT, "target/release/loadgen"))
PORT = int(os.environ.get("PORT", "7460"))


def addr(k):
    return f"127.0.0.{k + 1}:{PORT}"


def held(k):
    r = subprocess.run([SQUALL, "kv", "stats", "--addr", addr(k), "--json"],
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    shards = out["shards"] if isinstance(out, dict) else out
    return sum(s["live_keys"] for s in shards)


def settled(nodes, keys, t0, limit_s=120):
    """Counts once every key is held exactly once, unchanged for 300 ms
    (hand-offs in flight hold a key twice: merged there, not yet dropped here)."""
    stable_since, last = None, None
    while True:
        counts = [held(k) for k in nodes]
        if sum(counts) == keys and counts == last:
            if time.monotonic() - stable_since >= 0.3:
                return counts, stable_since
        else:
            stable_since = time.monotonic()
        last = counts
        assert time.monotonic() - t0 < limit_s, f"not settled in {limit_s} s: {counts}"
        time.sleep(0.02)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--keys", type=int, default=100000)
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="squall-handoff-")
    env = dict(os.environ, CLUSTER_DIR=d, PORT=str(PORT), SQUALL_BIN=SQUALL, FSYNC="batch")
    sh = lambda *args: subprocess.run([os.path.join(ROOT, "scripts/cluster.sh"), *args],
                                      env=env, check=True, stdout=subprocess.DEVNULL)
    n = a.nodes
    result = {"nodes": n, "keys": a.keys}
    try:
        sh("up", str(n))
        t = time.monotonic()
        subprocess.run([LOADGEN, "kv", "--addr", addr(1), "--keys", str(a.keys), "--duration-s", "0.1",
                        "--warmup-s", "0", "--clients", "8", "--pipeline", "16", "--read-ratio", "1"],
                       check=True, stdout=subprocess.DEVNULL)
        result["fill_s"] = time.monotonic() - t
        counts = [held(k) for k in range(1, n + 1)]
        assert sum(counts) == a.keys, f"after the fill: {counts}"
        result["before"] = counts
        print(f"{n} nodes hold {a.keys} keys: {counts} (filled in {result['fill_s']:.1f} s)", flush=True)

        t = time.monotonic()
        sh("start", str(n + 1))
        joined = time.monotonic()
        counts, done = settled(range(1, n + 2), a.keys, t)
        assert counts[-1] > 0, counts
        result["join_s"] = done - joined
        result["after_join"] = counts
        print(f"join: node {n + 1} took {counts[-1]} keys in {result['join_s']:.2f} s "
              f"(from its ready line): {counts}", flush=True)

        t = time.monotonic()
        subprocess.run([SQUALL, "leave", "--addr", addr(2), "--wait"], check=True,
                       stdout=subprocess.DEVNULL)
        result["leave_s"] = time.monotonic() - t
        rest = [k for k in range(1, n + 2) if k != 2]
        counts, done = settled(rest, a.keys, t)
        result["after_leave"] = counts
        result["leave_settled_s"] = done - t
        print(f"leave: node 2 handed over its keys and stopped in {result['leave_s']:.2f} s; "
              f"every key once again after {result['leave_settled_s']:.2f} s: {counts}", flush=True)
    finally:
        sh("down")
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    out = os.path.join(ROOT, "bench-results", time.strftime("handoff-%Y%m%d-%H%M%S.json"))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
