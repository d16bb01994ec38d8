#!/usr/bin/env bash
# The whole test suite, exactly what CI runs: format, lints, every test
# (unit, property, integration with real processes), benches in test mode,
# the crate-boundary check, the docs (a broken link fails) and the
# deployment files (Kubernetes, seccomp, systemd, launch scripts). One profile
# (release) so the binaries the tests start are the ones users run, and the
# build is done once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# glommio needs locked memory for io_uring (512 KiB per shard); tests run
# nodes with up to 2 shards, several at once.
if [ "$(ulimit -l)" != unlimited ] && [ "$(ulimit -l)" -lt 4096 ]; then
  echo "test.sh: locked-memory limit is $(ulimit -l) KiB; the tests need >= 4096 KiB (ulimit -l 4096)" >&2
  exit 1
fi

step() { echo; echo "== $*"; }
# (Two commands, not `a && b`: `set -e` does not stop at a failure on the
# left of `&&`, which once let an unformatted change through.)
step "format";       cargo fmt --all -- --check
cargo fmt --all --manifest-path guests/Cargo.toml -- --check
step "guests";       ./scripts/build-guests.sh
step "clippy";       cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo clippy --release --locked --target wasm32-unknown-unknown --manifest-path guests/Cargo.toml -- -D warnings
step "boundaries";   ./scripts/check-deps.sh
step "docs";         RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --workspace --locked --document-private-items
# The binaries first: integration tests start `squall` and `loadgen`
# (cargo builds only a package's own binaries for its tests).
step "tests";        cargo build --release --workspace --bins --locked
cargo test --release --workspace --all-targets --locked
# The connection tests once more on the io_uring socket path (`--net uring`,
# through the environment every node inherits): limits, deadlines, refusals,
# bad input, RESP, shutdown, every lattice. `--workspace`, not `-p dataplane`:
# the same feature set as the step above, so nothing is rebuilt.
step "uring path";   SQUALL_NET=uring cargo test --release --locked --workspace --test it -- \
  resp:: hardening:: bad_input:: shutdown:: e2e:: auth::
# The sans-I/O cores once more with debug assertions on (their invariants).
step "debug asserts"; cargo test --locked -p kvs-core -p executor -p wire --lib
step "doc tests";    cargo test --release --workspace --doc --locked
# The Python client, installed as users install it (`pip install ./python`,
# into target/python-venv), then its tests against real nodes (pytest), its
# type stubs against the native module (stubtest) and the package and
# examples against the stubs (mypy --strict).
step "python";       venv=$(./scripts/python-env.sh)
"$venv/bin/pytest" -q python/tests
"$venv/bin/python" -m mypy.stubtest squall._native
"$venv/bin/python" -m mypy --strict python/squall python/examples
step "deploy";       ./scripts/check-deploy.sh
echo; echo "test.sh: all checks passed"
