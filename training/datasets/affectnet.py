"""AffectNet (7 or 8 classes): the distributed CSV lists and images, face boxes cropped at load time."""
from __future__ import annotations

import csv
import os

from .base import DatasetError, LabeledSet, Sample, _check_split, _int_label, _require_dir, _require_file, classes_with

# Native label order (cliper-method.md, "Native label orders").
AFFECTNET_LABELS: dict[int, str] = {
    0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt",
}
AFFECTNET_DROPPED = {8: "none", 9: "uncertain", 10: "no-face"}


def load_affectnet(
    root: str,
    split: str,
    *,
    n_classes: int = 7,
    csv_file: str | None = None,
    image_dir: str | None = None,
    crop_faces: bool = True,
) -> LabeledSet:
    """AffectNet, 7 classes (contempt dropped) or 8 (contempt kept).

    Layout (as distributed)::

        <root>/Manually_Annotated_file_lists/training.csv     (split 'train')
        <root>/Manually_Annotated_file_lists/validation.csv   (split 'val' or 'test')
        <root>/Manually_Annotated_Images/<subDirectory_filePath>

    CSV columns used: ``subDirectory_filePath``, ``expression`` and, with
    ``crop_faces``, ``face_x, face_y, face_width, face_height`` (the face box
    cropped at load time). ``expression``: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise,
    4 Fear, 5 Disgust, 6 Anger, 7 Contempt (kept only when ``n_classes=8``);
    8 None, 9 Uncertain, 10 No-Face are dropped.
    """
    _check_split(split, ("train", "val", "test"), "AffectNet")
    if n_classes not in (7, 8):
        raise DatasetError(f"AffectNet: n_classes must be 7 or 8, got {n_classes}")
    lists = os.path.join(root, "Manually_Annotated_file_lists")
    csv_file = csv_file or os.path.join(lists, "training.csv" if split == "train" else "validation.csv")
    _require_file(csv_file, "AffectNet label file")
    image_dir = _require_dir(image_dir or os.path.join(root, "Manually_Annotated_Images"), "AffectNet image folder")
    samples: list[Sample] = []
    with open(csv_file, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        needed = {"subDirectory_filePath", "expression"} | (
            {"face_x", "face_y", "face_width", "face_height"} if crop_faces else set()
        )
        missing = needed - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{csv_file}: missing columns {sorted(missing)}")
        for lineno, row in enumerate(reader, 2):
            where = f"{csv_file}:{lineno}"
            code = _int_label(row["expression"], where)
            if code in AFFECTNET_DROPPED or (code == 7 and n_classes == 7):
                continue
            if code not in AFFECTNET_LABELS:
                raise DatasetError(f"{where}: AffectNet expression {code} is outside 0..10")
            path = os.path.join(image_dir, row["subDirectory_filePath"])
            _require_file(path, f"AffectNet image for {where}")
            box = None
            if crop_faces:
                try:
                    box = tuple(float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
                except ValueError:
                    raise DatasetError(f"{where}: face box is not numeric") from None
                if box[2] <= 0 or box[3] <= 0:
                    raise DatasetError(f"{where}: face box has non-positive size {box}")
            samples.append(Sample(path=path, label=AFFECTNET_LABELS[code], box=box))  # type: ignore[arg-type]
    classes = classes_with(["contempt"] if n_classes == 8 else [])
    return LabeledSet(f"affectnet{n_classes}", split, classes, samples)
