#!/usr/bin/env bash
# Client routing across nodes (issue #12): `loadgen kv` (16 clients ×
# pipeline 16, 100 000 keys, 90% reads) against a 3-node cluster for
# DURATION_S (default 12) seconds; a fourth node joins at 3 s and node 2
# leaves (`squall leave --wait`) at 7 s. Reports the load generator's
# throughput and errors, its clients' routing counters (batches answered in
# another epoch, view refreshes, failovers), and what the nodes forwarded
# (requests a client sent to a node holding no copy of the key) and saw
# with a stale epoch. A client that follows the view forwards at most one
# batch per epoch change. SQUALL_BIN / LOADGEN_BIN pick the binaries; PORT
# (default 7495); NODE_FLAGS as for cluster.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SQUALL=${SQUALL_BIN:-target/release/squall}
LOADGEN=${LOADGEN_BIN:-target/release/loadgen}
PORT=${PORT:-7495}
DURATION_S=${DURATION_S:-12}
OUT=bench-results/routing-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
dir=$(mktemp -d)
export CLUSTER_DIR=$dir PORT SQUALL_BIN=$SQUALL FSYNC=batch
trap './scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
./scripts/cluster.sh up 3 >/dev/null 2>&1

# Sums a member field of `cluster status --json` over the members asked.
sum_of() { # FIELD ADDR...
  local field=$1; shift
  for a in "$@"; do "$SQUALL" cluster status --addr "$a" --json; done | python3 -c "
import json, sys
total = 0
for line in sys.stdin:
    me = json.loads(line)
    total += sum(m.get('$field') or 0 for m in me['members'] if m['node'] == me['node'])
print(total)"
}
nodes="127.0.0.2:$PORT 127.0.0.3:$PORT 127.0.0.4:$PORT"

"$LOADGEN" kv --addr "127.0.0.2:$PORT" --clients 16 --pipeline 16 --keys 100000 \
  --duration-s "$DURATION_S" --warmup-s 1 --read-ratio 0.9 --timeout-ms 3000 --json ${LOADGEN_FLAGS:-} \
  2>"$OUT/loadgen.err" | tail -1 >"$OUT/loadgen.json" &
lg=$!
# The preload (100 000 keys) and the warm-up come first: wait for them.
for _ in $(seq 600); do
  [ "$(sum_of live_keys $nodes)" -ge 100000 ] 2>/dev/null && break
  sleep 0.1
done
sleep 1
before=$(sum_of node_forwards $nodes)
sleep 3
./scripts/cluster.sh start 4 2>>"$OUT/events.log"
echo "$(date +%T.%N) node 4 started" >>"$OUT/events.log"
sleep 4
"$SQUALL" leave --addr "127.0.0.3:$PORT" --wait >>"$OUT/events.log" 2>&1
echo "$(date +%T.%N) node 2 left" >>"$OUT/events.log"
wait "$lg"
after=$(sum_of node_forwards 127.0.0.2:$PORT 127.0.0.4:$PORT 127.0.0.5:$PORT)
stale=$(sum_of stale_epoch 127.0.0.2:$PORT 127.0.0.4:$PORT 127.0.0.5:$PORT)
python3 - "$OUT/loadgen.json" "$before" "$after" "$stale" <<'PY' | tee "$OUT/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
before, after, stale = (int(x) for x in sys.argv[2:5])
r = d.get("routing") or {}
print(f"{d['ops_per_sec']:.0f} ops/s, {d['ops']} requests, {d['errors']} errors, p99 {d['p99_us']:.0f} us")
print(f"clients: {r.get('stale_batches')} batches answered in another epoch, "
      f"{r.get('refreshes')} view refreshes, {r.get('failovers')} failovers (16 clients, 2 view changes)")
print(f"nodes: {after - before} requests forwarded to another node during the join and the leave "
      f"(node 2's own count not included: it left), {stale} requests with a stale epoch")
PY
echo "raw: $OUT"
