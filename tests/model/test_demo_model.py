"""The demo model end to end: synthetic faces -> two-stage Ray Train run -> export -> annotate held-out videos -> score.

The full recipe of scripts/build_demo_model.sh (``cliper_batch.training.demo``): faces
rendered in frames and cropped by the engine's detector, the two-stage Ray Train
run, export, 6 held-out videos (other people, other seed) annotated with
``--faces detect``, scored against ground truth. About 12 minutes on 2 cores.
"""
from __future__ import annotations

import math
import os

import polars as pl
import pytest
import torch

from cliper_batch.shell.annotate_cli import main as annotate_main
from cliper_batch.model.factory import load_model
from cliper_batch.synthetic import write_video_corpus
from cliper_batch.training.demo import (
    DEMO_ARCH, DEMO_IMAGE_SEED, DEMO_IMAGES_PER_CLASS, DEMO_RECIPE, ScoreError, demo_config, score_annotations,
    score_segments,
)
from cliper_batch.training.framed_faces import write_framed_dataset
from cliper_batch.training.train import run_training


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
    """The full demo recipe (scripts/build_demo_model.sh) through the real trainer, then 6 held-out videos."""
    root = tmp_path_factory.mktemp("demo")
    report = write_framed_dataset(str(root / "faces"), DEMO_IMAGES_PER_CLASS, seed=DEMO_IMAGE_SEED)
    export = str(root / "cliper-demo.safetensors")
    cfg = demo_config(report.labels_path, storage_path=str(root / "runs"), export=export)
    outcome = run_training(cfg)
    gt = write_video_corpus(str(root / "videos"), 6, seed=1000)
    out = str(root / "annotations")
    rc = annotate_main(["--input", str(root / "videos"), "--output", out, "--model", export, "--faces", "detect"])
    return report, outcome, export, gt, out, rc


@pytest.mark.timeout(2400)  # the whole recipe (~12 min on 2 idle cores) runs in this test's fixture; the suite's 900 s is too tight under load
def test_demo_recipe_reaches_the_accuracy_target_on_held_out_videos(demo_run):
    """The demo model's end-to-end bar: segment accuracy >= 0.95 and every expression change located within one segment."""
    report, outcome, export, gt, out, rc = demo_run
    assert report.written >= 0.7 * 7 * DEMO_IMAGES_PER_CLASS  # the detector finds most rendered faces
    stages = [r["stage"] for r in outcome.history]
    assert stages == [1] * DEMO_RECIPE["stage1_epochs"] + [2] * DEMO_RECIPE["stage2_epochs"]
    assert outcome.history[-1]["war"] >= 0.9, outcome.history[-1]  # held-out identities, framed as the engine does
    loaded = load_model(export)
    assert loaded.image_size == 64 and len(loaded.classes) == 7 and loaded.model.arch == DEMO_ARCH
    assert rc == 0
    score = score_annotations(out, gt)
    truth = pl.read_parquet(gt)
    assert score.n_truth == truth.height and score.coverage >= 0.95, score.as_dict()
    assert score.accuracy >= 0.95, score.as_dict()
    assert score.changes >= 6 and score.changes_located == score.changes, score.as_dict()
    assert sum(score.confusions.values()) == score.n_annotated - score.n_correct


def test_shipped_demo_checkpoint_loads_and_matches_the_recipe():
    """models/cliper-demo.safetensors (what scripts/demo.sh uses) is the recipe's architecture and classes."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "models", "cliper-demo.safetensors")
    loaded = load_model(path)
    assert loaded.model.arch == DEMO_ARCH and loaded.image_size == 64
    assert list(loaded.classes) == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
    with torch.no_grad():
        scores = loaded.model(torch.zeros(2, 1, 3, 64, 64))
    assert scores.shape[0] == 2 and torch.isfinite(scores).all()
