"""bench/fer2013_peers.py: class mapping, the table on made-up predictions, and a whole run without peers.

The peers themselves run only where their venvs exist (bench/setup_fer.sh, bench/setup_pyemotion.sh);
those tests are skipped elsewhere and say which venv is missing. No FER2013 image is used: the
images are generated 48x48 grey faces-to-be in a temporary FER2013-like class-folder tree.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from bench import fer2013_peers as fp
from cliper_batch.labels import CANONICAL_CLASSES

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # fer's _get_labels order
PYEMOTION_LABELS = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]  # DetectFace.emotions order


def one_hot(classes, names, confidence=1.0):
    """Score rows that pick ``names`` (each row sums to 1 when ``confidence`` < 1)."""
    c = len(classes)
    rest = (1.0 - confidence) / (c - 1)
    out = np.full((len(names), c), rest)
    for i, n in enumerate(names):
        out[i, classes.index(n)] = confidence
    return out


def test_peer_class_names_map_to_ours_by_name():
    assert fp.canonical_classes(FER_LABELS, "fer") == ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert fp.canonical_classes(PYEMOTION_LABELS, "PyEmotion") == fp.canonical_classes(FER_LABELS, "fer")
    assert set(fp.canonical_classes(FER_LABELS, "fer")) == set(CANONICAL_CLASSES)
    with pytest.raises(ValueError, match="duplicate"):
        fp.canonical_classes(["angry", "anger"], "x")
    with pytest.raises(Exception, match="unknown expression label"):
        fp.canonical_classes(["angry", "bored"], "x")


def test_peer_json_is_read_in_its_own_column_order():
    result = {"peer": "fer", "version": "1", "classes": FER_LABELS, "probabilities": True, "classifier_s": 0.5,
              "classifier_cpu_s": 0.25, "preprocess_s": 0.1, "batch": 1,
              "scores": one_hot(FER_LABELS, ["angry", "neutral"], 0.7).tolist()}
    s = fp.from_peer_json("fer 1", result)
    assert s.predictions() == ["anger", "neutral"]
    assert s.info["native_classes"] == FER_LABELS and s.info["batch"] == 1 and "scores" not in s.info
    assert (s.classifier_s, s.classifier_cpu_s, s.preprocess_s) == (0.5, 0.25, 0.1)


def test_row_accuracy_recall_ece_and_speed():
    truth = ["happy", "happy", "happy", "sad", "sad", "anger", "anger", "anger"]
    pred = ["happy", "happy", "sad", "sad", "happy", "anger", "anger", "anger"]
    # fer's column order: the row must come out by name, not by position
    s = fp.SystemScores("peer", fp.canonical_classes(FER_LABELS, "fer"), one_hot(fp.canonical_classes(FER_LABELS, "f"), pred, 0.8),
                        probabilities=True, classifier_s=2.0, classifier_cpu_s=4.0)
    r = fp.system_row(s, truth)
    assert r["images"] == 8 and r["accuracy"] == pytest.approx(6 / 8)
    assert r["per_class_recall"]["happy"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["per_class_recall"]["sad"] == pytest.approx(1 / 2, abs=1e-4)
    assert r["per_class_recall"]["anger"] == 1.0
    assert r["per_class_recall"]["fear"] is None  # no images: left out of the mean
    assert r["mean_class_recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3, abs=1e-4)
    # every row is 0.8 confident, 6 of 8 right: ECE = |0.75 - 0.8|
    assert r["ece"] == pytest.approx(0.05, abs=1e-4)
    assert r["images_per_s"] == 4.0 and r["images_per_cpu_s"] == 2.0
    idx = {c: i for i, c in enumerate(r["confusion_classes"])}
    assert r["confusion"][idx["happy"]][idx["sad"]] == 1 and r["confusion"][idx["sad"]][idx["happy"]] == 1


def test_scores_that_are_not_probabilities_get_no_ece():
    truth = ["happy", "sad"]
    s = fp.SystemScores("PyEmotion", fp.canonical_classes(PYEMOTION_LABELS, "p"),
                        np.exp(one_hot(fp.canonical_classes(PYEMOTION_LABELS, "p"), ["happy", "happy"], 0.9)),
                        probabilities=False, classifier_s=0.0)
    r = fp.system_row(s, truth)
    assert r["ece"] is None and "reliability" not in r and r["images_per_s"] is None
    assert r["accuracy"] == 0.5


def test_a_class_the_data_lacks_counts_as_wrong():
    classes = (*CANONICAL_CLASSES, "contempt")
    s = fp.SystemScores("c", classes, one_hot(list(classes), ["contempt", "happy"]), probabilities=True, classifier_s=1.0)
    r = fp.system_row(s, ["anger", "happy"])
    assert r["accuracy"] == 0.5 and "contempt" in r["confusion_classes"] and "contempt" not in r["per_class_recall"]
    with pytest.raises(ValueError, match="score rows"):
        fp.system_row(s, ["anger"])
    with pytest.raises(ValueError, match="not in the class order"):
        fp.system_row(s, ["anger", "contempt"])


def test_agreement_and_table():
    order = list(CANONICAL_CLASSES)
    a = fp.SystemScores("A", CANONICAL_CLASSES, one_hot(order, ["happy", "sad", "anger", "fear"]), True, 1.0)
    b = fp.SystemScores("B", CANONICAL_CLASSES, one_hot(order, ["happy", "sad", "happy", "happy"]), False, 1.0)
    agree = fp.agreement([a, b])
    assert agree == {"A": {"A": 1.0, "B": 0.5}, "B": {"A": 0.5, "B": 1.0}}
    rows = [fp.system_row(x, ["happy", "sad", "anger", "neutral"]) for x in (a, b)]
    table = fp.format_table(rows, agree)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    assert cells[0][3:10] == order and cells[0][-3:] == ["ECE", "images/s", "images/CPU-s"]
    row_b = next(x for x in cells if x[0] == "B")
    assert row_b[1] == "0.500" and row_b[-3] == "n/a" and row_b[-2] == "4"  # 2/4 right; no ECE; 4 images in 1 s
    assert "| A | 1.000 | 0.500 |" in table


def test_limit_is_a_fixed_draw_in_listed_order():
    from cliper_batch.training.evaluate import LabeledSet

    samples = [fp._datasets.Sample(f"/x/{i:03d}.jpg", CANONICAL_CLASSES[i % 7]) for i in range(50)]
    full = LabeledSet("fer2013", "test", CANONICAL_CLASSES, samples)
    a, b = fp.select(full, 10), fp.select(full, 10)
    assert [s.path for s in a.samples] == [s.path for s in b.samples] == sorted(s.path for s in a.samples)
    assert len(a.samples) == 10 and len(full.samples) == 50
    assert fp.select(full, None) is full and fp.select(full, 99) is full
    with pytest.raises(ValueError):
        fp.select(full, 0)


@pytest.fixture
def tiny_fer2013(tmp_path):
    """A FER2013-shaped tree (test/<fer folder name>/*.jpg) of generated 48x48 grey images, an augmented copy included."""
    rng = np.random.default_rng(0)
    for k, folder in enumerate(FER_LABELS):
        d = tmp_path / "test" / folder
        d.mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 255, (48, 48), dtype=np.uint8) // (k + 1)
            Image.fromarray(img, "L").save(d / f"PrivateTest_{k}{i}.jpg")
    Image.fromarray(np.zeros((48, 48), np.uint8), "L").save(tmp_path / "test" / "happy" / "PrivateTest_30.jpg3.jpg")
    return tmp_path


def test_whole_run_without_peers(tiny_fer2013, tmp_path, capsys):
    out = tmp_path / "results" / "r.json"  # the folder is made
    assert fp.main(["--data", str(tiny_fer2013), "--model", "builtin:demo", "--peers", "", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 14  # the augmented copy is not an image of the split
    assert r["class_counts"] == {c: 2 for c in CANONICAL_CLASSES}
    (row,) = r["systems"]
    assert row["system"].startswith("CLIPER") and row["images"] == 14 and 0 <= row["accuracy"] <= 1
    assert row["ece"] is not None and row["images_per_s"] > 0 and row["model_id"]
    assert "| CLIPER" in capsys.readouterr().out


def test_unknown_peer_is_refused(tiny_fer2013):
    with pytest.raises(SystemExit):
        fp.main(["--data", str(tiny_fer2013), "--peers", "fer,deepface"])


def _venv_python(peer: str) -> str:
    p = fp.PEERS[peer]
    exe = p.python()
    if not os.path.exists(exe):
        pytest.skip(f"{p.venv} is missing (made by {p.setup})")
    return exe


@pytest.mark.parametrize("peer", ["fer", "fer-box", "pyemotion"])
def test_peer_script_protocol(peer, tiny_fer2013, tmp_path):
    _venv_python(peer)
    paths = sorted(str(p) for p in (tiny_fer2013 / "test").rglob("PrivateTest_?0.jpg"))
    s = fp.run_peer(fp.PEERS[peer], paths, str(tmp_path))
    assert s.scores.shape == (7, 7) and set(s.classes) == set(CANONICAL_CLASSES)
    assert s.classifier_s > 0 and s.classifier_cpu_s is not None
    assert s.probabilities == (peer != "pyemotion")
    if s.probabilities:
        np.testing.assert_allclose(s.scores.sum(axis=1), 1.0, atol=1e-3)
