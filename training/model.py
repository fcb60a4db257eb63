"""The trainable CLIPER: an open_clip model split into the exported :class:`CLIPER` and the METD prompt learner.

:func:`build_training_model` creates the open_clip model through open_clip's
own ``create_model_and_transforms`` (pretrained tag, weights file or - for tests
- a seeded random init, as in :mod:`cliper_batch.model.zeroshot`), then keeps

* ``cliper`` - a :class:`cliper_batch.model.CLIPER` holding the visual tower and
  the ``[C, K, D]`` descriptor buffer: the model stage 2 fine-tunes and the
  one that is exported (no text tower in it);
* ``prompts`` - a :class:`~.prompts.PromptLearner` over the frozen text tower:
  the ``C*K`` learnable prompts stage 1 trains.

Stage 1 scores images against ``prompts()`` (image tower frozen); at the start
of stage 2 the prompts are encoded once into ``cliper.descriptors`` and stay
fixed while the image tower trains.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from cliper_batch.labels import validate_classes
from cliper_batch.model.builder import build_cliper
from cliper_batch.model.cliper import CLIPER

from .prompts import CLIPER_TEMPLATE, DEFAULT_PLACEHOLDER, PromptLearner

log = logging.getLogger(__name__)

class ModelBuildError(ValueError):
    """A model spec or setting the trainer cannot use (the message says which and why)."""


def center_descriptors(desc: Tensor) -> Tensor:
    """Remove the direction all descriptors share, then re-normalise: ``[C, K, D]`` -> ``[C, K, D]``.

    Why: a randomly initialised text tower (no pretrained CLIP, e.g. the demo
    model) pools every prompt to nearly the same vector (class-mean cosine
    0.97-0.999 after stage 1), so the fixed anchors differ only along tiny
    directions and stage 2 must separate classes inside that sliver. The shared
    component carries no class information; removing it keeps what stage 1 learned
    about each class (the differences between prompts) and spreads the anchors.
    Off by default: with a pretrained text tower CLIPER uses the prompts as they are.
    """
    if desc.ndim != 3:
        raise ValueError(f"descriptors must be [C, K, D], got {tuple(desc.shape)}")
    centered = desc - desc.reshape(-1, desc.shape[-1]).mean(dim=0)
    norms = centered.norm(dim=-1, keepdim=True)
    if bool((norms < 1e-6).any()):
        raise ValueError("cannot center descriptors: some descriptor equals the mean of all descriptors")
    return centered / norms


@dataclass
class TrainingModel:
    """The pieces of a CLIPER under training (see module docstring)."""

    cliper: CLIPER
    prompts: PromptLearner
    tokenizer: Any
    spec: str
    arch: str
    pretrained: str | None
    text_fingerprint: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.cliper.classes

    @property
    def descriptors_per_class(self) -> int:
        return self.cliper.descriptors_per_class

    def prompt_descriptors(self) -> Tensor:
        """The learned prompts encoded by the text tower: ``[C, K, D]``, L2-normalised."""
        c, k = len(self.classes), self.descriptors_per_class
        return self.prompts().view(c, k, -1)

    @torch.no_grad()
    def fix_descriptors(self, center: bool = False) -> None:
        """Encode the prompts once into ``cliper.descriptors`` (start of stage 2, or before export).

        ``center``: subtract the mean of all ``C*K`` descriptors before re-normalising
        (see :func:`center_descriptors`).
        """
        desc = self.prompt_descriptors()
        if center:
            desc = center_descriptors(desc)
        self.cliper.descriptors.copy_(desc.to(self.cliper.descriptors))

    def to(self, device: torch.device | str) -> "TrainingModel":
        self.cliper.to(device)
        self.prompts.to(device)
        return self


class PromptStage(nn.Module):
    """Stage 1 forward: frozen image tower (no graph), learnable prompts -> descriptor logits ``[B, C, K]``."""

    def __init__(self, cliper: CLIPER, prompts: PromptLearner) -> None:
        super().__init__()
        self.cliper = cliper
        self.prompts = prompts

    def forward(self, clips: Tensor) -> Tensor:
        if clips.ndim != 5:
            raise ValueError(f"clips must be [B, T, 3, S, S], got {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        with torch.no_grad():
            feats = self.cliper.encode_frames(clips.reshape(b * t, *clips.shape[2:])).view(b, t, -1)
            pooled = self.cliper.pool_frames(feats)
        desc = self.prompts().view(len(self.cliper.classes), self.cliper.descriptors_per_class, -1)
        # fp32 even under autocast: dividing by the 0.01 temperature amplifies low-precision rounding 100x
        with torch.autocast(device_type=clips.device.type, enabled=False):
            return torch.einsum("bd,ckd->bck", pooled.float(), desc.float()) / self.cliper.temperature


def text_fingerprint(prompts: PromptLearner) -> str:
    """SHA-256 (16 hex digits) over the frozen text tower's tensors: resuming needs the same text tower."""
    h = hashlib.sha256()
    for name, t in sorted(prompts.text.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(str(tuple(t.shape)).encode("utf-8"))
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _parse(spec: str) -> tuple[str, str | None]:
    from cliper_batch.model.spec import ModelSpecError, parse_spec

    try:
        parsed = parse_spec(spec)
    except ModelSpecError as exc:
        raise ModelBuildError(str(exc)) from exc
    if parsed.kind != "openclip":
        raise ModelBuildError(
            f"model spec {spec!r}: training starts from an open_clip model, 'openclip:<ARCH>[@<PRETRAINED>]' "
            "(e.g. openclip:ViT-B-16@openai); the class list comes from the dataset"
        )
    if parsed.classes is not None or parsed.descriptors_per_class is not None:
        raise ModelBuildError(f"model spec {spec!r}: set classes / descriptors per class with the training options")
    return parsed.arch, parsed.pretrained  # type: ignore[return-value]


def build_training_model(
    spec: str,
    classes: Sequence[str],
    descriptors_per_class: int = 5,
    *,
    template: str = CLIPER_TEMPLATE,
    placeholder: str = DEFAULT_PLACEHOLDER,
    temperature: float = 0.01,
    seed: int = 0,
    cache_dir: str | None = None,
    ctx_init: str = "random",
) -> TrainingModel:
    """Create the open_clip model ``spec`` names and split it into the exported CLIPER and the prompt learner.

    The prompt vectors are initialised from ``seed``; a random-init open_clip
    model (no ``@PRETRAINED``) uses a fixed seed so every worker and every
    resumed run builds the same frozen text tower.
    """
    import open_clip

    from cliper_batch.model.builder import create_open_clip
    from cliper_batch.model.pretrained import PretrainedError

    classes = validate_classes(classes)
    if descriptors_per_class < 1:
        raise ModelBuildError(f"descriptors_per_class must be >= 1, got {descriptors_per_class}")
    arch, pretrained = _parse(spec)
    try:
        oc = create_open_clip(arch, pretrained, cache_dir=cache_dir)
    except PretrainedError as exc:
        raise ModelBuildError(f"model spec {spec!r}: {exc}") from exc
    if oc.random_init:
        log.warning("training from a RANDOM-INIT %s (no pretrained weights): for tests and benchmarks only", arch)
    clip_model = oc.model.float()

    tokenizer = open_clip.get_tokenizer(arch)
    generator = torch.Generator().manual_seed(int(seed))
    prompts = PromptLearner(
        clip_model, tokenizer, len(classes) * descriptors_per_class, template, placeholder, generator=generator,
        init=ctx_init, prompts_per_group=descriptors_per_class,
    )
    with torch.no_grad():
        initial = prompts().view(len(classes), descriptors_per_class, -1)
    cliper = build_cliper(
        oc.tower,
        initial,
        classes,
        temperature=temperature,
        provenance={
            "source": "cliper_batch.training",
            "arch": arch,
            "pretrained": pretrained,
            "weights": oc.weights,
            "template": template,
        },
    )
    return TrainingModel(
        cliper=cliper,
        prompts=prompts,
        tokenizer=tokenizer,
        spec=spec,
        arch=arch,
        pretrained=pretrained,
        text_fingerprint=text_fingerprint(prompts),
    )
