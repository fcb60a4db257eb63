"""A generic manifest (CSV/TSV/Parquet: ``path,label[,start_s,end_s][,split]``) of images, clips and videos."""
from __future__ import annotations

import csv
import os
from typing import Any, Sequence

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.uris import VIDEO_EXTENSIONS, is_local, normalize_uri

from .base import CLASS_ALIASES, DatasetError, LabeledSet, Sample, _clip_kind, _require_file, canonical_name, classes_with

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
