"""Score stage: segment crops -> class probabilities and best descriptor (CLIPER).

A callable class for ``Dataset.map_batches`` run in an actor pool: the model
is loaded and compiled once per actor, then scores large batches of segments
from many videos. Outcome rows pass through untouched (no compute).
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from . import rows

log = logging.getLogger(__name__)

PASSTHROUGH = (
    "row_kind", "video_id", "video_uri", "track_id", "segment_index", "start_s", "end_s", "outcome", *rows.FACE_COLUMNS,
)


class ScoreStage:
    """Ray Data UDF holding one CLIPER model on one device."""

    def __init__(
        self,
        model_spec: str,
        device: str = "auto",
        compile_backend: str = "eager",
        num_threads: int | None = None,
        storage_options: dict | None = None,
        example_batch: int = 64,
        engine_cache: str | None = None,
    ):
        from ..compile import compile_encoder, select_device, select_dtype
        from ..model.factory import load_model

        self.device = select_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(num_threads or os.cpu_count() or 1)))
        loaded = load_model(model_spec, device=self.device, **(storage_options or {}))
        self.model = loaded.model.eval()
        self.n_classes = len(loaded.classes)
        self.encoder = compile_encoder(
            self.model, compile_backend, self.device, example_batch=example_batch, cache_dir=engine_cache,
            model_id=loaded.model_id,
        )
        self.backend_label = f"{self.encoder.backend}@{self.device}"
        # fp16 autocast on CUDA for the eager path (compiled backends carry their own dtype)
        self.autocast_dtype = select_dtype(self.device) if self.device.type == "cuda" else None
        log.info("score stage: model %s on %s, backend %s (%s)", loaded.model_id, self.device, self.encoder.backend, self.encoder.reason)
        self.busy_s = 0.0
        self.crops_scored = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..model.cliper import score_clips

        t_start = time.time()
        kinds = batch["row_kind"]
        n = len(kinds)
        is_seg = kinds == rows.SEGMENT
        probs = np.zeros((n, self.n_classes), dtype=np.float32)
        descriptor = np.full(n, -1, dtype=np.int16)
        if is_seg.any():
            t0 = time.perf_counter()
            crops = torch.from_numpy(np.ascontiguousarray(batch["crops"][is_seg])).to(self.device, non_blocking=True)
            scores = score_clips(self.model, crops, encoder=self.encoder, autocast_dtype=self.autocast_dtype)
            probs[is_seg] = scores.probs.float().cpu().numpy()
            descriptor[is_seg] = scores.descriptor.cpu().numpy().astype(np.int16)
            self.busy_s += time.perf_counter() - t0
            self.crops_scored += int(crops.shape[0] * crops.shape[1])
        out = {k: batch[k] for k in PASSTHROUGH}
        out["probs"] = probs
        out["descriptor"] = descriptor
        # Scorer timing travels with the rows (wall clock, spread evenly over the batch's rows)
        # so the driver can tell how busy the model was: the "is the GPU starving" metric.
        busy = time.time() - t_start
        out["score_t0"] = np.full(n, t_start, dtype=np.float64)
        out["score_busy_s"] = np.full(n, busy / max(n, 1), dtype=np.float64)
        out["score_backend"] = np.array([self.backend_label] * n, dtype=object)
        return out
