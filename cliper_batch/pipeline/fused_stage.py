"""Fused worker: video references in, scored rows out, frames and crops kept on the actor's device.

One callable class for ``Dataset.map_batches`` that replaces the two staged
actors (:class:`~cliper_batch.pipeline.decode_stage.DecodeStage` ->
:class:`~cliper_batch.pipeline.score_stage.ScoreStage`) on GPU clusters. It
runs the shared per-video algorithm (:class:`~cliper_batch.video_annotation.VideoAnnotator`)
with frames on the model's device (DALI NVDEC frames never touch the host),
the face detector there, and a crop primitive that leaves normalised float
crops on the device (Triton kernel on CUDA, the torch reference otherwise:
:func:`~cliper_batch.crops.primitives.select_crop_backend`), and scores with
the shared model setup (:class:`~cliper_batch.pipeline.scoring_model.ScoringModel`).
Nothing but boxes and scores crosses to the host (plus a subsampled copy for
shot-cut detection, which is numpy code).

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
A sticky CUDA error (:func:`~cliper_batch.failures.is_sticky_cuda_error`:
illegal address, launch failure, ...), in a video's outcome or while scoring,
ends the actor instead (:func:`~cliper_batch.pipeline.scoring_model.end_actor_if_cuda_broken`):
the process's CUDA context is broken, so Ray restarts the actor and retries the
block there.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import rows
from ..types import AnnotateConfig, VideoOutcome

if TYPE_CHECKING:  # the driver only names this class for Ray Data: torch and the model load in the actor
    import torch

    from ..crops.primitives import CropBackendChoice

BATCH_HISTORY = 4096  # scored batches remembered per actor (for tests and debugging; bounded for long runs)


@dataclass
class _Queued:
    """A run of queued rows of one video: ``n`` clips with their crops, or its outcome row (``crops is None``)."""

    video_id: str
    rows: dict[str, np.ndarray]
    crops: torch.Tensor | None  # [n, T, 3, S, S] float32 (float16: crop_dtype_for) on the device, inference tensors

    @property
    def n(self) -> int:
        return 0 if self.crops is None else int(self.crops.shape[0])

    def split(self, k: int) -> tuple[_Queued, _Queued]:
        head = _Queued(self.video_id, {c: v[:k] for c, v in self.rows.items()}, self.crops[:k])
        tail = _Queued(self.video_id, {c: v[k:] for c, v in self.rows.items()}, self.crops[k:])
        return head, tail


def crop_dtype_for(device: torch.device, autocast_dtype: torch.dtype | None, encoder_backend: str, crop_backend: str):
    """The fused crops' dtype: float16 when the Triton kernel writes them for an eager fp16-autocast encoder on CUDA.

    The encoder's first layer would cast float32 crops to float16 anyway; writing them in float16
    halves the crop bytes. Compiled encoders keep float32 input (their engines fix the input dtype),
    and the CPU path is unchanged.
    """
    import torch

    if (device.type == "cuda" and autocast_dtype == torch.float16 and encoder_backend == "eager"
            and crop_backend == "triton"):
        return torch.float16
    return torch.float32


def _in_inference_mode(crop):
    """``crop`` run under ``torch.inference_mode``: its crops are inference tensors, as the staged scorer's are.

    A ``torch.compile``d encoder is warmed up with inference tensors; a normal tensor would be
    cloned by its wrapper (``cliper_batch.model.backends``) on every batch to avoid a recompile.
    """
    import torch

    def run(frames, boxes):
        with torch.inference_mode():
            return crop(frames, boxes)

    return run


@dataclass
class BatchRecord:
    """One scored model batch: how many clips, and from which videos (tests check batches span videos)."""

    n_clips: int
    video_ids: tuple[str, ...]


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
        from ..crops.primitives import normalized_crops, select_crop_backend
        from ..video_annotation import FramePrimitives, VideoAnnotator
        from .scoring_model import ScoringModel, end_actor_if_cuda_broken

        self._end_actor_if_cuda_broken = end_actor_if_cuda_broken

        self.config = config
        self.scorer = ScoringModel(
            model_spec, device, config.compile, num_threads, storage_options,
            example_batch=config.batch_size * config.frames_per_segment, engine_cache=config.engine_cache, role="fused",
        )
        dev = self.scorer.device
        choice = crop_backend or select_crop_backend(dev)
        self.crop_backend, self.crop_backend_reason = choice.name, choice.reason
        self.crop_dtype = crop_dtype_for(dev, self.scorer.autocast_dtype, self.scorer.encoder.backend, choice.name)
        crop = normalized_crops(choice.name, self.scorer.image_size, self.scorer.mean, self.scorer.std, device=dev,
                                out_dtype=self.crop_dtype)
        primitives = FramePrimitives(
            frames_device=dev,
            decoder_device=f"cuda:{dev.index or 0}" if dev.type == "cuda" else "cpu",
            crop=_in_inference_mode(crop),
            crop_name=choice.name,
            detector_device=dev,
        )
        self.annotator = VideoAnnotator(
            config, self.scorer.image_size, primitives, storage_options, decode_threads,
            face_margin=self.scorer.model.face_margin,
        )
        self._queue: deque[_Queued] = deque()
        self._queued_clips = 0
        self.batches: deque[BatchRecord] = deque(maxlen=BATCH_HISTORY)

    @property
    def batch_sizes(self) -> list[int]:
        return [b.n_clips for b in self.batches]

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Process every video of the block; yields output blocks as model batches fill, flushes at the end.

        The queue belongs to one call: it starts empty, and if the call ends
        early (a scoring error such as a CUDA OOM fails the task, or the
        consumer stops), what it queued is dropped, so a retried or later block
        never emits the failed block's pieces.
        """
        self._clear_queue()
        try:
            yield from self._process(batch)
        except BaseException:
            self._clear_queue()
            raise

    def _clear_queue(self) -> None:
        self._queue.clear()
        self._queued_clips = 0

    def _process(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        bsz = self.config.batch_size
        for ref_json in batch["ref"]:
            ref = rows.decode_ref(str(ref_json))
            for item in self.annotator.annotate(ref):
                if isinstance(item, VideoOutcome):
                    if item.status != "ok":
                        # a sticky CUDA error is the actor's, not the video's: end the actor (Ray restarts it)
                        self._end_actor_if_cuda_broken(item.error_type, item.error, f"fused worker, {ref.uri}")
                        self._drop_clips(ref.video_id)  # its unscored clips would be discarded by the writer anyway
                    self._queue.append(_Queued(ref.video_id, self._outcome_row(item), None))
                else:  # a ClipPiece
                    self._queue.append(_Queued(ref.video_id, item.rows, item.crops))
                    self._queued_clips += item.n
                while self._queued_clips >= bsz:
                    yield self._emit(bsz)
        while self._queued_clips > 0:
            yield self._emit(min(bsz, self._queued_clips))
        if self._queue:  # outcome rows only (failed videos, videos without faces)
            yield self._emit(0)

    @staticmethod
    def _outcome_row(outcome: VideoOutcome) -> dict[str, np.ndarray]:
        outcome.extra["worker"] = "fused"
        return rows.outcome_row(outcome)

    def _drop_clips(self, video_id: str) -> None:
        kept = deque(p for p in self._queue if not (p.video_id == video_id and p.crops is not None))
        self._queued_clips = sum(p.n for p in kept)
        self._queue = kept

    def _emit(self, n: int) -> dict[str, np.ndarray]:
        """Score the first ``n`` queued clips; output them with every outcome row whose video is now complete."""
        import torch

        parts: list[_Queued] = []
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
        t_start = time.time()
        block = {k: np.concatenate([p.rows[k] for p in parts]) for k in rows.KEY_COLUMNS}
        clips = [p.crops for p in parts if p.crops is not None]
        if clips:
            self.batches.append(BatchRecord(taken, tuple(dict.fromkeys(p.video_id for p in parts if p.crops is not None))))
        is_seg = block["row_kind"] == rows.SEGMENT
        with torch.inference_mode():  # the batch stays an inference tensor: the compiled path need not clone it
            batch = torch.cat(clips) if len(clips) > 1 else (clips[0] if clips else None)
        return self.scorer.scored_block(block, is_seg, batch, t_start)
