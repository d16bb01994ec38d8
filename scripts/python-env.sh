#!/usr/bin/env bash
# Installs the Python client (python/) into a virtual environment at
# target/python-venv, the way users install it (`pip install ./python`:
# maturin builds the native module from the Rust client), with pytest and
# mypy for its tests. Prints the environment's folder. Safe to run repeatedly: the
# package is reinstalled, so its native module follows the source.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/python-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
pip() { "$VENV/bin/pip" --disable-pip-version-check --quiet "$@" >&2; }
pip install pytest mypy
pip install --force-reinstall --no-deps ./python
echo "$VENV"
