#!/usr/bin/env bash
# A local Squall cluster: N node processes, each on its own loopback
# address (node K on 127.0.0.(K+1):PORT, K = 1..N), joined through node 1.
#
#   ./scripts/cluster.sh up N      start N nodes; returns once every node is
#                                  up in node 1's view (≤ 30 s)
#   ./scripts/cluster.sh status    `squall cluster status` from the first live node
#   ./scripts/cluster.sh kill K    kill -9 node K (a crash)
#   ./scripts/cluster.sh start K   start node K again on its data (it rejoins)
#   ./scripts/cluster.sh down      stop every node (SIGTERM; they leave, flush, exit)
#
# Environment: SQUALL_BIN (default target/release/squall, built if missing),
# CLUSTER_DIR (data, logs, pids; default /tmp/squall-cluster), PORT (7400),
# SHARDS per node (1), FSYNC (batch), NODE_FLAGS (more `squall node` flags).
# Every address in 127.0.0.0/8 works on Linux without set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

SQUALL=${SQUALL_BIN:-target/release/squall}
DIR=${CLUSTER_DIR:-/tmp/squall-cluster}
PORT=${PORT:-7400}
SHARDS=${SHARDS:-1}
FSYNC=${FSYNC:-batch}

addr() { echo "127.0.0.$(($1 + 1)):$PORT"; }
pid_of() { cat "$DIR/n$1.pid" 2>/dev/null || true; }
alive() { # running, and not a zombie waiting to be reaped
  local p; p=$(pid_of "$1")
  [ -n "$p" ] && [ -r "/proc/$p/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$p/stat" 2>/dev/null
}
nodes() { ls "$DIR" 2>/dev/null | sed -n 's/^n\([0-9]*\)\.pid$/\1/p' | sort -n; }

start() { # K: starts node K, waits for its ready line
  local k=$1 join=()
  [ "$k" -ne 1 ] && join=(--join "$(addr 1)")
  alive "$k" && { echo "cluster: node $k already runs (pid $(pid_of "$k"))" >&2; return 0; }
  mkdir -p "$DIR"
  # shellcheck disable=SC2086 # NODE_FLAGS is a list of flags
  "$SQUALL" node --shards "$SHARDS" --listen "$(addr "$k")" --data-dir "$DIR/n$k" \
    --fsync "$FSYNC" "${join[@]}" ${NODE_FLAGS:-} >"$DIR/n$k.out" 2>>"$DIR/n$k.log" &
  echo $! >"$DIR/n$k.pid"
  for _ in $(seq 300); do
    grep -q '^squall ready' "$DIR/n$k.out" 2>/dev/null && {
      echo "cluster: node $k ready on $(addr "$k") (pid $(pid_of "$k"), log $DIR/n$k.log)" >&2
      return 0
    }
    alive "$k" || { echo "cluster: node $k failed to start:" >&2; tail -5 "$DIR/n$k.log" >&2; return 1; }
    sleep 0.1
  done
  echo "cluster: node $k not ready within 30 s" >&2
  return 1
}

first_live() { for k in $(nodes); do alive "$k" && { addr "$k"; return 0; }; done; return 1; }

case "${1:-}" in
  up)
    n=${2:?usage: cluster.sh up N}
    [ -x "$SQUALL" ] || cargo build --release --locked -p dataplane >&2
    for k in $(seq "$n"); do start "$k"; done
    for _ in $(seq 300); do
      up=$("$SQUALL" cluster status --addr "$(addr 1)" --json 2>/dev/null |
        python3 -c 'import json,sys; print(sum(m["state"]=="up" for m in json.load(sys.stdin)["members"]))' \
        2>/dev/null || echo 0)
      [ "$up" -ge "$n" ] && { echo "cluster: $n node(s) up" >&2; exit 0; }
      sleep 0.1
    done
    echo "cluster: only $up of $n nodes up after 30 s" >&2
    exit 1
    ;;
  status)
    a=$(first_live) || { echo "cluster: no node runs (in $DIR)" >&2; exit 1; }
    exec "$SQUALL" cluster status --addr "$a" "${@:2}"
    ;;
  kill)
    k=${2:?usage: cluster.sh kill K}
    alive "$k" || { echo "cluster: node $k does not run" >&2; exit 1; }
    kill -9 "$(pid_of "$k")"
    for _ in $(seq 100); do alive "$k" || break; sleep 0.05; done
    echo "cluster: node $k killed (kill -9)" >&2
    ;;
  start)
    start "${2:?usage: cluster.sh start K}"
    ;;
  down)
    for k in $(nodes); do alive "$k" && kill -TERM "$(pid_of "$k")"; done
    for k in $(nodes); do
      for _ in $(seq 300); do alive "$k" || break; sleep 0.1; done
      alive "$k" && { echo "cluster: node $k ignored SIGTERM for 30 s; killing" >&2; kill -9 "$(pid_of "$k")"; }
      rm -f "$DIR/n$k.pid"
    done
    echo "cluster: down (data and logs stay in $DIR)" >&2
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]
    ;;
esac
