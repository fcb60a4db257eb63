"""Detect sparsely, track densely: run the face detector on a subset of the sampled frames.

Why: on a CPU the detector costs ~10x the decode and ~50x the model per frame
(MTCNN ~8 frames/s on 2 cores), while faces in consecutive samples (4 per
second by default) barely move. So the detector runs on

* every ``stride``-th sampled frame (the *schedule*), the first and the last
  frame, and every shot cut together with the frame before it (so each shot's
  tracks end where the shot ends);
* every skipped frame of a gap whose two ends **do not agree**: the faces
  detected at the far end must pair one-to-one with those at the near end
  (same count, optimal assignment, each pair overlapping by IoU >=
  ``confident_iou``). Otherwise - a face appeared or vanished, or moved more
  than a fraction of its size - the frames inside the gap are detected too.
  A face that enters mid-shot therefore starts on the frame it was first
  detected, one that leaves ends on its last one, and a face that moves fast
  is detected on every frame while it does.

* every skipped frame of a gap whose ends agree but where the tracker's motion
  model does not (IoU between the predicted and the detected box <
  ``confident_iou``, e.g. a fast face that stopped), so no track breaks.

The detector is called twice per chunk in the common case (the scheduled
frames, then the frames of every disagreeing gap; the motion-model check adds
a call only where it fires). The result does not depend on the chunking: the
schedule counts positions in the whole video, the cut detector streams, and
the detector gives every frame the same faces whatever else shares its call
and whatever the worker's thread count (:mod:`cliper_batch.faces.detect`).
So the staged and fused workers find the same tracks, bit for bit.

The tracker (:class:`cliper_batch.faces.track.FaceTracker`) only sees the
frames that were detected, with their true indices (its motion model works per
index unit). Frames in between get boxes interpolated from the detections on
either side once both are known (:func:`cliper_batch.faces.track.fill_gaps`),
so the result has the shape :func:`track_video` returns: one entry per sampled
frame from a track's first detection to its last. ``stride=1`` detects every
frame and gives exactly what :func:`track_video` gives.

Frames arrive in chunks (numpy arrays, or torch tensors on the device that
runs the detector); at most one gap of frames (< ``stride``) is held past the
current chunk.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cuts import ShotCutDetector
from .track import FaceTracker, Track, TrackingError, assign, fill_gaps, iou

__all__ = ["CONFIDENT_IOU", "DetectionCounts", "SparseFaceTracker", "track_sparse"]

CONFIDENT_IOU = 0.5  # IoU between a face's boxes at the two ends of a gap below which the gap is detected too


@dataclass
class DetectionCounts:
    """How many sampled frames the detector ran on, and why (for logs and benchmarks)."""

    frames: int = 0  # sampled frames seen
    scheduled: int = 0  # stride, first/last frame, cuts and the frame before each cut
    refined: int = 0  # frames inside gaps whose ends did not agree

    @property
    def detected(self) -> int:
        return self.scheduled + self.refined


@dataclass
class SparseFaceTracker:
    """Streaming driver: :meth:`feed` chunks of sampled frames, then :meth:`finish` -> ``list[Track]``.

    ``detect(frames, frame_indices)`` returns per-frame detections
    (:meth:`cliper_batch.faces.detect.FaceDetector.detect`); ``cut_input``
    turns a chunk into what ``cut_detector`` reads (identity for host arrays).
    ``tracker_params`` go to :class:`FaceTracker`.
    """

    detect: Callable[..., list]
    cut_detector: ShotCutDetector
    stride: int
    confident_iou: float = CONFIDENT_IOU
    cut_input: Callable[[Any], Any] = lambda frames: frames
    tracker_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.stride, (int, np.integer)) or self.stride < 1:
            raise TrackingError(f"detection stride must be an int >= 1, got {self.stride!r}")
        if not (0.0 < self.confident_iou <= 1.0):
            raise TrackingError(f"confident_iou must be in (0, 1], got {self.confident_iou!r}")
        self.tracker = FaceTracker(**self.tracker_params)
        self.max_faces = self.tracker.max_faces
        self.counts = DetectionCounts()
        self._held: dict[int, Any] = {}  # position -> frame, for frames after the last one passed to the tracker
        self._last_fed = -1  # last position passed to the tracker
        self._last_dets: list = []  # its detections
        self._last_scheduled: int | None = None

    def feed(self, frames: Any) -> None:
        """Consume the next chunk ``[n, H, W, 3]`` of sampled frames (positions continue from the last chunk)."""
        start = self.counts.frames
        n = int(frames.shape[0])
        if n == 0:
            return
        cuts = set(self.cut_detector.update(self.cut_input(frames)))  # positions in the whole sequence
        for i in range(n):
            self._held[start + i] = frames[i]
        self.counts.frames += n
        due: set[int] = set()
        for p in range(start, start + n):
            if self._last_scheduled is None or p in cuts or p - self._last_scheduled >= self.stride:
                due.add(p)
                self._last_scheduled = p
        # a shot's last frame, so its tracks end where it ends
        due |= {c - 1 for c in cuts if c - 1 > self._last_fed}
        self._advance(sorted(due), cuts)
        # keep only what a later gap may still need
        self._held = {p: f for p, f in self._held.items() if p > self._last_fed}

    def finish(self) -> list[Track]:
        """Detect the last frame if the schedule skipped it, close the tracker, fill the skipped frames."""
        last = self.counts.frames - 1
        if last > self._last_fed:
            self._advance([last], set())
        self._held = {}
        return [fill_gaps(t) for t in self.tracker.finish()]

    # ----------------------------------------------------------------- internals

    def _advance(self, due: list[int], cuts: set[int]) -> None:
        """Detect ``due`` (one call) and every disagreeing gap before them (one call); feed the tracker in order."""
        found = self._detect(due)
        self.counts.scheduled += len(due)
        prev, prev_dets, refine = self._last_fed, self._last_dets, []
        for p in due:
            if p - prev > 1 and p not in cuts and not self._ends_agree(prev_dets, found[p]):
                refine.extend(range(prev + 1, p))
            prev, prev_dets = p, found[p]
        found.update(self._detect(refine))
        self.counts.refined += len(refine)
        fed = self._last_fed
        for p in sorted(found):
            gap = list(range(fed + 1, p))
            if gap and p not in cuts and not self.tracker.confident(p, found[p], self.confident_iou):
                # ends agree but the motion model does not (e.g. a fast face stopped): look after all
                more = self._detect(gap)
                self.counts.refined += len(gap)
                for q in gap:
                    self.tracker.update(q, more[q])
            self.tracker.update(p, found[p], is_cut=p in cuts)
            fed = p
        if due:
            self._last_fed, self._last_dets = due[-1], found[due[-1]]

    def _ends_agree(self, a: list, b: list) -> bool:
        """Whether the faces at both ends of a gap pair one-to-one, each pair overlapping by >= ``confident_iou``."""
        a = sorted(a, key=lambda d: -d.area)[: self.max_faces]
        b = sorted(b, key=lambda d: -d.area)[: self.max_faces]
        if len(a) != len(b):
            return False
        if not a:
            return True
        overlap = np.array([[iou(x.box, y.box) for y in b] for x in a])
        return all(overlap[i, j] >= self.confident_iou for i, j in assign(1.0 - overlap))

    def _detect(self, positions: Sequence[int]) -> dict[int, list]:
        if not positions:
            return {}
        frames = _stack([self._held[p] for p in positions])
        return dict(zip(positions, self.detect(frames, frame_indices=list(positions))))


def _stack(frames: list) -> Any:
    if isinstance(frames[0], np.ndarray):
        return np.stack(frames)
    import torch

    return torch.stack(frames)


def track_sparse(
    chunks: Iterable[Any],
    detect: Callable[..., list],
    stride: int,
    cut_detector: ShotCutDetector | None = None,
    cut_input: Callable[[Any], Any] = lambda frames: frames,
    confident_iou: float = CONFIDENT_IOU,
    **tracker_params: Any,
) -> list[Track]:
    """Tracks over one video's sampled frames, detecting on a subset of them (see the module docstring).

    ``chunks``: the sampled frames in order, ``[n, H, W, 3]`` per chunk;
    ``detect``: e.g. ``FaceDetector(...).detect``; ``stride``: detect every
    ``stride``-th frame when nothing changes (1 = every frame). Returns the
    same ``list[Track]`` as :func:`cliper_batch.faces.track.track_video`
    (frame indices = positions in the sampled sequence).
    """
    driver = SparseFaceTracker(
        detect,
        cut_detector if cut_detector is not None else ShotCutDetector(),
        stride,
        confident_iou=confident_iou,
        cut_input=cut_input,
        tracker_params=tracker_params,
    )
    for frames in chunks:
        driver.feed(frames)
    return driver.finish()
