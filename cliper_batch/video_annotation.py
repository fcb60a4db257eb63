"""One video, start to end: probe -> segment plan -> decoder -> face framing -> crops -> outcome.

The per-video algorithm of the engine, written once. Both Ray workers run it:
the staged ``DecodeStage`` (crops travel as uint8 through the object store to
``ScoreStage``) and the fused ``FusedStage`` (crops stay on the actor's device
as normalised floats). What differs between them is passed in as small
primitives (:class:`FramePrimitives`): where decoded frames live, which crop
implementation turns frames + boxes into model input, and where the face
detector runs.

Per video (:meth:`VideoAnnotator.annotate`):

1. :func:`~cliper_batch.decode.probe.probe` the file and
   :func:`~cliper_batch.decode.sampling.plan_for` its segments;
2. :func:`~cliper_batch.decode.select.choose_usable_decoder` (built once per
   backend and kept): the decoder policy, plus NVDEC's once-per-process
   self-test, so an unusable NVDEC means PyAV with a logged reason, not a
   failed row per video;
3. face framing: ``faces="none"`` decodes at short side = model input and
   takes the centre square, the next chunk decoding on a thread while the
   current one is cropped and scored; ``faces="detect"`` decodes at the detection size:
   pass 1 finds tracks (:func:`~cliper_batch.faces.framing.find_tracks`), the
   next chunk decoding on a thread while the detector works
   (:func:`~cliper_batch.prefetch.prefetch`); pass 2 crops one clip per
   (track, segment) from pass 1's frames when they fit
   ``FramingParams.keep_frames_bytes``, else from a second decode
   (``extra["decode_passes"]``: 1 or 2; the same frames either way);
4. yields :class:`ClipPiece` s of at most ``config.decode_chunk_segments``
   segments' worth of frames (bounded memory), then the video's
   :class:`~cliper_batch.types.VideoOutcome` last.

Errors are data: any exception of one video ends it with a failed outcome
(:func:`cliper_batch.rows.record_failure`; :data:`EXPECTED_ERRORS` keep no
traceback). Timeout rule: a video fails with :class:`VideoTimeout` once its
*own active time* exceeds ``config.video_timeout_s``; the clock stops while the
generator is suspended (the consumer scoring, or other videos' work in the
fused worker's cross-video batches), so a video is never charged for others.
Its ``extra["decode_s"]`` is that same active time; ``extra["detect_s"]`` (face
detection and tracking: pass 1's time less its waits for decoded frames) and
``extra["crop_s"]`` (crops) are the parts of it spent there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from . import rows
from .crops.primitives import CropFn
from .crops.reference import center_crop_plan
from .decode.base import DecodeError
from .decode.staging import FrameUpload, stack_to
from .decode.select import choose_usable_decoder
from .faces import framing
from .prefetch import prefetch
from .decode.probe import ProbeError, probe
from .decode.sampling import plan_for
from .types import AnnotateConfig, Segment, VideoInfo, VideoOutcome, VideoRef

log = logging.getLogger(__name__)

__all__ = [
    "EXPECTED_ERRORS",
    "ClipPiece",
    "FramePrimitives",
    "VideoAnnotator",
    "VideoTimeout",
    "frame_chunks",
    "rechunk",
]

# A failure of one of these types says all in its message (bad file, decode error, bad input):
# no traceback is kept. Anything else also fails only its video, with a short traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ProbeError, DecodeError, ValueError, OSError)

class VideoTimeout(TimeoutError):
    """A video's own active time exceeded the per-video limit (``--video-timeout``)."""


@dataclass(frozen=True)
class FramePrimitives:
    """What differs between workers, handed to the one per-video algorithm.

    ``frames_device``: where decoded frames are stacked into chunks (the host
    for the staged worker; the model's device for the fused one, where a
    ``dali-gpu`` decoder's frames never touch the host). ``decoder_device``:
    the device string :func:`choose_decoder` sees. ``crop``/``crop_name``: the
    crop implementation (:mod:`cliper_batch.crops.primitives`) and its label. ``detector_device``: where MTCNN runs.
    """

    frames_device: torch.device
    decoder_device: str
    crop: CropFn
    crop_name: str
    detector_device: torch.device


@dataclass
class ClipPiece:
    """``n`` clips of one video: their segment rows (:func:`rows.segment_rows`, no crops) and ``[n, T, ...]`` crops."""

    ref: VideoRef
    rows: dict[str, np.ndarray]
    crops: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.crops.shape[0])


class _ActiveClock:
    """Seconds a video's own work has run: paused while its generator is suspended."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._since: float | None = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.elapsed += time.perf_counter() - self._since
            self._since = None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._since if self._since is not None else 0.0)


def frame_chunks(
    decoder,
    uri: str,
    info: VideoInfo,
    timestamps: list[float],
    size: tuple[int, int],
    device: torch.device,
    chunk_frames: int,
    on_frame: Callable[[int], None] | None = None,
) -> Iterator[torch.Tensor]:
    """The sampled frames, in order, as uint8 ``[n, H, W, 3]`` tensors on ``device`` (``n = chunk_frames``, the last may be shorter).

    The frame source of every worker. A GPU decoder with a device output
    (``dali-gpu``) delivers CUDA tensors that never touch the host when
    ``device`` is CUDA; host frames are stacked per chunk and moved with one
    copy (none on a CPU device). Memory is bounded by one chunk.
    ``on_frame(k)`` is called before frame ``k`` is taken (the timeout check).
    Raises :class:`DecodeError` when the decoder returns a wrong frame size or
    too few frames.
    """
    w, h = int(size[0]), int(size[1])
    on_gpu = device.type == "cuda" and getattr(decoder, "name", "") == "dali-gpu" and hasattr(decoder, "iter_frame_tensors")
    frames = (decoder.iter_frame_tensors if on_gpu else decoder.iter_frames)(uri, info, timestamps, size=(w, h))
    # host frames bound for a GPU go through two reusable pinned buffers (decode/staging.py)
    upload = FrameUpload(device) if device.type == "cuda" and not on_gpu else None
    buf: list = []
    k = -1
    for k, frame in enumerate(frames):
        if on_frame is not None:
            on_frame(k)
        if tuple(frame.shape) != (h, w, 3):
            raise DecodeError(uri, f"decoder returned a frame of shape {tuple(frame.shape)}, expected {(h, w, 3)}")
        buf.append(frame)
        if len(buf) == chunk_frames:
            yield stack_to(buf, device, upload)
            buf = []
    if buf:
        yield stack_to(buf, device, upload)
    if k + 1 != len(timestamps):
        raise DecodeError(uri, f"decoder delivered {k + 1} of {len(timestamps)} sampled frames")


def rechunk(chunks: list[torch.Tensor], n: int, on_chunk: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
    """The frames of ``chunks`` (consumed from the front of the list) regrouped as ``n`` per tensor, the last shorter.

    The same grouping :func:`frame_chunks` gives with ``chunk_frames=n``, so a
    pass over kept frames yields what a second decode would. A group within
    one chunk is a view; one that spans chunks is a copy of that group only.
    Each source chunk is dropped from the list once it is used up, so memory
    falls as the pass proceeds. ``on_chunk()`` runs before each group (the
    timeout check).
    """
    if n < 1:
        raise ValueError(f"chunk size must be >= 1, got {n}")
    parts: list[torch.Tensor] = []
    have = 0
    while chunks:
        c = chunks.pop(0)
        while c.shape[0]:
            take = min(n - have, int(c.shape[0]))
            parts.append(c[:take])
            have += take
            c = c[take:]
            if have == n:
                if on_chunk is not None:
                    on_chunk()
                yield parts[0] if len(parts) == 1 else torch.cat(parts)
                parts, have = [], 0
    if parts:
        if on_chunk is not None:
            on_chunk()
        yield parts[0] if len(parts) == 1 else torch.cat(parts)


class _Waits:
    """Iterate ``chunks``, summing the seconds spent waiting for each (so detection time excludes the decode's)."""

    def __init__(self, chunks: Iterator[torch.Tensor]) -> None:
        self._chunks = chunks
        self.seconds = 0.0

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            t0 = time.perf_counter()
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t0
            yield chunk


def _keeping(chunks: Iterator[torch.Tensor], kept: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """``chunks`` unchanged, each also appended to ``kept`` (pass 1's frames, for pass 2)."""
    for c in chunks:
        kept.append(c)
        yield c


class _Video:
    """The state of one video in progress: its ref, active clock, segment count and progress (for messages)."""

    def __init__(self, ref: VideoRef, limit_s: float) -> None:
        self.ref = ref
        self.limit_s = limit_s
        self.clock = _ActiveClock()
        self.total_segments = 0
        self.done_segments = 0
        self.n_tracks = 0
        self.decode_passes = 1  # 2 once --faces detect decodes its frames a second time
        self.detect_s = 0.0  # of the active time: face detection and tracking (pass 1 minus its waits for frames)
        self.crop_s = 0.0  # of the active time: crops (host time: on CUDA the launches, not the kernels)

    def check_time(self, _k: int = 0) -> None:
        if self.clock.now() > self.limit_s:
            raise VideoTimeout(
                f"{self.ref.uri}: still decoding after {self.limit_s:.0f} s "
                f"({self.done_segments} of {self.total_segments} segments done)"
            )


class VideoAnnotator:
    """The per-video algorithm bound to one worker's primitives; keeps its decoders and face detector.

    ``image_size`` is the model input side ``S``. :meth:`annotate` never
    raises for a bad video.
    """

    def __init__(
        self,
        config: AnnotateConfig,
        image_size: int,
        primitives: FramePrimitives,
        storage_options: dict | None = None,
        decode_threads: int = 0,
        framing_params: framing.FramingParams | None = None,
        face_margin: float | None = None,
    ) -> None:
        self.config = config
        self.size = int(image_size)
        self.T = int(config.frames_per_segment)
        self.prims = primitives
        self.storage_options = storage_options or {}
        self.decode_threads = int(decode_threads)  # 0 = codec default; 1 when decoders already fill the cores
        self.framing = framing_params or framing.FramingParams()
        if face_margin is not None:  # the model was trained on faces cropped this tightly (its checkpoint says so)
            self.framing = dataclasses.replace(self.framing, margin=float(face_margin))
        self._decoders: dict[str, object] = {}
        self._detector = None  # built on first use (--faces detect)

    def annotate(self, ref: VideoRef) -> Iterator[ClipPiece | VideoOutcome]:
        """The clip pieces of one video, in segment order, then its outcome (always last, always once)."""
        video = _Video(ref, self.config.video_timeout_s)
        outcome = VideoOutcome(ref=ref, status="failed")
        n_clips = 0
        try:
            info = probe(ref.uri, **self.storage_options)
            outcome.info = info
            segments = plan_for(info, self.config.segment_seconds, self.T)
            video.total_segments = len(segments)
            choice = choose_usable_decoder(self.config.decoder, info, self.prims.decoder_device)
            outcome.extra["decoder"] = choice.backend
            decoder = self._decoder_for(choice)
            if self.config.faces == "detect":
                pieces = self._face_pieces(video, info, segments, decoder)
            else:
                pieces = self._center_pieces(video, info, segments, decoder)
            for piece in pieces:
                n_clips += piece.n
                video.clock.pause()
                yield piece
                video.clock.resume()
            outcome.extra["n_tracks"] = video.n_tracks
            outcome.status = "ok"
            outcome.n_segments = n_clips
        except Exception as exc:  # noqa: BLE001 - any failure of one video is data, not a crash
            rows.record_failure(outcome, exc, EXPECTED_ERRORS)
            log.warning("video failed: %s: %s: %s", ref.uri, outcome.error_type, outcome.error)
        outcome.extra["decode_s"] = round(video.clock.now(), 4)
        outcome.extra["detect_s"] = round(video.detect_s, 4)
        outcome.extra["crop_s"] = round(video.crop_s, 4)
        outcome.extra["decode_passes"] = video.decode_passes
        outcome.extra["crop_backend"] = self.prims.crop_name
        yield outcome

    # ----------------------------------------------------------------- framing

    def _center_pieces(self, video: _Video, info: VideoInfo, segments: list[Segment], decoder) -> Iterator[ClipPiece]:
        """--faces none: the centre square of every sampled frame, decoded at short side = model input."""
        S = self.size
        (out_w, out_h), (x0, y0) = center_crop_plan(info.width, info.height, S)
        decoded = self._decode_segment_chunks(video, info, segments, decoder, (out_w, out_h))
        # the next chunk decodes while this one is cropped and scored; closing() stops the thread with the video
        with contextlib.closing(prefetch(decoded, self.framing.prefetch_chunks, name="center-decode")) as chunks:
            for frames, segs in self._segment_chunks(video, segments, chunks):
                boxes = [(float(i), float(x0), float(y0), float(x0 + S), float(y0 + S)) for i in range(frames.shape[0])]
                yield self._piece(video, frames, boxes, len(segs), rows.segment_rows(video.ref, segs, None))

    def _face_pieces(self, video: _Video, info: VideoInfo, segments: list[Segment], decoder) -> Iterator[ClipPiece]:
        """--faces detect: pass 1 finds tracks over all sampled frames, pass 2 crops one clip per (track, segment).

        Pass 2 reuses pass 1's frames when all of them fit ``keep_frames_bytes``
        (one decode), else decodes them again chunk by chunk (two decodes).
        """
        p = self.framing
        W, H = framing.detection_size(info.width, info.height, p.detect_side)
        timestamps = [t for s in segments for t in s.timestamps]
        keep = len(timestamps) * W * H * 3 <= p.keep_frames_bytes
        kept: list[torch.Tensor] = []
        decoded = frame_chunks(
            decoder, video.ref.uri, info, timestamps, (W, H), self.prims.frames_device, p.chunk_frames, video.check_time
        )
        # closing(): a detector error stops the decode thread here, before the error leaves this video
        with contextlib.closing(prefetch(decoded, p.prefetch_chunks, name="pass1-decode")) as chunks:
            waits = _Waits(_keeping(chunks, kept) if keep else chunks)
            t0 = time.perf_counter()
            tracks = framing.find_tracks(waits, self._face_detector(), p, self.config.detect_stride)
            video.detect_s += time.perf_counter() - t0 - waits.seconds
        video.n_tracks = len(tracks)
        video.check_time()
        plan = framing.plan_track_segments(tracks, segments, self.T)
        if not plan:
            return
        if keep:
            again = rechunk(kept, self.config.decode_chunk_segments * self.T, video.check_time)
        else:
            video.decode_passes = 2
            again = self._decode_segment_chunks(video, info, segments, decoder, (W, H))
        for frames, segs in self._segment_chunks(video, segments, again):
            items: list[framing.TrackSegment] = []
            boxes: list[framing.CropBox] = []
            for j, seg in enumerate(segs):
                for item in plan.get(seg.index, []):
                    items.append(item)
                    boxes.extend(framing.clip_boxes(item, j * self.T, p.margin, W, H))
            if not items:
                continue
            piece_rows = rows.segment_rows(
                video.ref,
                [it.segment for it in items],
                None,
                track_ids=np.array([it.track.track_id for it in items]),
                faces=framing.face_columns(items, W, H),
            )
            yield self._piece(video, frames, boxes, len(items), piece_rows)

    def _decode_segment_chunks(
        self, video: _Video, info: VideoInfo, segments: list[Segment], decoder, size: tuple[int, int]
    ) -> Iterator[torch.Tensor]:
        """Decode the sampled frames of ``segments`` at ``size``, ``config.decode_chunk_segments`` segments per chunk."""
        timestamps = [t for s in segments for t in s.timestamps]
        chunk = self.config.decode_chunk_segments * self.T
        return frame_chunks(
            decoder, video.ref.uri, info, timestamps, size, self.prims.frames_device, chunk, video.check_time
        )

    def _segment_chunks(
        self, video: _Video, segments: list[Segment], chunks: Iterator[torch.Tensor]
    ) -> Iterator[tuple[torch.Tensor, list[Segment]]]:
        """Whole segments' frames from ``chunks`` (frames in segment order): ``(frames, their segments)``."""
        T = self.T
        for frames in chunks:
            k = frames.shape[0] // T
            if k * T != frames.shape[0]:
                raise DecodeError(video.ref.uri, f"decoder delivered a partial segment ({frames.shape[0]} frames, T={T})")
            first = video.done_segments
            video.done_segments += k
            yield frames, segments[first : first + k]
        if video.done_segments != len(segments):
            raise DecodeError(video.ref.uri, f"decoder delivered frames for {video.done_segments} of {len(segments)} segments")

    def _piece(self, video: _Video, frames: torch.Tensor, boxes: list, n_clips: int, piece_rows: dict) -> ClipPiece:
        t0 = time.perf_counter()
        b = torch.tensor(boxes, dtype=torch.float32).to(frames.device, non_blocking=True)
        crops = self.prims.crop(frames, b)
        video.crop_s += time.perf_counter() - t0
        return ClipPiece(video.ref, piece_rows, crops.reshape(n_clips, self.T, *crops.shape[1:]))

    # ----------------------------------------------------------------- per-worker resources

    def _face_detector(self):
        if self._detector is None:
            from .faces.detectors import make_detector

            # On CPU the worker's share is the torch thread count it was given (the fused actor's
            # scoring threads; 1 in a staged decode actor): detection runs that many frames at once,
            # one intra-op thread each, so the faces are the same in either layout. On CUDA the
            # detector runs fixed batches on the device, one at a time.
            device = torch.device(self.prims.detector_device)
            workers = torch.get_num_threads() if device.type == "cpu" else 1
            self._detector = make_detector(self.config.face_detector, device=device, workers=workers,
                                           min_face_size=self.config.min_face)
        return self._detector

    def _decoder_for(self, choice):
        if choice.backend not in self._decoders:
            self._decoders[choice.backend] = choice.build(
                threads=self.decode_threads, storage_options=self.storage_options or None
            )
        return self._decoders[choice.backend]
