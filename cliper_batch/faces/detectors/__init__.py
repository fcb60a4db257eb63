"""Face detectors behind one small protocol (:class:`.base.Detector`), chosen by name.

A detector is a module (or package) here whose class takes ``device=``, ``workers=``
(frames in parallel on CPU) and ``min_face_size=`` (``--min-face``, pixels of the detection frame) and
answers :meth:`~.base.Detector.detect`; :data:`DETECTORS`
names it. Nothing else in the engine names a detector class: the per-video algorithm asks
:func:`make_detector`, framing and tracking see :class:`~.base.Detection` only.
Importing this package imports no detector (nor torch).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from ...types import DEFAULT_FACE_DETECTOR as DEFAULT_DETECTOR
from .base import Detector

# name (AnnotateConfig.face_detector, --face-detector) -> (module relative to this package, class, the check
# that preflight runs before Ray starts, without torch: a function of that module's package taking no arguments
# and raising DetectorUnavailable, or None)
DETECTORS: dict[str, tuple[str, str, str | None]] = {
    "mtcnn": (".mtcnn.detector", "FaceDetector", ".mtcnn.weights:read_pinned_weights"),
}


def make_detector(name: str = DEFAULT_DETECTOR, **kwargs: Any) -> Detector:
    """The detector ``name`` (:data:`DETECTORS`), built with ``kwargs`` (e.g. ``device=``, ``workers=``)."""
    module, cls, _ = _entry(name)
    return getattr(import_module(module, __name__), cls)(**kwargs)


def check_detector(name: str = DEFAULT_DETECTOR) -> None:
    """What detector ``name`` needs before a run starts (its weights file), checked without torch; raises
    ``ValueError`` for an unknown name and the detector's own error (with its advice) when it cannot run."""
    check = _entry(name)[2]
    if check is not None:
        module, function = check.split(":")
        getattr(import_module(module, __name__), function)()


def _entry(name: str) -> tuple[str, str, str | None]:
    try:
        return DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r} (known: {', '.join(sorted(DETECTORS))})") from None


__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "Detector", "check_detector", "make_detector"]
