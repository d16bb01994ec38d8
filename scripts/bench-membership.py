#!/usr/bin/env python3
"""Membership figures of issue #12, on a local cluster (scripts/cluster.sh).

  ./scripts/bench-membership.py [--nodes 5] [--rounds 5] [--idle-s 600]

1. kill -9 detection: a member is killed (kill -9), and every survivor's
   view (`squall cluster status --json`, polled every ~10 ms by one thread
   per survivor) is watched until it shows the member down; the time from
   the kill to the last survivor's view is the round's figure. The member
   is then started again on its data and must be up everywhere again.
2. Idle false positives: the cluster sits idle for --idle-s seconds; every
   "member down" any node logs meanwhile is a false positive.

Writes bench-results/membership-<time>.json and prints a table. Uses
SQUALL_BIN (default target/release/squall); the cluster lives in a
temporary CLUSTER_DIR on PORT (default 7450).
"""
import argparse
import json
import os
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUALL = os.environ.get("SQUALL_BIN", os.path.join(ROOT, "target/release/squall"))
PORT = int(os.environ.get("PORT", "7450"))


def addr(k):
    return f"127.0.0.{k + 1}:{PORT}"


def cluster(env, *args):
    subprocess.run([os.path.join(ROOT, "scripts/cluster.sh"), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def state_of(observer, target):
    """The state of `target` in `observer`'s view, or None if it did not answer."""
    r = subprocess.run([SQUALL, "cluster", "status", "--addr", observer, "--json",
                        "--client-timeout-ms", "500"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    for m in json.loads(r.stdout)["members"]:
        if m["addr"] == target:
            return m["state"]
    return "absent"


def wait_all(observers, target, want, limit_s=30.0):
    """Seconds until every observer sees `target` in state `want`, each."""
    t0 = time.monotonic()
    seen = {}

    def watch(o):
        while time.monotonic() - t0 < limit_s:
            if state_of(o, target) == want:
                seen[o] = time.monotonic() - t0
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=watch, args=(o,)) for o in observers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


def log_downs(d, n):
    return sum(open(os.path.join(d, f"n{k}.log")).read().count("member down: ")
               for k in range(1, n + 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--idle-s", type=float, default=600)
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="squall-membership-")
    env = dict(os.environ, CLUSTER_DIR=d, PORT=str(PORT), SQUALL_BIN=SQUALL, FSYNC="never")
    result = {"nodes": a.nodes, "rounds": [], "idle_s": a.idle_s}
    try:
        cluster(env, "up", str(a.nodes))
        for r in range(a.rounds):
            victim = 2 + r % (a.nodes - 1)
            survivors = [addr(k) for k in range(1, a.nodes + 1) if k != victim]
            cluster(env, "kill", str(victim))
            seen = wait_all(survivors, addr(victim), "down")
            missing = [o for o in survivors if o not in seen]
            worst = max(seen.values()) if seen else None
            cluster(env, "start", str(victim))
            back = wait_all(survivors, addr(victim), "up")
            result["rounds"].append({"victim": victim, "detected_s": seen, "all_s": worst,
                                     "missing": missing, "rejoined_s": max(back.values(), default=None)})
            print(f"round {r + 1}: node {victim} killed; down in every view after "
                  f"{worst:.3f} s (first {min(seen.values()):.3f} s); back up after "
                  f"{max(back.values(), default=float('nan')):.3f} s" if not missing else
                  f"round {r + 1}: node {victim} killed; never seen down by {missing}", flush=True)
            time.sleep(1)
        before = log_downs(d, a.nodes)
        print(f"idle for {a.idle_s:.0f} s with {a.nodes} nodes ...", flush=True)
        time.sleep(a.idle_s)
        false_downs = log_downs(d, a.nodes) - before
        result["idle_false_downs"] = false_downs
        print(f"idle: {false_downs} false 'member down' in {a.idle_s:.0f} s")
    finally:
        cluster(env, "down")
    worst = [x["all_s"] for x in result["rounds"] if x["all_s"] is not None]
    if worst:
        print(f"kill -9 detected by every node: max {max(worst):.3f} s, "
              f"mean {sum(worst) / len(worst):.3f} s over {len(worst)} rounds")
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    out = os.path.join(ROOT, "bench-results", time.strftime("membership-%Y%m%d-%H%M%S.json"))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
