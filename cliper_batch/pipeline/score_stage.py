"""Staged worker, second half: uint8 crop rows in, scored rows out (CLIPER).

A callable class for ``Dataset.map_batches`` run in an actor pool: the model
is set up once per actor (:class:`~cliper_batch.pipeline.scoring_model.ScoringModel`),
then scores large batches of segments from many videos. Outcome rows pass
through untouched (no compute).
"""
from __future__ import annotations

import time

import numpy as np

from .. import rows


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
        from .scoring_model import ScoringModel  # torch and the model: in the actor, never in the driver

        self.scorer = ScoringModel(
            model_spec, device, compile_backend, num_threads, storage_options, example_batch, engine_cache, role="score"
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        t_start = time.time()
        is_seg = batch["row_kind"] == rows.SEGMENT
        clips = torch.from_numpy(np.ascontiguousarray(batch["crops"][is_seg])) if is_seg.any() else None
        return self.scorer.scored_block(batch, is_seg, clips, t_start)
