"""The model side of a Ray actor: one CLIPER model on one device, set up once, scoring blocks of rows.

Shared by both workers that hold the model (``ScoreStage`` in the staged
layout, ``FusedStage`` in the fused one): device selection, torch threads on
CPU, :func:`~cliper_batch.model.factory.load_model`,
:func:`~cliper_batch.model.backends.compile_encoder`, fp16 autocast on CUDA for the
eager path, the backend label, and busy timing.

``score_busy_s`` (a column of every scored block, spread evenly over its rows)
is the time the model was busy with that block: moving the crops to the
device, encoding and pooling, and bringing the scores back to the host. It
does not count decoding, cropping or row handling, so ``busy_s / window`` in
the run record reads "how much of the time the model had work", the same way
for both workers.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time

import numpy as np
import torch

from .. import rows
from ..failures import is_sticky_cuda_error, sticky_cuda_error

log = logging.getLogger(__name__)

# Exit status of an actor that ends itself because its CUDA context is broken (any non-zero status
# that is not an intentional exit makes Ray restart the actor within max_restarts).
CUDA_BROKEN_EXIT = 75
_exit_process = os._exit  # tests replace it: the real one ends the process without cleanup


def end_actor_if_cuda_broken(error_type: str | None, message: str | None, where: str) -> None:
    """End this process if ``error_type``/``message`` is a sticky CUDA error (:func:`~cliper_batch.failures.is_sticky_cuda_error`).

    Called by every actor shell (fused, staged decode, scoring) with a failed video's outcome
    or a scoring error. After such an error the CUDA context is unusable, so recording the
    video as failed and going on would fail every later video of the actor, and Ray would
    never restart it. ``os._exit`` (not ``ray.actor.exit_actor``: an intentional exit is not
    restarted) makes Ray restart the actor (``max_restarts``) and retry the block
    (``max_task_retries``) in a fresh process; a block that keeps failing is recorded
    ``WorkerLost`` (transient), never as bad data.
    """
    if is_sticky_cuda_error(error_type, message):
        _end_actor(error_type, message, where)


def end_actor_on_cuda_exception(exc: BaseException, where: str) -> None:
    """:func:`end_actor_if_cuda_broken` for an exception (it, or one of its causes, a sticky CUDA error)."""
    if sticky_cuda_error(exc):
        _end_actor(type(exc).__name__, str(exc) or repr(exc), where)


def _end_actor(error_type: str | None, message: str | None, where: str) -> None:
    log.error("%s: CUDA error that breaks this process's CUDA context (%s: %s); ending the actor so Ray restarts it",
              where, error_type, (message or "").splitlines()[0][:300])
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            h.flush()
    sys.stderr.flush()
    _exit_process(CUDA_BROKEN_EXIT)


# Share of the GPU memory kept out of an actor's cap: the CUDA context and libraries' workspaces live
# outside the caching allocator, so actors capped at exactly their share could still overfill the card.
CONTEXT_RESERVE = 0.05


def gpu_memory_fraction(gpu_share: float | None) -> float | None:
    """The ``torch.cuda.set_per_process_memory_fraction`` for an actor holding ``gpu_share`` of a GPU; None = no cap.

    A whole GPU (or more, or no GPU resource) gets no cap; a fraction (``--gpu-fraction 0.5``:
    two actors per GPU) gets that share of the memory less :data:`CONTEXT_RESERVE` of it, so
    actors sharing a card fail with their own out-of-memory error (transient: the block is
    retried) instead of starving each other silently.
    """
    if gpu_share is None or not (0.0 < float(gpu_share) < 1.0):
        return None
    return round(float(gpu_share) * (1.0 - CONTEXT_RESERVE), 6)


def actor_gpu_share() -> float | None:
    """The GPUs Ray assigned to this actor (``num_gpus`` of its stage), or None outside a Ray actor."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    if ctx.get_actor_id() is None:
        return None
    share = ctx.get_assigned_resources().get("GPU")
    return float(share) if share else None


def cap_gpu_memory(device: torch.device, gpu_share: float | None) -> float | None:
    """Cap this process's CUDA caching allocator on ``device`` from its GPU share; the fraction set (None: none)."""
    frac = gpu_memory_fraction(gpu_share)
    if device.type != "cuda" or frac is None:
        return None
    torch.cuda.set_per_process_memory_fraction(frac, device)
    log.info("GPU share %.3g of %s: CUDA memory capped at %.3g of the card", gpu_share, device, frac)
    return frac


def freeze_actor_heap() -> bool:
    """In a Ray actor's own worker process, ``gc.freeze()`` what start-up built; True if it did.

    torch, torchvision, open_clip and the model are ~10^6 objects the actor keeps for its
    whole life. Frozen, the collector stops walking them on every full collection, and
    the worker's exit (Python's last collections) takes a fraction of a second instead of
    several CPU seconds, which the 2-core laptop otherwise spends after the job's results
    are in, with the worker outliving the driver (docs/benchmarks.md, "Whole-process
    exit"). Anywhere else (a driver, a test, a Ray task) it does nothing: the process is
    not the actor's to tune.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    gc.freeze()
    return True


class ScoringModel:
    """A loaded, compiled CLIPER on one device; ``score`` takes clip batches, ``scored_block`` builds output rows.

    ``example_batch`` is the number of frames per encoder call to compile for
    (``batch_size * frames_per_segment``).
    """

    def __init__(
        self,
        model_spec: str,
        device: str | torch.device = "auto",
        compile_backend: str = "eager",
        num_threads: int | None = None,
        storage_options: dict | None = None,
        example_batch: int = 64,
        engine_cache: str | None = None,
        role: str = "score",
    ) -> None:
        from ..model.backends import compile_encoder, select_device, select_dtype
        from ..model.factory import load_model

        self.device = select_device(device)
        self.memory_fraction = cap_gpu_memory(self.device, actor_gpu_share())
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(num_threads or os.cpu_count() or 1)))
        loaded = load_model(model_spec, device=self.device, **(storage_options or {}))
        self.model = loaded.model.eval()
        self.model_id = loaded.model_id
        self.n_classes = len(loaded.classes)
        self.image_size = int(loaded.image_size)
        self.encoder = compile_encoder(
            self.model, compile_backend, self.device, example_batch=example_batch, cache_dir=engine_cache,
            model_id=loaded.model_id,
        )
        self.backend_label = f"{self.encoder.backend}@{self.device}"
        # fp16 autocast on CUDA for the eager path (compiled backends carry their own dtype)
        self.autocast_dtype = select_dtype(self.device) if self.device.type == "cuda" else None
        self.busy_s = 0.0  # summed over this actor's life
        log.info("%s actor: model %s on %s, backend %s (%s)", role, loaded.model_id, self.device,
                 self.encoder.backend, self.encoder.reason)
        freeze_actor_heap()  # the model is the last big thing a model actor builds

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.model.mean)  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.model.std)  # type: ignore[return-value]

    def score(self, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
        """Class probabilities ``[B, C]``, best descriptor ``[B]`` (host arrays) and the busy seconds, for ``B`` clips.

        ``clips`` are uint8 crops ``[B, T, S, S, 3]`` (any device: they move as
        uint8 and are normalised on the model's device) or normalised float
        images ``[B, T, 3, S, S]`` already on it.
        """
        t0 = time.perf_counter()
        try:
            probs, descriptor = self._score(clips)
        except Exception as exc:
            end_actor_on_cuda_exception(exc, "scoring")  # the CUDA context is gone: a fresh actor, not a failed task
            raise
        busy = time.perf_counter() - t0
        self.busy_s += busy
        return probs, descriptor, busy

    def _score(self, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from ..model.cliper import score_clips, score_images

        if clips.dtype == torch.uint8:
            scores = score_clips(self.model, clips.to(self.device, non_blocking=True), encoder=self.encoder,
                                 autocast_dtype=self.autocast_dtype)
        else:
            scores = score_images(self.model, clips, encoder=self.encoder, autocast_dtype=self.autocast_dtype)
        return scores.probs.float().cpu().numpy(), scores.descriptor.cpu().numpy().astype(np.int16)

    def scored_block(
        self, block: dict[str, np.ndarray], is_scored: np.ndarray, clips: torch.Tensor | None, t_start: float
    ) -> dict[str, np.ndarray]:
        """``block``'s rows (crops dropped) with ``probs``, ``descriptor`` and the scoring columns.

        ``clips`` are the crops of the rows where ``is_scored`` is true, in row
        order (``None`` when there are none); the other rows (outcome rows) get
        zero probabilities and descriptor -1.
        """
        n = len(block["row_kind"])
        probs = np.zeros((n, self.n_classes), dtype=np.float32)
        descriptor = np.full(n, -1, dtype=np.int16)
        busy = 0.0
        if clips is not None and int(clips.shape[0]):
            probs[is_scored], descriptor[is_scored], busy = self.score(clips)
        return rows.scored_rows(block, probs, descriptor, t_start, busy, self.backend_label)
