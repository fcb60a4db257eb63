"""FERPlus (FER2013 images relabelled by 10 annotators): majority or soft labels from the votes."""
from __future__ import annotations

import csv
import os
from typing import Sequence

from .base import CLASS_ALIASES, DatasetError, LabeledSet, Sample, _check_split, _require_dir, _require_file, classes_with

FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)


def ferplus_label(votes: Sequence[float], include_contempt: bool, mode: str) -> tuple[str, tuple[float, ...] | None] | None:
    """FERPlus votes (the 10 columns of :data:`FERPLUS_VOTE_COLUMNS`) -> (label, soft or None), or None to drop.

    Our rule, in the spirit of the FERPlus paper: single votes are treated as
    annotator noise and removed; ``majority`` keeps an image when one emotion
    has more than half of the remaining votes; ``soft`` keeps it when the
    emotion votes are more than half of the remaining votes (the rest being
    'unknown'/'not a face') and returns their distribution. Contempt votes are
    dropped (and the image dropped if contempt wins) when ``include_contempt``
    is false.
    """
    kept = [v if v > 1 else 0.0 for v in votes]
    total = sum(kept)
    if total <= 0:
        return None
    names = [CLASS_ALIASES[c.lower()] if c.lower() in CLASS_ALIASES else c for c in FERPLUS_VOTE_COLUMNS]
    emotion = {n: v for n, v in zip(names[:8], kept[:8]) if include_contempt or n != "contempt"}
    classes = classes_with(["contempt"] if include_contempt else [])
    if mode == "majority":
        best = max(range(len(kept)), key=lambda i: kept[i])
        name = names[best]
        if kept[best] * 2 <= total or name not in emotion:
            return None
        return name, None
    if mode == "soft":
        e_total = sum(emotion.values())
        if e_total * 2 <= total:
            return None
        soft = tuple(emotion.get(c, 0.0) / e_total for c in classes)
        label = classes[max(range(len(classes)), key=lambda i: soft[i])]
        return label, soft
    raise DatasetError(f"FERPlus: mode must be 'majority' or 'soft', got {mode!r}")


FERPLUS_SPLITS = {"train": ("Training", "FER2013Train"), "val": ("PublicTest", "FER2013Valid"), "test": ("PrivateTest", "FER2013Test")}


def load_ferplus(
    root: str, split: str, *, mode: str = "majority", include_contempt: bool = True, label_file: str | None = None
) -> LabeledSet:
    """FERPlus (FER2013 images relabelled by 10 annotators), 8 classes (or 7 without contempt).

    Layout (FERPlus repository + its image generation script)::

        <root>/fer2013new.csv    Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
        <root>/FER2013Train/fer0000000.png   (Usage 'Training',    split 'train')
        <root>/FER2013Valid/...              (Usage 'PublicTest',  split 'val')
        <root>/FER2013Test/...               (Usage 'PrivateTest', split 'test')

    Rows with an empty image name are skipped (FERPlus marks unusable faces so).
    Labels: ``mode='majority'`` (hard label) or ``'soft'`` (vote distribution);
    see :func:`ferplus_label` for the exact rule.
    """
    _check_split(split, tuple(FERPLUS_SPLITS), "FERPlus")
    usage, folder = FERPLUS_SPLITS[split]
    label_file = _require_file(label_file or os.path.join(root, "fer2013new.csv"), "FERPlus label file (fer2013new.csv)")
    image_dir = _require_dir(os.path.join(root, folder), f"FERPlus image folder for split {split!r}")
    samples: list[Sample] = []
    with open(label_file, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        expected = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS]
        if header is None or [h.strip() for h in header[: len(expected)]] != expected:
            raise DatasetError(f"{label_file}: header must start with {','.join(expected)}; got {header}")
        for lineno, row in enumerate(reader, 2):
            if not row or row[0].strip() != usage:
                continue
            name = row[1].strip()
            if not name:
                continue
            where = f"{label_file}:{lineno}"
            try:
                votes = [float(v) for v in row[2:12]]
            except ValueError:
                raise DatasetError(f"{where}: vote counts are not numeric: {row[2:12]}") from None
            if len(votes) != 10 or any(v < 0 for v in votes):
                raise DatasetError(f"{where}: expected 10 non-negative vote counts, got {row[2:]}")
            picked = ferplus_label(votes, include_contempt, mode)
            if picked is None:
                continue
            path = _require_file(os.path.join(image_dir, name), f"FERPlus image for {where}")
            samples.append(Sample(path=path, label=picked[0], soft=picked[1]))
    classes = classes_with(["contempt"] if include_contempt else [])
    return LabeledSet(f"ferplus-{mode}", split, classes, samples)
