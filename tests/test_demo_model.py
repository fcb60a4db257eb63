"""The demo model end to end: synthetic faces -> two-stage Ray Train run -> export -> annotate held-out videos -> score.

CI size: 30 crops per class at 64 px, 1 stage-1 + 2 stage-2 epochs of the demo
recipe (``training.demo.DEMO_RECIPE``), 2 held-out videos annotated with
``--faces detect``. The full recipe (scripts/build_demo_model.sh) is too slow
for CI; see docs/training.md for its numbers.
"""
from __future__ import annotations

import math
import os

import polars as pl
import pytest
import torch

from cliper_batch.cli import main as annotate_main
from cliper_batch.model.factory import load_model
from cliper_batch.synthetic import write_image_dataset, write_video_corpus
from training.demo import DEMO_ARCH, ScoreError, demo_config, score_annotations, score_segments
from training.train import run_training


def test_score_segments_accuracy_coverage_and_changes():
    truth = pl.DataFrame({
        "video_id": ["a"] * 5 + ["b"] * 3,
        "segment_index": [0, 1, 2, 3, 4, 0, 1, 2],
        "label": ["happy", "happy", "sad", "sad", "anger", "fear", "fear", "neutral"],
    })
    predicted = pl.DataFrame({
        "video_id": ["a"] * 5 + ["b"] * 2,
        "segment_index": [0, 1, 2, 3, 4, 0, 1],  # b/2 has no prediction (no face tracked)
        "predicted": ["happy", "sad", "sad", "sad", "sad", "fear", "fear"],
    })
    s = score_segments(truth, predicted)
    assert (s.n_truth, s.n_annotated, s.n_correct) == (8, 7, 5)
    assert math.isclose(s.coverage, 7 / 8) and math.isclose(s.accuracy, 5 / 7)
    assert s.confusions == {"happy->sad": 1, "anger->sad": 1}
    # a: changes at 2 (predicted at 1: within one segment) and at 4 (no predicted change at 3, 4 or 5);
    # b: change at 2 is not located (the segment has no prediction)
    assert (s.changes, s.changes_located) == (3, 1)


def test_score_annotations_rejects_bad_ground_truth(tmp_path):
    with pytest.raises(ScoreError, match="no such ground-truth file"):
        score_annotations(str(tmp_path), str(tmp_path / "missing.parquet"))
    bad = tmp_path / "gt.parquet"
    pl.DataFrame({"video_id": ["a"]}).write_parquet(bad)
    with pytest.raises(ScoreError, match="missing columns"):
        score_annotations(str(tmp_path), str(bad))


@pytest.fixture(scope="module")
def demo_run(ray_runtime, tmp_path_factory):
    """A reduced demo-recipe run through the real trainer, and its export annotating 2 held-out videos."""
    root = tmp_path_factory.mktemp("demo")
    labels = write_image_dataset(str(root / "faces"), 30, seed=1, size=64)
    export = str(root / "cliper-demo.safetensors")
    cfg = demo_config(labels, stage1_epochs=1, stage2_epochs=2, storage_path=str(root / "runs"), export=export)
    outcome = run_training(cfg)
    gt = write_video_corpus(str(root / "videos"), 2, seed=1000, min_spans=3, max_spans=3)
    out = str(root / "annotations")
    rc = annotate_main(["--input", str(root / "videos"), "--output", out, "--model", export, "--faces", "detect",
                        "--frames-per-segment", "4", "--batch-size", "4"])
    return outcome, export, gt, out, rc


def test_demo_recipe_trains_exports_and_annotates(demo_run):
    outcome, export, gt, out, rc = demo_run
    assert [r["stage"] for r in outcome.history] == [1, 2, 2]
    assert os.path.isfile(export)
    loaded = load_model(export)
    assert loaded.image_size == 64 and len(loaded.classes) == 7
    assert loaded.model.arch == DEMO_ARCH
    assert rc == 0
    score = score_annotations(out, gt)
    truth = pl.read_parquet(gt)
    assert score.n_truth == truth.height and score.changes >= 4
    assert score.coverage >= 0.5, score.as_dict()  # MTCNN finds the synthetic faces in most frames
    assert sum(score.confusions.values()) == score.n_annotated - score.n_correct
