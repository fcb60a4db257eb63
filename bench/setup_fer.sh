#!/usr/bin/env bash
# A separate venv with the PyPI `fer` package, for bench/vs_fer.py only (never a dependency of the engine).
#
#   bench/setup_fer.sh            -> bench/.fer-venv
#
# fer 25.10.3 pins TensorFlow, which has no wheel for this machine's Python; its model is a
# .tflite file, so it runs on `ai-edge-litert` (LiteRT, the TFLite runtime) behind a two-line
# `tensorflow` shim that exposes `tf.lite.Interpreter`. Hence `--no-deps` plus the few
# packages fer really imports (OpenCV headless <5 keeps its Haar cascades, pandas for
# Video.to_pandas, setuptools<81 for fer's pkg_resources import).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${FER_VENV:-$here/.fer-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q --no-deps 'fer==25.10.3'
"$venv/bin/pip" install -q 'opencv-python-headless<5' 'ai-edge-litert' 'pandas' 'setuptools<81' 'numpy' 'pillow' 'requests' 'tqdm'
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$site/tensorflow"
cat > "$site/tensorflow/__init__.py" <<'PY'
"""Shim for fer: it runs tf.lite.Interpreter (LiteRT provides it) and imports, never calls, keras' load_model."""
import sys as _sys
import types as _types

from ai_edge_litert.interpreter import Interpreter as _Interpreter

lite = _types.SimpleNamespace(Interpreter=_Interpreter)
__version__ = "0.0-litert-shim"


def _no_keras(*args, **kwargs):
    raise RuntimeError("keras models need real TensorFlow; this shim only runs fer's .tflite model")


keras = _types.ModuleType("tensorflow.keras")
keras.models = _types.ModuleType("tensorflow.keras.models")
keras.models.load_model = _no_keras
_sys.modules["tensorflow.keras"] = keras
_sys.modules["tensorflow.keras.models"] = keras.models
PY
"$venv/bin/python" -c 'from fer.fer import FER; print("fer ok")'
echo "$venv"
