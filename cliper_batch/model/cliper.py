"""The CLIPER scoring model: an open_clip image tower plus fixed descriptor embeddings.

CLIPER (Li et al., ICME 2024) scores an image against K text-descriptor
embeddings per class: ``s[c, k] = cos(image, descriptor[c, k]) / temperature``
(temperature 0.01) and a class score is the **mean** over its K descriptor
logits.  After training the text side is constant, so this module keeps only
the L2-normalised descriptor matrix (a buffer, C x K x D) next to the visual
tower; the text tower is never loaded at inference time.

Video clips are scored by encoding each frame, pooling the per-frame features
over time (``temporal``; ``'mean'`` = average then re-normalise, the variant the
CLIPER video results use) and scoring the pooled feature.  Other temporal
modules (e.g. a small transformer, as in DFER-CLIP) plug in through
:func:`register_temporal`; their parameters live under ``temporal_pool.`` in
the state dict and their settings in ``temporal_cfg``, so checkpoints carry them.

This module imports torch only (no open_clip, Ray, DALI or polars), so the
scoring code runs anywhere torch does.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..labels import validate_classes

DEFAULT_TEMPERATURE = 0.01

# A temporal builder gets (feature_dim, temporal_cfg) and returns a module that
# maps per-frame features [B, T, D] (L2-normalised) and an optional validity
# mask [B, T] (bool) to one clip feature [B, D].  CLIPER re-normalises the result.
TemporalBuilder = Callable[[int, Mapping[str, Any]], nn.Module]


class MeanTemporalPool(nn.Module):
    """Average of the (valid) per-frame features; CLIPER's video rule. No parameters."""

    def forward(self, feats: Tensor, valid: Tensor | None = None) -> Tensor:
        if valid is None:
            return feats.mean(dim=1)
        weights = valid.to(feats.dtype).unsqueeze(-1)  # [B, T, 1]
        counts = weights.sum(dim=1)  # [B, 1]
        return (feats * weights).sum(dim=1) / counts.clamp_min(1.0)


_TEMPORAL_BUILDERS: dict[str, TemporalBuilder] = {"mean": lambda dim, cfg: MeanTemporalPool()}


def register_temporal(name: str, builder: TemporalBuilder) -> None:
    """Make a temporal pooling module available to :class:`CLIPER` and checkpoints by name.

    ``builder(feature_dim, temporal_cfg)`` must return an ``nn.Module`` whose
    ``forward(feats[B,T,D], valid[B,T] | None) -> [B,D]``.  Re-registering a
    name replaces it (so training code can reload its module definition).
    """
    if not name or not isinstance(name, str):
        raise ValueError("temporal module name must be a non-empty string")
    _TEMPORAL_BUILDERS[name] = builder


def temporal_names() -> tuple[str, ...]:
    return tuple(sorted(_TEMPORAL_BUILDERS))


def build_temporal(name: str, dim: int, cfg: Mapping[str, Any] | None = None) -> nn.Module:
    try:
        builder = _TEMPORAL_BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown temporal module {name!r}; registered: {', '.join(temporal_names())} "
            "(register others with cliper_batch.model.cliper.register_temporal)"
        ) from None
    return builder(dim, dict(cfg or {}))


def _as_triplet(values: Sequence[float], what: str) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) != 3:
        raise ValueError(f"{what} must have 3 values (RGB), got {vals}")
    return vals  # type: ignore[return-value]


LUMA_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R BT.601 as torchvision's rgb_to_grayscale rounds them (the training transform)


class LumaInput(nn.Module):
    """Normalised RGB images -> the normalised images of their luma (grey repeated on 3 channels).

    For models trained on grey faces (FER2013): every crop backend (torch, Triton, DALI) hands the
    encoder normalised RGB, and this one step, the first of the image encoder, makes it grey. Works
    on normalised values: ``x = (v - mean) / std`` per channel, so ``v = x * std + mean``, luma
    ``y = w . v`` and the result ``(y - mean) / std``. No parameters.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        sd = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
        # y = sum_c w_c (x_c sd_c + m_c) = sum_c (w_c sd_c) x_c + sum_c w_c m_c
        self.register_buffer("_w", (w * sd), persistent=False)
        self.register_buffer("_b", (w * m).sum(), persistent=False)
        self.register_buffer("_mean", m, persistent=False)
        self.register_buffer("_std", sd, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        w = self._w.to(images.dtype)
        y = (images * w).sum(dim=1, keepdim=True) + self._b.to(images.dtype)
        return (y - self._mean.to(images.dtype)) / self._std.to(images.dtype)


def encode_images(visual: nn.Module, input_adapter: nn.Module, images: Tensor, flip: bool = False) -> Tensor:
    """The image encoder's steps, one place for eager and compiled encoders: adapter, tower, optional mirror average.

    Returns the per-image features ``[N, D]``, L2-normalised (float32 under autocast too). ``flip``:
    the feature of each image and of its horizontal mirror, each normalised, averaged (test-time
    flip; faces are roughly symmetric, and a model trained with flipped faces scores both alike).
    """
    x = input_adapter(images)
    if not flip:
        return F.normalize(visual(x).float(), dim=-1)
    n = x.shape[0]
    both = F.normalize(visual(torch.cat([x, x.flip(-1)])).float(), dim=-1)
    return F.normalize(both[:n] + both[n:], dim=-1)


class CLIPER(nn.Module):
    """open_clip visual tower + fixed METD descriptor embeddings (C classes x K descriptors).

    Parameters
    ----------
    visual:
        The open_clip image tower (``clip_model.visual``): images ``[N,3,S,S]`` -> ``[N,D]``.
    descriptors:
        ``[C, K, D]`` descriptor (text) embeddings; stored L2-normalised as a buffer.
    classes:
        The C class names, in the order of ``descriptors``' first axis.
    open_clip_cfg:
        The full open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...)
        that built ``visual``; checkpoints store it so loading needs no registry.
    image_size, mean, std:
        The visual tower's preprocessing: square input side and RGB normalisation.
    grey:
        The tower was trained on grey faces: the encoder sees the luma of every crop (:class:`LumaInput`).
    face_margin:
        How tightly the training faces were cropped, as the engine's margin around a detector box
        (fraction of the box's longer side added on each side); ``None`` = the engine's default.
    flip:
        Test-time flip: every crop is encoded with its mirror image and the two features averaged
        (:func:`encode_images`); twice the encoder work.
    calibration:
        Softmax temperature of the class probabilities (fitted on validation data after training, so
        ``p_<class>`` and ``confidence`` are calibrated); 1.0 = none. The argmax does not depend on it.
    """

    descriptors: Tensor

    def __init__(
        self,
        visual: nn.Module,
        descriptors: Tensor,
        classes: Sequence[str],
        *,
        open_clip_cfg: Mapping[str, Any],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        temperature: float = DEFAULT_TEMPERATURE,
        temporal: str = "mean",
        temporal_cfg: Mapping[str, Any] | None = None,
        interpolation: str = "bicubic",
        arch: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        grey: bool = False,
        face_margin: float | None = None,
        calibration: float = 1.0,
        flip: bool = False,
    ) -> None:
        super().__init__()
        self.classes: tuple[str, ...] = validate_classes(classes)
        if descriptors.ndim != 3:
            raise ValueError(f"descriptors must be [C, K, D], got shape {tuple(descriptors.shape)}")
        n_classes, k, dim = descriptors.shape
        if n_classes != len(self.classes):
            raise ValueError(f"descriptors has {n_classes} classes but {len(self.classes)} class names were given")
        if k < 1 or dim < 1:
            raise ValueError(f"descriptors must have K >= 1 and D >= 1, got shape {tuple(descriptors.shape)}")
        out_dim = getattr(visual, "output_dim", None)
        if isinstance(out_dim, int) and out_dim != dim:
            raise ValueError(f"visual tower outputs {out_dim}-d features but descriptors are {dim}-d")
        if not (float(temperature) > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if not (float(calibration) > 0):
            raise ValueError(f"calibration temperature must be > 0, got {calibration}")
        if face_margin is not None and not (-0.4 <= float(face_margin) <= 2.0):
            raise ValueError(f"face_margin must lie in [-0.4, 2.0], got {face_margin}")

        self.visual = visual
        self.descriptors_per_class: int = int(k)
        self.embed_dim: int = int(dim)
        self.temperature: float = float(temperature)
        self.image_size: int = int(image_size)
        self.mean: tuple[float, float, float] = _as_triplet(mean, "mean")
        self.std: tuple[float, float, float] = _as_triplet(std, "std")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        self.interpolation: str = str(interpolation)
        self.open_clip_cfg: dict[str, Any] = copy.deepcopy(dict(open_clip_cfg))
        self.arch: str | None = arch
        self.provenance: dict[str, Any] = copy.deepcopy(dict(provenance or {}))
        self.temporal: str = temporal
        self.temporal_cfg: dict[str, Any] = dict(temporal_cfg or {})
        self.temporal_pool: nn.Module = build_temporal(temporal, self.embed_dim, self.temporal_cfg)
        self.grey: bool = bool(grey)
        self.face_margin: float | None = None if face_margin is None else float(face_margin)
        self.calibration: float = float(calibration)
        self.flip: bool = bool(flip)
        # the first step of the image encoder (also inside compiled encoders, cliper_batch.model.backends)
        self.input_adapter: nn.Module = LumaInput(self.mean, self.std) if self.grey else nn.Identity()

        self.register_buffer("descriptors", F.normalize(descriptors.detach().float(), dim=-1).contiguous())
        # uint8 -> normalised float: x * scale - shift == (x / 255 - mean) / std
        std_t = torch.tensor(self.std, dtype=torch.float32)
        mean_t = torch.tensor(self.mean, dtype=torch.float32)
        self.register_buffer("_pre_scale", (1.0 / (255.0 * std_t)).view(3, 1, 1), persistent=False)
        self.register_buffer("_pre_shift", (mean_t / std_t).view(3, 1, 1), persistent=False)

    def set_preprocessing(self, *, grey: bool | None = None, face_margin: float | None = None) -> None:
        """Set what the engine does to a crop for this model (grey input, crop margin); None keeps a setting."""
        if grey is not None:
            self.grey = bool(grey)
            self.input_adapter = LumaInput(self.mean, self.std) if self.grey else nn.Identity()
            self.input_adapter.to(self.descriptors.device)
        if face_margin is not None:
            if not (-0.4 <= float(face_margin) <= 2.0):
                raise ValueError(f"face_margin must lie in [-0.4, 2.0], got {face_margin}")
            self.face_margin = float(face_margin)

    # ------------------------------------------------------------------ inputs
    def preprocess_uint8(self, crops: Tensor) -> Tensor:
        """``[..., S, S, 3]`` uint8 RGB -> ``[..., 3, S, S]`` float32 normalised, on ``crops``' device.

        Same arithmetic as open_clip's ``ToTensor`` + ``Normalize(mean, std)``.
        The crops must already be ``image_size`` square (resizing belongs to the crop stage).
        """
        if crops.dtype != torch.uint8:
            raise ValueError(f"preprocess_uint8 expects uint8 crops, got {crops.dtype}")
        s = self.image_size
        if crops.ndim < 3 or tuple(crops.shape[-3:]) != (s, s, 3):
            raise ValueError(f"crops must have shape [..., {s}, {s}, 3] (HWC RGB), got {tuple(crops.shape)}")
        scale = self._pre_scale.to(crops.device)
        shift = self._pre_shift.to(crops.device)
        x = crops.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format)
        return x.mul_(scale).sub_(shift)

    # ---------------------------------------------------------------- features
    def encode_frames(self, images: Tensor) -> Tensor:
        """Normalised images ``[N,3,S,S]`` -> L2-normalised float32 features ``[N,D]``."""
        s = self.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must have shape [N, 3, {s}, {s}], got {tuple(images.shape)}")
        return encode_images(self.visual, self.input_adapter, images, self.flip)

    def pool_frames(self, feats: Tensor, valid: Tensor | None = None) -> Tensor:
        """Per-frame features ``[B,T,D]`` -> L2-normalised clip features ``[B,D]`` via the temporal module.

        ``valid`` (``[B,T]`` bool) marks frames to use (e.g. frames where a face was found);
        every clip needs at least one valid frame.
        """
        if feats.ndim != 3:
            raise ValueError(f"frame features must be [B, T, D], got {tuple(feats.shape)}")
        if valid is not None:
            if tuple(valid.shape) != tuple(feats.shape[:2]):
                raise ValueError(f"valid mask shape {tuple(valid.shape)} != [B, T] = {tuple(feats.shape[:2])}")
            valid = valid.to(device=feats.device, dtype=torch.bool)
            if not bool(valid.any(dim=1).all()):
                raise ValueError("every clip needs at least one valid frame (valid.any(dim=1) is False for some rows)")
        pooled = self.temporal_pool(feats.float(), valid)
        return F.normalize(pooled.float(), dim=-1)

    def descriptor_logits(self, feats: Tensor) -> Tensor:
        """Clip/frame features ``[B,D]`` -> descriptor logits ``[B,C,K]`` = cos / temperature (float32)."""
        if feats.ndim != 2 or feats.shape[1] != self.embed_dim:
            raise ValueError(f"features must be [B, {self.embed_dim}], got {tuple(feats.shape)}")
        # fp32 even under autocast: /0.01 amplifies fp16 rounding of the cosines 100x.
        with _no_autocast(feats.device):
            f = F.normalize(feats.float(), dim=-1)
            return torch.einsum("bd,ckd->bck", f, self.descriptors.float()) / self.temperature

    def forward(self, clips: Tensor, valid: Tensor | None = None) -> Tensor:
        """Clips ``[B,T,3,S,S]`` (normalised) -> descriptor logits ``[B,C,K]`` of the time-pooled feature."""
        if clips.ndim != 5:
            raise ValueError(f"clips must be [B, T, 3, S, S], got {tuple(clips.shape)}")
        b, t = clips.shape[:2]
        feats = self.encode_frames(clips.reshape(b * t, *clips.shape[2:])).view(b, t, -1)
        return self.descriptor_logits(self.pool_frames(feats, valid))

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, classes={len(self.classes)}, K={self.descriptors_per_class}, "
            f"D={self.embed_dim}, image_size={self.image_size}, temperature={self.temperature}, "
            f"temporal={self.temporal!r}, grey={self.grey}, face_margin={self.face_margin}, "
            f"calibration={self.calibration}, flip={self.flip}"
        )


def class_logits_from_descriptors(descriptor_logits: Tensor) -> Tensor:
    """CLIPER's class rule: ``[B,C,K]`` descriptor logits -> ``[B,C]`` class logits (mean over K)."""
    return descriptor_logits.mean(dim=-1)


@contextlib.contextmanager
def _no_autocast(device: torch.device) -> Iterator[None]:
    if device.type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


@contextlib.contextmanager
def autocast_for(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` on ``device`` for a low-precision ``dtype``; a no-op for None/float32."""
    if dtype is None or dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@dataclass
class ClipScores:
    """Scores for B clips (one row per clip)."""

    probs: Tensor  # [B, C] softmax over classes of the class logits
    label_index: Tensor  # [B] argmax class
    confidence: Tensor  # [B] probability of the argmax class
    descriptor: Tensor  # [B] best descriptor index (0..K-1) within the winning class
    class_logits: Tensor | None = field(default=None, repr=False)  # [B, C] mean descriptor logit

    def cpu(self) -> "ClipScores":
        return ClipScores(
            probs=self.probs.cpu(),
            label_index=self.label_index.cpu(),
            confidence=self.confidence.cpu(),
            descriptor=self.descriptor.cpu(),
            class_logits=None if self.class_logits is None else self.class_logits.cpu(),
        )


def scores_from_descriptor_logits(descriptor_logits: Tensor, calibration: float = 1.0) -> ClipScores:
    """Turn ``[B,C,K]`` descriptor logits into :class:`ClipScores` (mean over K, softmax over C).

    ``calibration`` divides the class logits before the softmax (the model's fitted temperature,
    :attr:`CLIPER.calibration`); the label and descriptor do not depend on it.
    """
    class_logits = class_logits_from_descriptors(descriptor_logits.float())
    probs = (class_logits / float(calibration)).softmax(dim=-1)
    confidence, label_index = probs.max(dim=-1)
    rows = torch.arange(descriptor_logits.shape[0], device=descriptor_logits.device)
    descriptor = descriptor_logits[rows, label_index].argmax(dim=-1)
    return ClipScores(
        probs=probs, label_index=label_index, confidence=confidence, descriptor=descriptor, class_logits=class_logits
    )


FrameEncoder = Callable[[Tensor], Tensor]


def score_clips(
    model: CLIPER,
    crops_uint8: Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    encoder: FrameEncoder | None = None,
    valid: Tensor | None = None,
) -> ClipScores:
    """Score B clips of T uint8 RGB crops ``[B,T,S,S,3]`` with CLIPER's rule.

    Crops move to the model's device as uint8 (4x less traffic than float) and
    are normalised there.  ``encoder`` replaces ``model.encode_frames`` (e.g. a
    :class:`cliper_batch.model.backends.CompiledEncoder`); it gets normalised images
    ``[N,3,S,S]`` and returns ``[N,D]`` features.  ``autocast_dtype`` (e.g.
    ``torch.float16`` on CUDA) wraps the encoder call in ``torch.autocast``;
    pooling and descriptor logits always run in float32.  Runs under
    ``torch.inference_mode``.  Results stay on the model's device.
    """
    if crops_uint8.ndim != 5:
        raise ValueError(f"crops must be [B, T, S, S, 3] uint8, got shape {tuple(crops_uint8.shape)}")
    device = model.descriptors.device
    b, t = crops_uint8.shape[:2]
    if b == 0 or t == 0:
        raise ValueError(f"nothing to score: crops shape {tuple(crops_uint8.shape)} has B == 0 or T == 0")
    with torch.inference_mode():
        crops = crops_uint8.to(device, non_blocking=True)
        images = model.preprocess_uint8(crops).reshape(b, t, 3, model.image_size, model.image_size)
        return score_images(model, images, autocast_dtype=autocast_dtype, encoder=encoder, valid=valid)


def score_images(
    model: CLIPER,
    images: Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    encoder: FrameEncoder | None = None,
    valid: Tensor | None = None,
) -> ClipScores:
    """Score B clips of T already-normalised images ``[B,T,3,S,S]`` (on the model's device) with CLIPER's rule.

    The part of :func:`score_clips` after preprocessing, for callers whose crops
    are normalised float tensors already (the fused GPU worker's crop kernel).
    Same ``encoder`` / ``autocast_dtype`` / ``valid`` meaning; runs under
    ``torch.inference_mode``; results stay on the model's device.
    """
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"images must be [B, T, 3, S, S], got shape {tuple(images.shape)}")
    b, t = images.shape[:2]
    enc = encoder if encoder is not None else model.encode_frames
    with torch.inference_mode():
        with autocast_for(images.device, autocast_dtype):
            feats = enc(images.reshape(b * t, *images.shape[2:]))
        if feats.ndim != 2 or feats.shape[0] != b * t:
            raise ValueError(f"encoder returned shape {tuple(feats.shape)}, expected [{b * t}, D]")
        feats = F.normalize(feats.float(), dim=-1).view(b, t, -1)
        pooled = model.pool_frames(feats, valid)
        return scores_from_descriptor_logits(model.descriptor_logits(pooled), model.calibration)


class Scorer:
    """A CLIPER model plus the frame encoder and precision to score with; callable on uint8 crop batches."""

    def __init__(
        self, model: CLIPER, encoder: FrameEncoder | None = None, *, autocast_dtype: torch.dtype | None = None
    ) -> None:
        self.model = model.eval()
        self.encoder = encoder
        self.autocast_dtype = autocast_dtype

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def __call__(self, crops_uint8: Tensor, valid: Tensor | None = None) -> ClipScores:
        return score_clips(
            self.model, crops_uint8, autocast_dtype=self.autocast_dtype, encoder=self.encoder, valid=valid
        )
