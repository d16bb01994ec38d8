#!/usr/bin/env bash
# Memory per key and restart time at KEYS keys of 100-byte values, Squall
# (one shard) beside Redis (appendonly, fsync every second), one after the
# other on the same machine:
#   - `loadgen kv` writes every key once (its preload), then reads for 1 s;
#   - memory per key: the server's RSS growth over the load / keys held;
#   - restart: kill -9, start again on the same data, time until it serves,
#     polled every 10 ms with redis-cli for both (Squall: a key reads back
#     through its RESP port; Redis: PING answers PONG, not LOADING). A
#     poller as heavy as `squall kv get` (a process of the whole node
#     binary) took a tenth of both cores during Squall's recovery.
#
#   ./scripts/bench-memory.sh            KEYS=2000000 by default; ROUNDS=1
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-2000000}
ROUNDS=${ROUNDS:-1}
cargo build --release --locked -p dataplane -p loadgen >&2
SQUALL=target/release/squall
LOADGEN=target/release/loadgen
TMP=$(mktemp -d)
SERVER=""
trap '[ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null; rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
load() { # TARGET ADDR
  "$LOADGEN" kv --target "$1" --addr "$2" --clients 8 --pipeline 16 --keys "$KEYS" \
    --value-bytes 100 --read-ratio 1 --zipf 0 --duration-s 1 --warmup-s 0 --json | tail -1 >/dev/null
}

squall_start() { # DIR PORT (RESP on PORT + 1)
  "$SQUALL" node --shards 1 --listen "127.0.0.1:$2" --resp-listen "127.0.0.1:$(($2 + 1))" \
    --data-dir "$1" --fsync batch \
    >>"$1.out" 2>>"$1.err" &
  SERVER=$!
}
squall_serves() { # PORT: the first key reads back
  [ -n "$(redis-cli -p "$(($1 + 1))" get key:0000000000 2>/dev/null)" ]
}
redis_start() { # DIR PORT
  mkdir -p "$1"
  redis-server --port "$2" --dir "$1" --save '' --appendonly yes --appendfsync everysec \
    --logfile "$1.log" &
  SERVER=$!
}
redis_serves() { # PORT
  [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]
}

run() { # NAME ROUND
  local name=$1 dir="$TMP/$1-$2" port t0 t1 base rss keys
  port=$(free_port)
  "${name}_start" "$dir" "$port"
  until serves_empty "$name" "$port"; do sleep 0.05; done
  base=$(rss_kb "$SERVER")
  if [ "$name" = squall ]; then load squall "127.0.0.1:$port"; else load redis "127.0.0.1:$port"; fi
  rss=$(rss_kb "$SERVER")
  if [ "$name" = squall ]; then
    keys=$("$SQUALL" cluster status --addr "127.0.0.1:$port" --json | python3 -c \
      'import json,sys; print(sum(m["live_keys"] for m in json.load(sys.stdin)["members"]))')
  else
    keys=$(redis-cli -p "$port" dbsize)
  fi
  sleep 1.5 # Redis: its everysec fsync; Squall: its batch sync
  kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true
  t0=$(now)
  "${name}_start" "$dir" "$port"
  until "${name}_serves" "$port"; do sleep 0.01; done
  t1=$(now)
  kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
  # Squall logs its own recovery time: "recovered N keys ... in M ms".
  recovery=$(grep -o 'recovered [0-9]* keys.* in [0-9]* ms' "$dir.err" 2>/dev/null | tail -1 |
    grep -o 'in [0-9]* ms' | grep -o '[0-9]*' || true)
  python3 - "$name" "$2" "$keys" "$base" "$rss" "$t0" "$t1" "${recovery:-}" <<'PY'
import sys
name, rnd, keys, base, rss, t0, t1, recovery = sys.argv[1:]
keys, base, rss = int(keys), int(base), int(rss)
recovery = f"{int(recovery) / 1000:.2f}" if recovery else "—"
print(f"| {name} | {rnd} | {keys} | {rss / 1024:.0f} | {(rss - base) * 1024 / keys:.0f} | {float(t1) - float(t0):.2f} | {recovery} |")
PY
}
# Before the load: answering at all (`kv get` exits 1 for a missing key).
serves_empty() { # NAME PORT
  if [ "$1" = redis ]; then redis_serves "$2"; return; fi
  local rc=0
  "$SQUALL" kv get key:0000000000 --addr "127.0.0.1:$2" >/dev/null 2>&1 || rc=$?
  [ "$rc" -le 1 ]
}

echo "| server | round | keys | RSS MB | bytes per key (RSS growth / keys) | restart s (kill -9 → serving) | of which recovery s (node log) |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  run redis "$round"
  run squall "$round"
done
