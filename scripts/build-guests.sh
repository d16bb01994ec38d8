#!/usr/bin/env bash
# Builds the guest SDK's example WebAssembly functions (guests/) for
# wasm32-unknown-unknown, adding that target to the toolchain if missing.
# Output: guests/target/wasm32-unknown-unknown/release/<name>.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "build-guests: adding the wasm32-unknown-unknown target (rustup)" >&2
  rustup target add wasm32-unknown-unknown >&2
fi
cargo build --release --locked --target wasm32-unknown-unknown --manifest-path guests/Cargo.toml >&2
ls guests/target/wasm32-unknown-unknown/release/*.wasm
