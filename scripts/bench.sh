#!/usr/bin/env bash
# Squall vs Redis, same load generator, same run.
#
#   ./scripts/bench.sh            full run (10 s per point, ~2 min + first build)
#   ./scripts/bench.sh --quick    1 s per point, 10k keys (smoke test)
#
# Builds release, installs redis-server if missing, starts a Squall node
# (temporary data dir, --fsync batch) and a Redis server (appendonly,
# appendfsync everysec: both write every put to the OS before replying and
# sync in the background), runs `loadgen kv` at pipeline 1 and 16 with 1 and
# 2 Squall shards, prints one table with the ratios, writes the JSON of every
# run under bench-results/, and stops what it started.
#
# Placement on a 2-core machine: the 1-shard node and Redis run on core 0,
# the load generator on core 1; the 2-shard node uses both cores and shares
# them with the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION_S=${DURATION_S:-10}
WARMUP_S=${WARMUP_S:-2}
KEYS=${KEYS:-100000}
CLIENTS=${CLIENTS:-50}
if [ "${1:-}" = "--quick" ]; then DURATION_S=1; WARMUP_S=0.5; KEYS=10000; fi

./scripts/install-deps.sh
echo "bench: building release binaries (first build takes ~2 min)" >&2
cargo build --release --locked -p dataplane -p loadgen >&2
SQUALL=target/release/squall
LOADGEN=target/release/loadgen

OUT=bench-results/kv-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ncpu=$(nproc)
core_last=$((ncpu - 1))

start_squall() { # shards cpus -> sets SQ_PID SQ_ADDR
  local shards=$1 cpus=$2 port; port=$(free_port)
  taskset -c "$cpus" "$SQUALL" node --shards "$shards" --listen "127.0.0.1:$port" \
    --data-dir "$TMP/squall-$shards" --fsync batch >"$TMP/squall-$shards.out" 2>"$TMP/squall-$shards.err" &
  SQ_PID=$!; PIDS+=("$SQ_PID")
  for _ in $(seq 100); do grep -q "squall ready" "$TMP/squall-$shards.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "squall ready" "$TMP/squall-$shards.out" || { cat "$TMP/squall-$shards.err" >&2; exit 1; }
  SQ_ADDR="127.0.0.1:$port"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

run() { # label target addr pid pipeline loadgen-cpus
  local label=$1 target=$2 addr=$3 pid=$4 p=$5 cpus=$6
  echo "bench: $label pipeline $p" >&2
  taskset -c "$cpus" "$LOADGEN" kv --target "$target" --addr "$addr" --clients "$CLIENTS" --pipeline "$p" \
    --duration-s "$DURATION_S" --warmup-s "$WARMUP_S" --keys "$KEYS" --value-bytes 100 --read-ratio 0.9 \
    --zipf 0.99 --server-pid "$pid" --json | tail -1 >"$OUT/$label-p$p.json"
}

# Redis, one thread, core 0.
RPORT=$(free_port)
mkdir -p "$TMP/redis"
taskset -c 0 redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
  --dir "$TMP/redis" --daemonize no --loglevel warning >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

for p in 1 16; do run redis redis "127.0.0.1:$RPORT" "$REDIS_PID" "$p" "$core_last"; done
stop "$REDIS_PID"

start_squall 1 0
for p in 1 16; do run squall-1shard squall "$SQ_ADDR" "$SQ_PID" "$p" "$core_last"; done
stop "$SQ_PID"

if [ "$ncpu" -ge 2 ]; then
  start_squall 2 "0-$core_last"
  for p in 1 16; do run squall-2shards squall "$SQ_ADDR" "$SQ_PID" "$p" "0-$core_last"; done
  stop "$SQ_PID"
fi

python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("*.json"))}
def per_core(r):
    c = r.get("server_cpu_pct") or 0
    return r["ops_per_sec"] / (c / 100) if c else float("nan")
print(f"\nSquall vs Redis, loadgen kv: {next(iter(rows.values()))['clients']} clients, 90% reads, 100-byte values, "
      f"{next(iter(rows.values()))['keys']} keys, zipf 0.99 ({out})\n")
hdr = ("run", "pipeline", "ops/s", "p50 us", "p99 us", "p99.9 us", "server cpu %", "ops per server core-s",
       "ops/s vs redis", "per core-s vs redis", "p99 vs redis")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for name, r in rows.items():
    label, p = name.rsplit("-p", 1)
    base = rows.get(f"redis-p{p}")
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
    print("| " + " | ".join([label, p, f"{r['ops_per_sec']:.0f}", f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}",
          f"{r['p999_us']:.0f}", f"{r.get('server_cpu_pct') or 0:.0f}", f"{per_core(r):.0f}",
          ratio(r["ops_per_sec"], base["ops_per_sec"]) if base else "-",
          ratio(per_core(r), per_core(base)) if base else "-",
          ratio(r["p99_us"], base["p99_us"]) if base else "-"]) + " |")
PY
