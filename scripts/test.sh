#!/usr/bin/env bash
# The test command (README, CI): set up .venv if needed, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k writer).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest "$@"
