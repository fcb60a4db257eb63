"""Decode stage: video reference -> probe -> segment plan -> sampled frames -> model-sized crops.

A callable class for ``Dataset.map_batches`` (one video per call). It yields
blocks of ``decode_chunk_segments`` segment rows as it decodes, so a long
video streams with bounded memory, and always ends a video with one outcome
row (see :mod:`cliper_batch.pipeline.rows`).
"""
from __future__ import annotations

import logging
import time
from typing import Iterator

import numpy as np

from ..decode.base import DecodeError
from ..decode.select import choose_decoder
from ..probe import ProbeError, probe
from ..sampling import plan_for
from ..types import AnnotateConfig, VideoOutcome, VideoRef
from . import rows

log = logging.getLogger(__name__)


class VideoTimeout(TimeoutError):
    """A video exceeded the per-video time limit (``--video-timeout``)."""


def center_crop_plan(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Decode size (short side -> ``size``) and the top-left of the centred ``size`` square in it."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    scale = size / min(width, height)
    out_w = max(size, int(round(width * scale)))
    out_h = max(size, int(round(height * scale)))
    return (out_w, out_h), ((out_w - size) // 2, (out_h - size) // 2)


class DecodeStage:
    """Ray Data UDF: ``{video_id, uri}`` rows in, segment rows + one outcome row per video out."""

    def __init__(
        self,
        config: AnnotateConfig,
        image_size: int,
        device: str = "cpu",
        storage_options: dict | None = None,
        decode_threads: int = 0,
    ):
        self.config = config
        self.decode_threads = decode_threads  # 0 = codec default; 1 when decoders already fill the cores
        self.size = int(image_size)
        self.device = device
        self.storage_options = storage_options or {}
        self._decoders: dict[str, object] = {}
        self._detector = None  # built on first use (--faces detect)
        self._last_tracks: list = []

    @property
    def crop_shape(self) -> tuple[int, int, int, int]:
        return (self.config.frames_per_segment, self.size, self.size, 3)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for ref_json in batch["ref"]:
            yield from self.process(rows.decode_ref(str(ref_json)))

    def process(self, ref: VideoRef) -> Iterator[dict[str, np.ndarray]]:
        """All rows for one video; never raises for a bad video."""
        outcome = VideoOutcome(ref=ref, status="failed")
        t0 = time.perf_counter()
        emitted = 0
        try:
            info = probe(ref.uri, **self.storage_options)
            outcome.info = info
            segments = plan_for(info, self.config.segment_seconds, self.config.frames_per_segment)
            choice = choose_decoder(self.config.decoder, info, self.device)
            outcome.extra["decoder"] = choice.backend
            decoder = self._decoder_for(choice)
            deadline = t0 + self.config.video_timeout_s
            if self.config.faces == "detect":
                rows_iter = self._face_rows(ref, info, segments, decoder, deadline)
            else:
                rows_iter = self._center_rows(ref, info, segments, decoder, deadline)
            for block in rows_iter:
                emitted += len(block["row_kind"])
                yield block
            outcome.extra["n_tracks"] = len(self._last_tracks)
            outcome.status = "ok"
            outcome.n_segments = emitted
        except Exception as exc:  # noqa: BLE001 - any failure of one video is data, not a crash
            rows.record_failure(outcome, exc, (ProbeError, DecodeError, ValueError, OSError))
            log.warning("video failed: %s: %s: %s", ref.uri, outcome.error_type, outcome.error)
        outcome.extra["decode_s"] = round(time.perf_counter() - t0, 4)
        yield rows.outcome_row(outcome, self.crop_shape)

    def _check_deadline(self, ref: VideoRef, deadline: float, done: int, total: int) -> None:
        if time.perf_counter() > deadline:
            raise VideoTimeout(
                f"{ref.uri}: still decoding after {self.config.video_timeout_s:.0f} s ({done} of {total} segments done)"
            )

    def _center_rows(self, ref, info, segments, decoder, deadline) -> Iterator[dict[str, np.ndarray]]:
        """--faces none: every segment's frames centre-cropped (decoded at short side = model input)."""
        self._last_tracks = []
        (out_w, out_h), (x0, y0) = center_crop_plan(info.width, info.height, self.size)
        timestamps = [t for s in segments for t in s.timestamps]
        T, S = self.config.frames_per_segment, self.size
        chunk = self.config.decode_chunk_segments
        buf = np.empty((chunk, T, S, S, 3), dtype=np.uint8)
        pending: list = []
        emitted = 0
        for k, frame in enumerate(decoder.iter_frames(ref.uri, info, timestamps, size=(out_w, out_h))):
            seg_i, t_i = divmod(k, T)
            self._check_deadline(ref, deadline, seg_i, len(segments))
            if frame.shape[0] != out_h or frame.shape[1] != out_w:
                raise DecodeError(f"{ref.uri}: decoder returned {frame.shape}, expected {(out_h, out_w, 3)}")
            buf[len(pending), t_i] = frame[y0 : y0 + S, x0 : x0 + S]
            if t_i == T - 1:
                pending.append(segments[seg_i])
                if len(pending) == chunk:
                    yield rows.segment_rows(ref, pending, buf.copy())
                    emitted += len(pending)
                    pending = []
        if emitted + len(pending) != len(segments):
            raise DecodeError(f"{ref.uri}: decoder delivered frames for {emitted + len(pending)} of {len(segments)} segments")
        if pending:
            yield rows.segment_rows(ref, pending, buf[: len(pending)].copy())

    def _face_rows(self, ref, info, segments, decoder, deadline) -> Iterator[dict[str, np.ndarray]]:
        """--faces detect: detect + track over all sampled frames, then one clip per (track, segment)."""
        from . import face_framing as ff

        params = ff.FaceParams()
        T, S = self.config.frames_per_segment, self.size
        size = ff.detection_size(info.width, info.height, params.detect_side)
        timestamps = [t for s in segments for t in s.timestamps]
        tracks = ff.find_tracks(decoder.iter_frames(ref.uri, info, timestamps, size=size), self._face_detector(), params)
        self._last_tracks = tracks
        self._check_deadline(ref, deadline, 0, len(segments))
        plan = ff.plan_track_segments(tracks, segments, T)
        if not plan:
            return
        frames = decoder.iter_frames(ref.uri, info, timestamps, size=size)
        seg_frames: list[np.ndarray] = []
        pending: list[ff.TrackSegment] = []
        pending_crops: list[np.ndarray] = []
        k = -1
        for k, frame in enumerate(frames):
            seg_i, t_i = divmod(k, T)
            seg_frames.append(frame)
            if t_i < T - 1:
                continue
            self._check_deadline(ref, deadline, seg_i, len(segments))
            items = plan.get(seg_i, [])
            if items:
                pending.extend(items)
                pending_crops.append(ff.crop_track_segments(np.stack(seg_frames), items, S, params.margin))
            seg_frames = []
            if len(pending) >= self.config.decode_chunk_segments:
                yield self._face_block(ref, pending, pending_crops, size)
                pending, pending_crops = [], []
        if k + 1 != len(timestamps):
            raise DecodeError(f"{ref.uri}: decoder delivered {k + 1} of {len(timestamps)} sampled frames")
        if pending:
            yield self._face_block(ref, pending, pending_crops, size)

    @staticmethod
    def _face_block(ref, items, crops, size) -> dict[str, np.ndarray]:
        from . import face_framing as ff

        return rows.segment_rows(
            ref,
            [it.segment for it in items],
            np.concatenate(crops),
            track_ids=np.array([it.track.track_id for it in items]),
            faces=ff.face_columns(items, size[0], size[1]),
        )

    def _face_detector(self):
        if self._detector is None:
            from ..faces.detect import FaceDetector

            self._detector = FaceDetector(device="cuda" if str(self.device).startswith("cuda") else "cpu")
        return self._detector

    def _decoder_for(self, choice):
        key = choice.backend
        if key not in self._decoders:
            self._decoders[key] = choice.build(threads=self.decode_threads, storage_options=self.storage_options or None)
        return self._decoders[key]
