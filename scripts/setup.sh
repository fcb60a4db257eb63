#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv) from scratch: everything the engine,
# the tests and the demo need comes from pyproject.toml (the face-detector weights ship
# inside the package); this script does nothing a plain `pip install -e '.[dev]'` would not. Idempotent: it re-installs
# only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.cliper-batch-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import cliper_batch" 2>/dev/null; then
  exit 0
fi
echo "setup: installing cliper-batch and its dependencies into $VENV (first run: several minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
echo "$want" > "$stamp"
