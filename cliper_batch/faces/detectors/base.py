"""What every face detector gives the rest of the engine: :class:`Detection` per face per frame, behind :class:`Detector`.

Tracking (:mod:`cliper_batch.faces.track`), the sparse schedule (:mod:`cliper_batch.faces.sparse`)
and framing (:mod:`cliper_batch.faces.framing`) see only these names, so a detector is one
module under ``faces/detectors/`` plus its entry in :data:`cliper_batch.faces.detectors.DETECTORS`.
No torch here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Box = tuple[float, float, float, float]
Point = tuple[float, float]


class DetectorUnavailable(RuntimeError):
    """A detector cannot run here (e.g. its weights file is missing or not the pinned one: a broken install)."""


class FaceInputError(ValueError):
    """Frames or parameters given to the face detector are malformed."""


@dataclass(frozen=True)
class Detection:
    """One face found in one frame.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the original frame (continuous
    coordinates, clipped to the frame); ``score`` is O-Net's face probability;
    ``landmarks`` are five ``(x, y)`` points in the original frame, in the
    order left eye, right eye, nose tip, left mouth corner, right mouth corner
    ("left"/"right" as seen in the image).
    """

    frame_index: int
    box: Box
    score: float
    landmarks: tuple[Point, Point, Point, Point, Point] | None = None

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class Detector(Protocol):
    """A face detector: per frame of ``frames`` (``[F, H, W, 3]`` uint8 RGB, numpy or a tensor), its faces.

    ``frame_indices`` (default ``0..F-1``) become :attr:`Detection.frame_index`. A frame's faces
    depend on that frame alone (not on the batch it came in), so any chunking gives the same result.
    """

    def detect(self, frames: Any, frame_indices: Sequence[int] | None = None) -> list[list[Detection]]: ...


__all__ = ["Box", "Detection", "Detector", "DetectorUnavailable", "FaceInputError", "Point"]
