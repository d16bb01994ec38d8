#!/usr/bin/env bash
# The Python client's overhead over the Rust client's (issue #14): starts a
# node (one shard, on 127.0.0.1:7470), installs the client into
# target/python-venv (scripts/python-env.sh), and runs
# python/bench/overhead.py: square(increment(41)), SQUALL_PY_CALLS (10000)
# serial calls from Python and from the Rust client, interleaved call by
# call on one connection, then `loadgen compose` (the Rust client in its own
# process) beside it. Writes the output under bench-results/python-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-results/python-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
cargo build --release --locked -p dataplane --bin squall -p loadgen >&2
venv=$(./scripts/python-env.sh)
ADDR=127.0.0.1:7470
data=$(mktemp -d)
target/release/squall node --listen "$ADDR" --data-dir "$data" --shards 1 --fsync never \
  >"$OUT/node.log" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  grep -q "squall ready" "$OUT/node.log" && break
  sleep 0.1
done
"$venv/bin/python" python/bench/overhead.py --addr "$ADDR" --calls "${SQUALL_PY_CALLS:-10000}" \
  | tee "$OUT/summary.txt"
echo "written: $OUT/summary.txt" >&2
