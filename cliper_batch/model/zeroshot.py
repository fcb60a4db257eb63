"""Zero-shot CLIPER from an open_clip model: descriptor prompts -> text embeddings -> fixed descriptors.

The open_clip model is created with open_clip's own loading code
(``open_clip.create_model_and_transforms``, :func:`~.builder.create_open_clip`), so any
weights open_clip can load work here (:mod:`.pretrained` resolves them: a pretrained tag or
a state-dict file).  The K facial-action prompts per class
(:func:`cliper_batch.labels.prompts_for`) are encoded once by the text tower,
L2-normalised and kept as CLIPER's descriptor matrix; the text tower is then
dropped, so only the image tower stays in memory.

Without pretrained weights the model is randomly initialised **with a fixed
seed** (same weights, hence the same model id, in every worker): useful for
tests and throughput benchmarks only.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from ..labels import prompts_for, validate_classes
from .archs import open_clip_registered
from .builder import RANDOM_INIT_SEED, build_cliper, create_open_clip
from .cliper import CLIPER

log = logging.getLogger(__name__)

def encode_descriptor_prompts(clip_model: torch.nn.Module, tokenizer: Any, prompts: list[list[str]]) -> Tensor:
    """Encode C x K prompts with the text tower -> L2-normalised ``[C, K, D]`` float32 embeddings."""
    n_classes, k = len(prompts), len(prompts[0])
    if any(len(p) != k for p in prompts):
        raise ValueError("every class needs the same number of descriptor prompts")
    flat = [p for per_class in prompts for p in per_class]
    ctx = getattr(tokenizer, "context_length", None)
    if ctx is not None and hasattr(tokenizer, "encode"):
        too_long = [p for p in flat if len(tokenizer.encode(p)) + 2 > ctx]
        if too_long:
            log.warning("%d descriptor prompt(s) exceed the text context (%d tokens) and are truncated, e.g. %r",
                        len(too_long), ctx, too_long[0])
    device = next(clip_model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(flat), 256):
            tokens = tokenizer(flat[i:i + 256]).to(device)
            chunks.append(clip_model.encode_text(tokens).float())
    emb = torch.nn.functional.normalize(torch.cat(chunks), dim=-1)
    return emb.view(n_classes, k, -1).clone()


def build_zero_shot(
    arch: str,
    pretrained: str | None,
    classes: tuple[str, ...] | list[str],
    descriptors_per_class: int,
    *,
    cache_dir: str | None = None,
    **storage_options: Any,
) -> CLIPER:
    """Create ``arch`` with open_clip (weights per :func:`~.pretrained.resolve_pretrained`), encode the descriptor prompts,
    and return a CPU CLIPER that keeps only the image tower."""
    classes = validate_classes(classes)
    if descriptors_per_class < 1:
        raise ValueError(f"descriptors_per_class must be >= 1, got {descriptors_per_class}")
    oc = create_open_clip(arch, pretrained, cache_dir=cache_dir, **storage_options)
    if oc.random_init:
        log.warning(
            "!!! openclip:%s has NO pretrained weights: random init (seed %d). Scores are meaningless; "
            "use this only for tests and throughput benchmarks. !!!", arch, RANDOM_INIT_SEED,
        )
    clip_model = oc.model.eval()

    prompts = prompts_for(classes, per_class=descriptors_per_class)
    tokenizer = open_clip_registered().get_tokenizer(arch)
    descriptors = encode_descriptor_prompts(clip_model, tokenizer, prompts)
    return build_cliper(  # keeps only the image tower: the text tower goes with ``oc``
        oc.tower,
        descriptors,
        classes,
        provenance={
            "source": "openclip",
            "arch": arch,
            "pretrained": pretrained,
            "weights": oc.weights,
            "prompts": prompts,
        },
    ).eval()
