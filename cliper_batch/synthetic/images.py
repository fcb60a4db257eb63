"""A labelled image set of synthetic face crops: PNGs plus ``labels.parquet`` (split by held-out identity)."""
from __future__ import annotations

import math
import os

import numpy as np

from PIL import Image

from ..labels import CANONICAL_CLASSES
from .person import PersonParams, SyntheticError, sample_identity, vary_shot
from .render import render_face

# --------------------------------------------------------------------------- image dataset


LABEL_COLUMNS = {"path": "string", "label": "string", "split": "string", "identity": "int32", "intensity": "float32"}


def dataset_identities(n_per_class: int, seed: int, test_fraction: float) -> tuple[list[PersonParams], int]:
    """The people of a labelled face set and the split stride: identity ``i`` is 'test' when ``i % every == 0``.

    Every identity shows every expression (about 2 images each per class), so a
    split by identity puts about ``test_fraction`` of the people - never seen in
    training - in 'test'.
    """
    n_ids = max(5, math.ceil(n_per_class / 2))
    every = max(2, round(1 / test_fraction))
    return [sample_identity(np.random.default_rng([seed, 7, i])) for i in range(n_ids)], every


def write_labels(out_dir: str, rows: dict[str, list], extra: dict[str, str] | None = None) -> str:
    """Write ``out_dir/labels.parquet`` from column lists (:data:`LABEL_COLUMNS` plus ``extra`` name->type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {**LABEL_COLUMNS, **(extra or {})}
    table = pa.table({name: pa.array(rows[name], type=pa.type_for_alias(t)) for name, t in types.items()})
    out = os.path.join(out_dir, "labels.parquet")
    pq.write_table(table, out)
    return out


def write_image_dataset(out_dir: str, n_per_class: int, seed: int, size: int = 112, test_fraction: float = 0.2) -> str:
    """``n_per_class`` PNG crops per canonical class under ``out_dir/<label>/`` plus ``labels.parquet``.

    Identities are shared across classes (every identity shows every
    expression, in different shots) and the split is *by identity*: about
    ``test_fraction`` of identities are 'test', so test faces are unseen
    people. Columns: ``path`` (relative to ``out_dir``), ``label``, ``split``,
    ``identity``, ``intensity``. Returns the parquet path.
    """
    if n_per_class < 1:
        raise SyntheticError(f"n_per_class must be >= 1, got {n_per_class}")
    if not (0.0 < test_fraction < 1.0):
        raise SyntheticError(f"test_fraction must be in (0, 1), got {test_fraction}")
    identities, every = dataset_identities(n_per_class, seed, test_fraction)
    n_ids = len(identities)
    rows: dict[str, list] = {"path": [], "label": [], "split": [], "identity": [], "intensity": []}
    for ci, label in enumerate(CANONICAL_CLASSES):
        os.makedirs(os.path.join(out_dir, label), exist_ok=True)
        for k in range(n_per_class):
            ident = (k + ci) % n_ids
            rng = np.random.default_rng([seed, 11, ci, k])
            params = vary_shot(identities[ident], rng)
            intensity = 1.0 if label == "neutral" else float(rng.uniform(0.55, 1.0))
            img = render_face(label, params, size=size, intensity=intensity, rng=rng)
            rel = f"{label}/{label}_{k:05d}.png"
            Image.fromarray(img).save(os.path.join(out_dir, rel), compress_level=1)
            rows["path"].append(rel)
            rows["label"].append(label)
            rows["split"].append("test" if ident % every == 0 else "train")
            rows["identity"].append(ident)
            rows["intensity"].append(intensity)
    return write_labels(out_dir, rows)


def read_image_dataset(parquet_path: str):
    """``labels.parquet`` as a pyarrow Table whose ``path`` column holds absolute file paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.isfile(parquet_path):
        raise SyntheticError(f"{parquet_path}: no such labels file")
    table = pq.read_table(parquet_path)
    missing = {"path", "label", "split"} - set(table.column_names)
    if missing:
        raise SyntheticError(f"{parquet_path}: missing columns {sorted(missing)}")
    root = os.path.dirname(os.path.abspath(parquet_path))
    paths = [os.path.join(root, p) for p in table.column("path").to_pylist()]
    return table.set_column(table.column_names.index("path"), "path", pa.array(paths, pa.string()))
