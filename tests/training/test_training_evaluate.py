"""Calibration, ECE and the framing measurement of the real-face model's tools (training/evaluate.py, face_framing.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cliper_batch.training.datasets import LabeledSet, Sample
from cliper_batch.training.evaluate import SplitScores, fit_temperature, load_crops, nll, reliability
from cliper_batch.training.face_framing import FramedFace, margin_of, measure, stratified


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 7, generator=gen) * 3.0
    true_t = 2.5  # labels drawn from softmax(logits / 2.5): the logits are over-confident by 2.5x
    labels = torch.multinomial((logits / true_t).softmax(-1), 1, generator=gen).squeeze(1)
    t = fit_temperature(SplitScores(logits, labels))
    assert abs(t - true_t) < 0.1
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)


def test_ece_by_hand():
    # 4 samples, 15 bins: confidences 0.9 (right), 0.9 (wrong), 0.5 (right), 0.5 (right)
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    labels = torch.tensor([0, 1, 0, 0])
    ece, bins = reliability(probs, labels)
    # bin of 0.9: accuracy 0.5 vs confidence 0.9 -> 0.4 * 2/4; bin of 0.5: accuracy 1.0 vs 0.5 -> 0.5 * 2/4
    assert math.isclose(ece, 0.45, abs_tol=1e-4)
    assert [b["n"] for b in bins] == [2, 2]
    perfect, _ = reliability(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert perfect == 0.0


def test_load_crops_is_the_engines_centre_square(tmp_path):
    a = np.zeros((60, 90, 3), dtype=np.uint8)
    a[:, 30:60] = 200  # the centre 60x60 square of a 90-wide image holds a bright band in its middle third
    Image.fromarray(a).save(tmp_path / "wide.png")
    Image.fromarray(np.full((48, 48), 77, np.uint8), "L").save(tmp_path / "grey.png")
    s = LabeledSet("t", "test", ("happy",), [Sample(str(tmp_path / "wide.png"), "happy"),
                                              Sample(str(tmp_path / "grey.png"), "happy")])
    crops = load_crops(s, 48)
    assert crops.shape == (2, 48, 48, 3) and crops.dtype == torch.uint8
    assert crops[0, :, 24].float().mean() > 150 and crops[0, :, 2].float().mean() < 50
    assert int(crops[1].min()) == int(crops[1].max()) == 77


def test_framing_margin_and_offset():
    frame = np.zeros((10, 10, 3), np.uint8)
    # a 48-px image whose face box is 40 px: the engine's square must grow the box by 48/40 -> margin 0.1
    face = FramedFace(frame, "happy", (0.0, 0.0, 48.0, 48.0), (4.0, 6.0, 44.0, 46.0))
    assert margin_of(face) == pytest.approx(0.1)
    rep = measure([face, FramedFace(frame, "sad", (0.0, 0.0, 48.0, 48.0), None)])
    assert rep.images == 2 and rep.detected == 1
    assert rep.median_margin == pytest.approx(0.1)
    assert rep.median_center_offset == pytest.approx((0.0, 0.05))


def test_stratified_keeps_class_shares():
    samples = [Sample(f"a{i}.jpg", "happy") for i in range(80)] + [Sample(f"b{i}.jpg", "sad") for i in range(20)]
    picked = stratified(LabeledSet("t", "test", ("happy", "sad"), samples), 10)
    assert sorted(label for _, label in picked).count("happy") == 8
    assert len({p for p, _ in picked}) == 10
