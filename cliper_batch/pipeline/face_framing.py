"""Face framing for ``--faces detect``: find faces, follow them, and crop one clip per (track, segment).

Two passes over the sampled frames of one video, both streamed in chunks:

1. decode at the detection size -> shot cuts + batched face detection -> tracks
   (:func:`cliper_batch.faces.track.track_video`: ids 1.. per video, reset at cuts);
2. decode again -> for every segment and every track seen in it, ``T`` square
   crops (box + margin) resized to the model input.

Decoding twice is cheap next to detection (hundreds of frames/s vs tens) and
keeps memory bounded: no pass holds more than one chunk of frames. Segments
where a track is absent yield no row for it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..crops import crop_resize, square_box_with_margin
from ..faces.cuts import ShotCutDetector
from ..faces.detect import FaceDetector
from ..faces.track import Track, track_video
from ..types import Segment

MAX_FACES_PER_FRAME = 8  # largest faces first; documented in docs/faces.md


@dataclass(frozen=True)
class FaceParams:
    detect_side: int = 640  # frames are decoded with their long side at most this for detection and crops
    margin: float = 0.2  # fraction of the face box's longer side added around it
    max_faces: int = MAX_FACES_PER_FRAME
    min_track_length: int = 2
    max_gap: int = 2
    chunk_frames: int = 64


def detection_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) with the long side at most ``side`` (never upscaled), even numbers for swscale."""
    s = min(1.0, side / max(width, height))
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def _chunks(it, n: int) -> Iterator[list[np.ndarray]]:
    buf: list[np.ndarray] = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def find_tracks(frames: Iterator[np.ndarray], detector: FaceDetector, params: FaceParams) -> list[Track]:
    """Pass 1: cuts + detections over all sampled frames (indices = positions in the sample list)."""
    cut_detector = ShotCutDetector()
    detections: list = []
    cuts: list[int] = []
    offset = 0
    for chunk in _chunks(frames, params.chunk_frames):
        arr = np.stack(chunk)
        cuts.extend(cut_detector.update(arr))
        detections.extend(detector.detect(arr, frame_indices=range(offset, offset + len(arr))))
        offset += len(arr)
    return track_video(
        detections, cuts, max_gap=params.max_gap, min_track_length=params.min_track_length, max_faces=params.max_faces
    )


@dataclass
class TrackSegment:
    """One (track, segment) clip to crop: a box per sampled frame and what was really seen."""

    track: Track
    segment: Segment
    boxes: list[tuple[float, float, float, float]]  # T boxes (held from the nearest seen frame where absent)
    frames_with_face: int
    face_score: float


def plan_track_segments(tracks: list[Track], segments: list[Segment], T: int) -> dict[int, list[TrackSegment]]:
    """segment index -> the track clips that segment contributes (tracks seen in it, by id)."""
    out: dict[int, list[TrackSegment]] = {}
    for track in tracks:
        where = {f: i for i, f in enumerate(track.frame_indices)}
        for seg in segments:
            ks = range(seg.index * T, (seg.index + 1) * T)
            present = [k for k in ks if k in where]
            if not present:
                continue
            boxes = []
            for k in ks:
                src = k if k in where else min(present, key=lambda p: abs(p - k))
                boxes.append(tuple(track.boxes[where[src]]))
            real = [where[k] for k in present if not track.interpolated[where[k]]]
            score = float(np.mean([track.scores[i] for i in real])) if real else 0.0
            out.setdefault(seg.index, []).append(TrackSegment(track, seg, boxes, len(real), score))
    for v in out.values():
        v.sort(key=lambda ts: ts.track.track_id)
    return out


def crop_track_segments(
    frames: np.ndarray, items: list[TrackSegment], size: int, margin: float
) -> np.ndarray:
    """``frames [T, H, W, 3]`` of one segment -> ``[len(items), T, S, S, 3]`` uint8 crops."""
    T, H, W, _ = frames.shape
    rows = []
    for item in items:
        for t, box in enumerate(item.boxes):
            x0, y0, x1, y1 = square_box_with_margin(box, margin, W, H)
            rows.append((t, x0, y0, x1, y1))
    boxes = torch.tensor(rows, dtype=torch.float32)
    crops = crop_resize(torch.from_numpy(frames), boxes, size)
    return crops.numpy().reshape(len(items), T, size, size, 3)


def face_columns(items: list[TrackSegment], width: int, height: int) -> dict[str, np.ndarray]:
    """Normalised median box, mean detection score and frames seen, per (track, segment)."""
    b = np.array([np.median(np.asarray(it.boxes, dtype=np.float64), axis=0) for it in items]).reshape(-1, 4)
    return {
        "face_x0": (b[:, 0] / width).astype(np.float32),
        "face_y0": (b[:, 1] / height).astype(np.float32),
        "face_x1": (b[:, 2] / width).astype(np.float32),
        "face_y1": (b[:, 3] / height).astype(np.float32),
        "face_score": np.array([it.face_score for it in items], dtype=np.float32),
        "frames_with_face": np.array([it.frames_with_face for it in items], dtype=np.int16),
    }
