#!/usr/bin/env bash
# Throughput of a 3-node cluster while one node is killed (issue #12):
# `loadgen kv` against node 1 for DURATION_S (default 12) seconds, node 3
# killed with SIGKILL at KILL_AT_S (default 4); per-second successes and
# errors, and throughput before, during (2 s) and after. Once with
# --replication 2 (reads and writes go on), once with --replication 1
# (node 3's keys are not there until it is back: reads miss them).
# SQUALL_BIN / LOADGEN_BIN pick the binaries; PORT (default 7490).
set -euo pipefail
cd "$(dirname "$0")/.."
SQUALL=${SQUALL_BIN:-target/release/squall}
LOADGEN=${LOADGEN_BIN:-target/release/loadgen}
PORT=${PORT:-7490}
DURATION_S=${DURATION_S:-12}
KILL_AT_S=${KILL_AT_S:-4}
OUT=bench-results/cluster-kill-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
for r in 2 1; do
  dir=$(mktemp -d)
  export CLUSTER_DIR=$dir PORT SQUALL_BIN=$SQUALL FSYNC=batch NODE_FLAGS="--replication $r"
  ./scripts/cluster.sh up 3 >/dev/null 2>&1
  echo "== --replication $r: node 3 killed at ${KILL_AT_S} s"
  "$LOADGEN" kv --addr "127.0.0.2:$PORT" --clients 16 --pipeline 16 --keys 100000 \
    --duration-s "$DURATION_S" --warmup-s 1 --read-ratio 0.9 --timeout-ms 3000 \
    --kill-pid "$(cat "$dir/n3.pid")" --kill-at-s "$KILL_AT_S" --json 2>/dev/null | tail -1 >"$OUT/r$r.json"
  python3 - "$OUT/r$r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
k = d["around_kill_ops_per_sec"]
print(f"  {d['ops_per_sec']:.0f} ops/s overall, {d['errors']} errors; before {k['before']:.0f}, "
      f"during {k['during']:.0f}, after {k['after']:.0f} ops/s ({100 * k['after'] / max(k['before'], 1):.0f}% of before)")
print("  ok/errors per second: " + " ".join(f"{t['ok']}/{t['errors']}" for t in d["timeline"]))
PY
  ./scripts/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$dir"
done
echo "raw: $OUT"
