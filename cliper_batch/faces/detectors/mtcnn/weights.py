"""The face detector's packaged weights file: where it is and that it is the pinned one, without torch.

:func:`cliper_batch.faces.detectors.mtcnn.nets.load_mtcnn_weights` (in the workers) reads the
file through :func:`read_pinned_weights` and turns it into tensors; the annotate
driver's preflight calls :func:`read_pinned_weights` alone, so it can refuse a
broken install before Ray starts without importing torch. A file with the
pinned sha256 is the file the detector's tests load.
"""
from __future__ import annotations

import hashlib
import os

import cliper_batch

from ..base import DetectorUnavailable

# The packaged weights: one safetensors file, keys ``pnet.*``, ``rnet.*``, ``onet.*`` (found from the
# package's root, so this module can sit anywhere inside it).
WEIGHTS_FILE = os.path.join(os.path.dirname(os.path.abspath(cliper_batch.__file__)), "faces", "weights", "mtcnn.safetensors")
# sha256 of that file (scripts/convert_mtcnn_weights.py reproduces it bit for bit).
MTCNN_SHA256 = "74f1789698e8e455a7ce21e0b8cb7bd1b03ec330706ec0bbd9ef629931ff2136"
FIX = (
    "reinstall cliper-batch (the weights ship inside the package; "
    "scripts/convert_mtcnn_weights.py rebuilds them from the facenet-pytorch 2.6.0 wheel)"
)


def read_pinned_weights(path: str | None = None) -> bytes:
    """The bytes of the weights file (default :data:`WEIGHTS_FILE`), after checking its sha256 is :data:`MTCNN_SHA256`.

    Raises :class:`DetectorUnavailable`, saying what to do, when the file is
    missing, unreadable, or not the pinned one (truncated, altered).
    """
    path = path if path is not None else WEIGHTS_FILE
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DetectorUnavailable(f"MTCNN weights {path} cannot be read ({exc.strerror or exc}); {FIX}") from exc
    got = hashlib.sha256(raw).hexdigest()
    if got != MTCNN_SHA256:
        raise DetectorUnavailable(
            f"MTCNN weights {path} ({len(raw)} bytes) have sha256 {got}, expected {MTCNN_SHA256} "
            f"(truncated or altered file); {FIX}"
        )
    return raw


__all__ = ["FIX", "MTCNN_SHA256", "WEIGHTS_FILE", "DetectorUnavailable", "read_pinned_weights"]
