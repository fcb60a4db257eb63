"""Segment plan: fixed-duration segments and T timestamps sampled uniformly inside each."""
from __future__ import annotations

import math

from ..types import Segment, VideoInfo

# A trailing partial segment shorter than this fraction of a segment is merged
# into the previous one rather than scored on its own.
MIN_TAIL_FRACTION = 0.25


def plan_segments(duration_s: float, segment_seconds: float, frames_per_segment: int) -> list[Segment]:
    """Split ``[0, duration_s)`` into segments and sample ``frames_per_segment`` timestamps in each.

    Timestamps sit at the centres of ``T`` equal sub-windows of a segment (the
    "centre" sampling used at evaluation time by CLIPER/DFER-CLIP). A short tail
    (< 25% of a segment) is merged into the previous segment; a video shorter
    than one segment yields one segment covering all of it.
    """
    if not (duration_s > 0) or math.isinf(duration_s):
        raise ValueError(f"cannot plan segments for duration {duration_s!r}")
    if segment_seconds <= 0 or frames_per_segment < 1:
        raise ValueError("segment_seconds must be > 0 and frames_per_segment >= 1")
    n_full = int(math.floor(duration_s / segment_seconds + 1e-9))
    tail = duration_s - n_full * segment_seconds
    bounds = [(i * segment_seconds, (i + 1) * segment_seconds) for i in range(n_full)]
    if tail > 1e-9:
        if bounds and tail < MIN_TAIL_FRACTION * segment_seconds:
            bounds[-1] = (bounds[-1][0], duration_s)
        else:
            bounds.append((n_full * segment_seconds, duration_s))
    segments = []
    for i, (start, end) in enumerate(bounds):
        step = (end - start) / frames_per_segment
        ts = tuple(start + (k + 0.5) * step for k in range(frames_per_segment))
        segments.append(Segment(index=i, start_s=start, end_s=end, timestamps=ts))
    return segments


def plan_for(info: VideoInfo, segment_seconds: float, frames_per_segment: int) -> list[Segment]:
    """The segments of a probed item. A still image (``info.kind == "image"``) is one segment at time 0
    (``start_s == end_s == 0``) whose ``frames_per_segment`` samples are all its one frame, so that it
    is framed, cropped and scored exactly like a video segment (mean pooling over copies of one frame
    is that frame's features)."""
    if info.kind == "image":
        if frames_per_segment < 1:
            raise ValueError("frames_per_segment must be >= 1")
        return [Segment(index=0, start_s=0.0, end_s=0.0, timestamps=(0.0,) * frames_per_segment)]
    return plan_segments(info.duration_s, segment_seconds, frames_per_segment)


def frame_indices(timestamps: list[float] | tuple[float, ...], fps: float, n_frames: int | None = None) -> list[int]:
    """Constant-frame-rate mapping of timestamps to the frame displayed at that time."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out = []
    for t in timestamps:
        i = int(math.floor(t * fps + 1e-6))
        if n_frames is not None:
            i = min(i, n_frames - 1)
        out.append(max(i, 0))
    return out
