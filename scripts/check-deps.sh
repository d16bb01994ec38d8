#!/usr/bin/env bash
# Enforces the crate boundaries written in each crate's lib.rs, with cargo
# tree: an allow-list of the Squall crates each crate may depend on (directly
# or not), and the runtimes and heavy crates it must stay free of.
#   kvs-core:  no Squall crate; no runtime, no I/O crates
#   anomaly:   no Squall crate; no runtime (the consistency experiment's
#              records and checker)
#   wire:      no Squall crate; no runtime
#   models:    no Squall crate; no runtime (inference and images only)
#   client:    wire, and kvs-core for the cluster ring's specification; no glommio
#   executor:  kvs-core and anomaly only; no runtime, no wasmtime (reaches the store and
#              WebAssembly through traits)
#   wasm-host: executor (and what it brings); wasmtime, no network runtime
#   cluster:   kvs-core only; no runtime, no I/O crates (sans-I/O state machines)
#   loadgen:   client (with kvs-core), wire, models, anomaly (never the node); glommio only for the
#              runtime's echo floor it measures beside the node
#   benches:   the libraries it measures, never the node or the client
#   dataplane: everything but loadgen and benches (it is the node)
#   squall-python: client, wire (and kvs-core through client); never the node, no glommio
set -euo pipefail
cd "$(dirname "$0")/.."

SQUALL="kvs-core anomaly wire client executor wasm-host models cluster dataplane loadgen benches squall-python"
fail=0
deps() { cargo tree -p "$1" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u; }

# check CRATE "ALLOWED SQUALL CRATES" FORBIDDEN-THIRD-PARTY...
check() {
  local crate=$1 allowed=$2; shift 2
  local tree; tree=$(deps "$crate")
  if [ -z "$tree" ]; then
    echo "check-deps: cargo tree found nothing for $crate" >&2
    fail=1
    return
  fi
  for dep in $SQUALL; do
    [ "$dep" = "$crate" ] && continue
    if grep -qx "$dep" <<<"$tree" && ! grep -qw -- "$dep" <<<"$allowed"; then
      echo "check-deps: $crate may not depend on $dep (allowed: ${allowed:-none}; see $crate/src/lib.rs)" >&2
      fail=1
    fi
  done
  for bad in "$@"; do
    if grep -qx "$bad" <<<"$tree"; then
      echo "check-deps: $crate must not depend on $bad (see $crate/src/lib.rs)" >&2
      fail=1
    fi
  done
}

check kvs-core  ""                                              glommio tokio mio
check anomaly   ""                                              glommio tokio mio
check wire      ""                                              glommio tokio mio
check models    ""                                              glommio tokio mio
check client    "wire kvs-core"                                 glommio
check executor  "kvs-core anomaly"                              glommio tokio mio wasmtime
check wasm-host "executor kvs-core anomaly"                     glommio tokio mio
check cluster   "kvs-core"                                      glommio tokio mio
check loadgen   "client wire kvs-core models anomaly"
check benches   "executor kvs-core models wasm-host wire anomaly" glommio tokio
check dataplane "kvs-core anomaly wire client executor wasm-host models cluster"
check squall-python "client wire kvs-core"                      glommio
[ $fail -eq 0 ] && echo "check-deps: crate boundaries hold"
exit $fail
