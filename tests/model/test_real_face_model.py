"""The shipped real-face model (models/cliper-fer2013.safetensors): what it is, and what it says about a real face.

The model card (docs/models.md) and its evaluation record (docs/models/fer2013-eval.json, written by
scripts/build_real_model.sh) must describe the file that ships: same model id, same numbers. The real
face is NASA's public-domain portrait of a smiling astronaut (scikit-image), as a moving H.264 and VP9
video annotated by the real job with its defaults (no --model) on the embedded Ray.
"""
from __future__ import annotations

import json
import os

import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.shell.annotate_cli import main as annotate_main
from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.model.checkpoint import read_checkpoint_header
from cliper_batch.model.spec import DEFAULT_MODEL, builtin_model_path

from realfaces import write_astronaut_video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = builtin_model_path("fer2013")
CARD = os.path.join(REPO, "docs", "models.md")
EVAL = os.path.join(REPO, "docs", "models", "fer2013-eval.json")


def test_the_default_model_is_the_shipped_real_face_model():
    assert DEFAULT_MODEL == "builtin:fer2013"
    assert SHIPPED.is_file() and os.path.samefile(SHIPPED, os.path.join(REPO, "models", "cliper-fer2013.safetensors"))
    assert SHIPPED.stat().st_size <= 16 * 2**20


def test_model_card_describes_the_file_that_ships():
    h = read_checkpoint_header(str(SHIPPED))
    cfg = h.config
    assert set(h.classes) == set(CANONICAL_CLASSES)
    assert cfg["grey"] is True and h.image_size == 48
    assert -0.1 <= h.face_margin <= 0.1  # FER2013's crops are about the detector's box (docs/models.md)
    assert cfg["calibration"] != 1.0
    ev = json.load(open(EVAL))
    assert ev["model_id"] == h.model_id
    stored = cfg["extra"]["evaluation"]
    assert stored["accuracy"] == ev["accuracy"] and stored["temperature"] == cfg["calibration"]
    card = open(CARD, encoding="utf-8").read()
    assert h.model_id in card
    assert f"{ev['accuracy']:.3f}" in card and f"{ev['ece_after']:.3f}" in card
    assert "no explicit licence" in card


@pytest.mark.slow
def test_a_smiling_real_face_is_happy_with_the_default_model(ray_runtime, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_astronaut_video(str(videos / "astronaut.mp4"))
    write_astronaut_video(str(videos / "astronaut.webm"), codec="libvpx-vp9")
    out = str(tmp_path / "out")
    assert annotate_main(["--input", str(videos), "--output", out]) == 0  # no --model: the shipped model
    v = query.scan_videos(out).collect()
    assert v["status"].to_list() == ["ok", "ok"]
    assert set(v["model_id"].to_list()) == {read_checkpoint_header(str(SHIPPED)).model_id}
    t = query.scan_timelines(out).collect()
    assert t.height >= 4
    per_video = t.group_by("video_uri").agg(pl.col("track_id").n_unique().alias("tracks"))
    assert per_video["tracks"].to_list() == [1, 1]  # one person, one stable track
    happy = (t["label"] == "happy").mean()
    assert happy >= 0.75, t.select("video_uri", "segment_index", "label", "confidence")
    assert t.filter(pl.col("label") == "happy")["confidence"].median() >= 0.5
