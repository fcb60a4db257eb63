"""FERV39k, 7 classes: clips in class-name folders, labels from the split files (or a class-folder tree)."""
from __future__ import annotations

import os

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.uris import VIDEO_EXTENSIONS

from .base import CLASS_ALIASES, DatasetError, LabeledSet, Sample, _check_split, _clip_kind, _require_dir, canonical_name

def load_ferv39k(root: str, split: str, *, clips_dir: str | None = None, split_file: str | None = None) -> LabeledSet:
    """FERV39k, 7 classes, clips grouped in class-name folders.

    Layout (as distributed)::

        <root>/2_ClipsforFaceCrop/<Scene>/<Class>/<clip>/*.jpg      Class in Angry, Disgust, Fear, Happy,
                                                                      Neutral, Sad, Surprise
        <root>/4_setups/All_scenes/train_All.csv | test_All.csv      lines "Action/Sad/0010 Sad"

    The label comes from the split file and must agree with the class folder in
    the clip's path. Without split files, a plain class-folder tree is read
    instead: ``<root>/<split>/[...]/<Class>/<clip folder or video file>`` (the
    class is the nearest folder named after a class).
    """
    _check_split(split, ("train", "test"), "FERV39k")
    clips_dir = clips_dir or os.path.join(root, "2_ClipsforFaceCrop")
    split_file = split_file or os.path.join(root, "4_setups", "All_scenes", f"{split}_All.csv")
    samples: list[Sample] = []
    if os.path.isfile(split_file):
        _require_dir(clips_dir, "FERV39k clip folder")
        with open(split_file, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.replace(",", " ").split()
                if not parts:
                    continue
                where = f"{split_file}:{lineno}"
                if len(parts) != 2:
                    raise DatasetError(f"{where}: expected '<clip path> <Class>', got {line.strip()!r}")
                rel, raw = parts
                if lineno == 1 and raw.strip().lower() not in CLASS_ALIASES and "/" not in rel:
                    continue  # header line
                label = canonical_name(raw, where)
                folders = {CLASS_ALIASES.get(p.lower()) for p in rel.split("/")[:-1]}
                if label not in folders:
                    raise DatasetError(f"{where}: label {raw!r} disagrees with the class folder in {rel!r}")
                clip = os.path.join(clips_dir, rel)
                if not os.path.exists(clip):
                    raise DatasetError(f"{where}: clip not found: {clip}")
                samples.append(Sample(path=clip, label=label, kind=_clip_kind(clip)))
        return LabeledSet("ferv39k", split, CANONICAL_CLASSES, samples)

    split_root = os.path.join(root, split)
    if not os.path.isdir(split_root):
        raise DatasetError(
            f"FERV39k: neither the split file {split_file} nor a class-folder tree {split_root} exists"
        )
    for dirpath, dirnames, filenames in os.walk(split_root):
        dirnames.sort()
        label = CLASS_ALIASES.get(os.path.basename(dirpath).lower())
        if label is None or label not in CANONICAL_CLASSES:
            continue
        for name in sorted(dirnames) + sorted(f for f in filenames if f.lower().endswith(VIDEO_EXTENSIONS)):
            clip = os.path.join(dirpath, name)
            samples.append(Sample(path=clip, label=label, kind=_clip_kind(clip)))
        dirnames[:] = []  # clips are leaves
    if not samples:
        raise DatasetError(f"FERV39k: no clips under class folders in {split_root}")
    return LabeledSet("ferv39k", split, CANONICAL_CLASSES, samples)
