"""What every peer-side script shares: the image list it reads and the JSON it writes.

Peer scripts run inside a peer's own venv (never the engine's), as
``PEER_PYTHON bench/peers/<peer>_peer.py PATHS.txt OUT.json [options]``, and
import only their peer, numpy and this file (the script's folder is on
``sys.path``). Nothing here imports torch or the engine.

OUT.json::

    {"peer": "fer", "version": "25.10.3", "classes": [native names, output column order],
     "scores": [[...], ...],           # one row per input path, same order
     "probabilities": true|false,      # rows are a probability distribution (softmax)
     "score_kind": "...",              # what a row is, in words
     "preprocess_s": ..., "classifier_s": ..., "classifier_cpu_s": ..., "batch": ..., "notes": "..."}

``classifier_s`` is wall time around the classifier calls only (no decoding, no
resizing), after one warm-up call; ``classifier_cpu_s`` the CPU time of the
process (all its threads) over the same calls.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Sequence


def read_paths(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


def write_result(path: str, result: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and the CPU seconds this process spent on it (all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def rows(scores: Any) -> list[list[float]]:
    """``[N, C]`` array-like to JSON rows of Python floats."""
    return [[float(v) for v in row] for row in scores]


def args(argv: Sequence[str] | None = None) -> tuple[str, str, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        raise SystemExit("usage: <peer>_peer.py PATHS.txt OUT.json [options]")
    return argv[0], argv[1], argv[2:]
