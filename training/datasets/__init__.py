"""Expression dataset adapters -> one internal form (:class:`LabeledSet` of :class:`Sample`).

Every adapter reads one public dataset in its distributed on-disk layout (each
docstring spells it out), maps the dataset's labels to class *names* - the
project-wide names of :data:`cliper_batch.labels.CANONICAL_CLASSES` (neutral,
happy, sad, surprise, fear, disgust, anger) plus, where a dataset has them,
``contempt``, ``anxiety``, ``helplessness``, ``disappointment`` - and never
trusts a dataset's label *index* to mean the same class as another dataset's.
A missing file or an unknown label raises :class:`DatasetError` naming the file.

A sample is one of three kinds:

* ``image`` - one picture (optionally with a face box to crop: AffectNet);
* ``frames`` - a folder of frame images forming one clip (DFEW, FERV39k, MAFW);
* ``video`` - a video file, optionally with a ``[start_s, end_s)`` time range
  (generic manifests); frames are decoded with PyAV at load time.

The class list of a set is the canonical 7 followed by the extra classes the
dataset defines (in :data:`EXTRA_CLASSES` order), so two datasets with the same
classes always use the same indices.

:func:`load_dataset` takes a *dataset spec* ``KIND:PATH[?key=value&...]``
(e.g. ``rafdb:/data/RAF-DB/basic``, ``dfew:/data/DFEW?fold=2``,
``manifest:/data/labels.parquet``; a bare ``*.csv``/``*.parquet`` path is a
manifest) and a split name.
"""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qsl

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.uris import VIDEO_EXTENSIONS, is_local, normalize_uri

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

# Native label orders (cliper-method.md, "Native label orders").
RAFDB_LABELS: dict[int, str] = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}
AFFECTNET_LABELS: dict[int, str] = {
    0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt",
}
AFFECTNET_DROPPED = {8: "none", 9: "uncertain", 10: "no-face"}
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
DFEW_LABELS: dict[int, str] = {1: "happy", 2: "sad", 3: "neutral", 4: "anger", 5: "surprise", 6: "disgust", 7: "fear"}
MAFW_ORDER: tuple[str, ...] = (
    "anger", "disgust", "fear", "happy", "neutral", "sad", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)

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


# ---------------------------------------------------------------------------- FER2013 (class folders)

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


# ---------------------------------------------------------------------------- RAF-DB


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


# ---------------------------------------------------------------------------- AffectNet


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


# ---------------------------------------------------------------------------- FERPlus


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


# ---------------------------------------------------------------------------- DFEW


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


# ---------------------------------------------------------------------------- FERV39k


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


# ---------------------------------------------------------------------------- MAFW


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


# ---------------------------------------------------------------------------- generic manifest


def _read_table(path: str) -> list[dict[str, Any]]:
    lower = path.lower()
    if lower.endswith(".parquet") or lower.endswith(".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if lower.endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if lower.endswith(".tsv") else ","))
    raise DatasetError(f"{path}: manifest must be a .csv, .tsv or .parquet file")


def _opt_float(value: Any, where: str, column: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {column} {value!r} is not a number") from None
    if out != out:  # NaN: an empty parquet/pandas cell counts as missing
        return None
    if out < 0:
        raise DatasetError(f"{where}: {column} must be >= 0, got {out}")
    return out


def load_manifest(path: str, split: str | None = None, *, classes: Sequence[str] | None = None) -> LabeledSet:
    """A generic manifest: CSV/TSV/Parquet with columns ``path,label[,start_s,end_s][,split]``.

    * ``path``: an image, a video file or a folder of frames; relative paths are
      relative to the manifest's folder; fsspec URLs (``s3://...``) are passed through.
    * ``label``: a class name (any spelling in :data:`CLASS_ALIASES`, or a name
      in ``classes`` when a custom class list is given).
    * ``start_s``/``end_s`` (optional): the time range of a video sample.
    * ``split`` (optional): rows are filtered to ``split`` when both are given;
      without the column every row is used and the set's ``split`` is ``'all'``.

    Other columns are ignored (``labels.parquet`` from
    :func:`cliper_batch.synthetic.write_image_dataset` is a valid manifest).
    The class list is ``classes`` if given, else the canonical 7 plus any extra
    known classes that occur.
    """
    path = normalize_uri(path)
    if not is_local(path):
        raise DatasetError(f"{path}: manifests are read from local paths (the samples they list may be URLs)")
    _require_file(path, "manifest")
    rows = _read_table(path)
    if not rows:
        raise DatasetError(f"{path}: manifest is empty")
    columns = set(rows[0])
    for col in ("path", "label"):
        if col not in columns:
            raise DatasetError(f"{path}: manifest needs a {col!r} column (has {sorted(columns)})")
    has_split = "split" in columns
    if split is not None and has_split:
        rows = [r for r in rows if str(r.get("split")) == split]
        if not rows:
            raise DatasetError(f"{path}: no rows with split == {split!r}")
    custom = {c: c for c in classes} if classes is not None else None
    base = os.path.dirname(path)
    samples: list[Sample] = []
    for i, row in enumerate(rows, 1):
        where = f"{path} row {i}"
        raw_label = str(row["label"])
        if custom is not None:
            label = custom.get(raw_label) or custom.get(CLASS_ALIASES.get(raw_label.strip().lower(), ""))
            if label is None:
                raise DatasetError(f"{where}: label {raw_label!r} is not one of the classes {list(custom)}")
        else:
            label = canonical_name(raw_label, where)
        item = str(row["path"])
        if "://" in item and not is_local(item):
            full = item
            kind = "video" if item.lower().endswith(VIDEO_EXTENSIONS) else "image"
        else:
            full = item if os.path.isabs(item) else os.path.join(base, item)
            if not os.path.exists(full):
                raise DatasetError(f"{where}: file not found: {full}")
            kind = _clip_kind(full)
        start = _opt_float(row.get("start_s"), where, "start_s")
        end = _opt_float(row.get("end_s"), where, "end_s")
        if (start is not None or end is not None) and kind != "video":
            raise DatasetError(f"{where}: start_s/end_s are only allowed for video files, {full} is a {kind}")
        if start is not None and end is not None and end <= start:
            raise DatasetError(f"{where}: end_s ({end}) must be greater than start_s ({start})")
        samples.append(Sample(path=full, label=label, kind=kind, start_s=start, end_s=end))
    if classes is not None:
        class_list = tuple(classes)
    else:
        class_list = classes_with(s.label for s in samples if s.label not in CANONICAL_CLASSES)
    return LabeledSet(os.path.basename(path), split if (split is not None and has_split) else "all", class_list, samples)


# ---------------------------------------------------------------------------- dataset specs


def _as_bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise DatasetError(f"{where}: expected a boolean, got {value!r}")


def _as_int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{where}: expected an integer, got {value!r}") from None


# kind -> (loader, {option: converter})
_ADAPTERS: dict[str, tuple[Callable[..., LabeledSet], dict[str, Callable[[str, str], Any]]]] = {
    "rafdb": (load_rafdb, {"aligned": _as_bool}),
    "affectnet": (load_affectnet, {"n_classes": _as_int, "classes": _as_int, "crop_faces": _as_bool}),
    "ferplus": (load_ferplus, {"mode": lambda v, w: v, "include_contempt": _as_bool}),
    "dfew": (load_dfew, {"fold": _as_int}),
    "ferv39k": (load_ferv39k, {}),
    "mafw": (load_mafw, {"fold": _as_int, "n_classes": _as_int, "classes": _as_int}),
    "fer2013": (load_fer2013, {"copies": _as_bool}),
    "manifest": (load_manifest, {}),
}
DATASET_KINDS = tuple(_ADAPTERS)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``KIND:PATH[?key=value&...]`` dataset spec."""

    text: str
    kind: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse a dataset spec; a bare ``.csv``/``.tsv``/``.parquet`` path means ``manifest:``."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("empty dataset spec")
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind.lower() not in _ADAPTERS:
        if text.lower().split("?")[0].endswith((".csv", ".tsv", ".parquet", ".pq")):
            kind, rest = "manifest", text
        else:
            raise DatasetError(
                f"dataset spec {text!r}: expected KIND:PATH with KIND in {', '.join(DATASET_KINDS)} "
                "(or a .csv/.parquet manifest path)"
            )
    kind = kind.lower()
    path, _, query = rest.partition("?")
    if not path:
        raise DatasetError(f"dataset spec {text!r}: missing path")
    _, converters = _ADAPTERS[kind]
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in converters:
            raise DatasetError(
                f"dataset spec {text!r}: unknown option {key!r} for {kind} (known: {', '.join(converters) or 'none'})"
            )
        name = "n_classes" if key == "classes" else key
        options[name] = converters[key](value, f"dataset spec {text!r}")
    return DatasetSpec(text, kind, path, options)


def load_dataset(spec: str, split: str | None) -> LabeledSet:
    """Load one split of the dataset a spec names (see :func:`parse_dataset_spec`)."""
    parsed = parse_dataset_spec(spec)
    loader, _ = _ADAPTERS[parsed.kind]
    if parsed.kind == "manifest":
        return loader(parsed.path, split, **parsed.options)
    if split is None:
        raise DatasetError(f"dataset spec {spec!r}: a split name is required for {parsed.kind}")
    return loader(parsed.path, split, **parsed.options)


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
