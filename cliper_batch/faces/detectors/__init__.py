"""Face detectors behind one small protocol (:class:`.base.Detector`), chosen by name.

A detector is a module (or package) here whose class takes ``device=`` and ``workers=``
(frames in parallel on CPU) and answers :meth:`~.base.Detector.detect`; :data:`DETECTORS`
names it. Nothing else in the engine names a detector class: the per-video algorithm asks
:func:`make_detector`, framing and tracking see :class:`~.base.Detection` only.
Importing this package imports no detector (nor torch).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import Detector

# name -> (module relative to this package, class)
DETECTORS: dict[str, tuple[str, str]] = {
    "mtcnn": (".mtcnn.detector", "FaceDetector"),
}
DEFAULT_DETECTOR = "mtcnn"


def make_detector(name: str = DEFAULT_DETECTOR, **kwargs: Any) -> Detector:
    """The detector ``name`` (:data:`DETECTORS`), built with ``kwargs`` (e.g. ``device=``, ``workers=``)."""
    try:
        module, cls = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown face detector {name!r} (known: {', '.join(sorted(DETECTORS))})") from None
    return getattr(import_module(module, __name__), cls)(**kwargs)


__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "Detector", "make_detector"]
