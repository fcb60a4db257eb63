"""FER2013 laid out as class folders (``<root>/<split>/<class>/*.jpg``)."""
from __future__ import annotations

import os
import re

from cliper_batch.labels import CANONICAL_CLASSES

from .base import DatasetError, LabeledSet, Sample, _require_dir, canonical_name, is_frame_file

FER2013_SPLITS: dict[str, str] = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "publictest": "validation",
    "test": "test", "privatetest": "test",
}
# The mirror's disgust class is augmented 9x: ``<name>.jpg0.jpg`` ... ``<name>.jpg7.jpg`` are flipped /
# rotated copies of ``<name>.jpg``; only the originals are FER2013 images.
_FER2013_COPY = re.compile(r"\.(jpe?g|png)\d+\.(jpe?g|png)$", re.IGNORECASE)


def is_fer2013_copy(name: str) -> bool:
    """Whether ``name`` is one of the mirror's augmented copies (``x.jpg3.jpg``), not an original image."""
    return bool(_FER2013_COPY.search(name))


def load_fer2013(root: str, split: str, *, copies: bool = False) -> LabeledSet:
    """FER2013 laid out as class folders: ``<root>/<split>/<class>/*.jpg`` (48x48 grey face crops).

    Splits ``train`` (Training, 28,709 images), ``validation`` (= ``publictest``, 3,589) and ``test``
    (= ``privatetest``, 3,589); folder names are FER2013's class names (angry, disgust, fear, happy,
    neutral, sad, surprise), mapped by name. Augmented copies (``*.jpgN.jpg``, see
    :func:`is_fer2013_copy`) are left out unless ``copies=true``; they are never evaluation data.
    """
    key = split.strip().lower()
    if key not in FER2013_SPLITS:
        raise DatasetError(f"fer2013: unknown split {split!r}; choose one of {', '.join(FER2013_SPLITS)}")
    folder = _require_dir(os.path.join(root, FER2013_SPLITS[key]), f"fer2013 split folder {split!r}")
    samples: list[Sample] = []
    for cls in sorted(os.listdir(folder)):
        cdir = os.path.join(folder, cls)
        if not os.path.isdir(cdir) or cls.startswith("."):
            continue
        label = canonical_name(cls, cdir)
        for name in sorted(os.listdir(cdir)):
            if not is_frame_file(name) or (not copies and is_fer2013_copy(name)):
                continue
            samples.append(Sample(os.path.join(cdir, name), label))
    if not samples:
        raise DatasetError(f"fer2013: no images under {folder} (expected <class>/*.jpg folders)")
    return LabeledSet("fer2013", FER2013_SPLITS[key], CANONICAL_CLASSES, samples)
