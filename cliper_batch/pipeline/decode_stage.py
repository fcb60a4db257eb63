"""Staged worker, first half: video references in, uint8 crop rows + one outcome row per video out.

A callable class for ``Dataset.map_batches`` (one video per call) around the
shared per-video algorithm (:class:`~cliper_batch.video_annotation.VideoAnnotator`)
with host frames and the torch reference crop to uint8: the crops travel
through Ray's object store to :class:`~cliper_batch.pipeline.score_stage.ScoreStage`.
It yields a block per ``decode_chunk_segments`` segments as it decodes, so a
long video streams with bounded memory, and always ends a video with one
outcome row (see :mod:`cliper_batch.rows`).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import rows
from ..types import AnnotateConfig, VideoOutcome, VideoRef


class DecodeStage:
    """Ray Data UDF: ``{video_id, ref}`` rows in, segment rows (with ``crops``) + one outcome row per video out."""

    def __init__(
        self,
        config: AnnotateConfig,
        image_size: int,
        device: str = "cpu",
        storage_options: dict | None = None,
        decode_threads: int = 0,
        face_margin: float | None = None,
    ):
        # torch and the per-video algorithm load here, in the actor: the driver, which only
        # names this class for Ray Data, never imports torch for a CPU run.
        import torch

        from ..crops.primitives import uint8_crops
        from ..video_annotation import FramePrimitives, VideoAnnotator
        from .scoring_model import end_actor_if_cuda_broken, freeze_actor_heap

        self._end_actor_if_cuda_broken = end_actor_if_cuda_broken

        self.crop_shape = (config.frames_per_segment, int(image_size), int(image_size), 3)
        primitives = FramePrimitives(
            frames_device=torch.device("cpu"),  # the crops go through the object store: frames stay on the host
            decoder_device=str(device),
            crop=uint8_crops(image_size),
            crop_name="torch",
            detector_device=torch.device("cuda" if str(device).startswith("cuda") else "cpu"),
        )
        self.annotator = VideoAnnotator(
            config, image_size, primitives, storage_options, decode_threads, face_margin=face_margin
        )
        # what start-up loaded (torch, torchvision) stays for the actor's life: out of the collector's
        # walks, so the worker exits in a fraction of a second when the job ends (as the model actors do)
        freeze_actor_heap()

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for ref_json in batch["ref"]:
            yield from self.process(rows.decode_ref(str(ref_json)))

    def process(self, ref: VideoRef) -> Iterator[dict[str, np.ndarray]]:
        """All row blocks of one video; never raises for a bad video."""
        for item in self.annotator.annotate(ref):
            if isinstance(item, VideoOutcome):
                if item.status != "ok":  # NVDEC or the detector on CUDA: a sticky CUDA error ends the actor
                    self._end_actor_if_cuda_broken(item.error_type, item.error, f"decode worker, {ref.uri}")
                item.extra["worker"] = "staged"
                yield rows.outcome_row(item, self.crop_shape)
            else:
                yield {**item.rows, "crops": item.crops.numpy()}
