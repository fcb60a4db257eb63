"""Torch dataset over :class:`~.data.Sample` lists: load images / clip frames, sample T frames, augment.

Every item is ``(clip [T, 3, S, S] float32 normalised, label index, target distribution [C])``.
Images give one frame (repeated to T when the set mixes images and clips, so
batches stack; the model averages frame features, so a repeated image scores
like the image itself). Clips (frame folders, video files) use **segment-based
sampling**: the clip (or its ``[start_s, end_s)`` range) is cut into T equal
segments and one frame is taken per segment - at a random offset inside the
segment for training, at the segment centre for evaluation.

Transforms (applied with the same random parameters to all T frames of a clip):

* train, ``augment="cliper"`` (default, CLIPER's RAF-DB recipe): bicubic resize
  (short side S) -> centre crop S -> ColorJitter (brightness 0.4, hue 0.3) ->
  horizontal flip (p 0.5) -> RandomResizedCrop(S, scale 0.15-1, ratio 0.3-3.3)
  -> normalise (mean/std of the visual tower). CLIPER normalises before
  flip/crop; flip and bilinear crop commute with the per-channel affine
  normalisation, so the result is the same.
* train, ``augment="mild"``: the same chain with ColorJitter(brightness 0.3, no
  hue) and RandomResizedCrop(scale 0.7-1, ratio 0.85-1.18): keeps the face in
  view, for small models trained from random init on small crops (the demo).
* train, ``augment="face"`` (real face crops from random init, the shipped real-face
  model): ColorJitter(brightness 0.3, contrast 0.3), flip, RandomResizedCrop(scale 0.7-1,
  ratio 0.85-1.18), RandomRotation(10 deg), then RandomErasing(p 0.25) after normalising.
* train, ``augment="none"`` and eval: bicubic resize -> centre crop -> normalise.
"""
from __future__ import annotations

import io
import math
import os
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from cliper_batch.uris import is_local

from .datasets import DatasetError, LabeledSet, Sample, is_frame_file

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class AugmentRecipe:
    """One train-time augmentation recipe (:func:`build_transform` applies its steps in this order)."""

    jitter: dict[str, float]  # ColorJitter kwargs
    scale: tuple[float, float]  # RandomResizedCrop area range
    ratio: tuple[float, float]  # RandomResizedCrop aspect range
    rotate_deg: float = 0.0  # RandomRotation(+-deg), 0 = none
    erase_p: float = 0.0  # RandomErasing probability (after normalisation), 0 = none


# Train-time augmentation recipes; "none" adds nothing.
_AUGMENT_RECIPES: dict[str, AugmentRecipe | None] = {
    "cliper": AugmentRecipe({"brightness": 0.4, "hue": 0.3}, (0.15, 1.0), (0.3, 3.3)),
    "mild": AugmentRecipe({"brightness": 0.3}, (0.7, 1.0), (0.85, 1.18)),
    # real face crops trained from random init (FER2013, docs/models.md): the face stays in view; pose, framing
    # tightness, lighting and occlusion vary as between a dataset's crops and the engine's detector crops
    "face": AugmentRecipe({"brightness": 0.3, "contrast": 0.3}, (0.7, 1.0), (0.85, 1.18), rotate_deg=10.0,
                          erase_p=0.25),
    "none": None,
}
AUGMENTATIONS: tuple[str, ...] = tuple(_AUGMENT_RECIPES)


def check_augment(augment: str) -> str:
    """``augment`` if it names a known recipe (:data:`AUGMENTATIONS`), else ``ValueError`` naming the choices."""
    if augment not in _AUGMENT_RECIPES:
        raise ValueError(f"augment must be one of {list(AUGMENTATIONS)}, got {augment!r}")
    return augment


def build_transform(
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    augment: str = "cliper",
    grey: bool = False,
) -> v2.Compose:
    """The train (``augment`` recipe) or eval transform for uint8 ``[T, 3, H, W]`` tensors.

    One call draws one set of random parameters for all T frames. ``augment`` is
    checked even for eval transforms so a bad value fails early. ``grey``: the
    model sees luma only (ITU-R 601 weights, as the engine's crop path), repeated on
    the 3 input channels.
    """
    mode = _INTERPOLATION.get(interpolation)
    if mode is None:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    recipe = _AUGMENT_RECIPES[check_augment(augment)]
    steps: list = [
        v2.Resize(image_size, interpolation=mode, antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if grey:
        steps.append(v2.Grayscale(num_output_channels=3))
    after_norm: list = []
    if train and recipe is not None:
        steps += [
            v2.ColorJitter(**recipe.jitter),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomResizedCrop(image_size, scale=recipe.scale, ratio=recipe.ratio, antialias=True),
        ]
        if recipe.rotate_deg > 0:
            steps.append(v2.RandomRotation(recipe.rotate_deg, interpolation=InterpolationMode.BILINEAR))
        if recipe.erase_p > 0:
            after_norm.append(v2.RandomErasing(p=recipe.erase_p, scale=(0.02, 0.15), value=0))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps + after_norm)


def segment_fractions(t: int, train: bool, rng: random.Random | None = None) -> list[float]:
    """T positions in ``[0, 1)``, one per equal segment: random inside it (train) or its centre (eval)."""
    if t <= 0:
        raise ValueError(f"need t > 0, got {t}")
    rng = rng or random
    return [(i + (rng.random() if train else 0.5)) / t for i in range(t)]


def segment_frame_indices(n_frames: int, t: int, train: bool, rng: random.Random | None = None) -> list[int]:
    """T frame indices into ``n_frames`` frames (segment-based; repeats frames when ``n_frames < t``)."""
    if n_frames <= 0:
        raise ValueError(f"need n_frames > 0, got {n_frames}")
    return [min(n_frames - 1, int(math.floor(f * n_frames))) for f in segment_fractions(t, train, rng)]


def segment_times(start_s: float, end_s: float, t: int, train: bool, rng: random.Random | None = None) -> list[float]:
    """T timestamps in ``[start_s, end_s)`` (segment-based)."""
    if not end_s > start_s:
        raise ValueError(f"empty time range [{start_s}, {end_s})")
    return [start_s + f * (end_s - start_s) for f in segment_fractions(t, train, rng)]


def _open_bytes(path: str) -> bytes:
    if is_local(path):
        with open(path, "rb") as fh:
            return fh.read()
    from cliper_batch.uris import filesystem_for

    fs, inner = filesystem_for(path)
    return fs.cat_file(inner)


def load_image(path: str, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """An image file (local or fsspec URL) as ``[H, W, 3]`` uint8 RGB, optionally cropped to ``box`` (x, y, w, h)."""
    try:
        with Image.open(io.BytesIO(_open_bytes(path))) as im:
            im = im.convert("RGB")
            if box is not None:
                x, y, w, h = box
                left, top = max(0, int(round(x))), max(0, int(round(y)))
                right, bottom = min(im.width, int(round(x + w))), min(im.height, int(round(y + h)))
                if right - left < 2 or bottom - top < 2:
                    raise DatasetError(f"{path}: face box {box} lies outside the {im.width}x{im.height} image")
                im = im.crop((left, top, right, bottom))
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def list_frames(folder: str) -> list[str]:
    """The frame images of a clip folder, in natural order (numeric file names sort as numbers)."""
    try:
        names = [n for n in os.listdir(folder) if is_frame_file(n)]
    except FileNotFoundError:
        raise DatasetError(f"clip folder not found: {folder}") from None
    if not names:
        raise DatasetError(f"clip folder has no frame images: {folder}")

    def key(name: str) -> tuple:
        stem = os.path.splitext(name)[0]
        digits = "".join(ch for ch in stem if ch.isdigit())
        return (int(digits) if digits else -1, name)

    return [os.path.join(folder, n) for n in sorted(names, key=key)]


class ClipDataset(Dataset):
    """Samples of a :class:`LabeledSet` as ``(clip [T,3,S,S], label, target [C])`` for training or evaluation.

    ``classes`` fixes the label indices (by name; default: the set's own).
    ``num_frames`` is T for clips; when every sample is an image, T is 1.
    ``augment`` picks the train-time recipe (:func:`build_transform`; unused when ``train`` is false).
    """

    def __init__(
        self,
        labeled: LabeledSet,
        *,
        train: bool,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_frames: int = 16,
        classes: Sequence[str] | None = None,
        interpolation: str = "bicubic",
        augment: str = "cliper",
        grey: bool = False,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.samples: list[Sample] = list(labeled.samples)
        self.classes = tuple(classes or labeled.classes)
        self.labels = labeled.label_indices(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        self.targets: list[Tensor] = []
        for s, y in zip(self.samples, self.labels):
            t = torch.zeros(len(self.classes))
            if s.soft is None:
                t[y] = 1.0
            else:
                for name, v in zip(labeled.classes, s.soft):
                    if v > 0:
                        if name not in index:
                            raise DatasetError(f"{s.path}: soft label has mass on {name!r}, not in {self.classes}")
                        t[index[name]] = float(v)
                t /= t.sum()
            self.targets.append(t)
        self.train = train
        self.num_frames = 1 if labeled.kinds <= {"image"} else int(num_frames)
        self.transform = build_transform(train, image_size, mean, std, interpolation, augment, grey)
        self._frames_cache: dict[str, list[str]] = {}
        self._info_cache: dict[str, object] = {}
        self._decoder = None

    def __len__(self) -> int:
        return len(self.samples)

    # ------------------------------------------------------------------ loading
    def _frames_of_folder(self, s: Sample) -> np.ndarray:
        frames = self._frames_cache.get(s.path)
        if frames is None:
            frames = self._frames_cache[s.path] = list_frames(s.path)
        idx = segment_frame_indices(len(frames), self.num_frames, self.train)
        loaded: dict[int, np.ndarray] = {}
        out = []
        for i in idx:
            if i not in loaded:
                loaded[i] = load_image(frames[i])
            out.append(loaded[i])
        shapes = {a.shape for a in out}
        if len(shapes) != 1:
            raise DatasetError(f"{s.path}: frames of one clip differ in size ({sorted(shapes)})")
        return np.stack(out)

    def _frames_of_video(self, s: Sample) -> np.ndarray:
        from cliper_batch.decode.base import DecodeError
        from cliper_batch.decode.pyav_backend import PyAVDecoder
        from cliper_batch.decode.probe import ProbeError, probe

        info = self._info_cache.get(s.path)
        if info is None:
            try:
                info = self._info_cache[s.path] = probe(s.path)
            except ProbeError as exc:
                raise DatasetError(str(exc)) from exc
        duration = float(info.duration_s)  # type: ignore[attr-defined]
        start = s.start_s or 0.0
        end = min(s.end_s, duration) if s.end_s is not None else duration
        if not end > start:
            raise DatasetError(f"{s.path}: time range [{start}, {s.end_s}) is empty for a {duration:.3f}s video")
        times = segment_times(start, end, self.num_frames, self.train)
        if self._decoder is None:
            self._decoder = PyAVDecoder(threads=1)
        try:
            frames = list(self._decoder.iter_frames(s.path, info, times))  # type: ignore[arg-type]
        except DecodeError as exc:
            raise DatasetError(str(exc)) from exc
        return np.stack(frames)

    def load_frames(self, i: int) -> np.ndarray:
        """Raw uint8 frames ``[T, H, W, 3]`` of sample ``i`` (before transforms)."""
        s = self.samples[i]
        if s.kind == "image":
            img = load_image(s.path, s.box)[None]
            return np.repeat(img, self.num_frames, axis=0) if self.num_frames > 1 else img
        if s.kind == "frames":
            return self._frames_of_folder(s)
        return self._frames_of_video(s)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        frames = torch.from_numpy(self.load_frames(i)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W] uint8
        clip = self.transform(frames)
        return clip, self.labels[i], self.targets[i]
