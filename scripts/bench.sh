#!/usr/bin/env bash
# Squall vs Redis, same load generator, same run.
#
#   ./scripts/bench.sh            full run: 3 rounds x 6 points x ~10 s (~4 min + first build)
#   ./scripts/bench.sh --quick    1 round, 1 s per point, 10k keys (smoke test)
#   DURATION_S, WARMUP_S, ROUNDS, KEYS, CLIENTS override the defaults;
#   SQUALL_BIN runs another build of the node (an A/B against an old commit).
#
# Builds release, installs redis-server if missing, starts a Squall node
# (temporary data dir, --fsync batch) and a Redis server (appendonly,
# appendfsync everysec: both write every put to the OS before replying and
# sync in the background), runs `loadgen kv` at pipeline 1 and 16 with 1 and
# 2 Squall shards and against Squall's RESP port, then the same store
# under redis-benchmark (Redis vs Squall's RESP port), then `loadgen compose` and `loadgen call` (functions,
# beside a loopback floor and the same echo on glommio) and composition
# throughput with 1 and 2 shards, the SqueezeNet prediction pipeline
# beside its in-process floors (and onnxruntime's inference time), prints the tables with the ratios, writes the
# JSON of every run (and latency CDF plots) under bench-results/, and stops
# what it started.
#
# Placement on a 2-core machine: the 1-shard node and Redis run on core 0,
# the load generator on core 1; the 2-shard node uses both cores and shares
# them with the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION_S=${DURATION_S:-8}
WARMUP_S=${WARMUP_S:-2}
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-100000}
CLIENTS=${CLIENTS:-50}
if [ "${1:-}" = "--quick" ]; then DURATION_S=1; WARMUP_S=0.5; KEYS=10000; ROUNDS=1; fi

./scripts/install-deps.sh
echo "bench: building release binaries (first build takes ~8 min)" >&2
cargo build --release --locked -p dataplane -p loadgen >&2
./scripts/build-guests.sh >/dev/null
SQUALL=${SQUALL_BIN:-target/release/squall}
LOADGEN=target/release/loadgen

OUT=bench-results/$(date +%Y%m%d-%H%M%S)
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

start_squall() { # shards cpus [node flags...] -> sets SQ_PID SQ_ADDR
  local shards=$1 cpus=$2 port; shift 2; port=$(free_port)
  local name="squall-$shards-$port"
  taskset -c "$cpus" "$SQUALL" node --shards "$shards" --listen "127.0.0.1:$port" \
    --data-dir "$TMP/$name" --fsync batch "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  SQ_PID=$!; PIDS+=("$SQ_PID")
  for _ in $(seq 100); do grep -q "squall ready" "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "squall ready" "$TMP/$name.out" || { cat "$TMP/$name.err" >&2; exit 1; }
  SQ_ADDR="127.0.0.1:$port"
}
# All servers start once and stay up; idle ones cost nothing. Runs are
# interleaved (redis, squall 1 shard, squall 2 shards, per pipeline, per
# round) so that drifts in this shared machine hit every target alike; the
# table reports the median of the rounds.
RPORT=$(free_port)
mkdir -p "$TMP/redis"
taskset -c 0 redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
  --dir "$TMP/redis" --daemonize no --loglevel warning >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
SQ1_RESP_PORT=$(free_port)
start_squall 1 0 --resp-listen "127.0.0.1:$SQ1_RESP_PORT"; SQ1_PID=$SQ_PID; SQ1_ADDR=$SQ_ADDR
targets=("redis redis 127.0.0.1:$RPORT $REDIS_PID $core_last" "squall-1shard squall $SQ1_ADDR $SQ1_PID $core_last"
         "squall-resp-1shard redis 127.0.0.1:$SQ1_RESP_PORT $SQ1_PID $core_last")
# The same node with its sockets on a ring of its own (`--net uring`),
# beside the default path in the same run (redis-benchmark only).
SQU_RESP_PORT=$(free_port)
start_squall 1 0 --resp-listen "127.0.0.1:$SQU_RESP_PORT" --net uring; SQU_PID=$SQ_PID
if [ "$ncpu" -ge 2 ]; then
  start_squall 2 "0-$core_last"
  targets+=("squall-2shards squall $SQ_ADDR $SQ_PID 0-$core_last")
fi

for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    for t in "${targets[@]}"; do
      read -r label target addr pid cpus <<<"$t"
      preload=""; [ "$round" -gt 1 ] && preload="--no-preload"
      echo "bench: round $round/$ROUNDS $label pipeline $p" >&2
      taskset -c "$cpus" "$LOADGEN" kv --target "$target" --addr "$addr" --clients "$CLIENTS" --pipeline "$p" \
        --duration-s "$DURATION_S" --warmup-s "$WARMUP_S" --keys "$KEYS" --value-bytes 100 --read-ratio 0.9 \
        --zipf 0.99 --server-pid "$pid" $preload --json | tail -1 >"$OUT/$label-p$p-r$round.json"
    done
  done
done

# The same store under Redis's own load generator: redis-benchmark (C,
# one thread, on the last core) against Redis and Squall's RESP port (both
# on core 0; Squall on both socket paths), GET and SET apart, 50 clients, 100-byte values, KEYS random
# keys, pipeline 1 and 16, interleaved rounds. Server CPU comes from
# /proc/PID/stat around each run.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RB_OPS_PER_S=${RB_OPS_PER_S:-40000}  # sizes -n: ~DURATION_S per run at pipeline 1 (x10 at 16)
for round in $(seq "$ROUNDS"); do
  for p in 1 16; do
    n=$((RB_OPS_PER_S * ${DURATION_S%.*} * (p == 1 ? 1 : 10)))
    for t in "redis $RPORT $REDIS_PID" "squall-resp-1shard $SQ1_RESP_PORT $SQ1_PID" \
             "squall-resp-uring $SQU_RESP_PORT $SQU_PID"; do
      read -r label port pid <<<"$t"
      for test in set get; do
        echo "bench: round $round/$ROUNDS redis-benchmark $label $test pipeline $p" >&2
        c0=$(cpu_ticks "$pid"); t0=$(date +%s%N)
        taskset -c "$core_last" redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -n "$n" -c "$CLIENTS" \
          -P "$p" -d 100 -r "$KEYS" --csv 2>/dev/null | tail -1 >"$TMP/rb.csv"
        t1=$(date +%s%N); c1=$(cpu_ticks "$pid")
        python3 - "$TMP/rb.csv" "$((c1 - c0))" "$(getconf CLK_TCK)" "$(((t1 - t0) / 1000))" \
          >"$OUT/rb-$label-$test-p$p-r$round.json" <<'PY'
import csv, json, sys
row = next(csv.reader(open(sys.argv[1])))
ticks, hz, wall_us = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({"test": row[0], "ops_per_sec": float(row[1]), "p50_us": float(row[4]) * 1000,
                  "p99_us": float(row[6]) * 1000, "max_us": float(row[7]) * 1000,
                  "server_cpu_pct": 100 * ticks / hz / (wall_us / 1e6)}))
PY
      done
    done
  done
done

# Functions: square(increment(x)) and a single call, serially, each beside
# a loopback echo floor measured in the same run (echo thread on core 0,
# like the 1-shard node); interleaved rounds; CDF plots next to the JSON.
CALLS=${CALLS:-10000}; [ "${1:-}" = "--quick" ] && CALLS=1000
# The same on a node whose shard spins 50 us before sleeping (the bounded
# spin the design offers: a core's idle cycles for fewer wake-ups).
start_squall 1 0 --spin-before-park-us 50; SQ1S_ADDR=$SQ_ADDR
for round in $(seq "$ROUNDS"); do
  for mode in compose call; do
    echo "bench: round $round/$ROUNDS $mode" >&2
    taskset -c "$core_last" "$LOADGEN" "$mode" --addr "$SQ1_ADDR" --calls "$CALLS" --warmup $((CALLS / 10)) \
      --echo-cpu 0 --out "$OUT/fn-r$round" --json >/dev/null
    taskset -c "$core_last" "$LOADGEN" "$mode" --addr "$SQ1S_ADDR" --calls "$CALLS" --warmup $((CALLS / 10)) \
      --echo-cpu 0 --out "$OUT/fnspin-r$round" --json >/dev/null
  done
  # The same composition with uploaded WebAssembly guests (first round:
  # the upload is timed; later rounds re-register the same bytes).
  echo "bench: round $round/$ROUNDS compose, WebAssembly guests" >&2
  taskset -c "$core_last" "$LOADGEN" compose --functions wasm --addr "$SQ1_ADDR" --calls "$CALLS" \
    --warmup $((CALLS / 10)) --echo-cpu 0 --out "$OUT/fn-r$round" --json >/dev/null
done

# Throughput: 16 closed-loop clients calling square(increment(x)); the
# 2-shard node with clients spread over both shards (each keeps a copy of
# the DAG).
TPUT_CALLS=${TPUT_CALLS:-100000}; [ "${1:-}" = "--quick" ] && TPUT_CALLS=5000
for round in $(seq "$ROUNDS"); do
  echo "bench: round $round/$ROUNDS compose throughput" >&2
  taskset -c "$core_last" "$LOADGEN" compose --addr "$SQ1_ADDR" --calls "$TPUT_CALLS" --warmup 500 --clients 16 \
    --json | tail -1 >"$OUT/tput-1shard-r$round.json"
  if [ "$ncpu" -ge 2 ]; then
    taskset -c "0-$core_last" "$LOADGEN" compose --addr "$SQ_ADDR" --calls "$TPUT_CALLS" --warmup 500 --clients 16 \
      --spread --json | tail -1 >"$OUT/tput-2shards-r$round.json"
  fi
done

# Prediction serving: the SqueezeNet pipeline (preprocess -> 3 replicas ->
# average -> top-5) on a 1-shard node with 3 executors the OS may place on
# any core (three 20 ms inferences over two cores), one client; loadgen
# measures the in-process floors (sequential, replicas on threads) in the
# same run, phases interleaved. Then onnxruntime's time for one inference
# (reference only; installed from PyPI into target/ort-venv).
SQZ_CALLS=${SQZ_CALLS:-200}
start_squall 1 "0-$core_last" --executors-per-shard 3 --executors-float; SQP_ADDR=$SQ_ADDR
echo "bench: squeezenet pipeline ($SQZ_CALLS calls of each phase)" >&2
if [ "${1:-}" = "--quick" ]; then sqz_flags=(--quick); else sqz_flags=(--calls "$SQZ_CALLS"); fi
"$LOADGEN" squeezenet --addr "$SQP_ADDR" "${sqz_flags[@]}" --out "$OUT/squeezenet" --json >/dev/null
./scripts/onnxruntime-reference.sh 100 2>/dev/null | tail -1 >"$OUT/squeezenet/onnxruntime.json" ||
  echo "bench: onnxruntime reference unavailable (no PyPI?)" >&2

python3 - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
runs = {}
for f in (f for f in sorted(out.glob("*-p*-r*.json")) if not f.name.startswith("rb-")):
    label, p, _ = f.stem.rsplit("-", 2)
    runs.setdefault((label, p[1:]), []).append(json.loads(f.read_text()))
def med(rs, k): return statistics.median(r.get(k) or 0 for r in rs)
def per_core(rs): return statistics.median(r["ops_per_sec"] / (r["server_cpu_pct"] / 100) for r in rs if r.get("server_cpu_pct"))
any_run = next(iter(runs.values()))[0]
rounds = len(next(iter(runs.values())))
print(f"\nSquall vs Redis, loadgen kv: {any_run['clients']} clients, 90% reads, 100-byte values, {any_run['keys']} keys, "
      f"zipf 0.99; median of {rounds} interleaved round(s) ({out})\n")
hdr = ("run", "pipeline", "ops/s", "p50 us", "p99 us", "p99.9 us", "server cpu %", "ops per server core-s",
       "ops/s vs redis", "per core-s vs redis", "p99 vs redis")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for (label, p), rs in sorted(runs.items(), key=lambda kv: (int(kv[0][1]), kv[0][0])):
    base = runs.get(("redis", p))
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
    print("| " + " | ".join([label, p, f"{med(rs, 'ops_per_sec'):.0f}", f"{med(rs, 'p50_us'):.0f}",
          f"{med(rs, 'p99_us'):.0f}", f"{med(rs, 'p999_us'):.0f}", f"{med(rs, 'server_cpu_pct'):.0f}",
          f"{per_core(rs):.0f}", ratio(med(rs, 'ops_per_sec'), med(base, 'ops_per_sec')),
          ratio(per_core(rs), per_core(base)), ratio(med(rs, 'p99_us'), med(base, 'p99_us'))]) + " |")

rb = {}
for f in sorted(out.glob("rb-*-p*-r*.json")):
    label, test, p, _ = f.stem[len("rb-"):].rsplit("-", 3)
    rb.setdefault((test, p[1:], label), []).append(json.loads(f.read_text()))
if rb:
    print(f"\nSquall's RESP port vs Redis under redis-benchmark: {any_run['clients']} clients, 100-byte values, "
          f"{any_run['keys']} random keys; server on core 0, redis-benchmark on another; "
          f"median of {len(next(iter(rb.values())))} interleaved round(s)\n")
    hdr = ("test", "pipeline", "server", "ops/s", "p50 us", "p99 us", "server cpu %", "ops per server core-s",
           "per core-s vs redis", "p99 vs redis")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for (test, p, label), rs in sorted(rb.items(), key=lambda kv: (kv[0][0], int(kv[0][1]), kv[0][2] != "redis")):
        base = rb.get((test, p, "redis"))
        ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
        print("| " + " | ".join([test, p, label, f"{med(rs, 'ops_per_sec'):.0f}", f"{med(rs, 'p50_us'):.0f}",
              f"{med(rs, 'p99_us'):.0f}", f"{med(rs, 'server_cpu_pct'):.0f}", f"{per_core(rs):.0f}",
              ratio(per_core(rs), per_core(base)), ratio(med(rs, 'p99_us'), med(base, 'p99_us'))]) + " |")

fn = {}
for f in sorted(out.glob("fn-r*/*.json")):
    fn.setdefault(f.stem, []).append(json.loads(f.read_text()))
for f in sorted(out.glob("fnspin-r*/*.json")):
    fn.setdefault(f.stem + "-spin", []).append(json.loads(f.read_text()))
if fn:
    print(f"\nFunctions, one client, serial calls, 1-shard node; median of {len(next(iter(fn.values())))} round(s); "
          f"CDF plots: {out}/fn-r*/*-cdf.svg\n")
    print("| system | median | p99 | floor median | floor p99 | median / floor | p99 / floor | glommio echo median | median / glommio echo |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = {"compose": "Squall square(increment(x))", "call": "Squall increment (single call)",
             "compose-spin": "... same, shard spins 50 us before parking", "call-spin": "... same, shard spins 50 us before parking",
             "compose-wasm": "Squall square(increment(x)), WebAssembly guests"}
    for mode in ("compose", "compose-spin", "compose-wasm", "call", "call-spin"):
        rs = fn.get(mode, [])
        if rs:
            m = lambda k: statistics.median(r[k] for r in rs)
            g = statistics.median(r.get("glommio_floor_p50_us") or 0 for r in rs)
            gtxt = f"{g:.1f} us | {m('p50_us') / g:.2f}x" if g else "- | -"
            print(f"| {names[mode]} | {m('p50_us'):.1f} us | {m('p99_us'):.1f} us | {m('floor_p50_us'):.1f} us | "
                  f"{m('floor_p99_us'):.1f} us | {m('ratio_p50_to_floor'):.2f}x | {m('ratio_p99_to_floor'):.2f}x | {gtxt} |")
    print("| Cloudburst square(increment(x)) (paper) | 3590 us | 6370 us | | | | | | |")
    print("| AWS Lambda, direct (paper) | 79600 us | 178000 us | | | | | | |")
    if fn.get("compose-wasm") and fn.get("compose"):
        w = statistics.median(r["p50_us"] for r in fn["compose-wasm"])
        n = statistics.median(r["p50_us"] for r in fn["compose"])
        up = fn["compose-wasm"][0]
        print(f"\nWebAssembly composition / native: {w / n:.2f}x at the median. Upload (first round): registration "
              f"{', '.join(f'{x:.1f}' for x in up.get('upload_register_ms', []))} ms, then first call "
              f"{', '.join(f'{x:.0f}' for x in up.get('upload_first_call_us', []))} us (increment, square)\n")

tput = {}
for f in sorted(out.glob("tput-*-r*.json")):
    tput.setdefault(f.stem.rsplit("-", 1)[0][len("tput-"):], []).append(json.loads(f.read_text()))
sq = out / "squeezenet" / "squeezenet.json"
if sq.exists():
    r = json.loads(sq.read_text())
    print(f"\nSqueezeNet pipeline ({r['replicas']} replicas), one client, {r['calls']} calls of each: {r['top1']}\n")
    print("| system | median | p99 |")
    print("|---|---|---|")
    for name, k in (("Squall pipeline (this run)", ""), ("in-process, replicas on threads (this run, floor)", "parallel_"),
                    ("in-process, sequential (this run)", "sequential_")):
        print(f"| {name} | {r[k + 'p50_us'] / 1000:.1f} ms | {r[k + 'p99_us'] / 1000:.1f} ms |")
    for name, a, b in (("Cloudburst (paper)", 90.6, 122.9), ("plain Python, sequential (paper)", 153.8, 156.3),
                       ("AWS SageMaker (paper)", 282.2, 361.7)):
        print(f"| {name} | {a} ms | {b} ms |")
    print(f"\npipeline / sequential {r['ratio_p50_to_sequential']:.2f}x at the median (target <= 0.70); "
          f"overhead over the parallel floor {r['overhead_p50_us'] / 1000:.2f} ms (target <= 1 ms)")
    ort = out / "squeezenet" / "onnxruntime.json"
    if ort.exists() and ort.read_text().strip():
        o = json.loads(ort.read_text())
        print(f"one inference: tract {r['model_p50_us'] / 1000:.1f} ms, onnxruntime {o['onnxruntime']} "
              f"{o['one_thread_p50_us'] / 1000:.1f} ms on one thread ({r['model_p50_us'] / o['one_thread_p50_us']:.2f}x; target <= 1.3x), "
              f"{o['default_threads_p50_us'] / 1000:.1f} ms on all cores")
if tput:
    print(f"\nComposition throughput, 16 clients; median of {len(next(iter(tput.values())))} round(s)\n")
    print("| node | compositions/s | median | p99 |")
    print("|---|---|---|---|")
    for label, rs in sorted(tput.items()):
        m = lambda k: statistics.median(r[k] for r in rs)
        print(f"| {label} | {m('ops_per_sec'):.0f} | {m('p50_us'):.0f} us | {m('p99_us'):.0f} us |")
PY
