"""CLIPER model package (open_clip layout: model / checkpoint / factory / zero-shot in separate modules).

- :mod:`.cliper`      the CLIPER module, CLIPER's scoring rule (:func:`score_clips`, :class:`Scorer`)
- :mod:`.checkpoint`  safetensors-only checkpoints and the content model id
- :mod:`.zeroshot`    zero-shot descriptors from an open_clip model's text tower
- :mod:`.factory`     model specs (``*.safetensors``, ``openclip:<ARCH>[@<PRETRAINED>]``) -> :class:`LoadedModel`
- ``configs/``        small open_clip architectures for tests (``Tiny-ViT-T-16``)

``factory`` and ``zeroshot`` import open_clip (several seconds); they load on
first use of their names, so ``from cliper_batch.model import score_clips``
stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .checkpoint import (
    CheckpointError,
    CheckpointHeader,
    load_checkpoint,
    load_checkpoint_with_id,
    model_id_of,
    read_checkpoint_header,
    save_checkpoint,
)
from .cliper import (
    CLIPER,
    ClipScores,
    MeanTemporalPool,
    Scorer,
    class_logits_from_descriptors,
    register_temporal,
    score_clips,
    scores_from_descriptor_logits,
)

_LAZY = {
    "LoadedModel": ".factory",
    "ModelInfo": ".factory",
    "ModelSpec": ".factory",
    "ModelSpecError": ".factory",
    "TINY_ARCH": ".factory",
    "inspect_model": ".factory",
    "load_model": ".factory",
    "parse_spec": ".factory",
    "PretrainedError": ".zeroshot",
    "build_zero_shot": ".zeroshot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLIPER",
    "CheckpointError",
    "CheckpointHeader",
    "ClipScores",
    "MeanTemporalPool",
    "Scorer",
    "class_logits_from_descriptors",
    "load_checkpoint",
    "load_checkpoint_with_id",
    "model_id_of",
    "read_checkpoint_header",
    "register_temporal",
    "save_checkpoint",
    "score_clips",
    "scores_from_descriptor_logits",
    *sorted(_LAZY),
]
