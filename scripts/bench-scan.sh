#!/usr/bin/env bash
# What a full scan of a member's keys costs the requests around it. On a
# member of a cluster, `Stats` counts the keys this node is primary for,
# and anti-entropy digests the keys it shares with each peer: both visit
# every key. A 2-node cluster (scripts/cluster.sh) is filled with KEYS keys
# (100-byte values); then `loadgen kv` reads (8 clients, pipeline 1, on
# the last core) for DURATION_S seconds, once alone and once while
# `squall kv stats` asks node 1 every 0.5 s; then, on a fresh pair, for
# DURATION_S + 2 seconds while a third node joins after 1 s (every member
# hands keys over to it: a scan of its keys, then drops). Max / p99.9 /
# p99 latency and ops/s of each, and how long `kv stats` took.
#
#   ./scripts/bench-scan.sh                        this build, 2 rounds
#   OLD_BIN=/path/to/old/squall ./scripts/bench-scan.sh
#                                                  A/B, builds alternating
#   KEYS (1000000), DURATION_S (4), ROUNDS (2), PORT (7700) override.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
DURATION_S=${DURATION_S:-4}
ROUNDS=${ROUNDS:-2}
export PORT=${PORT:-7700} CLUSTER_DIR=${CLUSTER_DIR:-/tmp/squall-bench-scan}
cargo build --release --locked -p dataplane -p loadgen >&2
core_last=$(($(nproc) - 1))
trap './scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
addr=127.0.0.2:$PORT
load() { # $1: seconds, then extra flags
  local s=$1; shift
  taskset -c "$core_last" target/release/loadgen kv --addr "$addr" --clients 8 --pipeline 1 \
    --keys "$KEYS" --value-bytes 100 --read-ratio 1.0 --zipf 0 --duration-s "$s" \
    --warmup-s 0 --json "$@" | tail -1
}
row() { # label round load-json stats-ms
  python3 - "$@" <<'PY'
import json, sys
label, rnd, r, stats_ms = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
print(f"| {label} | {rnd} | {r['ops_per_sec']:.0f} | {r['p99_us']:.0f} | {r['p999_us']:.0f} "
      f"| {r['max_us']:.0f} | {stats_ms} |")
PY
}
builds=("new target/release/squall")
[ -n "${OLD_BIN:-}" ] && builds=("old $OLD_BIN" "${builds[@]}")
echo "| build | round | ops/s | p99 us | p99.9 us | max us | kv stats ms (each, during the load) |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for b in "${builds[@]}"; do
    read -r label bin <<<"$b"
    ./scripts/cluster.sh down >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    SQUALL_BIN=$bin ./scripts/cluster.sh up 2 >/dev/null
    # Fill: the preload writes every key once, spread over both nodes.
    load 1 >/dev/null
    row "$label (no stats)" "$round" "$(load "$DURATION_S" --no-preload)" -
    times=$(mktemp)
    ( for _ in $(seq $((DURATION_S * 2))); do
        sleep 0.5
        s=$(date +%s%N); "$bin" kv stats --addr "$addr" >/dev/null; e=$(date +%s%N)
        echo $(((e - s) / 1000000)) >>"$times"
      done ) &
    asker=$!
    report=$(load "$DURATION_S" --no-preload)
    wait "$asker"
    row "$label (stats every 0.5 s)" "$round" "$report" "$(paste -sd, "$times")"
    rm -f "$times"
    ./scripts/cluster.sh down >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    SQUALL_BIN=$bin ./scripts/cluster.sh up 2 >/dev/null
    load 1 >/dev/null
    ( sleep 1; SQUALL_BIN=$bin ./scripts/cluster.sh start 3 >/dev/null ) &
    joiner=$!
    report=$(load $((DURATION_S + 2)) --no-preload)
    wait "$joiner"
    row "$label (a third node joins)" "$round" "$report" -
  done
done
