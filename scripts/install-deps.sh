#!/usr/bin/env bash
# Installs what the project needs beyond the Rust toolchain, if missing:
#   - redis-server (the benchmark's comparison target; Debian package)
#   - the wasm32-unknown-unknown Rust target (the example guests; rustup)
#   - strace and libseccomp (scripts/check-deploy.sh: the seccomp profile)
# Safe to run repeatedly. Run as root (or with sudo available).
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 || need_apt+=(libseccomp2)

if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "install-deps: installing ${need_apt[*]} (apt)" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "install-deps: adding the wasm32-unknown-unknown target (rustup)" >&2
  rustup target add wasm32-unknown-unknown >&2
fi
# The packaged service may have started on 6379; the benchmark runs its own.
exit 0
