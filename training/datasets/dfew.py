"""DFEW (single-labelled clips of face frames, 5-fold protocol), 7 classes."""
from __future__ import annotations

import csv
import os

from cliper_batch.labels import CANONICAL_CLASSES

from .base import DatasetError, LabeledSet, Sample, _check_split, _first_existing, _int_label, _require_file

# Native label order (cliper-method.md, "Native label orders").
DFEW_LABELS: dict[int, str] = {1: "happy", 2: "sad", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust", 7: "fear"}


def load_dfew(
    root: str, split: str, *, fold: int = 1, frames_dir: str | None = None, split_dir: str | None = None
) -> LabeledSet:
    """DFEW (single-labelled clips, 5-fold protocol), 7 classes.

    Layout (as distributed)::

        <root>/Clip/clip_224x224/00001/00001.jpg ...           one folder of face frames per clip
                                                            (also clip_224x224_16f or jpg_256)
        <root>/EmoLabel_DataSplit/train(single-labeled)/set_<fold>.csv    video_name,label
        <root>/EmoLabel_DataSplit/test(single-labeled)/set_<fold>.csv

    ``video_name`` is the clip number (folders are zero-padded to 5 digits);
    labels 1 Happy, 2 Sad, 3 Neutral, 4 Angry, 5 Surprise, 6 Disgust, 7 Fear.
    """
    _check_split(split, ("train", "test"), "DFEW")
    if fold not in range(1, 6):
        raise DatasetError(f"DFEW: fold must be 1..5, got {fold}")
    split_dir = split_dir or os.path.join(root, "EmoLabel_DataSplit")
    csv_path = _require_file(os.path.join(split_dir, f"{split}(single-labeled)", f"set_{fold}.csv"), "DFEW split file")
    frames_dir = frames_dir or _first_existing(
        [os.path.join(root, "Clip", d) for d in ("clip_224x224", "clip_224x224_16f", "jpg_256")],
        "DFEW clip frame folder",
        root,
    )
    samples: list[Sample] = []
    with open(csv_path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"video_name", "label"} <= set(reader.fieldnames or []):
            raise DatasetError(f"{csv_path}: expected columns video_name,label; got {reader.fieldnames}")
        for lineno, row in enumerate(reader, 2):
            where = f"{csv_path}:{lineno}"
            code = _int_label(row["label"], where)
            if code not in DFEW_LABELS:
                raise DatasetError(f"{where}: DFEW label {code} is outside 1..7")
            name = row["video_name"].strip()
            candidates = [os.path.join(frames_dir, name)]
            if name.isdigit():
                candidates.insert(0, os.path.join(frames_dir, f"{int(name):05d}"))
            clip = next((c for c in candidates if os.path.isdir(c)), None)
            if clip is None:
                raise DatasetError(f"{where}: clip folder not found: {candidates[0]}")
            samples.append(Sample(path=clip, label=DFEW_LABELS[code], kind="frames"))
    return LabeledSet(f"dfew-fold{fold}", split, CANONICAL_CLASSES, samples)
