#!/usr/bin/env bash
# The Python client's checks, run by `cargo test --workspace`
# (local/tests/python_client.rs): installs the package as a user would
# (`pip install ./client/python`, with its dev extra) into a virtual
# environment under target/, checks its formatting and lints (ruff),
# type-checks it with mypy --strict, and runs its
# pytest suite against `autoglm-local serve` (AUTOGLM_LOCAL_BIN; default
# target/debug/autoglm-local).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${AUTOGLM_PYTHON_VENV:-$repo/target/python-venv}
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[dev]"
cd "$here"
"$venv/bin/python" -m ruff format --check src scripts tests
"$venv/bin/python" -m ruff check src scripts tests
"$venv/bin/python" -m mypy src scripts tests
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
