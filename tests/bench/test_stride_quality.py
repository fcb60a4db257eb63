"""bench/stride_quality.py: the real job at strides 1 and 4 on two tiny hidden-seed videos, scored; the real-face videos; the verdict.

No FER2013 image is used: the real-face tests write random 48x48 grey images in a FER2013-like
class-folder tree (augmented ``*.jpgN.jpg`` copies included, which must never be picked).
"""
from __future__ import annotations

import os

import av
import numpy as np
import pytest
from PIL import Image

from bench import stride_quality as sq

FER_CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


@pytest.mark.ray
def test_strides_1_and_4_through_the_real_job(ray_runtime, tmp_path):
    vdir = str(tmp_path / "videos")
    videos = sq.synthetic_videos(vdir, 2, 6.0)
    sec = sq.run_section("synthetic", videos, vdir, str(tmp_path / "out"), sq.DEMO_MODEL, [1, 4], min_faces=(20, 40))
    one, four, one_40, four_40 = sec["rows"]
    assert [(r["min_face"], r["stride"]) for r in sec["rows"]] == [(20, 1), (20, 4), (40, 1), (40, 4)]
    for r in (one_40, four_40):  # a larger minimum face (the job's default): judged against stride 1 at 20 px
        assert r["replay_matches_job"] == 1.0, r  # the job ran with --min-face 40 as the replay did
        assert r["accuracy_minus_stride1_points"] == pytest.approx(100 * (r["accuracy"] - one["accuracy"]))
    assert one_40["detector_frames"] == one["detector_frames"]  # stride 1 detects every frame at any size bound
    for r in (one, four):
        assert r["face_segments"] >= 3, r  # 2 videos x 3 segments, one or two faces each, some left out at cuts
        assert 0.0 <= r["accuracy"] <= r["accuracy_found"] <= 1.0 and 0.0 <= r["faces_found"] <= 1.0, r
        assert r["correct"] <= r["found"] <= r["face_segments"], r
        assert 0.0 <= r["track_iou_share_05"] <= 1.0 and 0.0 <= r["track_iou_median"] <= 1.0, r
        assert r["face_frames"] >= r["face_segments"], r
        assert r["replay_matches_job"] == 1.0, r  # the replayed pass 1 plans exactly the job's rows and boxes
        assert r["wall_s"] > 0 and r["video_seconds"] == pytest.approx(12.0), r
    assert one["detector_frames"] == one["sampled_frames"] == 2 * 24  # stride 1: every sampled frame
    assert four["sampled_frames"] == one["sampled_frames"]
    assert one["detector_frames"] >= four["detector_frames"], (one, four)
    # the shipped demo model on people it never saw, every frame detected: a working pipeline, not chance (1/7)
    assert one["accuracy"] >= 0.6 and one["track_iou_median"] >= 0.5 and one["track_iou_share_05"] >= 0.5, one
    assert one["accuracy_minus_stride1_points"] == 0.0
    assert four["accuracy_minus_stride1_points"] == pytest.approx(100 * (four["accuracy"] - one["accuracy"]))
    assert four["gained_vs_stride1"] - four["lost_vs_stride1"] == four["correct"] - one["correct"]
    table = sq.markdown_table({"synthetic": sec})
    assert table.count("\n| synthetic | ") == 4 and "| synthetic | 20 | 4 | " in table and "| synthetic | 40 | 4 | " in table
    v = sq.verdict({"synthetic": sec})  # the job's default: stride 4 at 40 px
    assert v["default_stride"] == 4 and v["default_ok"] == (-four_40["accuracy_minus_stride1_points"] <= 0.5 + 1e-9)
    assert v["min_face_loss_points"]["min_face 20, stride 4"] == pytest.approx(-four["accuracy_minus_stride1_points"])


def fer_tree(root, per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c in FER_CLASSES:
        d = os.path.join(root, "test", c)
        os.makedirs(d)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(os.path.join(d, f"PrivateTest_{i}.jpg"))
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(os.path.join(d, "PrivateTest_0.jpg3.jpg"))  # a copy


def test_real_face_videos_hold_one_expression_per_run_and_move_every_frame(tmp_path):
    fer_tree(str(tmp_path / "fer"))
    images = sq.real_face_images(str(tmp_path / "fer"))
    assert images == sq.real_face_images(str(tmp_path / "fer" / "test"))  # root or split folder
    assert sorted(images) == sorted(["anger" if c == "angry" else c for c in FER_CLASSES])
    assert all(len(v) == 3 and not any(p.endswith(".jpg3.jpg") for p in v) for v in images.values())
    script = sq.real_face_script(images, 7, 30.0)
    assert script == sq.real_face_script(images, 7, 30.0)  # seeded
    assert script.runs[0][0] == 0.0 and script.runs[-1][1] == 30.0
    for (s0, e0, l0, _), (s1, _, l1, _) in zip(script.runs, script.runs[1:]):
        assert e0 == s1 and l0 != l1 and round(s1 / 2.0) * 2.0 == s1 and (e0 - s0) in (2.0, 4.0)
    prev = None
    for i in range(30 * 25):
        t = i / 25
        (key, label, box), = script.faces_at(t)
        run = script.runs[key]
        assert run[0] <= t < run[1] and label == run[2]
        x0, y0, x1, y1 = box
        assert 0 <= x0 and x1 <= 640 and 0 <= y0 and y1 <= 360 and 120 <= x1 - x0 == y1 - y0 <= 200
        if prev is not None and i % 5 == 0:
            assert box != prev
        prev = box if i % 5 == 0 else prev

    short = sq.real_face_script(images, 8, 4.0)
    path = str(tmp_path / "real.mp4")
    assert sq.write_real_face_video(path, short, 8) == 100
    with av.open(path) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    x0, y0, x1, y1 = (int(v) for v in short.box(0.0))
    face = np.asarray(Image.open(short.runs[0][3]).convert("L").resize((x1 - x0, y1 - y0), Image.BICUBIC)).astype(int)
    inner = frame[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4]
    assert np.abs(inner.mean(axis=2) - face[4:-4, 4:-4]).mean() < 25  # the face is where the truth says (H.264 blurs noise)


def section(losses: dict[int, float]) -> dict:
    return {"rows": [{"stride": s, "accuracy_minus_stride1_points": -loss} for s, loss in losses.items()]}


def test_verdict_takes_the_worst_section_and_names_the_largest_stride_within_tolerance():
    v = sq.verdict({"a": section({1: 0.0, 2: 0.0, 4: 0.4, 8: 3.0}), "b": section({1: 0.0, 2: -1.0, 4: 0.2, 8: 0.0})})
    assert v["default_ok"] is True and v["largest_ok_stride"] == 4 and v["loss_points"][4] == pytest.approx(0.4)
    v = sq.verdict({"a": section({1: 0.0, 2: 0.3, 4: 0.4, 8: 0.0}), "b": section({1: 0.0, 2: 0.0, 4: 0.6, 8: 0.5})})
    assert v["default_ok"] is False and v["largest_ok_stride"] == 8 and v["largest_stride_all_below_ok"] == 2
    assert "too much" in v["text"]
