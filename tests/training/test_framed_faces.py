"""cliper_batch.training.framed_faces: synthetic faces cropped by the engine's own detector and crop."""
from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest
from PIL import Image

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.synthetic import SyntheticError
from cliper_batch.training.framed_faces import main, write_framed_dataset


def test_framed_dataset_layout_and_content(tmp_path):
    report = write_framed_dataset(str(tmp_path), 3, seed=5, size=48)
    table = pl.read_parquet(report.labels_path)
    assert report.written == table.height and report.written + report.skipped_no_face == 7 * 3
    assert report.written >= 14  # MTCNN finds most rendered faces
    assert set(table.columns) == {"path", "label", "split", "identity", "intensity", "score"}
    assert set(table["label"]) <= set(CANONICAL_CLASSES) and set(table["split"]) <= {"train", "test"}
    assert table["score"].min() > 0.5
    # the split is by identity: no person is in both
    ids = table.group_by("identity").agg(pl.col("split").n_unique().alias("n"))
    assert ids["n"].max() == 1
    for rel in table["path"]:
        img = np.asarray(Image.open(os.path.join(tmp_path, rel)))
        assert img.shape == (48, 48, 3) and img.std() > 5  # a real crop, not padding
    # deterministic for a seed
    again = write_framed_dataset(str(tmp_path / "again"), 3, seed=5, size=48)
    t2 = pl.read_parquet(again.labels_path)
    assert t2["path"].to_list() == table["path"].to_list()
    first = table["path"][0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / first)), np.asarray(Image.open(tmp_path / "again" / first)))


def test_framed_dataset_bad_arguments(tmp_path, capsys):
    with pytest.raises(SyntheticError, match="n_per_class"):
        write_framed_dataset(str(tmp_path), 0, seed=1)
    with pytest.raises(SyntheticError, match="frame must be"):
        write_framed_dataset(str(tmp_path), 1, seed=1, frame=(32, 32))
    assert main(["--out", str(tmp_path), "--images-per-class", "0"]) == 2
    assert "n_per_class" in capsys.readouterr().err
