#!/usr/bin/env bash
# (Re)build the demo CLIPER checkpoint: render synthetic faces in whole frames and crop them with the
# engine's own detector and crop (cliper_batch.training.framed_faces), train with the real two-stage trainer
# (python -m cliper_batch.training.train, Ray Train, 1 CPU worker), export models/cliper-demo.safetensors, then
# annotate a held-out synthetic video corpus (other identities, other seed) and score it.
#
#   scripts/build_demo_model.sh [--force] [--no-check]
#
# Skips training when the checkpoint exists (unless --force). Everything is seeded (images, videos,
# model init, data order), so a rebuild on the same machine and thread count gives the same model.
# Recipe and measured numbers: docs/training.md ("The demo model").
set -euo pipefail
cd "$(dirname "$0")/.."
FORCE=0
CHECK=1
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --no-check) CHECK=0 ;;
    *) echo "usage: $0 [--force] [--no-check]" >&2; exit 2 ;;
  esac
done
PY=.venv/bin/python
export RAY_USAGE_STATS_ENABLED=0
WORK=demo/model/work
CKPT=models/cliper-demo.safetensors
IMAGES_PER_CLASS=$($PY -c 'from cliper_batch.training.demo import DEMO_IMAGES_PER_CLASS as n; print(n)')
IMAGE_SEED=$($PY -c 'from cliper_batch.training.demo import DEMO_IMAGE_SEED as s; print(s)')

if [ -f "$CKPT" ] && [ "$FORCE" -eq 0 ]; then
  echo "$CKPT exists (use --force to rebuild)"
else
  rm -rf "$WORK" "$CKPT"
  mkdir -p "$WORK"
  mkdir -p "$(dirname "$CKPT")"
  # training faces: 7 classes x N frames, detected and cropped as the engine does, split by identity
  $PY -m cliper_batch.training.framed_faces --out "$WORK/data" --seed "$IMAGE_SEED" --images-per-class "$IMAGES_PER_CLASS"
  start=$(date +%s)
  # shellcheck disable=SC2046
  $PY -m cliper_batch.training.train $($PY -m cliper_batch.training.demo recipe --train-data "$WORK/data/labels.parquet") \
      --storage-path "$WORK/runs" --name cliper-demo --export "$CKPT"
  echo "trained in $(( $(date +%s) - start )) s; checkpoint $(du -h "$CKPT" | cut -f1)"
fi

if [ "$CHECK" -eq 1 ]; then
  # held-out videos: seed 1000 draws identities and timelines unrelated to the training images
  rm -rf "$WORK/videos" "$WORK/annotations"
  $PY -m cliper_batch.synthetic --out "$WORK/videos" --videos 6 --seed 1000
  $PY jobs/annotate.py --input "$WORK/videos" --output "$WORK/annotations" --model "$CKPT" --faces detect
  $PY -m cliper_batch.training.demo score --output "$WORK/annotations" --ground-truth "$WORK/videos/ground_truth.parquet" \
      --min-accuracy 0.95
fi
