#!/usr/bin/env bash
# A separate venv with the PyPI `PyEmotion` package (1.0.0, MIT), for bench/fer2013_peers.py and bench/vs_fer.py only
# (never a dependency of the engine: its weights are a pickle, loaded only inside this venv).
#
#   bench/setup_pyemotion.sh      -> bench/.pyemotion-venv
#
# PyEmotion 1.0.0 (2020) declares opencv-python, Pillow, art, termcolor, progress, pytest,
# facenet-pytorch and numpy; facenet-pytorch 2.6.0 in turn pins torch 2.2 / torchvision 0.17 /
# numpy<2 / Pillow<10.3 (a second, older CUDA torch stack, ~3 GB). PyEmotion's code runs
# unchanged on the torch the project pins, so: `--no-deps` for PyEmotion and facenet-pytorch,
# plus what they really import: torch==2.14.1 and torchvision==0.29.1 (the project's pins,
# with their own dependencies, from the local index; ~5 GB installed, most of it the nvidia-*
# libraries a CUDA torch wheel needs even on CPU), OpenCV headless, Pillow, numpy, requests
# (facenet_pytorch imports it), art and termcolor (PyEmotion's banner). progress and pytest are
# never imported. The ~190 MB CPU torch wheel (2.13.0+cpu) does not work: torchvision's PyPI
# wheels are CUDA builds whose C ops do not load against a CPU torch, and `import torchvision`
# then fails ("operator torchvision::nms does not exist").
# PyEmotion's DetectFace() also builds facenet-pytorch's MTCNN, whose weights ship inside the
# facenet-pytorch wheel, so nothing is downloaded at run time. pip reports the pins it was told
# to ignore ("facenet-pytorch 2.6.0 requires torch<2.3.0 ..."): expected.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${PYEMOTION_VENV:-$here/.pyemotion-venv}"
torch_spec="${PYEMOTION_TORCH:-torch==2.14.1}"
vision_spec="${PYEMOTION_TORCHVISION:-torchvision==0.29.1}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "$torch_spec" "$vision_spec"
"$venv/bin/pip" install -q --no-deps 'PyEmotion==1.0.0' 'facenet-pytorch==2.6.0'
"$venv/bin/pip" install -q 'numpy' 'pillow' 'opencv-python-headless<5' 'requests' 'tqdm' 'art' 'termcolor'
"$venv/bin/python" - <<'PY'
import warnings
warnings.filterwarnings("ignore")
from PyEmotion.main import DetectFace
d = DetectFace(device="cpu")
print("PyEmotion ok:", type(d.network).__name__, d.emotions)
PY
echo "$venv"
