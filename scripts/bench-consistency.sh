#!/usr/bin/env bash
# Cloudburst's consistency experiment (issue #13) on a local three-node
# cluster (scripts/cluster.sh): `loadgen consistency` in each mode of MODES
# with the same workload, alternating modes over ROUNDS rounds so drift on
# a noisy machine hits every mode alike. Each line of results.jsonl is one
# run's report (calls, errors, p50/p99, anomalies per guarantee); the
# summary prints each mode's anomalies and its p99 as a ratio to lww's in
# the same round. A mode written `lww+atomic` runs atomic calls (each
# sink's writes one write set; reads never show part of one).
#
# Environment: CALLS (4000 per run), CLIENTS (8), KEYS (1000), ZIPF (1.0),
# READS (2 per level), WRITES (2), PAUSE_MS (0),
# MODES ("lww dsrr sk mk dsc lww+atomic dsrr+atomic"; mk and dsc calls are
# always atomic),
# ROUNDS (2), PORT (7600), CLUSTER_DIR (/tmp/squall-consistency),
# NODE_FLAGS (more `squall node` flags: `--spread-functions` runs each
# DAG's functions on the three nodes in turn, as Cloudburst's did).
# Writes under bench-results/consistency-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-results/consistency-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
cargo build --release --locked -p dataplane --bin squall -p loadgen --bin loadgen >&2
export CLUSTER_DIR=${CLUSTER_DIR:-/tmp/squall-consistency} PORT=${PORT:-7600}
./scripts/cluster.sh down >/dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
trap './scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
./scripts/cluster.sh up 3 >&2
addrs="127.0.0.2:$PORT,127.0.0.3:$PORT,127.0.0.4:$PORT"
for round in $(seq "${ROUNDS:-2}"); do
  for mode in ${MODES:-lww dsrr sk mk dsc lww+atomic dsrr+atomic}; do
    atomic=()
    [[ $mode == *+atomic ]] && atomic=(--atomic)
    target/release/loadgen consistency --json --addr "$addrs" --consistency "${mode%+atomic}" \
      "${atomic[@]}" \
      --calls "${CALLS:-4000}" --clients "${CLIENTS:-8}" --keys "${KEYS:-1000}" \
      --zipf "${ZIPF:-1.0}" --reads "${READS:-2}" --writes "${WRITES:-2}" \
      --pause-ms "${PAUSE_MS:-0}" --seed "$round" --prefix "r$round-$mode:" \
      | tail -n 1 | sed "s/^{/{\"round\":$round,/" | tee -a "$OUT/results.jsonl"
  done
done
python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/summary.txt"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
lww = {r["round"]: r for r in runs if r["consistency"] == "lww" and not r.get("atomic")}
print("| round | mode | calls | errors | p50 µs | p99 µs | p99 / lww | dsrr | sk | mk | dsc | ra | metadata B/key p50, p99 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in runs:
    base = lww.get(r["round"])
    ratio = f'{r["p99_us"] / base["p99_us"]:.2f}' if base else "-"
    a = r["anomalies"]
    mode = r["consistency"] + (" --atomic" if r.get("atomic") else "")
    print(f'| {r["round"]} | {mode} | {r["calls"]} | {r["errors"]} | {r["p50_us"]:.0f} '
          f'| {r["p99_us"]:.0f} | {ratio} | {a["dsrr"]} | {a["sk"]} | {a["mk"]} | {a["dsc"]} | {a["ra"]} '
          f'| {r["metadata_bytes_per_key_p50"]}, {r["metadata_bytes_per_key_p99"]} |')
PY
echo "written: $OUT" >&2
