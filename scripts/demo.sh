#!/usr/bin/env bash
# The main job on an embedded default: local Ray, local files, the engine's defaults (--faces detect).
# Sets up .venv if needed, renders a small synthetic expression corpus (faces with scripted
# expression changes and ground truth) under demo/videos, annotates it into demo/annotations,
# prints the per-video summary and the segment accuracy against the ground truth.
#
# Model: the shipped demo CLIPER, models/cliper-demo.safetensors (scripts/build_demo_model.sh
# rebuilds it). Override with MODEL=... (a .safetensors checkpoint or openclip:ARCH@PRETRAINED).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
PY=.venv/bin/python
if [ ! -f demo/videos/ground_truth.parquet ]; then
  $PY -m cliper_batch.synthetic --out demo/videos --videos 4 --seed 7
fi
MODEL=${MODEL:-models/cliper-demo.safetensors}
$PY jobs/annotate.py --input demo/videos --output demo/annotations --model "$MODEL" "$@"
$PY -m cliper_batch.output.query summary demo/annotations
$PY -m cliper_batch.training.demo score --output demo/annotations --ground-truth demo/videos/ground_truth.parquet
$PY -m cliper_batch.report demo/annotations --out demo/report.html
