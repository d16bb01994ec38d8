#!/usr/bin/env python3
"""Convergence figures of issue #12 on a local 3-node cluster with two
copies of each key (scripts/cluster.sh, --replication 2, write concern 1).

  ./scripts/bench-convergence.py [--writes 200]

1. After a write: a key is written through one of its holders (`kv put`,
   acknowledged by that holder alone), then the other holder's own copy
   (`kv get --local`) is polled until it has the value. The time from the
   acknowledgement to the first poll that sees it, over --writes keys;
   each poll is a CLI process (~5 ms), so the figures are upper bounds.
2. After a partition heals: node 3 is cut off from nodes 1 and 2 (links
   and membership packets dropped on both sides, through each node's
   SQUALL_LINK_FAULTS_FILE), keys are written on both sides, the cut is
   healed, and every holder's copy of every key is polled until they all
   agree. The time from the heal until they do.

Writes bench-results/convergence-<time>.json. SQUALL_BIN (default
target/release/squall); PORT (default 7470).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUALL = os.environ.get("SQUALL_BIN", os.path.join(ROOT, "target/release/squall"))
PORT = int(os.environ.get("PORT", "7470"))


def addr(k):
    return f"127.0.0.{k + 1}:{PORT}"


def cli(*args):
    return subprocess.run([SQUALL, *args], capture_output=True, text=True)


def local(k, key):
    r = cli("kv", "get", key, "--local", "--addr", addr(k))
    return r.stdout.strip() if r.returncode == 0 else None


def holders(key, nodes):
    return [k for k in nodes if local(k, key) is not None]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=200)
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="squall-convergence-")
    faults = {k: os.path.join(d, f"faults-{k}") for k in (1, 2, 3)}
    for f in faults.values():
        open(f, "w").close()
    result = {}
    procs = []
    try:
        # Each node reads its own faults file, so the cluster is started by hand.
        for k in (1, 2, 3):
            join = [] if k == 1 else ["--join", addr(1)]
            env = dict(os.environ, SQUALL_LINK_FAULTS_FILE=faults[k])
            out = open(os.path.join(d, f"n{k}.out"), "w")
            procs.append(subprocess.Popen(
                [SQUALL, "node", "--shards", "1", "--listen", addr(k), "--data-dir",
                 os.path.join(d, f"n{k}"), "--fsync", "never", "--replication", "2", *join],
                stdout=out, stderr=open(os.path.join(d, f"n{k}.log"), "w"), env=env))
            while "squall ready" not in open(os.path.join(d, f"n{k}.out")).read():
                time.sleep(0.05)
        while True:
            r = cli("cluster", "status", "--addr", addr(1), "--json")
            if r.returncode == 0 and sum(m["state"] == "up" for m in json.loads(r.stdout)["members"]) == 3:
                break
            time.sleep(0.1)

        # 1. After a write.
        lat = []
        for i in range(a.writes):
            key = f"conv-{i}"
            assert cli("kv", "put", key, "x", "--addr", addr(1)).returncode == 0
            hs = holders(key, (1, 2, 3))
            # Write again through a holder, then watch the other holder.
            writer, other = hs[0], hs[1] if len(hs) > 1 else None
            if other is None:
                time.sleep(0.05)
                hs = holders(key, (1, 2, 3))
                writer, other = hs[0], hs[1]
            value = f"v{i}"
            assert cli("kv", "put", key, value, "--addr", addr(writer)).returncode == 0
            t = time.monotonic()
            while local(other, key) != value:
                assert time.monotonic() - t < 10, f"{key} never reached node {other}"
            lat.append((time.monotonic() - t) * 1000)
        lat.sort()
        result["after_write_ms"] = {"p50": statistics.median(lat), "p99": lat[int(len(lat) * 0.99) - 1],
                                    "max": lat[-1], "n": len(lat)}
        print(f"after a write: the other copy has it within p50 {result['after_write_ms']['p50']:.1f} ms, "
              f"p99 {result['after_write_ms']['p99']:.1f} ms, max {lat[-1]:.1f} ms ({len(lat)} writes)",
              flush=True)

        # 2. After a partition heals.
        cut = {1: [addr(3)], 2: [addr(3)], 3: [addr(1), addr(2)]}
        for k, peers in cut.items():
            with open(faults[k], "w") as f:
                f.write("drop=100," + ",".join(f"peer={p}" for p in peers))
        time.sleep(3)  # long enough for each side to see the other down
        keys = []
        for i in range(50):
            for side in (1, 3):
                key = f"part-{i}"
                cli("kv", "put", key, f"from{side}-{i}", "--addr", addr(side))
                keys.append(key)
        keys = sorted(set(keys))
        for f in faults.values():
            open(f, "w").close()
        healed = time.monotonic()
        while True:
            copies = {k: [local(n, k) for n in (1, 2, 3)] for k in keys}
            agree = all(len({v for v in vs if v is not None}) == 1
                        and sum(v is not None for v in vs) == 2 for vs in copies.values())
            if agree:
                break
            assert time.monotonic() - healed < 60, "no convergence within 60 s of the heal"
        result["after_heal_s"] = time.monotonic() - healed
        print(f"after a partition heals: all {len(keys)} keys agree on both holders "
              f"{result['after_heal_s']:.2f} s after the heal (one poll of all keys takes "
              f"~{len(keys) * 3 * 0.006:.1f} s)", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    out = os.path.join(ROOT, "bench-results", time.strftime("convergence-%Y%m%d-%H%M%S.json"))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
