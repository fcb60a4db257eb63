"""training/job_check.py: the whole job over a labelled image split (FER2013's folder layout, synthetic faces made
here, the shipped demo model) gives one row per image, and its accuracy is read back from the Parquet."""
import os

import polars as pl
import pytest
from PIL import Image

from cliper_batch.synthetic.images import read_image_dataset, write_image_dataset
from cliper_batch.training.job_check import agrees, job_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "models", "cliper-demo.safetensors")
FER_FOLDER = {"anger": "angry"}  # FER2013's folder names differ from the canonical classes only here


@pytest.fixture(scope="module")
def fer_layout(tmp_path_factory):
    src = tmp_path_factory.mktemp("synthetic")
    table = read_image_dataset(write_image_dataset(str(src), n_per_class=2, seed=11, size=96))
    root = tmp_path_factory.mktemp("fer2013")
    n = 0
    for path, label in zip(table["path"].to_pylist(), table["label"].to_pylist()):
        folder = root / "test" / FER_FOLDER.get(label, label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(path).save(folder / f"{n:03d}.jpg", quality=95)
        n += 1
    (root / "test" / "disgust" / "007.jpg3.jpg").write_bytes(b"an augmented copy: not evaluation data")
    return str(root), n


@pytest.mark.slow
def test_the_job_scores_every_image_once_and_the_accuracy_comes_from_its_parquet(fer_layout, tmp_path):
    root, n = fer_layout
    report = job_accuracy(f"fer2013:{root}", "test", DEMO, str(tmp_path))
    assert (report["images"], report["rows"], report["missing"], report["failed"]) == (n, n, 0, 0), report
    assert report["model_id"] and len(report["model_id"]) == 1
    # read the job's rows independently: each linked image sits in a folder named after its true class
    rows = pl.read_parquet(str(tmp_path / "out" / "timelines" / "**" / "*.parquet"))
    truth = [os.path.basename(os.path.dirname(u)) for u in rows["video_uri"].to_list()]
    correct = sum(t == lab for t, lab in zip(truth, rows["label"].to_list()))
    assert report["accuracy"] == round(correct / n, 4), (report, correct)
    assert agrees(report, report["accuracy"]) and not agrees(report, report["accuracy"] - 0.02)
    assert not agrees({**report, "missing": 1}, report["accuracy"])
