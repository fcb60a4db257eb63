"""bench/vs_fer.py's videos and bookkeeping: faces that move every frame, a corpus of distinct videos, the matched rate.

The peers run only where their venvs exist (bench/setup_fer.sh, bench/setup_pyemotion.sh);
those tests are skipped elsewhere and say which venv is missing. No engine run here.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess

import av
import numpy as np
import pytest

from bench import vs_fer
from bench.common import moving_faces_shots, moving_faces_truth, write_moving_faces_corpus, write_moving_faces_video

W, H, FPS = 640, 360, 25
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FER_PY = os.path.join(ROOT, "bench", ".fer-venv", "bin", "python")
PYEMOTION_PY = os.path.join(ROOT, "bench", ".pyemotion-venv", "bin", "python")


def centre_and_height(box):
    x0, y0, x1, y1 = box
    return ((x0 + x1) / 2, (y0 + y1) / 2), y1 - y0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_faces_move_and_change_size_every_frame_inside_the_frame(seed):
    shots = moving_faces_shots(seed, 60.0, (W, H))
    assert len(shots) >= 8, "a 60 s video has cuts"
    assert {len(s.faces) for s in shots} == {1, 2}, "parts with two faces and parts with one"
    assert shots[0].start == 0.0 and shots[-1].end == 60.0
    assert all(a.end == b.start for a, b in zip(shots, shots[1:]))
    prev = None
    for i in range(60 * FPS):
        t = i / FPS
        faces = moving_faces_truth(t, seed)
        shot = next(s for s in shots if s.start <= t < s.end)
        assert len(faces) == len(shot.faces)
        for _, _, (x0, y0, x1, y1), roll, yaw in faces:
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
            assert abs(roll) <= 15 and abs(yaw) <= 0.35
        if prev is not None and prev[0] is shot:  # same shot: every face moved and changed size since the last frame
            for (_, who0, b0, r0, _), (_, who1, b1, r1, _) in zip(prev[1], faces):
                assert who0 == who1
                (c0, h0), (c1, h1) = centre_and_height(b0), centre_and_height(b1)
                assert math.dist(c0, c1) > 0.1, (seed, i)
                assert abs(h1 - h0) > 0.05, (seed, i)
        prev = (shot, faces)
    # over a shot the change is large, not a jitter: some face crosses >= 40 px and grows or shrinks >= 10%
    big = [f for s in shots for f in s.faces if math.dist(f.c0, f.c1) >= 40 and abs(f.h1 - f.h0) >= 0.1 * min(f.h0, f.h1)]
    assert len(big) >= len(shots) // 2


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vsfer") / "moving_000.mp4")
    return path, write_moving_faces_video(path, seed=0, seconds=2.0)


def test_moving_faces_video_decodes_and_its_frames_change(video):
    path, truth = video
    assert truth["frames"] == 2 * FPS and truth["kind"] == "moving_faces" and truth["seed"] == 0
    assert truth["face_tracks"] == sum(truth["faces_per_shot"])
    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 2 * FPS and frames[0].shape == (H, W, 3)
    for i in range(len(frames) - 1):
        faces = moving_faces_truth(i / FPS, 0, 2.0)
        x0, y0, x1, y1 = (int(v) for v in faces[0][2])
        a, b = frames[i][y0:y1, x0:x1].astype(int), frames[i + 1][y0:y1, x0:x1].astype(int)
        assert np.abs(a - b).mean() > 0.5, f"frame {i}: the face did not move"


def test_corpus_is_distinct_videos(tmp_path):
    out = write_moving_faces_corpus(str(tmp_path), n=3, seconds=0.4, jobs=1, seed=5)
    assert [t["seed"] for _, t in out] == [5, 6, 7]
    digests = {hashlib.sha256(open(p, "rb").read()).hexdigest() for p, _ in out}
    assert len(digests) == 3
    boxes = [moving_faces_truth(0.0, t["seed"], t["seconds"])[0][2] for _, t in out]
    assert len(set(boxes)) == 3
    for p, t in out:
        with av.open(p) as c:
            assert sum(1 for _ in c.decode(video=0)) == t["frames"] == 10


def test_matched_rate_and_frequency_order():
    assert vs_fer.matched_frequency(25) == 6  # 8 frames per 2 s segment = 4 frames/s ~ every 6th of 25
    assert vs_fer._frequencies("1,matched", 6, "--frequencies") == [6, 1]
    assert vs_fer._frequencies("matched", 6, "--x") == [6]
    with pytest.raises(SystemExit):
        vs_fer._frequencies("0", 6, "--x")


def test_peer_counts_against_truth():
    faces_at = {"a.mp4": lambda t: 2 if t < 0.5 else 1}
    r = vs_fer.peer_counts([{"path": "a.mp4", "faces_per_frame": [2, 1, 1, 0, 1]}], 6, faces_at)  # frames 0, 6, 12, 18, 24
    assert r == {"frames": 5, "faces": 5, "true_faces": 8, "frames_with_a_face": 4, "frames_with_two_faces": 1,
                 "true_frames_with_two_faces": 3, "faces_per_frame_max": 2}


def _peer_json(cmd: list[str], cwd: str) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists(FER_PY), reason="no bench/.fer-venv (bench/setup_fer.sh)")
def test_fer_script_analyses_every_nth_frame_of_each_video(video, tmp_path):
    path, _ = video
    r = _peer_json([FER_PY, "-c", vs_fer.FER_SCRIPT, "6", str(tmp_path), path, path], str(tmp_path))
    assert [v["path"] for v in r["videos"]] == [path, path]
    assert all(len(v["faces_per_frame"]) == 9 for v in r["videos"])  # frames 0, 6, ..., 48 of 50


@pytest.mark.skipif(not os.path.exists(PYEMOTION_PY), reason="no bench/.pyemotion-venv (bench/setup_pyemotion.sh)")
def test_pyemotion_script_analyses_every_nth_frame_and_returns_one_label_per_frame(video, tmp_path):
    path, _ = video
    r = _peer_json([PYEMOTION_PY, vs_fer.PYEMOTION_SCRIPT, "--every", "6", path, path], str(tmp_path))
    assert r["every"] == 6 and r["version"] == "1.0.0"
    for v in r["videos"]:
        assert v["frames_read"] == 50 and len(v["faces_per_frame"]) == 9
        assert sum(v["labels"].values()) == 9  # one label per analysed frame, however many faces
