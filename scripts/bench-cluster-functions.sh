#!/usr/bin/env bash
# Functions across the cluster (issue #13), measured with real node
# processes on loopback addresses (the integration tests' harness, in
# release):
#
# * write → subscribed cache: a function on node A reads a key node B
#   holds (A's cache, filled on the first read, kept fresh by B's pushes);
#   each of SQUALL_FRESHNESS_ROUNDS (500) writes at B is timed until a
#   function on A reads it. Prints p50/p99/max and how many reads B answered.
# * compile once per cluster: SQUALL_PRECOMPILED_ROUNDS (20) uploads of
#   the increment guest to A, on an open pair (B compiles) and on a pair
#   with authentication (B loads A's machine code): the registration's
#   round trip, B's time to make the function ready, B's first call.
# * a call sent beside its data: `inc_sq` of a reference to a key B
#   holds, called at B and at C (which sends it to B), and a ping to C
#   (the loopback floor), alternating; SQUALL_FORWARD_CALLS (2000) each.
# * a DAG's functions on two nodes: `square(increment(5))` called at A of
#   a pair under --spread-functions (increment at A, square at B), beside
#   its path's floor (a ping to A, then one to B) and the same call on a
#   node alone; SQUALL_ACROSS_CALLS (2000) each.
# * a chain node to node: sum(square(increment(5))) at A of three nodes
#   under --spread-functions, as a chain (A -> B -> C -> A) and with one
#   more edge that makes it no chain (A -> B -> A -> C -> A), alternating,
#   with a ping to each node; SQUALL_ACROSS_CALLS (2000) each.
# * work sent away from a saturated node: SQUALL_SHED_CLIENTS (32) clients
#   call sleep_ms(5) at a node alone and at A of a pair (one executor
#   each) for SQUALL_SHED_SECS (3) s, alternating, twice: calls/s, p50/p99.
#
# Writes the output under bench-results/cluster-functions-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-results/cluster-functions-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
./scripts/build-guests.sh >/dev/null
cargo build --release --locked -p dataplane --bin squall >&2
for t in spread::freshness spread::precompiled_cost spread::forwarded_cost across::across_cost across::chain_cost across::shed_gain; do
  cargo test --release --locked -p dataplane --test it "$t" -- --ignored --exact --nocapture 2>&1 \
    | grep -E '^(freshness|precompiled|forwarded|across|chain|shed):' | tee -a "$OUT/summary.txt"
done
echo "written: $OUT/summary.txt" >&2
