"""Model specs -> loaded CLIPER models.

A *model spec* is the one string a user passes to choose a model (the forms,
parsing and what a spec will produce are in :mod:`.spec`, which needs neither
torch nor open_clip for a checkpoint):

==============================================  =============================================================
``<path or fsspec URL>.safetensors``            a CLIPER checkpoint (:func:`~.checkpoint.save_checkpoint`)
``openclip:<ARCH>``                             zero-shot, **random init** (fixed seed; tests/benchmarks only)
``openclip:<ARCH>@<TAG>``                       zero-shot, open_clip pretrained tag (needs the model hub or a
                                                populated Hugging Face cache), e.g. ``openclip:ViT-B-16@openai``
``openclip:<ARCH>@<path or URL>``               zero-shot, an open_clip state-dict file (``.safetensors``, or
                                                ``.pt``/``.bin`` read by open_clip with ``weights_only=True``)
``...?classes=a,b,c&k=5``                       (openclip specs only) class list and descriptors per class;
                                                defaults: the canonical 7 classes, k=5
==============================================  =============================================================

``classes=`` / ``descriptors_per_class=`` keyword arguments do the same as the
query string.  A checkpoint fixes its classes; passing different ones is an error.
``<PRETRAINED>`` may not contain ``?`` (use ``storage_options`` for URL options).

Building a model registers the small test architectures in ``cliper_batch/model/configs/``
(e.g. ``Tiny-ViT-T-16``) with open_clip (:mod:`.archs`); importing this module changes nothing global.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from .checkpoint import load_checkpoint_with_id, model_id_of
from .cliper import CLIPER
from .spec import ModelSpecError, build_zero_shot_model, check_fixed, parse_spec

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to score, with the identity that goes into outputs and caches."""

    model: CLIPER
    model_id: str
    spec: str
    classes: tuple[str, ...]
    image_size: int
    kind: str = "checkpoint"  # checkpoint | openclip


def load_model(
    spec: str,
    device: str | torch.device = "cpu",
    *,
    classes: tuple[str, ...] | list[str] | str | None = None,
    descriptors_per_class: int | None = None,
    cache_dir: str | None = None,
    **storage_options: Any,
) -> LoadedModel:
    """Load the model a spec names onto ``device`` (eval mode).

    Raises :class:`ModelSpecError` for unusable specs or pretrained weights, and
    :class:`~.checkpoint.CheckpointError` for unreadable checkpoints.
    ``storage_options`` go to fsspec; ``cache_dir`` is where remote pretrained
    files are copied (default ``$CLIPER_BATCH_CACHE`` or ``~/.cache/cliper_batch``).
    """
    parsed = parse_spec(spec, classes=classes, descriptors_per_class=descriptors_per_class)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelSpecError(f"bad device {device!r}: {exc}") from exc

    if parsed.kind == "checkpoint":
        model, model_id = load_checkpoint_with_id(parsed.uri, device, **storage_options)  # type: ignore[arg-type]
        check_fixed(parsed, model.classes, model.descriptors_per_class)
        log.info("loaded checkpoint %s as %s", parsed.uri, model_id)
        return LoadedModel(model, model_id, parsed.text, model.classes, model.image_size, "checkpoint")

    model = build_zero_shot_model(parsed, cache_dir=cache_dir, **storage_options)
    model_id = model_id_of(model)
    model = model.to(device).eval()
    log.info("built zero-shot model %s as %s", parsed.text, model_id)
    return LoadedModel(model, model_id, parsed.text, model.classes, model.image_size, "openclip")
