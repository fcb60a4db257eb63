#!/usr/bin/env bash
# The main job on an embedded default: local Ray, local files.
# Sets up .venv if needed, generates a small offline corpus under demo/videos,
# annotates it into demo/annotations, and prints the per-video summary.
# Override the model with MODEL=... (a .safetensors checkpoint or openclip:ARCH@PRETRAINED).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
PY=.venv/bin/python
if [ ! -d demo/videos ]; then
  $PY -m cliper_batch.testvideos --out demo/videos --videos 4 --duration 6 --size 256x192
fi
MODEL=${MODEL:-openclip:Tiny-ViT-T-16}
$PY jobs/annotate.py --input demo/videos --output demo/annotations --model "$MODEL" "$@"
$PY -m cliper_batch.query summary demo/annotations
