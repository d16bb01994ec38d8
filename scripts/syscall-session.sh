#!/usr/bin/env bash
# One node and the CLI through what a deployment does: start (joining a
# seed), keys, functions, an uploaded WebAssembly guest, a DAG, a stored
# model and a prediction, cluster status, `squall leave --wait`.
#
#   ./scripts/syscall-session.sh strace            prints the sorted, distinct
#                                                  system calls they made
#   ./scripts/syscall-session.sh seccomp PROFILE   runs it all under the seccomp
#                                                  profile (scripts/seccomp-exec.py);
#                                                  fails if any step fails
# SQUALL_BIN: the binary (default target/release/squall).
set -euo pipefail
cd "$(dirname "$0")/.."
SQUALL=${SQUALL_BIN:-target/release/squall}
mode=${1:?usage: syscall-session.sh strace | seccomp PROFILE}
T=$(mktemp -d)
trap 'kill $(cat "$T/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$T"' EXIT
case "$mode" in
  strace)
    command -v strace >/dev/null || { echo "syscall-session: strace is missing (scripts/install-deps.sh)" >&2; exit 2; }
    wrap() { local name=$1; shift; strace -f -qq -o "$T/trace.$name.$RANDOM$RANDOM" "$@"; } ;;
  seccomp)
    profile=${2:?usage: syscall-session.sh seccomp PROFILE}
    wrap() { shift; python3 scripts/seccomp-exec.py "$profile" "$@"; } ;;
  *) echo "syscall-session: unknown mode $mode" >&2; exit 2 ;;
esac
A=127.0.0.61:7470
cli() { wrap cli "$SQUALL" "$@" --addr "$A" >/dev/null 2>"$T/cli.err" || { echo "syscall-session: squall $* failed:" >&2; cat "$T/cli.err" >&2; exit 1; }; }
wrap node "$SQUALL" node --shards 2 --listen "$A" --data-dir "$T/data" \
  --fsync always --join 127.0.0.62:7470 >"$T/out" 2>"$T/err" &
echo $! >"$T/pid"
for _ in $(seq 300); do grep -q '^squall ready' "$T/out" && break; sleep 0.1; done
grep -q '^squall ready' "$T/out" || { echo "syscall-session: the node did not start" >&2; cat "$T/err" >&2; exit 1; }
cli kv put k v; cli kv get k; cli kv del k; cli kv stats
cli fn call increment 41; cli fn call incr_key visits
cli dag create compose --function increment --function square --edge increment:square
cli dag call compose --arg increment=41
wasm=guests/target/wasm32-unknown-unknown/release/increment.wasm
[ -f "$wasm" ] || ./scripts/build-guests.sh >/dev/null
cli fn register winc "$wasm" --memory-mb 16 --timeout-ms 100; cli fn call winc 41
M=../shared/models
cli model put squeezenet "$M/squeezenet1.1_fp32.onnx" --labels "$M/imagenet_labels.txt"
cli model pipeline; cli predict "$M/kitten_224.png"
cli cluster status
cli leave --wait
wait "$(cat "$T/pid")" || { echo "syscall-session: the node did not stop cleanly:" >&2; tail -5 "$T/err" >&2; exit 1; }
grep -q "node stopped cleanly" "$T/err" || { echo "syscall-session: no clean stop in the node's log" >&2; exit 1; }
# strace lines: `PID name(args...) = ...`; resumed and signal lines are skipped.
[ "$mode" = strace ] && cat "$T"/trace.* | sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' | sort -u
exit 0
