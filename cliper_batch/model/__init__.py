"""CLIPER model package (open_clip layout: model / checkpoint / factory / zero-shot in separate modules).

- :mod:`.cliper`      the CLIPER module, CLIPER's scoring rule (:func:`score_clips`, :class:`Scorer`)
- :mod:`.checkpoint`  safetensors-only checkpoints and the content model id
- :mod:`.zeroshot`    zero-shot descriptors from an open_clip model's text tower
- :mod:`.pretrained`  where an open_clip model's weights come from (tag, file, URL)
- :mod:`.builder`     the one CLIPER builder (open_clip image tower + descriptors)
- :mod:`.archs`       the ``configs/`` architectures, registered with open_clip explicitly
- :mod:`.spec`        model specs (``*.safetensors``, ``openclip:<ARCH>[@<PRETRAINED>]``): parsing, :class:`ModelInfo`
- :mod:`.factory`     model spec -> :class:`LoadedModel` (weights loaded)
- ``configs/``        small open_clip architectures for tests (``Tiny-ViT-T-16``)

Every name loads its module on first use: ``factory`` and ``zeroshot`` import
open_clip (several seconds), ``cliper`` torch, while ``spec`` and
``checkpoint``'s header reading need neither, so the annotate driver can plan a
checkpoint run (``cliper_batch.model.spec``) without importing torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "CheckpointError": ".checkpoint",
    "CheckpointHeader": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "load_checkpoint_with_id": ".checkpoint",
    "model_id_of": ".checkpoint",
    "read_checkpoint_header": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "CLIPER": ".cliper",
    "ClipScores": ".cliper",
    "MeanTemporalPool": ".cliper",
    "Scorer": ".cliper",
    "class_logits_from_descriptors": ".cliper",
    "register_temporal": ".cliper",
    "score_clips": ".cliper",
    "scores_from_descriptor_logits": ".cliper",
    "LoadedModel": ".factory",
    "ModelInfo": ".spec",
    "ModelSpec": ".spec",
    "ModelSpecError": ".spec",
    "TINY_ARCH": ".spec",
    "inspect_model": ".spec",
    "load_model": ".factory",
    "parse_spec": ".spec",
    "PretrainedError": ".pretrained",
    "build_zero_shot": ".zeroshot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
