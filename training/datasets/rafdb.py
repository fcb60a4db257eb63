"""RAF-DB basic (7 classes): the partition list and the aligned (or original) images."""
from __future__ import annotations

import os

from cliper_batch.labels import CANONICAL_CLASSES

from .base import DatasetError, LabeledSet, Sample, _check_split, _first_existing, _int_label, _require_file

# Native label order (cliper-method.md, "Native label orders").
RAFDB_LABELS: dict[int, str] = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}


def load_rafdb(
    root: str, split: str, *, aligned: bool = True, label_file: str | None = None, image_dir: str | None = None
) -> LabeledSet:
    """RAF-DB basic (7 classes).

    Layout (as distributed)::

        <root>/EmoLabel/list_patition_label.txt   one line per image: "train_00001.jpg 5"
        <root>/Image/aligned/train_00001_aligned.jpg   (aligned=True, CLIPER's input)
        <root>/Image/original/train_00001.jpg          (aligned=False)

    ``list_patition_label.txt`` (sic) may also sit directly in ``<root>``, and
    the image folder may be ``<root>/aligned``. Labels 1..7 = Surprise, Fear,
    Disgust, Happiness, Sadness, Anger, Neutral. Splits: ``train``, ``test``
    (the file name prefix).
    """
    _check_split(split, ("train", "test"), "RAF-DB")
    label_file = label_file or _first_existing(
        [os.path.join(root, "EmoLabel", "list_patition_label.txt"), os.path.join(root, "list_patition_label.txt")],
        "RAF-DB partition list (list_patition_label.txt)",
        root,
    )
    _require_file(label_file, "RAF-DB partition list")
    sub = "aligned" if aligned else "original"
    image_dir = image_dir or _first_existing(
        [os.path.join(root, "Image", sub), os.path.join(root, sub)], f"RAF-DB {sub} image folder", root
    )
    samples: list[Sample] = []
    with open(label_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label_file}:{lineno}"
            if len(parts) != 2:
                raise DatasetError(f"{where}: expected '<image> <label>', got {line.strip()!r}")
            name, raw = parts
            if not name.startswith(split + "_"):
                continue
            code = _int_label(raw, where)
            if code not in RAFDB_LABELS:
                raise DatasetError(f"{where}: RAF-DB label {code} is outside 1..7")
            stem = os.path.splitext(name)[0]
            path = os.path.join(image_dir, f"{stem}_aligned.jpg" if aligned else name)
            _require_file(path, f"RAF-DB image for {where}")
            samples.append(Sample(path=path, label=RAFDB_LABELS[code]))
    if not samples:
        raise DatasetError(f"{label_file}: no '{split}_*' entries")
    return LabeledSet("rafdb", split, CANONICAL_CLASSES, samples)
