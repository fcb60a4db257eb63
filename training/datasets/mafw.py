"""MAFW single-label clips (5-fold protocol), 11 classes or the 7 basic ones."""
from __future__ import annotations

import os

from cliper_batch.labels import CANONICAL_CLASSES

from .base import EXTRA_CLASSES, DatasetError, LabeledSet, Sample, _check_split, _require_file, canonical_name, classes_with

# Native label order (cliper-method.md, "Native label orders").
MAFW_ORDER: tuple[str, ...] = (
    "anger", "disgust", "fear", "happy", "neutral", "sad", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)


def load_mafw(
    root: str,
    split: str,
    *,
    fold: int = 1,
    n_classes: int = 11,
    frames_dir: str | None = None,
    clips_dir: str | None = None,
    split_dir: str | None = None,
) -> LabeledSet:
    """MAFW single-label clips (5-fold protocol), 11 classes (or the 7 basic ones).

    Layout (as distributed)::

        <root>/Train & Test Set/single/no_caption/set_<fold>/train.txt | test.txt
                                      lines "00025.mp4 anger"
        <root>/data/frames/00025/*.jpg       frame folder per clip (preferred), else
        <root>/data/clips/00025.mp4          the video file itself

    Labels are class names (anger, disgust, fear, happiness, neutral, sadness,
    surprise, contempt, anxiety, helplessness, disappointment) or their 1-based
    index in that order. With ``n_classes=7`` the samples of the four extra
    classes are dropped. The 11-class list is the canonical 7 followed by
    contempt, anxiety, helplessness, disappointment.
    """
    _check_split(split, ("train", "test"), "MAFW")
    if fold not in range(1, 6):
        raise DatasetError(f"MAFW: fold must be 1..5, got {fold}")
    if n_classes not in (7, 11):
        raise DatasetError(f"MAFW: n_classes must be 11 or 7, got {n_classes}")
    split_dir = split_dir or os.path.join(root, "Train & Test Set", "single", "no_caption")
    list_file = _require_file(os.path.join(split_dir, f"set_{fold}", f"{split}.txt"), "MAFW split file")
    frames_dir = frames_dir or os.path.join(root, "data", "frames")
    clips_dir = clips_dir or os.path.join(root, "data", "clips")
    samples: list[Sample] = []
    with open(list_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{list_file}:{lineno}"
            if len(parts) != 2:
                raise DatasetError(f"{where}: expected '<clip> <label>', got {line.strip()!r}")
            name, raw = parts
            if raw.isdigit():
                code = int(raw)
                if not 1 <= code <= len(MAFW_ORDER):
                    raise DatasetError(f"{where}: MAFW label {code} is outside 1..11")
                label = MAFW_ORDER[code - 1]
            else:
                label = canonical_name(raw, where)
            if n_classes == 7 and label not in CANONICAL_CLASSES:
                continue
            stem = os.path.splitext(name)[0]
            frames = os.path.join(frames_dir, stem)
            video = os.path.join(clips_dir, name)
            if os.path.isdir(frames):
                samples.append(Sample(path=frames, label=label, kind="frames"))
            elif os.path.isfile(video):
                samples.append(Sample(path=video, label=label, kind="video"))
            else:
                raise DatasetError(f"{where}: clip not found: neither {frames} nor {video} exists")
    classes = CANONICAL_CLASSES if n_classes == 7 else classes_with(EXTRA_CLASSES)
    return LabeledSet(f"mafw{n_classes}-fold{fold}", split, classes, samples)
