"""The internal form every dataset adapter produces: :class:`LabeledSet` of :class:`Sample`, and the shared helpers.

Adapters map a dataset's labels to class *names* - the project-wide names of
:data:`cliper_batch.labels.CANONICAL_CLASSES` (neutral, happy, sad, surprise,
fear, disgust, anger) plus, where a dataset has them, ``contempt``,
``anxiety``, ``helplessness``, ``disappointment`` - and never trust a
dataset's label *index* to mean the same class as another dataset's. A missing
file or an unknown label raises :class:`DatasetError` naming the file.

A sample is one of three kinds:

* ``image`` - one picture (optionally with a face box to crop: AffectNet);
* ``frames`` - a folder of frame images forming one clip (DFEW, FERV39k, MAFW);
* ``video`` - a video file, optionally with a ``[start_s, end_s)`` time range
  (generic manifests); frames are decoded with PyAV at load time.

The class list of a set is the canonical 7 followed by the extra classes the
dataset defines (in :data:`EXTRA_CLASSES` order), so two datasets with the same
classes always use the same indices.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.uris import VIDEO_EXTENSIONS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EXTRA_CLASSES: tuple[str, ...] = ("contempt", "anxiety", "helplessness", "disappointment")
KNOWN_CLASSES: tuple[str, ...] = CANONICAL_CLASSES + EXTRA_CLASSES

# Spellings used by the datasets (lower-cased) -> project class names.
CLASS_ALIASES: dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy", "happiness": "happy", "hap": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "fear": "fear", "fearful": "fear", "fea": "fear",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "anger": "anger", "angry": "anger", "ang": "anger",
    "neu": "neutral",
    "contempt": "contempt",
    "anxiety": "anxiety",
    "helplessness": "helplessness",
    "disappointment": "disappointment",
}

SAMPLE_KINDS = ("image", "frames", "video")


class DatasetError(ValueError):
    """A dataset that cannot be read: missing file, bad layout, unknown label (the message names the file)."""


@dataclass(frozen=True)
class Sample:
    """One labelled training/test item.

    ``path`` is an image file, a clip folder of frame images, or a video file
    (``kind``). ``start_s``/``end_s`` restrict a video to a time range; ``box``
    (x, y, w, h in pixels) crops a face out of an image; ``soft`` is a label
    distribution over the set's classes (FERPlus votes) whose argmax is ``label``.
    """

    path: str
    label: str
    kind: str = "image"
    start_s: float | None = None
    end_s: float | None = None
    box: tuple[float, float, float, float] | None = None
    soft: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAMPLE_KINDS:
            raise DatasetError(f"{self.path}: sample kind must be one of {SAMPLE_KINDS}, got {self.kind!r}")


@dataclass
class LabeledSet:
    """A dataset split in the internal form: its class list and its samples."""

    name: str
    split: str
    classes: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        index = {c: i for i, c in enumerate(self.classes)}
        for s in self.samples:
            if s.label not in index:
                raise DatasetError(f"{self.name} ({self.split}): label {s.label!r} of {s.path} is not in {self.classes}")
            if s.soft is not None and len(s.soft) != len(self.classes):
                raise DatasetError(f"{s.path}: soft label has {len(s.soft)} values for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.samples)

    def label_indices(self, classes: Sequence[str] | None = None) -> list[int]:
        """Class index of every sample in ``classes`` (default: this set's own class list), matched by name."""
        order = {c: i for i, c in enumerate(classes or self.classes)}
        missing = sorted({s.label for s in self.samples} - set(order))
        if missing:
            raise DatasetError(f"{self.name} ({self.split}) has labels {missing} that are not in the classes {list(order)}")
        return [order[s.label] for s in self.samples]

    def counts(self) -> dict[str, int]:
        c = Counter(s.label for s in self.samples)
        return {name: c.get(name, 0) for name in self.classes}

    @property
    def kinds(self) -> set[str]:
        return {s.kind for s in self.samples}

    @property
    def has_soft_labels(self) -> bool:
        return any(s.soft is not None for s in self.samples)


# ---------------------------------------------------------------------------- helpers


def canonical_name(name: str, where: str) -> str:
    """Map a dataset's class spelling to the project class name; :class:`DatasetError` if unknown."""
    key = str(name).strip().lower()
    if key not in CLASS_ALIASES:
        raise DatasetError(f"{where}: unknown expression label {name!r} (known: {', '.join(sorted(set(CLASS_ALIASES)))})")
    return CLASS_ALIASES[key]


def classes_with(extra: Iterable[str]) -> tuple[str, ...]:
    """The canonical 7 followed by the given extra classes, in :data:`EXTRA_CLASSES` order."""
    wanted = set(extra)
    unknown = wanted - set(EXTRA_CLASSES) - set(CANONICAL_CLASSES)
    if unknown:
        raise DatasetError(f"unknown extra classes {sorted(unknown)}")
    return CANONICAL_CLASSES + tuple(c for c in EXTRA_CLASSES if c in wanted)


def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path}")
    return path


def _require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found (expected a folder): {path}")
    return path


def _first_existing(candidates: Sequence[str], what: str, root: str) -> str:
    for c in candidates:
        if os.path.exists(c):
            return c
    raise DatasetError(f"{what} not found under {root}; looked for: {', '.join(candidates)}")


def _int_label(value: str, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DatasetError(f"{where}: label {value!r} is not an integer") from None


def _check_split(split: str, allowed: Sequence[str], name: str) -> str:
    if split not in allowed:
        raise DatasetError(f"{name}: unknown split {split!r}; choose one of {', '.join(allowed)}")
    return split


def is_frame_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _clip_kind(path: str) -> str:
    if os.path.isdir(path):
        return "frames"
    lower = path.lower()
    if lower.endswith(VIDEO_EXTENSIONS):
        return "video"
    if lower.endswith(IMAGE_EXTENSIONS):
        return "image"
    raise DatasetError(f"{path}: not an image, a video file or a folder of frames")


def remap_to(labeled: LabeledSet, classes: Sequence[str]) -> LabeledSet:
    """The same samples under another class list (soft labels re-indexed by name); labels must all exist there."""
    classes = tuple(classes)
    labeled.label_indices(classes)  # raises on labels outside ``classes``
    src = labeled.classes
    out = []
    for s in labeled.samples:
        soft = None
        if s.soft is not None:
            by_name = dict(zip(src, s.soft))
            extra = {c: v for c, v in by_name.items() if c not in classes and v > 0}
            if extra:
                raise DatasetError(f"{s.path}: soft label has mass on classes {sorted(extra)} missing from {classes}")
            soft = tuple(by_name.get(c, 0.0) for c in classes)
        out.append(replace(s, soft=soft))
    return LabeledSet(labeled.name, labeled.split, classes, out)
