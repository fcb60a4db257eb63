"""Detect sparsely, track densely: run the face detector on a subset of the sampled frames.

Why: on a CPU the detector costs ~10x the decode and ~50x the model per frame
(MTCNN ~8 frames/s on 2 cores), while faces in consecutive samples (4 per
second by default) barely move. So the detector runs on

* every ``stride``-th sampled frame (the *schedule*), the first and the last
  frame, and every shot cut together with the frame before it (so each shot's
  tracks end where the shot ends);
* every skipped frame of a gap the tracker is **not confident** about: when the
  detections at the far end of a gap do not continue the open tracks exactly -
  a face appeared or vanished, or a face moved against the tracker's motion
  model (IoU between predicted and detected box < ``confident_iou``) - the
  frames inside the gap are detected too, in one batch, before the far end is
  passed on. A face that enters mid-shot therefore starts on the frame it was
  first detected, one that leaves ends on its last one, and a face that moves
  fast is detected on every frame while it does.

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
from .track import FaceTracker, Track, TrackingError, fill_gaps

__all__ = ["CONFIDENT_IOU", "DetectionCounts", "SparseFaceTracker", "track_sparse"]

CONFIDENT_IOU = 0.5  # IoU(predicted box, detection) below which the skipped frames are detected after all


@dataclass
class DetectionCounts:
    """How many sampled frames the detector ran on, and why (for logs and benchmarks)."""

    frames: int = 0  # sampled frames seen
    scheduled: int = 0  # stride, first/last frame, cuts and the frame before each cut
    refined: int = 0  # frames inside gaps the tracker was not confident about

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
        self.counts = DetectionCounts()
        self._held: dict[int, Any] = {}  # position -> frame, for frames after the last one passed to the tracker
        self._last_fed = -1  # last position passed to the tracker
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
        due = []
        for p in range(start, start + n):
            if self._last_scheduled is None or p in cuts or p - self._last_scheduled >= self.stride:
                due.append(p)
                self._last_scheduled = p
        found = self._detect(due)
        self.counts.scheduled += len(due)
        for p in due:
            self._advance(p, found[p], is_cut=p in cuts)
        # keep only what a later gap may still need
        self._held = {p: f for p, f in self._held.items() if p > self._last_fed}

    def finish(self) -> list[Track]:
        """Detect the last frame if the schedule skipped it, close the tracker, fill the skipped frames."""
        last = self.counts.frames - 1
        if last > self._last_fed:
            self.counts.scheduled += 1
            self._advance(last, self._detect([last])[last], is_cut=False)
        self._held = {}
        return [fill_gaps(t) for t in self.tracker.finish()]

    # ----------------------------------------------------------------- internals

    def _detect(self, positions: Sequence[int]) -> dict[int, list]:
        if not positions:
            return {}
        frames = _stack([self._held[p] for p in positions])
        return dict(zip(positions, self.detect(frames, frame_indices=list(positions))))

    def _advance(self, p: int, dets: list, is_cut: bool) -> None:
        """Pass position ``p`` to the tracker, detecting the skipped frames before it when needed."""
        if is_cut and p - 1 > self._last_fed:
            # the old shot's last frame: its tracks end there, not at the previous scheduled frame
            self.counts.scheduled += 1
            self._advance(p - 1, self._detect([p - 1])[p - 1], is_cut=False)
        gap = list(range(self._last_fed + 1, p))
        if gap and not is_cut and not self.tracker.confident(p, dets, self.confident_iou):
            found = self._detect(gap)
            self.counts.refined += len(gap)
            for q in gap:
                self.tracker.update(q, found[q])
        self.tracker.update(p, dets, is_cut=is_cut)
        self._last_fed = p


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
