"""Face tracking across the sampled frames of one video: detections -> tracks with stable ids.

Why: expression timelines are per *person*, so the faces found in each
sampled frame must be linked over time. We link by geometry only (no face
embedding model ships offline):

* **Motion prediction**: each track keeps a constant-velocity model of its box
  (centre, width, height per frame-index unit, smoothed), so two faces that
  cross keep their ids: a detection is compared with where a track is
  *expected* to be, not where it was last seen.
* **Association**: optimal one-to-one assignment (Hungarian algorithm) on
  cost ``1 - IoU(predicted box, detection)`` for pairs with IoU >=
  ``iou_threshold``; pairs below that may still match when the centres are
  close (normalised distance <= ``max_center_distance``, sizes within 1.5x),
  at a cost above every IoU match. This second gate lets a young track (no
  velocity yet) follow a face that moved far between two sparse samples.
* **Gaps**: a track survives ``max_gap`` consecutive :meth:`FaceTracker.update`
  calls without a matching detection; if it is matched again, the missed
  frames are **filled by linear interpolation** of the box and flagged
  ``interpolated=True`` with ``score=0.0``. A face gone longer gets a new id
  (there is no re-identification by appearance).
* **Shot cuts**: ``is_cut=True`` closes every open track before the frame's
  detections are used; nothing links across a cut.
* **Output**: tracks with fewer than ``min_track_length`` real detections
  are dropped; the survivors are numbered 1, 2, ... in order of first
  appearance (ties: larger face first). At most ``max_faces`` detections per
  frame are used (the largest ones; default 8).

Frame indices are whatever the caller numbers sampled frames with (positions
in the sampled sequence, or video frame numbers); they must strictly
increase. Velocities are per index unit, so sampling should be roughly
uniform. :meth:`FaceTracker.update` must be called for *every* sampled frame,
with an empty list when nothing was detected, because gaps are counted in
calls.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .detectors.base import Box, Detection

_INFEASIBLE = 1e6
_VELOCITY_SMOOTHING = 0.6  # weight of the newest velocity observation
_MAX_SIZE_RATIO = 1.5  # for the centre-distance gate


class TrackingError(ValueError):
    """Bad input to the face tracker (non-increasing frame index, bad box, bad parameter)."""


@dataclass
class Track:
    """One face followed through one shot.

    ``frame_indices``, ``boxes``, ``scores``, ``interpolated`` and ``skipped``
    are parallel lists in increasing frame order. Interpolated entries have
    ``score == 0.0`` and a box interpolated between detections: either the
    detector missed the face there (a short gap the tracker bridged) or it was
    not run there (``skipped``: sparse detection passed over a frame between
    two detections that continued the track as its motion model predicted, so
    the face counts as present). ``shot_index`` counts the cuts before the
    track (0 = first shot).
    """

    track_id: int
    frame_indices: list[int]
    boxes: list[Box]
    scores: list[float]
    interpolated: list[bool]
    shot_index: int = 0
    skipped: list[bool] | None = None  # None: the detector ran on every frame (all False)

    def __post_init__(self) -> None:
        if self.skipped is None:
            self.skipped = [False] * len(self.frame_indices)

    @property
    def first_frame(self) -> int:
        return self.frame_indices[0]

    @property
    def last_frame(self) -> int:
        return self.frame_indices[-1]

    @property
    def n_detections(self) -> int:
        """Frames where the face was actually detected (not interpolated)."""
        return len(self.interpolated) - sum(self.interpolated)

    def present(self, k: int) -> bool:
        """Whether the face counts as seen at entry ``k``: detected, or skipped by sparse detection."""
        return not self.interpolated[k] or bool(self.skipped[k])  # type: ignore[index]

    def box_at(self, frame_index: int) -> Box | None:
        """The track's box in ``frame_index`` (detected or interpolated), or None outside the track."""
        try:
            return self.boxes[self.frame_indices.index(frame_index)]
        except ValueError:
            return None


# --------------------------------------------------------------------------- geometry


def _to_cxcywh(b: Sequence[float]) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]], np.float64)


def _to_xyxy(s: np.ndarray) -> Box:
    cx, cy, w, h = (float(v) for v in s)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one assignment (Hungarian algorithm with potentials, O(n^2 m)).

    ``cost`` is ``[rows, cols]``; every row is assigned when rows <= cols
    (otherwise every column). Returns ``(row, col)`` pairs sorted by row.
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise TrackingError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    if n > m:
        return sorted((r, c) for c, r in assign(cost.T))
    # 1-based arrays; column 0 is a virtual start column
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # owner[j] = row assigned to column j (0 = none)
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    return sorted((int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j] != 0)


# --------------------------------------------------------------------------- tracker


@dataclass
class _Active:
    key: int  # creation order
    shot_index: int
    frames: list[int] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)  # cx, cy, w, h (detected frames only)
    scores: list[float] = field(default_factory=list)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    misses: int = 0
    seen_since: list[int] = field(default_factory=list)  # frames passed while unmatched (gap candidates)
    gap_frames: list[int] = field(default_factory=list)  # frames inside closed gaps (interpolated later)

    def predict(self, frame_index: int) -> np.ndarray:
        dt = frame_index - self.frames[-1]
        s = self.states[-1] + self.velocity * dt
        w0, h0 = self.states[-1][2], self.states[-1][3]
        s[2] = min(max(s[2], w0 / 2), w0 * 2)
        s[3] = min(max(s[3], h0 / 2), h0 * 2)
        return s


class FaceTracker:
    """Links per-frame detections into tracks (see the module docstring for the rules).

    Parameters
    ----------
    max_gap: consecutive sampled frames a face may go undetected and keep its id.
    iou_threshold: IoU between predicted and detected box that counts as a match.
    min_track_length: tracks with fewer real detections are dropped by :meth:`finish`.
    max_faces: at most this many detections per frame are used (largest first).
    max_center_distance: second gate: centre shift / box side that may still match (0 disables).
    """

    def __init__(
        self,
        max_gap: int = 2,
        iou_threshold: float = 0.3,
        min_track_length: int = 2,
        max_faces: int = 8,
        max_center_distance: float = 1.0,
    ) -> None:
        if not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
            raise TrackingError(f"max_gap must be an int >= 0, got {max_gap!r}")
        if not (0.0 < iou_threshold <= 1.0):
            raise TrackingError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        if not isinstance(min_track_length, (int, np.integer)) or min_track_length < 1:
            raise TrackingError(f"min_track_length must be an int >= 1, got {min_track_length!r}")
        if not isinstance(max_faces, (int, np.integer)) or max_faces < 1:
            raise TrackingError(f"max_faces must be an int >= 1, got {max_faces!r}")
        if max_center_distance < 0:
            raise TrackingError(f"max_center_distance must be >= 0, got {max_center_distance!r}")
        self.max_gap = int(max_gap)
        self.iou_threshold = float(iou_threshold)
        self.min_track_length = int(min_track_length)
        self.max_faces = int(max_faces)
        self.max_center_distance = float(max_center_distance)
        self._active: list[_Active] = []
        self._closed: list[_Active] = []
        self._next_key = 0
        self._shot = 0
        self._last_frame: int | None = None
        self._finished = False

    # ----------------------------------------------------------------- public

    def update(self, frame_index: int, detections: Sequence[Detection], is_cut: bool = False) -> None:
        """Consume the detections of the next sampled frame (``is_cut``: a new shot starts here)."""
        if self._finished:
            raise TrackingError("update() called after finish(); create a new FaceTracker per video")
        frame_index = int(frame_index)
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise TrackingError(f"frame indices must strictly increase: got {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        if is_cut:
            self._closed.extend(self._active)
            self._active = []
            self._shot += 1
        dets = self._select(detections)
        states = [_to_cxcywh(d.box) for d in dets]
        pairs = self._match(frame_index, states)
        matched_tracks = {t for t, _ in pairs}
        matched_dets = {d for _, d in pairs}
        for t, d in pairs:
            self._extend(self._active[t], frame_index, states[d], dets[d].score)
        survivors = []
        for k, trk in enumerate(self._active):
            if k in matched_tracks:
                survivors.append(trk)
                continue
            trk.misses += 1
            trk.seen_since.append(frame_index)
            (survivors if trk.misses <= self.max_gap else self._closed).append(trk)
        for d in range(len(dets)):  # dets are largest first, so ties in first frame keep that order
            if d not in matched_dets:
                trk = _Active(key=self._next_key, shot_index=self._shot)
                self._next_key += 1
                trk.frames.append(frame_index)
                trk.states.append(states[d])
                trk.scores.append(float(dets[d].score))
                survivors.append(trk)
        self._active = survivors

    def links(self, frame_index: int, detections: Sequence[Detection]) -> bool:
        """Whether :meth:`update` with ``detections`` would continue every open track and start none.

        True when each open track matches one detection and every detection
        matches a track (the association rules above). False means a track
        would miss (a face vanished, or moved further than the gates allow
        from where its motion model expects it) or a new one would start. Reads
        state only.
        """
        return self._links(int(frame_index), [_to_cxcywh(d.box) for d in self._select(detections)]) is not None

    def confident(self, frame_index: int, detections: Sequence[Detection], min_iou: float) -> bool:
        """Whether ``detections`` at ``frame_index`` continue every open track without surprises.

        :meth:`links`, and every matched detection overlaps its track's
        *predicted* box by IoU >= ``min_iou``. False means a face appeared,
        disappeared or moved against the motion model; a caller that skipped
        frames since the last update should look at them. Reads state only.
        """
        frame_index = int(frame_index)
        states = [_to_cxcywh(d.box) for d in self._select(detections)]
        pairs = self._links(frame_index, states)
        if pairs is None:
            return False
        return all(iou(_to_xyxy(self._active[t].predict(frame_index)), _to_xyxy(states[d])) >= min_iou for t, d in pairs)

    def finish(self) -> list[Track]:
        """Close all tracks; return those with >= ``min_track_length`` detections, ids 1.. by first appearance."""
        if not self._finished:
            self._closed.extend(self._active)
            self._active = []
            self._finished = True
        kept = [t for t in self._closed if len(t.frames) >= self.min_track_length]
        kept.sort(key=lambda t: (t.frames[0], t.key))
        return [self._materialise(t, i + 1) for i, t in enumerate(kept)]

    # ----------------------------------------------------------------- internals

    def _select(self, detections: Sequence[Detection]) -> list[Detection]:
        dets = []
        for d in detections:
            if not isinstance(d, Detection):
                raise TrackingError(f"detections must be Detection objects, got {type(d).__name__}")
            x0, y0, x1, y1 = d.box
            if not (x1 > x0 and y1 > y0) or not all(np.isfinite(d.box)):
                raise TrackingError(f"detection box must be finite with x1 > x0 and y1 > y0, got {d.box}")
            dets.append(d)
        dets.sort(key=lambda d: -d.area)
        return dets[: self.max_faces]

    def _links(self, frame_index: int, states: list[np.ndarray]) -> list[tuple[int, int]] | None:
        """The one-to-one (track, detection) matching that leaves no track and no detection out, or None."""
        if len(states) != len(self._active):
            return None
        pairs = self._match(frame_index, states)
        return pairs if len(pairs) == len(states) else None

    def _match(self, frame_index: int, states: list[np.ndarray]) -> list[tuple[int, int]]:
        if not self._active or not states:
            return []
        cost = np.full((len(self._active), len(states)), _INFEASIBLE)
        for t, trk in enumerate(self._active):
            pred = trk.predict(frame_index)
            pbox = _to_xyxy(pred)
            pside = float(np.sqrt(pred[2] * pred[3]))
            for d, s in enumerate(states):
                ov = iou(pbox, _to_xyxy(s))
                if ov >= self.iou_threshold:
                    cost[t, d] = 1.0 - ov
                elif self.max_center_distance > 0:
                    dside = float(np.sqrt(s[2] * s[3]))
                    ratio = dside / max(pside, 1e-9)
                    dist = float(np.hypot(*(s[:2] - pred[:2]))) / max(pside, dside)
                    if dist <= self.max_center_distance and 1 / _MAX_SIZE_RATIO <= ratio <= _MAX_SIZE_RATIO:
                        cost[t, d] = 1.0 + dist
        return [(t, d) for t, d in assign(cost) if cost[t, d] < _INFEASIBLE]

    @staticmethod
    def _extend(trk: _Active, frame_index: int, state: np.ndarray, score: float) -> None:
        dt = frame_index - trk.frames[-1]
        observed = (state - trk.states[-1]) / dt
        if len(trk.frames) >= 2:
            trk.velocity = _VELOCITY_SMOOTHING * observed + (1 - _VELOCITY_SMOOTHING) * trk.velocity
        else:
            trk.velocity = observed
        trk.frames.append(frame_index)
        trk.states.append(state)
        trk.scores.append(float(score))
        trk.misses = 0
        trk.gap_frames.extend(trk.seen_since)
        trk.seen_since = []

    @staticmethod
    def _materialise(trk: _Active, track_id: int) -> Track:
        gaps = sorted(trk.gap_frames)
        frames: list[int] = []
        boxes: list[Box] = []
        scores: list[float] = []
        interp: list[bool] = []
        det_frames = np.array(trk.frames, np.float64)
        det_states = np.stack(trk.states)
        entries = [(f, k, False) for k, f in enumerate(trk.frames)] + [(f, -1, True) for f in gaps]
        for f, k, is_interp in sorted(entries):
            if is_interp:
                s = np.array([np.interp(f, det_frames, det_states[:, c]) for c in range(4)])
                boxes.append(_to_xyxy(s))
                scores.append(0.0)
            else:
                boxes.append(_to_xyxy(det_states[k]))
                scores.append(trk.scores[k])
            frames.append(int(f))
            interp.append(is_interp)
        return Track(track_id, frames, boxes, scores, interp, trk.shot_index)


def fill_gaps(track: Track) -> Track:
    """The same track with a box at every frame index between its first and last one.

    Indices the tracker never saw (frames a caller did not run the detector
    on) get the box linearly interpolated between the detections on either
    side, ``score=0.0``, ``interpolated=True`` and ``skipped=True``.
    """
    have = set(track.frame_indices)
    missing = [f for f in range(track.first_frame, track.last_frame + 1) if f not in have]
    if not missing:
        return track
    real = [k for k, i in enumerate(track.interpolated) if not i]
    xs = np.array([track.frame_indices[k] for k in real], np.float64)
    ys = np.array([_to_cxcywh(track.boxes[k]) for k in real])
    entries = [
        (f, track.boxes[k], track.scores[k], track.interpolated[k], track.skipped[k])  # type: ignore[index]
        for k, f in enumerate(track.frame_indices)
    ]
    for f in missing:
        s = np.array([np.interp(f, xs, ys[:, c]) for c in range(4)])
        entries.append((f, _to_xyxy(s), 0.0, True, True))
    entries.sort(key=lambda e: e[0])
    f, b, sc, it, sk = (list(col) for col in zip(*entries))
    return Track(track.track_id, f, b, sc, it, track.shot_index, sk)


def track_video(
    detections_per_frame: Sequence[Sequence[Detection]],
    cuts: Iterable[int] = (),
    frame_indices: Sequence[int] | None = None,
    **params: object,
) -> list[Track]:
    """Track faces through one video's sampled frames in one call.

    ``detections_per_frame[i]`` are the detections of the i-th sampled frame,
    whose index is ``frame_indices[i]`` (default ``i``); ``cuts`` are frame
    indices (same numbering) where a new shot starts, e.g. from
    :func:`cliper_batch.faces.cuts.detect_cuts`. ``params`` go to
    :class:`FaceTracker`.
    """
    n = len(detections_per_frame)
    idx = list(range(n)) if frame_indices is None else [int(i) for i in frame_indices]
    if len(idx) != n:
        raise TrackingError(f"frame_indices has {len(idx)} entries for {n} frames of detections")
    cut_set = {int(c) for c in cuts}
    unknown = cut_set - set(idx)
    if unknown:
        raise TrackingError(f"cuts {sorted(unknown)} are not among the frame indices")
    tracker = FaceTracker(**params)  # type: ignore[arg-type]
    for i, dets in zip(idx, detections_per_frame):
        tracker.update(i, dets, is_cut=i in cut_set)
    return tracker.finish()


__all__ = ["FaceTracker", "Track", "TrackingError", "assign", "fill_gaps", "iou", "track_video"]
