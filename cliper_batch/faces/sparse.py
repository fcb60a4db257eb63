"""Detect sparsely, track densely: run the face detector on a subset of the sampled frames.

Why: on a CPU the detector costs ~10x the decode and ~50x the model per frame
(MTCNN ~8 frames/s on 2 cores), while faces in consecutive samples (4 per
second by default) barely move, or move smoothly. So the detector runs on

* every ``stride``-th sampled frame (the *schedule*), the first and the last
  frame, and every shot cut together with the frame before it (so each shot's
  tracks end where the shot ends);
* nothing more inside a gap between two scheduled frames when the faces at
  the far end are **where the motion predicts them**: extrapolated at constant
  velocity from the scheduled frame before the gap (the *anchor*) through the
  near end; where there is no anchor (a shot's first gap) or its faces do not
  pair with the near end's, where they were at the near end. One-to-one,
  same count, optimal assignment, each pair IoU >= ``confident_iou``. A still
  face, a steady drift and a steady pan cost nothing beyond the schedule;
* the **middle frame** of any other gap whose ends pair one-to-one under
  **smooth motion** (same count; each pair the same size within
  ``_MAX_SIZE_RATIO``, its centre shifted by at most ``_MAX_STEP`` face sides
  per sampled frame). Where every face detected there overlaps the box
  linearly interpolated between the ends by IoU >= ``verify_iou`` (one-to-one,
  same count), the frames in between are interpolated (between the ends and
  the middle). Where it does not, each half is judged the same way
  (bisection, the gap's near end as the second half's anchor): a face on a
  curve or speeding up costs one detection per gap, one that turns or stops
  a few, and one that moves erratically is detected wherever needed;
* the **middle frame** of a gap whose ends pair neither way (a face appeared
  or vanished, or jumped further than smooth motion explains), then each half
  judged on its own by these same rules, down to every frame of a half whose
  ends still pair neither way: the change is found on the frame where it
  happens (a face starts on the frame it was first detected and ends on its
  last one), and the half where nothing changed is skipped or interpolated
  like any other gap. On footage, most such gaps are a face the detector
  missed on one scheduled frame (turned, rolled); detecting every frame of
  both gaps around it cost 6 detections where the halves cost ~4 (version 3;
  docs/benchmarks.md, "Mismatched gaps split");
* every skipped frame before a detected one where the tracker would not link
  the detections to its open tracks one-to-one (a fast face that stopped far
  from where its motion model expects it, a young track whose velocity is not
  known yet), so no track breaks.

The detector is called once for the scheduled frames of a chunk, once per
bisection level (the middles and the fully detected gaps of every gap of the
chunk together: one or two levels for a stride of 4), and where the tracker
check fires. The result does not depend on the chunking: the schedule counts
positions in the whole video, the cut detector streams, every decision about
a gap depends only on the detections at scheduled frames and at the frames
bisection chose (and the tracker's state, fed in frame order), and the
detector gives every frame the same faces whatever else shares its call and
whatever the worker's thread count (:mod:`cliper_batch.faces.detectors.mtcnn`). So the
staged and fused workers find the same tracks, bit for bit.

The tracker (:class:`cliper_batch.faces.track.FaceTracker`) only sees the
frames that were detected, with their true indices (its motion model works per
index unit). Frames in between get boxes interpolated from the detections on
either side once both are known (:func:`cliper_batch.faces.track.fill_gaps`),
so the result has the shape :func:`track_video` returns: one entry per sampled
frame from a track's first detection to its last. ``stride=1`` detects every
frame and gives exactly what :func:`track_video` gives. ``gap_rule="ends"`` is
the rule before this one (a gap is skipped only when its ends agree and the
tracker's motion model predicts the far end, else all of it is detected),
kept so benchmarks measure both on the same frames.

Frames arrive in chunks (numpy arrays, or torch tensors on the device that
runs the detector); at most one gap of frames (< ``stride``) is held past the
current chunk.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .cuts import ShotCutDetector
from .detectors.base import Box, Detection
from .track import FaceTracker, Track, TrackingError, assign, fill_gaps, iou

__all__ = ["CONFIDENT_IOU", "GAP_RULES", "VERIFY_IOU", "DetectionCounts", "SparseFaceTracker", "track_sparse"]

CONFIDENT_IOU = 0.5  # IoU between a gap's far-end faces and where the motion predicts them that skips the gap
VERIFY_IOU = 0.7  # IoU between the detected and the interpolated box in a gap's middle that accepts the interpolation
_MAX_SIZE_RATIO = 1.3  # smooth motion: a face's side at the two ends of a gap differs by at most this factor
_MAX_STEP = 1.0  # smooth motion: centre shift per sampled frame, in face sides (what the tracker links frame to frame)
GAP_RULES = ("motion", "ends")  # what decides a gap (SparseFaceTracker.gap_rule); "ends": the rule before "motion"


@dataclass
class DetectionCounts:
    """How many sampled frames the detector ran on, and why (for logs and benchmarks)."""

    frames: int = 0  # sampled frames seen
    scheduled: int = 0  # stride, first/last frame, cuts and the frame before each cut
    refined: int = 0  # gaps whose ends pair neither way (middles, halves that still do not) or the tracker would not link
    verified: int = 0  # middles of gaps checked against interpolation (bisection)

    @property
    def detected(self) -> int:
        return self.scheduled + self.refined + self.verified


@dataclass
class SparseFaceTracker:
    """Streaming driver: :meth:`feed` chunks of sampled frames, then :meth:`finish` -> ``list[Track]``.

    ``detect(frames, frame_indices)`` returns per-frame detections
    (:meth:`cliper_batch.faces.detectors.base.Detector.detect`); ``cut_input``
    turns a chunk into what ``cut_detector`` reads (identity for host arrays).
    ``tracker_params`` go to :class:`FaceTracker`. ``gap_rule``: ``"motion"``
    (the module docstring) or ``"ends"`` (the rule before it, for benchmarks:
    a gap is skipped only when its ends agree and the tracker's motion model
    predicts the far end, else every frame of it is detected).
    """

    detect: Callable[..., list]
    cut_detector: ShotCutDetector
    stride: int
    confident_iou: float = CONFIDENT_IOU
    cut_input: Callable[[Any], Any] = lambda frames: frames
    tracker_params: dict = field(default_factory=dict)
    verify_iou: float = VERIFY_IOU
    gap_rule: str = "motion"

    def __post_init__(self) -> None:
        if not isinstance(self.stride, (int, np.integer)) or self.stride < 1:
            raise TrackingError(f"detection stride must be an int >= 1, got {self.stride!r}")
        for name in ("confident_iou", "verify_iou"):
            if not (0.0 < getattr(self, name) <= 1.0):
                raise TrackingError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        if self.gap_rule not in GAP_RULES:
            raise TrackingError(f"gap_rule must be one of {GAP_RULES}, got {self.gap_rule!r}")
        self.tracker = FaceTracker(**self.tracker_params)
        self.max_faces = self.tracker.max_faces
        self.counts = DetectionCounts()
        self._held: dict[int, Any] = {}  # position -> frame, for frames after the last one passed to the tracker
        self._last_fed = -1  # last position passed to the tracker (always a scheduled one)
        self._last_dets: list = []  # its detections
        self._anchor: tuple[int, list] | None = None  # the scheduled frame before it in the same shot, and its detections
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
        """Detect ``due`` (one call), then the gaps before them level by level (one call each); feed the tracker."""
        if not due:
            return
        found = self._detect(due)
        self.counts.scheduled += len(due)
        known = {self._last_fed: self._last_dets, **found}
        if self._anchor is not None:
            known[self._anchor[0]] = self._anchor[1]
        # the scheduled frames in order; a gap between two of them is judged with the one before as motion anchor
        chain = [self._last_fed, *due]
        gaps: list[tuple[int | None, int, int]] = []
        for k in range(1, len(chain)):
            lo, hi = chain[k - 1], chain[k]
            z = chain[k - 2] if k >= 2 else (self._anchor[0] if self._anchor else None)
            if z is not None and (z < 0 or lo in cuts):  # no anchor before the first frame or across a cut
                z = None
            if hi - lo > 1 and hi not in cuts:
                gaps.append((z, lo, hi))
        while gaps:  # one bisection level: every open gap of the chunk judged, what it needs detected in one call
            refine: list[int] = []
            probes: list[tuple[int | None, int, int, int]] = []
            splits: list[tuple[int | None, int, int, int]] = []
            for z, lo, hi in gaps:
                verdict = self._judge(z, lo, hi, known)
                if verdict == "probe":
                    probes.append((z, lo, (lo + hi) // 2, hi))
                elif verdict == "detect" and self.gap_rule == "motion" and hi - lo > 2:
                    splits.append((z, lo, (lo + hi) // 2, hi))  # its middle, then each half judged on its own
                elif verdict == "detect":
                    refine.extend(range(lo + 1, hi))
            got = self._detect(sorted(refine + [m for _, _, m, _ in probes + splits]))
            self.counts.refined += len(refine) + len(splits)
            self.counts.verified += len(probes)
            known.update(got)
            found.update(got)
            gaps = [g for split in splits for g in _halves(*split)]
            for z, lo, m, hi in probes:
                if not self._interpolation_holds(lo, m, hi, known):
                    gaps.extend(_halves(z, lo, m, hi))
        fed = self._last_fed
        for p in sorted(found):
            gap = list(range(fed + 1, p))
            if gap and p not in cuts and not self._tracker_follows(p, found[p]):
                # the tracker would lose or start a track here (e.g. a fast face that stopped): look after all
                more = self._detect(gap)
                self.counts.refined += len(gap)
                for q in gap:
                    self.tracker.update(q, more[q])
            self.tracker.update(p, found[p], is_cut=p in cuts)
            fed = p
        self._anchor = None if due[-1] in cuts or chain[-2] < 0 else (chain[-2], known[chain[-2]])
        self._last_fed, self._last_dets = due[-1], found[due[-1]]

    def _judge(self, z: int | None, lo: int, hi: int, known: dict[int, list]) -> str:
        """``"skip"``, ``"probe"`` (detect the middle) or ``"detect"`` (every frame) for the gap ``(lo, hi)``.

        Skip when the faces at ``hi`` are where the motion from ``z`` to ``lo``
        puts them (no anchor, or faces that do not pair with the anchor's:
        where they were at ``lo``), each IoU >= ``confident_iou``.
        """
        a, b = self._largest(known[lo]), self._largest(known[hi])
        still = [x.box for x in a]
        if self.gap_rule == "ends" or z is None:
            predicted = still
        else:
            moved = _smooth_pairs(self._largest(known[z]), a, lo - z)
            k = (hi - lo) / (lo - z)
            predicted = still if moved is None else [_lerp(x, y, 1.0 + k) for x, y in moved]
        if _pairs_overlap(predicted, [y.box for y in b], self.confident_iou):
            return "skip"
        if self.gap_rule == "motion" and _smooth_pairs(a, b, hi - lo) is not None:
            return "probe"
        return "detect"

    def _tracker_follows(self, p: int, dets: list) -> bool:
        """Whether the tracker links ``dets`` to its open tracks one-to-one (rule "ends": also where it predicts them)."""
        if self.gap_rule == "ends":
            return self.tracker.confident(p, dets, self.confident_iou)
        return self.tracker.links(p, dets)

    def _largest(self, dets: list) -> list[Detection]:
        """The detections the tracker uses: the ``max_faces`` largest."""
        return sorted(dets, key=lambda d: -d.area)[: self.max_faces]

    def _interpolation_holds(self, lo: int, m: int, hi: int, known: dict[int, list]) -> bool:
        """Whether the faces detected at ``m`` are where linear motion between ``lo`` and ``hi`` puts them."""
        pairs = _smooth_pairs(self._largest(known[lo]), self._largest(known[hi]), hi - lo)
        assert pairs is not None  # judged smooth when the probe was made
        t = (m - lo) / (hi - lo)
        return _pairs_overlap([_lerp(x, y, t) for x, y in pairs], [d.box for d in self._largest(known[m])], self.verify_iou)

    def _detect(self, positions: Sequence[int]) -> dict[int, list]:
        if not positions:
            return {}
        frames = _stack([self._held[p] for p in positions])
        return dict(zip(positions, self.detect(frames, frame_indices=list(positions))))


def _halves(z: int | None, lo: int, m: int, hi: int) -> list[tuple[int | None, int, int]]:
    """The gaps ``(lo, m)`` (anchor ``z``) and ``(m, hi)`` (anchor ``lo``) that still hold a frame to judge."""
    return [g for g in ((z, lo, m), (lo, m, hi)) if g[2] - g[1] > 1]


def _smooth_pairs(a: list[Detection], b: list[Detection], span: int) -> list[tuple[Box, Box]] | None:
    """The faces of two frames ``span`` sampled frames apart paired one-to-one under smooth motion, or None.

    Same count (at least one); each pair of about the same size
    (``_MAX_SIZE_RATIO``) with centres at most ``_MAX_STEP`` sides per frame
    apart; pairs chosen by least total centre shift (optimal assignment).
    ``(box in a, box in b)`` per pair.
    """
    if len(a) != len(b) or not a:
        return None
    ca = np.array([_cxcy_side(x.box) for x in a])
    cb = np.array([_cxcy_side(y.box) for y in b])
    side = np.maximum(ca[:, None, 2], cb[None, :, 2])
    ratio = side / np.maximum(np.minimum(ca[:, None, 2], cb[None, :, 2]), 1e-9)
    shift = np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1]) / np.maximum(side, 1e-9)
    feasible = (ratio <= _MAX_SIZE_RATIO) & (shift <= _MAX_STEP * span)
    pairs = assign(np.where(feasible, shift, 1e6))
    if len(pairs) != len(a) or not all(feasible[i, j] for i, j in pairs):
        return None
    return [(a[i].box, b[j].box) for i, j in pairs]


def _lerp(x: Sequence[float], y: Sequence[float], t: float) -> Box:
    """The box ``x + t (y - x)`` (t in [0, 1] interpolates, > 1 extrapolates)."""
    return tuple(u + t * (v - u) for u, v in zip(x, y))  # type: ignore[return-value]


def _cxcy_side(box: Sequence[float]) -> tuple[float, float, float]:
    """Centre and side (square root of the area) of an ``(x0, y0, x1, y1)`` box."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))


def _pairs_overlap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], min_iou: float) -> bool:
    """Whether boxes ``a`` and ``b`` pair one-to-one (same count, optimal assignment), each pair IoU >= ``min_iou``."""
    if len(a) != len(b):
        return False
    if not a:
        return True
    overlap = np.array([[iou(x, y) for y in b] for x in a])
    return all(overlap[i, j] >= min_iou for i, j in assign(1.0 - overlap))


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
    verify_iou: float = VERIFY_IOU,
    gap_rule: str = "motion",
    counts: DetectionCounts | None = None,
    **tracker_params: Any,
) -> list[Track]:
    """Tracks over one video's sampled frames, detecting on a subset of them (see the module docstring).

    ``chunks``: the sampled frames in order, ``[n, H, W, 3]`` per chunk;
    ``detect``: e.g. ``FaceDetector(...).detect``; ``stride``: detect every
    ``stride``-th frame when nothing changes (1 = every frame). Returns the
    same ``list[Track]`` as :func:`cliper_batch.faces.track.track_video`
    (frame indices = positions in the sampled sequence). ``counts``, when
    given, receives how many frames were detected and why.
    """
    driver = SparseFaceTracker(
        detect,
        cut_detector if cut_detector is not None else ShotCutDetector(),
        stride,
        confident_iou=confident_iou,
        cut_input=cut_input,
        tracker_params=tracker_params,
        verify_iou=verify_iou,
        gap_rule=gap_rule,
    )
    for frames in chunks:
        driver.feed(frames)
    tracks = driver.finish()
    if counts is not None:
        for f in fields(DetectionCounts):
            setattr(counts, f.name, getattr(driver.counts, f.name))
    return tracks
