"""The model side of a Ray actor: one CLIPER model on one device, set up once, scoring blocks of rows.

Shared by both workers that hold the model (``ScoreStage`` in the staged
layout, ``FusedStage`` in the fused one): device selection, torch threads on
CPU, :func:`~cliper_batch.model.factory.load_model`,
:func:`~cliper_batch.compile.compile_encoder`, fp16 autocast on CUDA for the
eager path, the backend label, and busy timing.

``score_busy_s`` (a column of every scored block, spread evenly over its rows)
is the time the model was busy with that block: moving the crops to the
device, encoding and pooling, and bringing the scores back to the host. It
does not count decoding, cropping or row handling, so ``busy_s / window`` in
the run record reads "how much of the time the model had work", the same way
for both workers.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import time

import numpy as np
import torch

from .. import rows

log = logging.getLogger(__name__)


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
        from ..compile import compile_encoder, select_device, select_dtype
        from ..model.factory import load_model

        self.device = select_device(device)
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
        from ..model.cliper import score_clips, score_images

        t0 = time.perf_counter()
        if clips.dtype == torch.uint8:
            scores = score_clips(self.model, clips.to(self.device, non_blocking=True), encoder=self.encoder,
                                 autocast_dtype=self.autocast_dtype)
        else:
            scores = score_images(self.model, clips, encoder=self.encoder, autocast_dtype=self.autocast_dtype)
        probs = scores.probs.float().cpu().numpy()
        descriptor = scores.descriptor.cpu().numpy().astype(np.int16)
        busy = time.perf_counter() - t0
        self.busy_s += busy
        return probs, descriptor, busy

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
