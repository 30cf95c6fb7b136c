#!/usr/bin/env bash
# Build the Python package (python/) into a virtual environment and run its tests
# (tests/python; test_torch.py skips itself without torch and a CUDA device).
#
#   scripts/python-test.sh [pytest args...]
#
# The venv is $CARGO_TARGET_DIR/py-venv (default target/py-venv) and is reused. The package is
# built in the repository's target dir: python/ is a member of the Cargo workspace (not a default
# member) whose features line up with the root build's, so after `cargo build --release` the
# install compiles only the binding crate. PYTHON picks the interpreter (default python3, >= 3.9).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PYTHON="${PYTHON:-python3}"
VENV="$CARGO_TARGET_DIR/py-venv"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# The venv first on PATH: maturin's build backend runs the `maturin` binary it installed there.
export PATH="$VENV/bin:$PATH"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# Build requirements in the venv, and the build without isolation: no download per run.
"${PIP[@]}" install -q "maturin>=1.9,<2.0" numpy pytest
"${PIP[@]}" install -q --no-build-isolation --force-reinstall --no-deps ./python
# From outside the source tree, so that `import tessera` is the installed package.
cd "$CARGO_TARGET_DIR"
"$VENV/bin/python" -m pytest "$ROOT/tests/python" -q -rs "$@"
