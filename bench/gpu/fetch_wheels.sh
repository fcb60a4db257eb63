#!/usr/bin/env bash
# Wheels carried to the GPU machine for `python -m bench.gpu.device_check` (it has torch + triton, torchvision,
# timm, numpy, pynvml, but not these): PyAV, open_clip and open_clip's tokenizer dependencies, for CPython 3.12
# manylinux x86_64, without their dependencies (torch & co. are already there); pinned to the versions the dev
# venv tests with. Into bench/gpu/wheels/ (ignored).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
mkdir -p wheels
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest wheels av==18.1.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
du -ch wheels/*.whl | tail -1
