#!/usr/bin/env bash
# Atomic calls (issue #13, `--atomic`): effects once under re-runs, with
# real node processes (the integration tests' harness, in release).
#
# * SQUALL_ATOMIC_CALLS (500) atomic `incr_key` calls per fail point, the
#   first run of each failing right before its commit record is applied
#   (`atomic::before-apply`) or right after (`atomic::after-apply`): each
#   call runs twice, and the counter must end at the number of calls.
# * CRASHES (20) times: three nodes, two copies of each key; the node a
#   call goes to dies (abort) right after applying its record; the node
#   that sent the call runs it again, which must not add a second effect.
#
# * the cost: SQUALL_ATOMIC_COST_CALLS (2000) `incr_key` calls, plain and
#   atomic alternating, on one node and on two (keys and records spread).
#
# The cost of --atomic on Cloudburst's experiment: MODES="lww lww+atomic"
# ./scripts/bench-consistency.sh. Writes bench-results/atomic-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-results/atomic-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
cargo build --release --locked --workspace --bins >&2
SQUALL_ATOMIC_CALLS=${SQUALL_ATOMIC_CALLS:-500} cargo test --release --locked --workspace \
  --test it atomic::a_call_whose_first_run_fails_at_its_commit_takes_effect_once \
  -- --exact --nocapture 2>&1 | grep -E '^atomic:' | tee -a "$OUT/summary.txt"
crashes=${CRASHES:-20}
for i in $(seq "$crashes"); do
  cargo test --release --locked --workspace --test it \
    atomic::an_atomic_call_whose_node_dies_after_applying_runs_again_and_takes_effect_once \
    -- --exact >"$OUT/crash-$i.log" 2>&1 || { echo "crash run $i failed: $OUT/crash-$i.log" >&2; exit 1; }
done
echo "atomic: $crashes node deaths right after applying a record, each call run again elsewhere: 0 duplicate effects" \
  | tee -a "$OUT/summary.txt"
cargo test --release --locked --workspace --test it atomic::cost -- --ignored --exact --nocapture \
  2>&1 | grep -E '^atomic cost' | tee -a "$OUT/summary.txt"
echo "written: $OUT/summary.txt" >&2
