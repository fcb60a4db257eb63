"""The one place a :class:`~cliper_batch.model.cliper.CLIPER` is assembled from an open_clip image tower.

Three callers, one builder (:func:`build_cliper`):

* the zero-shot spec (:func:`cliper_batch.model.zeroshot.build_zero_shot`) and
  training (:func:`cliper_batch.training.model.build_training_model`) create an
  open_clip model with :func:`create_open_clip` (pretrained tag, weights file,
  or a seeded random init) and keep its image tower;
* the checkpoint loader (:func:`cliper_batch.model.checkpoint.model_from_config`)
  rebuilds the stored tower architecture (random init, weights loaded next).

:class:`ImageTower` is what they hand over: the tower module plus its open_clip
config and preprocessing (input size, mean/std, interpolation).
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .cliper import DEFAULT_TEMPERATURE, CLIPER

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0  # a random-init open_clip model is always this one (every worker, every resumed run)


@dataclass
class ImageTower:
    """An open_clip image tower and what CLIPER must know about it."""

    visual: nn.Module
    open_clip_cfg: dict[str, Any]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    arch: str | None = None


@dataclass
class OpenClipModel:
    """A whole open_clip model (image and text towers), its image tower's description, and where its weights came from."""

    model: nn.Module
    tower: ImageTower
    weights: str  # a human description of the weights (tag, file, or random init)
    random_init: bool


def create_open_clip(arch: str, pretrained: str | None, *, cache_dir: str | None = None, **storage_options: Any) -> OpenClipModel:
    """Create ``arch`` with open_clip, weights per :func:`~cliper_batch.model.pretrained.resolve_pretrained`.

    The random init is seeded (:data:`RANDOM_INIT_SEED`), so it is the same
    model everywhere. Raises :class:`~cliper_batch.model.pretrained.PretrainedError`
    with the reason (unknown architecture, weights not found, open_clip failed,
    non-square input).
    """
    from .archs import open_clip_registered
    from .pretrained import PretrainedError, resolve_pretrained
    from .towers import register_towers

    open_clip = open_clip_registered()
    register_towers()

    oc_cfg = open_clip.get_model_config(arch)
    if oc_cfg is None:
        raise PretrainedError(f"unknown open_clip architecture {arch!r}")
    resolved = resolve_pretrained(arch, pretrained, cache_dir=cache_dir, **storage_options)
    kwargs = dict(resolved.create_kwargs)
    if kwargs.get("force_quick_gelu"):
        oc_cfg["quick_gelu"] = True
    else:
        kwargs.pop("force_quick_gelu", None)
    random_init = resolved.kind == "none"
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, _ = open_clip.create_model_and_transforms(
                arch, pretrained=None if random_init else resolved.pretrained, **kwargs
            )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise PretrainedError(f"open_clip could not create {arch} with {resolved.description}: {exc}") from exc
    pp = model.visual.preprocess_cfg
    size = pp["size"]
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise PretrainedError(f"{arch}: non-square input size {tuple(size)} is not supported")
        size = size[0]
    tower = ImageTower(
        model.visual, oc_cfg, int(size), tuple(pp["mean"]), tuple(pp["std"]), str(pp.get("interpolation", "bicubic")), arch
    )
    return OpenClipModel(model, tower, resolved.description, random_init)


def tower_from_config(
    open_clip_cfg: Mapping[str, Any],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    arch: str | None = None,
) -> ImageTower:
    """The (random-init) image tower a stored open_clip model config describes (a checkpoint's weights go in next)."""
    from open_clip import model as oc_model  # heavy import, only when a model is built

    from .towers import register_towers

    register_towers()
    cfg = copy.deepcopy(dict(open_clip_cfg))
    vision_cfg = dict(cfg["vision_cfg"])
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False  # weights come from the checkpoint
    builder = getattr(oc_model, "_build_vision_tower", None)
    if builder is not None:
        visual = builder(cfg["embed_dim"], vision_cfg, bool(cfg.get("quick_gelu", False)), None)
    else:  # open_clip versions without the (private) tower builder: build the full model, keep .visual
        cfg["vision_cfg"] = vision_cfg
        text_cfg = dict(cfg.get("text_cfg", {}))
        if "hf_model_name" in text_cfg:
            text_cfg["hf_model_pretrained"] = False
        cfg["text_cfg"] = text_cfg
        custom = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
        cls = oc_model.CustomTextCLIP if custom else oc_model.CLIP
        visual = cls(**cfg).visual
    return ImageTower(visual, dict(open_clip_cfg), int(image_size), tuple(mean), tuple(std), interpolation, arch)


def build_cliper(
    tower: ImageTower,
    descriptors: Tensor,
    classes: Sequence[str],
    *,
    provenance: Mapping[str, Any] | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    temporal: str = "mean",
    temporal_cfg: Mapping[str, Any] | None = None,
    grey: bool = False,
    face_margin: float | None = None,
    calibration: float = 1.0,
    flip: bool = False,
) -> CLIPER:
    """A CLIPER over ``tower`` with the ``[C, K, D]`` descriptor anchors of ``classes``."""
    return CLIPER(
        tower.visual,
        descriptors,
        classes,
        open_clip_cfg=tower.open_clip_cfg,
        image_size=tower.image_size,
        mean=tower.mean,
        std=tower.std,
        temperature=temperature,
        temporal=temporal,
        temporal_cfg=temporal_cfg or {},
        interpolation=tower.interpolation,
        arch=tower.arch,
        provenance=provenance or {},
        grey=grey,
        face_margin=face_margin,
        calibration=calibration,
        flip=flip,
    )
