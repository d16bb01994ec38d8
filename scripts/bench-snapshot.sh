#!/usr/bin/env bash
# What a snapshot costs the requests around it: `loadgen kv` (50 clients,
# pipeline 16, half writes, 100-byte values, KEYS keys) against a 1-shard
# node that snapshots every SNAPSHOT_MB of WAL (several snapshots of the
# whole partition per run), reporting max / p99.9 / p99 latency and the
# snapshots taken with their durations.
#
#   ./scripts/bench-snapshot.sh                       this build, 3 rounds
#   OLD_BIN=/path/to/old/squall ./scripts/bench-snapshot.sh
#                                                     A/B, builds alternating
#   KEYS, SNAPSHOT_MB, DURATION_S, ROUNDS, FSYNC (batch), CLIENTS (8) and
#   PIPELINE (1) override the defaults.
#
# Each round also runs this build with no snapshot at all (`none`, a
# threshold it never reaches): the same load's max without one, since this
# machine's own jitter is of the order of the target (a few ms).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
SNAPSHOT_MB=${SNAPSHOT_MB:-8}
DURATION_S=${DURATION_S:-8}
ROUNDS=${ROUNDS:-3}
cargo build --release --locked -p dataplane -p loadgen >&2
NEW_BIN=target/release/squall
core_last=$(($(nproc) - 1))
TMP=$(mktemp -d)
NODE=""
trap '[ -n "$NODE" ] && kill "$NODE" 2>/dev/null; rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

builds=("new $NEW_BIN $SNAPSHOT_MB" "none $NEW_BIN 1000000")
[ -n "${OLD_BIN:-}" ] && builds=("old $OLD_BIN $SNAPSHOT_MB" "${builds[@]}")
for round in $(seq "$ROUNDS"); do
  for b in "${builds[@]}"; do
    read -r label bin snapshot_mb <<<"$b"
    port=$(free_port); dir="$TMP/$label-$round"
    taskset -c 0 "$bin" node --shards 1 --listen "127.0.0.1:$port" --data-dir "$dir" --fsync "${FSYNC:-batch}" \
      --snapshot-wal-mb "$snapshot_mb" >"$dir.out" 2>"$dir.err" &
    NODE=$!
    for _ in $(seq 100); do grep -q "squall ready" "$dir.out" 2>/dev/null && break; sleep 0.1; done
    report=$(taskset -c "$core_last" target/release/loadgen kv --addr "127.0.0.1:$port" --clients "${CLIENTS:-8}" --pipeline "${PIPELINE:-1}" \
      --keys "$KEYS" --value-bytes 100 --read-ratio 0.5 --zipf 0 --duration-s "$DURATION_S" --warmup-s 1 --json | tail -1)
    kill "$NODE"; wait "$NODE" 2>/dev/null || true; NODE=""
    snaps=$(grep -o "written in [0-9]* ms" "$dir.err" | awk '{print $3}' | paste -sd, - || true)
    python3 - "$label" "$round" "$snaps" <<PY
import json, sys
r = json.loads('''$report''')
label, rnd, snaps = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"| {label} | {rnd} | {r['ops_per_sec']:.0f} | {r['p99_us']:.0f} | {r['p999_us']:.0f} | {r['max_us']:.0f} | {snaps or '-'} |")
PY
  done
done | { echo "| build | round | ops/s | p99 us | p99.9 us | max us | snapshots (ms each, from the node log) |"; echo "|---|---|---|---|---|---|---|"; cat; }
