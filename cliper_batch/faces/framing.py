"""Face framing for ``--faces detect``: find faces, follow them, and plan one clip per (track, segment).

Two passes over the sampled frames of one video, driven by
:mod:`cliper_batch.video_annotation`:

1. decode at the detection size -> shot cuts + batched face detection on every
   ``detect_stride``-th frame (and wherever tracking is unsure) -> tracks
   (:func:`find_tracks`; :func:`cliper_batch.faces.sparse.track_sparse`: ids 1..
   per video, reset at cuts). The next chunk decodes on a background thread
   while the detector works on the current one (``prefetch_chunks``,
   :func:`cliper_batch.prefetch.prefetch`);
2. for every segment and every track seen in it, ``T`` square crop boxes
   (box + margin, :func:`clip_boxes`) that the worker's crop primitive resizes
   to the model input.

Pass 2 crops from the frames pass 1 decoded when all of the video's sampled
frames fit ``keep_frames_bytes`` (uint8 at the detection size, on the worker's
frames device: 240 frames of 640x360 are 166 MB); a longer video is decoded a
second time instead, chunk by chunk, so memory stays bounded by the budget or
by one chunk. Both give the same frames, so the same rows and crops, bit for
bit; the outcome's ``extra["decode_passes"]`` says which ran (1 or 2). Segments
where a track is absent yield no row for it. Frames may be numpy arrays or
torch tensors on any device: only boxes (and a subsampled copy for the
shot-cut detector) go to the host.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..crops.reference import square_box_with_margin
from ..types import DEFAULT_DETECT_STRIDE, Segment
from .cuts import ShotCutDetector, subsample_for_cuts
from .detectors.base import Detector
from .sparse import track_sparse
from .track import Track

MAX_FACES_PER_FRAME = 8  # largest faces first; documented in docs/faces.md

CropBox = tuple[float, float, float, float, float]  # (frame index in the chunk, x0, y0, x1, y1)


@dataclass(frozen=True)
class FramingParams:
    """How ``--faces detect`` frames faces (detection size, crop margin, tracking limits, chunking)."""

    detect_side: int = 640  # frames are decoded with their long side at most this for detection and crops
    margin: float = 0.2  # fraction of the face box's longer side added around it
    max_faces: int = MAX_FACES_PER_FRAME
    min_track_length: int = 2
    max_gap: int = 2
    chunk_frames: int = 64  # frames per detection batch in pass 1
    # Pass 2 crops from pass 1's frames when the video's sampled frames (uint8, detection size) take at most
    # this many bytes on the frames device; above it they are decoded again. Sized for a laptop worker:
    # 256 MiB holds 60 s at 4 samples/s of 640x360 (166 MB). 0 = always decode twice.
    keep_frames_bytes: int = 256 * 2**20
    prefetch_chunks: int = 1  # decode runs this many chunks ahead on a thread (pass 1; --faces none); 0 = inline

    def __post_init__(self) -> None:
        if self.keep_frames_bytes < 0:
            raise ValueError(f"keep_frames_bytes must be >= 0, got {self.keep_frames_bytes}")
        if self.prefetch_chunks < 0:
            raise ValueError(f"prefetch_chunks must be >= 0, got {self.prefetch_chunks}")


def detection_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) with the long side at most ``side`` (never upscaled), even numbers for swscale."""
    s = min(1.0, side / max(width, height))
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def find_tracks(
    chunks: Iterable, detector: Detector, params: FramingParams, stride: int = DEFAULT_DETECT_STRIDE
) -> list[Track]:
    """Pass 1: cuts + detections over all sampled frames, given in ``[n, H, W, 3]`` chunks (in order).

    Frame indices are positions in the sample list. Chunks may be numpy arrays
    or tensors on the detector's device. ``stride``: the detector runs on every
    ``stride``-th frame, every cut and every gap the tracker is unsure about
    (:mod:`cliper_batch.faces.sparse`); 1 = every frame; default: the job's default.
    """
    return track_sparse(
        chunks, detector.detect, stride, ShotCutDetector(), cut_input=subsample_for_cuts,
        max_gap=params.max_gap, min_track_length=params.min_track_length, max_faces=params.max_faces,
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
            seen = sum(track.present(where[k]) for k in present)  # detected, or skipped by sparse detection
            out.setdefault(seg.index, []).append(TrackSegment(track, seg, boxes, seen, score))
    for v in out.values():
        v.sort(key=lambda ts: ts.track.track_id)
    return out


def clip_boxes(item: TrackSegment, first_frame: int, margin: float, width: int, height: int) -> list[CropBox]:
    """The ``T`` square crop boxes of one (track, segment) clip whose frames start at ``first_frame`` of a chunk."""
    out: list[CropBox] = []
    for t, box in enumerate(item.boxes):
        x0, y0, x1, y1 = square_box_with_margin(box, margin, width, height)
        out.append((float(first_frame + t), x0, y0, x1, y1))
    return out


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
