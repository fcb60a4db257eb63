"""CPU frame decoding with PyAV (FFmpeg): sample by presentation time, seek over long gaps.

One container is opened per ``iter_frames`` call and walked forward once.
Frames are selected by PTS (``pts * time_base`` relative to the stream start),
never by decode order, because B-frames reorder. Only selected frames are
converted to RGB, scaled inside swscale (``to_ndarray(width=, height=)``) so a
4K frame is never materialised as full-resolution RGB. When the next wanted
timestamp is far ahead - past a keyframe that lies well beyond the current
position (from the container index), or more than ``seek_threshold_s`` when the
container has no usable index - the reader seeks back to the keyframe before
it and decodes forward from there. Memory is bounded: the reader holds at most
the current frame, one look-ahead frame, ``LOOKAHEAD_PACKETS`` demuxed packets
and FFmpeg's internal decode queue.

Walking between sparse samples, frames nobody asked for are not decoded when
the codec allows it: a packet is sent with ``skip_frame = NONREF`` (FFmpeg then
drops it if no other frame references it - H.264/HEVC non-reference B/P frames)
only when the packets already seen (demuxed ahead or sent) prove that the frame
can be neither the one shown at the wanted timestamp ``t`` (another frame starts
after it, at or before ``t``), nor the first frame after ``t`` (which the timing
rules consult), nor the one shown at the timestamp asked for next or later
(another frame starts after it, at or before that timestamp). Reference frames
are decoded as always, so every returned frame is bit-identical to a full
decode. The proof needs each packet's presentation time, so a packet without
one is always decoded. Only when ``skip_nonref`` is on (default).

Damaged packets are skipped (FFmpeg conceals what it can); a decoded frame may
stand in for missing ones only within one frame period (see ``base.choose_frame``).
"""
from __future__ import annotations

import bisect
import contextlib
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from av.video.reformatter import VideoReformatter

from .probe import clockwise_rotation, open_container, rotate_upright
from ..types import VideoInfo
from .base import DecodeError, choose_frame, frame_period, time_eps, validate_request

__all__ = ["PyAVDecoder"]

# Decoder output lags packet input by the reorder depth plus one frame per
# decode thread; errors are attributed to frames within this many periods.
REORDER_WINDOW_FRAMES = 32
# Packets demuxed ahead of the decoder: enough to see past the B-frame reorder
# depth (x264 <= 16), so a non-reference frame's successor in display order is known.
LOOKAHEAD_PACKETS = 24


def timestamp_seconds(ts: int, num: int, den: int) -> float:
    """``float(Fraction(ts) * Fraction(num, den))`` without the Fractions: the same float, bit for bit.

    Both are the exact rational ``ts * num / den`` rounded once to the nearest float (Python's int
    true division is correctly rounded, like ``Fraction.__float__``). The reader converts every
    demuxed packet's timestamp once (1,500 a minute at 25 fps) and every frame's; as Fractions,
    converted again for each of the ~24 packets read ahead, that was 0.2 CPU s per 60 s video.
    """
    return (ts * num) / den


@dataclass
class _Decoded:
    frame: Any  # av.VideoFrame
    time: float  # seconds from the stream start
    duration: float | None  # display duration in seconds, when the container says
    rgb: np.ndarray | None = None  # converted output, made at most once
    yielded: bool = False


class PyAVDecoder:
    """:class:`~cliper_batch.decode.base.FrameDecoder` backed by PyAV.

    Stateless between calls (each call opens its own container), so one
    instance may be shared by threads.

    Args:
        threads: FFmpeg decoder threads per video (0 = FFmpeg picks, one per core).
            Lower it when many videos decode in parallel in one process/node.
        storage_options: fsspec options for remote URIs.
        seek_min_skip_s: seek forward only when it skips at least this much video.
        seek_threshold_s: without a container index, seek when the next
            timestamp is more than this far ahead.
        interpolation: swscale interpolation used when ``size`` is given.
        skip_nonref: let FFmpeg skip non-reference frames that provably lie
            between two wanted timestamps (module docstring); never changes output.
    """

    name = "pyav"

    def __init__(
        self,
        threads: int = 0,
        storage_options: dict | None = None,
        seek_min_skip_s: float = 1.0,
        seek_threshold_s: float = 5.0,
        interpolation: str = "AREA",
        skip_nonref: bool = True,
    ):
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self.threads = threads
        self.storage_options = dict(storage_options or {})
        self.seek_min_skip_s = float(seek_min_skip_s)
        self.seek_threshold_s = float(seek_threshold_s)
        self.interpolation = interpolation
        self.skip_nonref = bool(skip_nonref)
        self.last_stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PyAVDecoder(threads={self.threads})"

    def iter_frames(
        self,
        uri: str,
        info: VideoInfo,
        timestamps: Sequence[float],
        size: tuple[int, int] | None = None,
    ) -> Iterator[np.ndarray]:
        """See :meth:`FrameDecoder.iter_frames`."""
        import av

        ts = validate_request(uri, timestamps, size)
        if not ts:
            return
        with contextlib.ExitStack() as stack:
            try:
                container = stack.enter_context(open_container(uri, **self.storage_options))
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise DecodeError(uri, f"cannot open video ({type(exc).__name__}: {exc})") from exc
            reader = _Reader(self, uri, info, container, size)
            try:
                for k, t in enumerate(ts):
                    try:
                        frame = reader.frame_at(t, ts[k + 1] if k + 1 < len(ts) else None)
                    except av.FFmpegError as exc:
                        raise DecodeError(uri, f"decoding failed near t={t:.3f}s ({type(exc).__name__}: {exc})") from exc
                    except OSError as exc:
                        raise DecodeError(uri, f"read failed near t={t:.3f}s ({type(exc).__name__}: {exc})") from exc
                    yield frame
            finally:
                self.last_stats = dict(reader.stats)


class _Reader:
    """Forward-walking, seeking frame source over one opened container."""

    def __init__(self, owner: PyAVDecoder, uri: str, info: VideoInfo, container, size: tuple[int, int] | None):
        self.owner, self.uri, self.info, self.container = owner, uri, info, container
        if not container.streams.video:
            raise DecodeError(uri, "no video stream")
        self.stream = stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = owner.threads
        self.tb = stream.time_base
        # the time base as two ints: ``(ts * num) / den`` is the float of the exact rational ``ts * tb`` (correctly
        # rounded, as ``float(ts * tb)``), without building a Fraction per packet (~3 us each, 0.2 s of a 60 s video)
        self._tb = (self.tb.numerator, self.tb.denominator) if self.tb is not None else None
        self.origin = float(stream.start_time * self.tb) if stream.start_time is not None else 0.0
        self.size = size
        self.period = frame_period(info)
        self.eps = time_eps(info)
        self.keyframes = self._keyframe_times()
        self.errors = 0
        self.error_times: list[float] = []  # stream time reached when each damaged packet was hit
        self.last_error = ""
        self.stats = {"seeks": 0, "decoded": 0, "converted": 0, "skipped_packets": 0, "nonref_skippable": 0}
        self.target: float | None = None  # the timestamp being served
        self.next_target: float | None = None  # the one asked for after it (None: none, or earlier)
        self.sent: deque = deque(maxlen=2 * LOOKAHEAD_PACKETS)  # presentation times of packets sent lately
        self._skipping = False
        # One swscale context for the whole video: frame.to_ndarray(width=...) builds a new
        # one per frame, which measured ~1.5-2x slower for 640x360 -> 398x224.
        self.reformatter = VideoReformatter()  # scaling, in the source pixel format
        self.rgb_reformatter = VideoReformatter()  # unscaled conversion to RGB
        self._restart()

    # ----- stream position -------------------------------------------------
    def _keyframe_times(self) -> list[float]:
        """Keyframe times from the container index (mp4 sample table, mkv cues); [] when absent."""
        try:
            entries = self.stream.index_entries
            times = [float(e.timestamp * self.tb) - self.origin for e in entries if e.is_keyframe]
        except (AttributeError, TypeError):
            return []
        times.sort()
        return times if len(times) >= 2 else []

    def _restart(self) -> None:
        self.sent = deque(maxlen=2 * LOOKAHEAD_PACKETS)
        self.packets = self.container.demux(self.stream)
        self.ahead: deque = deque()  # (demuxed packet not yet sent, its time in s) (or a demux error, in its place)
        self.demux_done = False
        self.pending: deque = deque()
        self.eof = False
        self.held: _Decoded | None = None
        self.peek: _Decoded | None = None
        self.last_time: float | None = None

    def _position(self) -> float:
        if self.held is not None:
            return self.held.time
        if self.peek is not None:
            return self.peek.time
        return 0.0

    def _should_seek_forward(self, t: float) -> bool:
        pos = self._position()
        if t - pos <= self.owner.seek_min_skip_s:
            return False
        if self.keyframes:
            i = bisect.bisect_right(self.keyframes, t + self.eps) - 1
            return i >= 0 and self.keyframes[i] > pos + self.owner.seek_min_skip_s
        return t - pos > self.owner.seek_threshold_s

    def _seek(self, t: float) -> None:
        """Position the decoder so that the first frame out is at or before ``t``.

        A seek can land after the target (coarse index, open GOP); back off
        further each time, ending at the stream start.
        """
        for back in (0.0, 1.0, 4.0, 16.0, math.inf):
            target = max(t - back, 0.0)
            offset = int(math.floor((target + self.origin) / float(self.tb)))
            self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
            self.stats["seeks"] += 1
            self._restart()
            self.peek = self._next()
            if self.peek is None or self.peek.time <= t + self.eps or target <= 0.0:
                return

    # ----- frames ------------------------------------------------------------
    def _read_ahead(self) -> None:
        import av

        while len(self.ahead) < LOOKAHEAD_PACKETS and not self.demux_done:
            try:
                packet = next(self.packets)
            except StopIteration:
                self.demux_done = True
            except av.FFmpegError as exc:  # raised again when the decoder gets there
                self.ahead.append((exc, None))
                self.demux_done = True
            else:
                self.ahead.append((packet, self._pts_s(packet)))  # its time, computed once

    def _seconds(self, ts: int) -> float:
        """``float(ts * time_base)``, bit for bit (:func:`timestamp_seconds`)."""
        if self._tb is None:
            return float(ts * self.tb)
        return timestamp_seconds(ts, *self._tb)

    def _pts_s(self, packet) -> float | None:
        return None if packet.pts is None else self._seconds(packet.pts) - self.origin

    def _skippable(self, p: float | None) -> bool:
        """Whether the packets seen prove the frame of a packet at time ``p`` is never needed (rules: module docstring)."""
        if not self.owner.skip_nonref or self.target is None:
            return False
        if p is None:
            return False
        known = list(self.sent)
        for q, tq in self.ahead:
            if isinstance(q, Exception):
                return False  # damage ahead: the frame may have to stand in for a lost one
            if tq is not None:
                known.append(tq)
        t, eps = self.target, self.eps
        if p <= t + eps:  # shown at t unless a later frame starts by t (then never shown later either)
            return any(p < q <= t + eps for q in known)
        n = self.next_target
        if n is None or p > n + eps:
            return False
        # after t: not the first frame after t, and not shown at n (so not at any later timestamp)
        return any(t + eps < q < p for q in known) and any(p < q <= n + eps for q in known)

    def _decode(self, packet, p: float | None) -> None:
        """Send ``packet`` (shown at ``p`` s, None if it has no pts) to the decoder; keep what comes out."""
        import av

        skip = self._skippable(p)
        if skip != self._skipping:
            self.stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self._skipping = skip
        self.stats["nonref_skippable"] += skip
        if p is not None:
            self.sent.append(p)
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:  # damaged packet: skip it, FFmpeg resyncs at the next one
            self._record_error(exc)
            self.stats["skipped_packets"] += 1
            return
        self.pending.extend(frames)

    def _record_error(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.error_times.append(self.last_time if self.last_time is not None else 0.0)

    def _damaged_between(self, a: float, b: float) -> bool:
        """Whether FFmpeg rejected packets while frames in [a, b] were being produced.

        Errors surface at decode time, up to the decoder's delay (B-frame
        reordering, frame threads) before the frames around them come out, so
        the window starts REORDER_WINDOW_FRAMES periods before ``a``.
        """
        lo = a - REORDER_WINDOW_FRAMES * self.period
        return any(lo <= e <= b for e in self.error_times)

    def _next(self) -> _Decoded | None:
        import av

        while not self.pending and not self.eof:
            self._read_ahead()
            if not self.ahead:
                self.eof = True
                break
            packet, p = self.ahead.popleft()
            if isinstance(packet, av.FFmpegError):  # unreadable container data (e.g. truncated): drain and stop
                exc = packet
                self._record_error(exc)
                self.eof = True
                try:
                    self.pending.extend(self.stream.codec_context.decode(None))
                except av.FFmpegError:
                    pass
                break
            self._decode(packet, p)
        if not self.pending:
            return None
        frame = self.pending.popleft()
        self.stats["decoded"] += 1
        if frame.pts is not None:
            t = self._seconds(frame.pts) - self.origin
        else:  # no timestamps at all (rare raw streams): count frames
            t = 0.0 if self.last_time is None else self.last_time + self.period
        self.last_time = t
        dur = self._seconds(frame.duration) if frame.duration else None
        return _Decoded(frame, t, dur)

    def frame_at(self, t: float, next_t: float | None = None) -> np.ndarray:
        """RGB array of the frame displayed at ``t`` (rules: module docstring, ``base.choose_frame``).

        ``next_t``: the timestamp that will be asked for next, if known; frames
        provably not needed for ``t`` nor for ``next_t`` and later may go undecoded.
        """
        self.target = t
        self.next_target = next_t if next_t is not None and next_t >= t else None
        if self.held is not None and self.held.time > t + self.eps:
            self._seek(t)  # going backwards
        elif self._should_seek_forward(t):
            self._seek(t)
        while True:
            if self.peek is None and not self.eof:
                self.peek = self._next()
            if self.peek is not None and self.peek.time <= t + self.eps:
                self.held, self.peek = self.peek, None
                continue
            break
        held, nxt = self.held, self.peek
        pick = choose_frame(
            t,
            held.time if held else None,
            held.duration if held else None,
            nxt.time if nxt else None,
            self.info,
            damaged=held is not None and nxt is not None and self._damaged_between(held.time, nxt.time),
        )
        if pick is None:
            raise DecodeError(self.uri, self._missing_reason(t))
        # 'next' is served without advancing, so a later timestamp before it needs no seek.
        return self._rgb(held if pick == "prev" else nxt)

    def _missing_reason(self, t: float) -> str:
        held, nxt = self.held, self.peek
        if held is None and nxt is None:
            msg = f"no decodable frame at or after t={t:.3f}s"
        elif held is None:
            msg = f"no frame at t={t:.3f}s: first decodable frame is at {nxt.time:.3f}s"
        else:
            after = "the stream ends there" if nxt is None else f"the next one is at {nxt.time:.3f}s"
            msg = f"no frame at t={t:.3f}s: last decodable frame before it is at {held.time:.3f}s and {after}"
        if self.errors:
            msg += f" ({self.errors} damaged packet(s); last error: {self.last_error})"
        elif held is not None and (nxt is None or nxt.time > held.time):
            msg += " (frames missing: truncated or damaged file?)"
        return msg

    def _rgb(self, dec: _Decoded) -> np.ndarray:
        if dec.rgb is None:
            frame = dec.frame
            rotation = clockwise_rotation(frame.rotation)
            kwargs: dict[str, Any] = {"format": "rgb24"}
            if self.size is not None:
                w, h = int(self.size[0]), int(self.size[1])
                if rotation in (90, 270):
                    w, h = h, w
                if (w, h) != (frame.width, frame.height):
                    kwargs.update(width=w, height=h, interpolation=self.owner.interpolation)
            if "width" in kwargs:
                # Scale in the source pixel format first, then convert at the target size:
                # swscale's unscaled YUV->RGB path is fast, its scaled+converting path is not
                # (measured ~2x faster overall for 640x360 -> 398x224).
                small = self.reformatter.reformat(
                    frame, width=kwargs["width"], height=kwargs["height"], interpolation=kwargs["interpolation"]
                )
                rgb = self.rgb_reformatter.reformat(small, format="rgb24").to_ndarray()
            else:
                rgb = self.rgb_reformatter.reformat(frame, format="rgb24").to_ndarray()
            dec.rgb = rotate_upright(rgb, rotation)
            self.stats["converted"] += 1
        if dec.yielded:  # same frame again (dense sampling): give the caller its own copy
            return dec.rgb.copy()
        dec.yielded = True
        return dec.rgb
