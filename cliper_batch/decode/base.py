"""The frame-decoder interface shared by the PyAV and DALI backends, plus the timing rules both obey.

A decoder turns (video, sampled timestamps) into upright RGB frames. The frame
for timestamp ``t`` is the frame *displayed* at ``t``: the last frame whose
presentation time is <= ``t`` (times are measured from the stream's first
frame), clamped to the first/last frame. When frames are missing (damaged or
truncated input) a decoded frame may stand in for a neighbour at most one
frame period away; beyond that the decoder raises :class:`DecodeError`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..types import VideoInfo

__all__ = [
    "DecodeError",
    "DecoderUnavailable",
    "FrameDecoder",
    "TIME_EPS",
    "time_eps",
    "validate_request",
    "output_size",
    "pre_rotation_size",
    "frame_period",
    "choose_frame",
]

# Timestamps and frame times are compared with a slack of TIME_EPS frame
# periods, so that a timestamp computed as k/fps in floating point still selects
# frame k - the same rule as ``sampling.frame_indices`` (floor(t*fps + 1e-6)).
TIME_EPS = 1e-6


class DecodeError(RuntimeError):
    """The file cannot deliver the requested frames (unreadable, damaged, truncated, unsupported).

    One calling convention: ``DecodeError(uri, reason)`` -> message ``"<uri>: <reason>"``.
    """

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri, self.reason = uri, reason

    def __reduce__(self):  # keep both fields when pickled across Ray workers
        return (type(self), (self.uri, self.reason))


class DecoderUnavailable(RuntimeError):
    """The requested decoder backend cannot handle this codec on this device (or is not installed)."""


@runtime_checkable
class FrameDecoder(Protocol):
    """What the pipeline calls; implemented by ``PyAVDecoder`` and ``DaliDecoder``."""

    name: str  # 'pyav' | 'dali-cpu' | 'dali-gpu' | 'pillow' (still images, image_backend.py)

    def iter_frames(
        self,
        uri: str,
        info: VideoInfo,
        timestamps: Sequence[float],
        size: tuple[int, int] | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield exactly ``len(timestamps)`` frames, in order, as (H, W, 3) uint8 RGB, upright.

        ``size=(width, height)`` is the output size of the upright frame;
        ``None`` keeps ``(info.width, info.height)``. Memory stays bounded
        regardless of video length. Raises :class:`DecodeError`.
        """
        ...


def validate_request(uri: str, timestamps: Sequence[float], size: tuple[int, int] | None) -> list[float]:
    """Check timestamps (finite, >= 0) and size (two positive ints); return the timestamps as floats."""
    ts = [float(t) for t in timestamps]
    for t in ts:
        if not np.isfinite(t) or t < 0:
            raise ValueError(f"{uri}: timestamps must be finite and >= 0, got {t!r}")
    if size is not None:
        if len(size) != 2 or any(int(v) != v or v <= 0 for v in size):
            raise ValueError(f"{uri}: size must be (width, height) positive ints, got {size!r}")
    return ts


def output_size(info: VideoInfo, size: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) of the upright output frames."""
    return (int(size[0]), int(size[1])) if size is not None else (int(info.width), int(info.height))


def pre_rotation_size(info: VideoInfo, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) to scale the *stored* frame to, so that rotating it gives ``size``.

    ``None`` when no scaling is asked for.
    """
    if size is None:
        return None
    w, h = int(size[0]), int(size[1])
    return (h, w) if info.rotation in (90, 270) else (w, h)


def frame_period(info: VideoInfo) -> float:
    """Nominal frame period in seconds (1/fps)."""
    return 1.0 / info.fps if info.fps and info.fps > 0 else 0.0


def time_eps(info: VideoInfo) -> float:
    """Comparison slack in seconds: TIME_EPS frame periods (TIME_EPS s when fps is unknown)."""
    return TIME_EPS / info.fps if info.fps and info.fps > 0 else TIME_EPS


def choose_frame(
    t: float,
    prev_time: float | None,
    prev_duration: float | None,
    next_time: float | None,
    info: VideoInfo,
    damaged: bool = False,
) -> str | None:
    """Which decoded frame serves timestamp ``t``: ``'prev'``, ``'next'`` or ``None`` (no acceptable frame).

    ``prev`` is the last frame starting at or before ``t`` (``None`` if there is
    none), ``next`` the first one starting after ``t`` (``None`` at the end of
    the stream). ``prev`` covers ``[prev_time, prev_time + duration)`` (duration
    from the container, else one nominal period).

    - ``t`` inside that interval: ``'prev'``.
    - ``t`` in a hole between ``prev`` and ``next``: a hole is normal in
      variable-frame-rate video (container durations are often missing or
      nominal), so ``prev`` - the frame a player shows - is used, unless the
      decoder saw damage there (``damaged``: packets FFmpeg rejected).
    - Damaged hole, before the first frame, or past the last frame: the nearer
      of ``prev``/``next`` stands in if it is at most one frame period from
      ``t``; otherwise ``None`` (the caller raises :class:`DecodeError`).
    """
    period = frame_period(info)
    eps = time_eps(info)
    if prev_time is None:
        if next_time is not None and next_time - t <= period + eps:
            return "next"
        return None
    own = prev_duration if prev_duration and prev_duration > 0 else period
    past = t - (prev_time + own)
    if past < eps:
        return "prev"
    if next_time is not None and not damaged:
        return "prev"
    ahead = next_time - t if next_time is not None else float("inf")
    if min(past, ahead) > period + eps:
        return None
    return "prev" if past <= ahead else "next"
