"""Fused worker: video references in, score rows out, frames and crops kept on the actor's device.

One callable class for ``Dataset.map_batches`` that replaces the two staged
actors (:class:`~cliper_batch.pipeline.decode_stage.DecodeStage` ->
:class:`~cliper_batch.pipeline.score_stage.ScoreStage`) on GPU clusters. Per
video: probe -> segment plan -> decode (the usual :func:`choose_decoder`
policy; DALI NVDEC frames stay on the GPU via
:meth:`~cliper_batch.decode.dali_backend.DaliDecoder.iter_frame_tensors`) ->
face framing (centre square, or detect + track like ``DecodeStage``) ->
crop + resize + normalise (Triton kernel on CUDA, the torch reference
otherwise: :func:`select_crop_backend`) -> scoring. Nothing but boxes and
scores crosses to the host (plus a subsampled copy for shot-cut detection,
which is numpy code).

Batching spans videos: every video's clips go into one FIFO, and a model batch
is cut whenever ``config.batch_size`` clips are waiting; the partial remainder
is scored at the end of the input block (``batch_size`` videos per Ray task,
``RunOptions.videos_per_task``). A video's outcome row leaves only after all of
its clips were scored, so the output rows are exactly the ones ``ScoreStage``
emits: the driver-side writer, the incremental plan, error rows and
``WorkerLost`` handling do not know which worker produced them.

Errors are data: a video that fails (probe, decode, timeout, ...) drops its
unscored clips and yields its failed outcome row; the block goes on. An error
while *scoring* is not one video's fault and fails the task (Ray retries it,
then the writer records its videos as ``WorkerLost``), as with ``ScoreStage``.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..decode.base import DecodeError
from ..decode.select import choose_decoder
from ..probe import ProbeError, probe
from ..sampling import plan_for
from ..types import AnnotateConfig, Segment, VideoInfo, VideoOutcome, VideoRef
from . import rows
from .decode_stage import VideoTimeout, center_crop_plan
from .score_stage import PASSTHROUGH

log = logging.getLogger(__name__)

BATCH_HISTORY = 4096  # scored batches remembered per actor (for tests and debugging; bounded for long runs)

__all__ = [
    "CropBackendChoice",
    "FusedStage",
    "cut_detection_input",
    "frame_chunks",
    "load_triton_crop",
    "select_crop_backend",
]


# --------------------------------------------------------------------------- crop backend


@dataclass(frozen=True)
class CropBackendChoice:
    """Which crop implementation a fused worker uses, and why (logged, and exposed on the stage)."""

    name: str  # 'triton' | 'torch'
    reason: str


def load_triton_crop() -> Callable[..., torch.Tensor]:
    """The fused Triton kernel wrapper; ImportError when Triton or the kernel module is unusable.

    Installed, the kernel lives in ``cliper_batch.kernels``; from a plain
    checkout (``ray job submit --working-dir .``) it imports as ``kernels``.
    A module built for Triton's CPU interpreter (``TRITON_INTERPRET=1``) cannot
    run CUDA tensors, so it counts as unavailable here.
    """
    try:
        from cliper_batch.kernels import crop_resize as mod
    except ImportError:
        from kernels import crop_resize as mod  # type: ignore[no-redef]
    if mod._interpreting():
        raise ImportError("the Triton crop kernel was imported under TRITON_INTERPRET=1 (CPU interpreter only)")
    return mod.crop_resize_normalize_triton


def select_crop_backend(device: torch.device | str, triton_available: bool | None = None) -> CropBackendChoice:
    """``triton`` when the tensors live on CUDA and the kernel imports, else ``torch`` (:mod:`cliper_batch.crops`).

    ``triton_available=None`` tries the import; tests pass it explicitly.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return CropBackendChoice("torch", f"tensors on {dev}: the Triton kernel needs CUDA, using the torch reference")
    if triton_available is None:
        try:
            load_triton_crop()
            triton_available, why = True, ""
        except ImportError as exc:
            triton_available, why = False, f" ({exc})"
    else:
        why = ""
    if triton_available:
        return CropBackendChoice("triton", f"tensors on {dev} and Triton importable: fused crop_resize_normalize kernel")
    return CropBackendChoice("torch", f"tensors on {dev} but the Triton kernel is not importable{why}: torch reference")


# --------------------------------------------------------------------------- frames as tensors


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

    A GPU decoder with a device output (``dali-gpu``) delivers CUDA tensors
    that never touch the host; CPU decoders' numpy frames are stacked per
    chunk and moved with one copy (none at all on a CPU device). Memory is
    bounded by one chunk. ``on_frame(k)`` is called before frame ``k`` is
    taken (the per-video timeout check). Raises :class:`DecodeError` when the
    decoder returns a wrong frame size or too few frames.
    """
    w, h = int(size[0]), int(size[1])
    on_gpu = device.type == "cuda" and getattr(decoder, "name", "") == "dali-gpu" and hasattr(decoder, "iter_frame_tensors")
    frames = (decoder.iter_frame_tensors if on_gpu else decoder.iter_frames)(uri, info, timestamps, size=(w, h))
    buf: list = []
    k = -1
    for k, frame in enumerate(frames):
        if on_frame is not None:
            on_frame(k)
        if tuple(frame.shape) != (h, w, 3):
            raise DecodeError(uri, f"decoder returned a frame of shape {tuple(frame.shape)}, expected {(h, w, 3)}")
        buf.append(frame)
        if len(buf) == chunk_frames:
            yield _stack(buf, device)
            buf = []
    if buf:
        yield _stack(buf, device)
    if k + 1 != len(timestamps):
        raise DecodeError(uri, f"decoder delivered {k + 1} of {len(timestamps)} sampled frames")


def _stack(buf: list, device: torch.device) -> torch.Tensor:
    if isinstance(buf[0], torch.Tensor):
        return torch.stack(buf).to(device)
    return torch.from_numpy(np.stack(buf)).to(device, non_blocking=False)


def cut_detection_input(frames: torch.Tensor) -> torch.Tensor:
    """What :class:`~cliper_batch.faces.cuts.ShotCutDetector` needs of (device) frames, on the host.

    The cut detector is numpy code whose first step subsamples every frame
    with the stride ``max(1, long_side // (4 * _THUMB_SIDE))``. Taking that
    same stride where the frames are (on the GPU) gives it identical input at
    a fraction of the device-to-host transfer: the detector's own stride on
    the result is then 1 (a test checks that scores and cuts are unchanged).
    """
    from ..faces import cuts

    stride = max(1, max(int(frames.shape[1]), int(frames.shape[2])) // (4 * cuts._THUMB_SIDE))
    return frames[:, ::stride, ::stride].cpu()


# --------------------------------------------------------------------------- the stage


@dataclass
class _Piece:
    """A run of queued rows of one video: ``n`` clips with their crops, or its outcome row (``crops is None``)."""

    video_id: str
    rows: dict[str, np.ndarray]
    crops: torch.Tensor | None  # [n, T, 3, S, S] float32 on the device
    failed: bool = False  # an outcome piece of a failed video

    @property
    def n(self) -> int:
        return 0 if self.crops is None else int(self.crops.shape[0])

    def split(self, k: int) -> tuple[_Piece, _Piece]:
        head = _Piece(self.video_id, {c: v[:k] for c, v in self.rows.items()}, self.crops[:k])
        tail = _Piece(self.video_id, {c: v[k:] for c, v in self.rows.items()}, self.crops[k:])
        return head, tail


@dataclass
class BatchRecord:
    """One scored model batch: how many clips, and from which videos (tests check batches span videos)."""

    n_clips: int
    video_ids: tuple[str, ...]


class _ActiveClock:
    """Seconds a video's own work has run: paused while its generator is suspended (others' scoring)."""

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


@dataclass
class _VideoState:
    ref: VideoRef
    clock: _ActiveClock
    total_segments: int = 0
    n_tracks: int = 0


class FusedStage:
    """Ray Data UDF: ``{video_id, ref}`` rows in, scored segment rows + one outcome row per video out.

    One instance holds the model, the face detector and the decoders on one
    device. Attributes tests and logs rely on: ``crop_backend`` (``'triton'``
    or ``'torch'``) and ``crop_backend_reason``; ``batches`` (a
    :class:`BatchRecord` per scored batch, the last ``BATCH_HISTORY``) and
    ``batch_sizes``.
    """

    def __init__(
        self,
        model_spec: str,
        config: AnnotateConfig,
        device: str = "auto",
        num_threads: int | None = None,
        storage_options: dict | None = None,
        decode_threads: int = 0,
        crop_backend: CropBackendChoice | None = None,
    ):
        from ..compile import compile_encoder, select_device, select_dtype
        from ..model.factory import load_model

        self.config = config
        self.storage_options = storage_options or {}
        self.decode_threads = int(decode_threads)
        self.device = select_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(num_threads or os.cpu_count() or 1)))
        self._device_str = f"cuda:{self.device.index or 0}" if self.device.type == "cuda" else "cpu"
        loaded = load_model(model_spec, device=self.device, **self.storage_options)
        self.model = loaded.model.eval()
        self.model_id = loaded.model_id
        self.n_classes = len(loaded.classes)
        self.size = int(loaded.image_size)
        self.T = int(config.frames_per_segment)
        self.encoder = compile_encoder(
            self.model, config.compile, self.device, example_batch=config.batch_size * self.T,
            cache_dir=config.engine_cache, model_id=loaded.model_id,
        )
        self.backend_label = f"{self.encoder.backend}@{self.device}"
        self.autocast_dtype = select_dtype(self.device) if self.device.type == "cuda" else None
        choice = crop_backend or select_crop_backend(self.device)
        self.crop_backend = choice.name
        self.crop_backend_reason = choice.reason
        self._triton = load_triton_crop() if choice.name == "triton" else None
        self._mean = tuple(float(v) for v in self.model.mean)
        self._std = tuple(float(v) for v in self.model.std)
        self._decoders: dict[str, object] = {}
        self._detector = None
        self._queue: deque[_Piece] = deque()
        self._queued_clips = 0
        self.batches: deque[BatchRecord] = deque(maxlen=BATCH_HISTORY)
        self.busy_s = 0.0
        log.info(
            "fused stage: model %s on %s, backend %s (%s); crop %s (%s)",
            loaded.model_id, self.device, self.encoder.backend, self.encoder.reason, self.crop_backend, choice.reason,
        )

    @property
    def batch_sizes(self) -> list[int]:
        return [b.n_clips for b in self.batches]

    # ----------------------------------------------------------------- Ray entry point

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Process every video of the block; yields output blocks as model batches fill, flushes at the end."""
        bsz = self.config.batch_size
        for ref_json in batch["ref"]:
            ref = rows.decode_ref(str(ref_json))
            for piece in self._video(ref):
                if piece.failed:
                    self._drop_clips(piece.video_id)  # its unscored clips would be discarded by the writer anyway
                self._queue.append(piece)
                self._queued_clips += piece.n
                while self._queued_clips >= bsz:
                    yield self._emit(bsz)
        while self._queued_clips > 0:
            yield self._emit(min(bsz, self._queued_clips))
        if self._queue:  # outcome rows only (failed videos, videos without faces)
            yield self._emit(0)

    # ----------------------------------------------------------------- batching

    def _drop_clips(self, video_id: str) -> None:
        kept = deque(p for p in self._queue if not (p.video_id == video_id and p.crops is not None))
        self._queued_clips = sum(p.n for p in kept)
        self._queue = kept

    def _emit(self, n: int) -> dict[str, np.ndarray]:
        """Score the first ``n`` queued clips; output them with every outcome row whose video is now complete."""
        parts: list[_Piece] = []
        taken = 0
        while self._queue and (taken < n or self._queue[0].crops is None):
            p = self._queue[0]
            if p.crops is not None and p.n > n - taken:
                head, self._queue[0] = p.split(n - taken)
                p = head
            else:
                self._queue.popleft()
            parts.append(p)
            taken += p.n
        self._queued_clips -= taken
        return self._score(parts, taken)

    def _score(self, parts: list[_Piece], n: int) -> dict[str, np.ndarray]:
        from ..model.cliper import score_images

        t_start = time.time()
        n_rows = sum(len(p.rows["row_kind"]) for p in parts)
        probs = np.zeros((n_rows, self.n_classes), dtype=np.float32)
        descriptor = np.full(n_rows, -1, dtype=np.int16)
        busy = 0.0
        if n:
            t0 = time.perf_counter()
            crops = torch.cat([p.crops for p in parts if p.crops is not None])  # [n, T, 3, S, S]
            scores = score_images(self.model, crops, autocast_dtype=self.autocast_dtype, encoder=self.encoder)
            clip_probs = scores.probs.float().cpu().numpy()
            clip_desc = scores.descriptor.cpu().numpy().astype(np.int16)
            busy = time.perf_counter() - t0
            self.busy_s += busy
            self.batches.append(BatchRecord(n, tuple(dict.fromkeys(p.video_id for p in parts if p.crops is not None))))
            at = row = 0
            for p in parts:
                m = len(p.rows["row_kind"])
                if p.crops is not None:
                    probs[row : row + m] = clip_probs[at : at + m]
                    descriptor[row : row + m] = clip_desc[at : at + m]
                    at += m
                row += m
        out = {k: np.concatenate([p.rows[k] for p in parts]) for k in PASSTHROUGH}
        out["probs"] = probs
        out["descriptor"] = descriptor
        # same timing columns as ScoreStage: the model's busy time, spread over the block's rows
        out["score_t0"] = np.full(n_rows, t_start, dtype=np.float64)
        out["score_busy_s"] = np.full(n_rows, busy / max(n_rows, 1), dtype=np.float64)
        out["score_backend"] = np.array([self.backend_label] * n_rows, dtype=object)
        return out

    # ----------------------------------------------------------------- one video

    def _video(self, ref: VideoRef) -> Iterator[_Piece]:
        """Clip pieces of one video, then its outcome piece; never raises for a bad video.

        The video's clock runs only while this generator runs, so time spent
        scoring other videos' clips does not count against its timeout.
        """
        st = _VideoState(ref, _ActiveClock())
        outcome = VideoOutcome(ref=ref, status="failed")
        n_clips = 0
        try:
            info = probe(ref.uri, **self.storage_options)
            outcome.info = info
            segments = plan_for(info, self.config.segment_seconds, self.config.frames_per_segment)
            st.total_segments = len(segments)
            choice = choose_decoder(self.config.decoder, info, self._device_str)
            outcome.extra["decoder"] = choice.backend
            decoder = self._decoder_for(choice)
            clips = self._face_clips if self.config.faces == "detect" else self._center_clips
            for piece in clips(st, info, segments, decoder):
                n_clips += piece.n
                st.clock.pause()
                yield piece
                st.clock.resume()
            outcome.extra["n_tracks"] = st.n_tracks
            outcome.status = "ok"
            outcome.n_segments = n_clips
        except Exception as exc:  # noqa: BLE001 - any failure of one video is data, not a crash
            rows.record_failure(outcome, exc, (ProbeError, DecodeError, ValueError, OSError))
            log.warning("video failed: %s: %s: %s", ref.uri, outcome.error_type, outcome.error)
        outcome.extra["decode_s"] = round(st.clock.now(), 4)
        outcome.extra["worker"] = "fused"
        outcome.extra["crop_backend"] = self.crop_backend
        row = rows.outcome_row(outcome, (0,))
        row.pop("crops")
        yield _Piece(ref.video_id, row, None, failed=outcome.status != "ok")

    def _deadline(self, st: _VideoState, done_segments: Callable[[], int]) -> Callable[[int], None]:
        limit = self.config.video_timeout_s

        def check(_k: int = 0) -> None:
            if st.clock.now() > limit:
                raise VideoTimeout(
                    f"{st.ref.uri}: still decoding after {limit:.0f} s ({done_segments()} of {st.total_segments} segments done)"
                )

        return check

    def _crop(self, frames: torch.Tensor, boxes: list[tuple[float, float, float, float, float]]) -> torch.Tensor:
        """``[N, 3, S, S]`` float32 normalised crops of ``(frame_index, x0, y0, x1, y1)`` boxes, on the frames' device."""
        b = torch.tensor(boxes, dtype=torch.float32).to(frames.device, non_blocking=True)
        if self._triton is not None:
            # boxes are built here (centre square / validated face squares): no host sync to re-check them
            return self._triton(frames, b, self.size, mean=self._mean, std=self._std, check_boxes=False)
        from ..crops import crop_resize_normalize

        return crop_resize_normalize(frames, b, self.size, mean=self._mean, std=self._std)

    def _center_clips(self, st: _VideoState, info: VideoInfo, segments: list[Segment], decoder) -> Iterator[_Piece]:
        """--faces none: the centre square of every sampled frame, decoded at short side = model input."""
        T, S = self.T, self.size
        (out_w, out_h), (x0, y0) = center_crop_plan(info.width, info.height, S)
        timestamps = [t for s in segments for t in s.timestamps]
        done = 0
        check = self._deadline(st, lambda: done)
        chunk = self.config.decode_chunk_segments * T
        for frames in frame_chunks(decoder, st.ref.uri, info, timestamps, (out_w, out_h), self.device, chunk, check):
            k = frames.shape[0] // T
            if k * T != frames.shape[0]:
                raise DecodeError(st.ref.uri, f"decoder delivered a partial segment ({frames.shape[0]} frames, T={T})")
            boxes = [(float(i), float(x0), float(y0), float(x0 + S), float(y0 + S)) for i in range(k * T)]
            crops = self._crop(frames, boxes).view(k, T, 3, S, S)
            piece_rows = rows.segment_rows(st.ref, segments[done : done + k], None)
            piece_rows.pop("crops")
            done += k
            yield _Piece(st.ref.video_id, piece_rows, crops)
        if done != len(segments):
            raise DecodeError(st.ref.uri, f"decoder delivered frames for {done} of {len(segments)} segments")

    def _face_clips(self, st: _VideoState, info: VideoInfo, segments: list[Segment], decoder) -> Iterator[_Piece]:
        """--faces detect: pass 1 finds tracks over all sampled frames, pass 2 crops one clip per (track, segment)."""
        from ..crops import square_box_with_margin
        from . import face_framing as ff

        params = ff.FaceParams()
        T, S = self.T, self.size
        W, H = ff.detection_size(info.width, info.height, params.detect_side)
        timestamps = [t for s in segments for t in s.timestamps]
        done = 0
        check = self._deadline(st, lambda: done)
        chunks = frame_chunks(decoder, st.ref.uri, info, timestamps, (W, H), self.device, params.chunk_frames, check)
        tracks = self._find_tracks(chunks, params)
        st.n_tracks = len(tracks)
        check()
        plan = ff.plan_track_segments(tracks, segments, T)
        if not plan:
            return
        chunk = self.config.decode_chunk_segments * T
        for frames in frame_chunks(decoder, st.ref.uri, info, timestamps, (W, H), self.device, chunk, check):
            k = frames.shape[0] // T
            if k * T != frames.shape[0]:
                raise DecodeError(st.ref.uri, f"decoder delivered a partial segment ({frames.shape[0]} frames, T={T})")
            items: list = []
            boxes: list[tuple[float, float, float, float, float]] = []
            for j in range(k):
                for item in plan.get(done + j, []):
                    items.append(item)
                    for t, box in enumerate(item.boxes):
                        bx0, by0, bx1, by1 = square_box_with_margin(box, params.margin, W, H)
                        boxes.append((float(j * T + t), bx0, by0, bx1, by1))
            done += k
            if not items:
                continue
            crops = self._crop(frames, boxes).view(len(items), T, 3, S, S)
            piece_rows = rows.segment_rows(
                st.ref,
                [it.segment for it in items],
                None,
                track_ids=np.array([it.track.track_id for it in items]),
                faces=ff.face_columns(items, W, H),
            )
            piece_rows.pop("crops")
            yield _Piece(st.ref.video_id, piece_rows, crops)

    def _find_tracks(self, chunks: Iterator[torch.Tensor], params) -> list:
        """Pass 1 on device tensors: shot cuts + batched detection per chunk, then tracking (host, boxes only)."""
        from ..faces.cuts import ShotCutDetector
        from ..faces.track import track_video

        cut_detector = ShotCutDetector()
        detector = self._face_detector()
        detections: list = []
        cuts: list[int] = []
        offset = 0
        for frames in chunks:
            n = int(frames.shape[0])
            cuts.extend(cut_detector.update(cut_detection_input(frames)))
            detections.extend(detector.detect(frames, frame_indices=range(offset, offset + n)))
            offset += n
        return track_video(
            detections, cuts, max_gap=params.max_gap, min_track_length=params.min_track_length, max_faces=params.max_faces
        )

    def _face_detector(self):
        if self._detector is None:
            from ..faces.detect import FaceDetector

            self._detector = FaceDetector(device=self.device)
        return self._detector

    def _decoder_for(self, choice):
        if choice.backend not in self._decoders:
            self._decoders[choice.backend] = choice.build(
                threads=self.decode_threads, storage_options=self.storage_options or None
            )
        return self._decoders[choice.backend]
