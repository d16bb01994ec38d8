#!/usr/bin/env bash
# Enforces the crate boundaries written in each crate's lib.rs, with cargo tree.
#   kvs-core: no runtime, no I/O crates, no other Squall crate
#   wire:     no other Squall crate, no runtime
#   client:   of Squall crates only wire
#   loadgen:  of Squall crates only client, wire and models (never the node); glommio
#             only for the runtime's echo floor it measures beside the node
#   executor: no runtime, never the node (reaches the store through a trait)
#   wasm-host: wasmtime and executor only: no network runtime, never the node
#   models:   no Squall crate, no runtime (inference and images only)
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
deps() { cargo tree -p "$1" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u; }
forbid() {
  local crate=$1; shift
  local tree; tree=$(deps "$crate")
  for bad in "$@"; do
    if grep -qx "$bad" <<<"$tree"; then
      echo "check-deps: $crate must not depend on $bad (see $crate/src/lib.rs)" >&2
      fail=1
    fi
  done
}
forbid kvs-core glommio tokio mio wire client dataplane loadgen
forbid wire glommio tokio mio kvs-core client dataplane loadgen
forbid client glommio kvs-core dataplane loadgen
forbid loadgen kvs-core dataplane executor
forbid executor glommio tokio dataplane loadgen client wasmtime wasm-host
forbid wasm-host glommio tokio mio dataplane loadgen client wire
forbid models glommio tokio mio kvs-core wire client executor wasm-host dataplane loadgen
[ $fail -eq 0 ] && echo "check-deps: crate boundaries hold"
exit $fail
