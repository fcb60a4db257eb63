"""End to end: the real annotate job on generated H.264/VP9 videos through a real (embedded) Ray runtime.

Checks the Parquet by content: one row per planned segment, timestamps, probabilities,
and the scores themselves against scoring the same frames directly with the model.
"""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from cliper_batch.output import query, schema
from cliper_batch.shell.annotate_cli import main as annotate_main
from cliper_batch.model.factory import load_model
from cliper_batch.decode.testvideos import VideoSpec, write_video

from expected_scores import SEG, T, expected_probs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    specs = {
        "a.mp4": VideoSpec(codec="h264", fps=25, duration_s=3.0, width=96, height=64, seed=1),
        "b.webm": VideoSpec(codec="vp9", fps=24, duration_s=2.5, width=80, height=80, seed=2),
        "sub dir/c.mp4": VideoSpec(codec="h264", fps=30, duration_s=1.2, width=64, height=96, seed=3),
    }
    for name, spec in specs.items():
        os.makedirs(os.path.dirname(str(d / name)), exist_ok=True)
        write_video(str(d / name), spec)
    (d / "broken.mp4").write_bytes(os.urandom(5000))  # not a video
    (d / "empty.webm").write_bytes(b"")
    good = open(d / "a.mp4", "rb").read()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return d, specs


def test_annotate_corpus_end_to_end(ray_runtime, corpus, tiny_checkpoint, tmp_path):
    d, specs = corpus
    out = str(tmp_path / "ann")
    rc = annotate_main(
        ["--input", str(d), "--output", out, "--model", tiny_checkpoint, "--segment-seconds", str(SEG),
         "--frames-per-segment", str(T), "--batch-size", "3", "--decoder", "pyav", "--faces", "none"]
    )
    assert rc == 0

    videos = query.scan_videos(out).collect()
    status = dict(zip([os.path.relpath(u, d) for u in videos["video_uri"]], videos["status"]))
    assert status == {"a.mp4": "ok", "b.webm": "ok", "sub dir/c.mp4": "ok",
                      "broken.mp4": "failed", "empty.webm": "failed", "truncated.mp4": "failed"} or (
        # a truncated MP4 whose moov atom survived may still decode its first part: either outcome is a documented one
        status.pop("truncated.mp4") in ("ok", "failed")
        and status == {"a.mp4": "ok", "b.webm": "ok", "sub dir/c.mp4": "ok", "broken.mp4": "failed", "empty.webm": "failed"}
    )
    failed = videos.filter(videos["status"] == "failed")
    assert all(failed["error"].to_list()) and all(failed["error_type"].to_list())

    tl = query.scan_timelines(out).collect()
    loaded = load_model(tiny_checkpoint)
    classes = loaded.classes
    for name, spec in specs.items():
        path = str(d / name)
        rows = tl.filter(tl["video_uri"] == path).sort("segment_index")
        segs, probs = expected_probs(loaded.model, path, loaded.image_size)
        assert rows.height == len(segs), name
        assert rows["segment_index"].to_list() == list(range(len(segs)))
        assert rows["start_s"].to_list() == pytest.approx([s.start_s for s in segs])
        assert rows["end_s"].to_list() == pytest.approx([s.end_s for s in segs])
        assert rows["end_s"].max() == pytest.approx(spec.duration_s, abs=0.05)
        p = rows.select([f"p_{c}" for c in classes]).to_numpy()
        assert p.sum(axis=1) == pytest.approx(np.ones(len(segs)), abs=1e-4)
        np.testing.assert_allclose(p, probs, atol=2e-4)  # same frames, same model, same scores
        assert rows["label"].to_list() == [classes[i] for i in probs.argmax(1)]
        assert rows["confidence"].to_numpy() == pytest.approx(probs.max(1), abs=2e-4)
        assert set(rows["track_id"].to_list()) == {0}
        assert rows["model_id"].unique().to_list() == [loaded.model_id]
    # the files carry the documented schema
    f = next((tmp_path / "ann" / "timelines").rglob("*.parquet"))
    assert pq.read_schema(f).remove_metadata() == schema.timeline_schema(classes).remove_metadata()
    runs = list((tmp_path / "ann" / "runs").glob("*.json"))
    assert len(runs) == 1
    import json

    record = json.loads(runs[0].read_text())
    assert record["status"] == "finished" and record["scoring"]["backends"] == ["eager@cpu"]
    assert record["summary"]["videos_ok"] == 3 and 0 < record["scoring"]["busy_fraction"] <= 1.0 + 1e-6
    # where the workers' and the driver's seconds went (--faces none: no detection)
    stages = record["stage_seconds"]
    assert set(stages) == {"decode", "detect", "crop", "score", "write"}
    assert stages["decode"] > 0 and stages["score"] > 0 and stages["write"] > 0 and stages["detect"] == 0
    assert stages["score"] == pytest.approx(record["scoring"]["busy_s"], rel=1e-3, abs=1e-3)


def test_dali_cpu_decoder_on_vp9_gives_same_scores(ray_runtime, corpus, tiny_checkpoint, tmp_path):
    d, _ = corpus
    out_py, out_dali = str(tmp_path / "py"), str(tmp_path / "dali")
    args = ["--input", str(d / "b.webm"), "--model", tiny_checkpoint, "--segment-seconds", str(SEG), "--frames-per-segment", str(T), "--faces", "none"]
    assert annotate_main(args + ["--output", out_py, "--decoder", "pyav"]) == 0
    assert annotate_main(args + ["--output", out_dali, "--decoder", "dali"]) == 0
    a = query.scan_timelines(out_py).sort("segment_index").collect()
    b = query.scan_timelines(out_dali).sort("segment_index").collect()
    assert query.scan_videos(out_dali).collect()["decoder"].to_list() == ["dali-cpu"]
    assert a.height == b.height > 0
    assert (a["label"] == b["label"]).mean() >= 0.5
    np.testing.assert_allclose(a["confidence"].to_numpy(), b["confidence"].to_numpy(), atol=0.05)


def test_unusable_arguments_exit_non_zero(tmp_path, tiny_checkpoint, capsys):
    assert annotate_main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--model", tiny_checkpoint]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    write_video(str(tmp_path / "in" / "v.mp4"), VideoSpec(duration_s=1.0, width=64, height=64))
    assert annotate_main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "in" / "out"), "--model", tiny_checkpoint]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert annotate_main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--model", "nonsense-spec"]) == 2
    assert annotate_main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--model", tiny_checkpoint,
                          "--frames-per-segment", "0"]) == 2
