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
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip's and setuptools' chatter (index notes, the editable-install notice) goes to a log
# that is shown only if the install fails.
log="$VENV/install.log"
echo "setup: installing cliper-batch and its dependencies into $VENV (first run: several minutes; log: $log)" >&2
if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip && "$VENV/bin/python" -m pip install --quiet -e ".[dev]"; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "setup: pip install failed (full log: $log)" >&2
  exit 1
fi
echo "$want" > "$stamp"
