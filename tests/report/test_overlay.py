"""The annotated video: same frames and timing as the source, changed around the faces' boxes and nowhere else."""
from __future__ import annotations

import shutil

import av
import numpy as np
import polars as pl
import pytest

from annotated_people import annotated_people
from cliper_batch.output import query
from cliper_batch.report.overlay import main as overlay_main


@pytest.fixture(scope="module")
def people(ray_runtime, tiny_checkpoint, tmp_path_factory):
    return annotated_people(tmp_path_factory.getbasetemp(), tiny_checkpoint)


def frames(path: str) -> tuple[list[np.ndarray], list[float]]:
    with av.open(path) as c:
        s = c.streams.video[0]
        out = [(f.to_ndarray(format="rgb24").astype(np.int16), float(f.pts * s.time_base)) for f in c.decode(s)]
    t0 = out[0][1]
    return [f for f, _ in out], [t - t0 for _, t in out]


def test_overlay_draws_each_track_around_its_face_only(people, tmp_path, capsys):
    out = str(tmp_path / "annotated.mp4")
    assert overlay_main([people.output, people.video, "--out", out, "--crf", "12"]) == 0
    assert "3 face track(s)" in capsys.readouterr().out

    src, src_t = frames(people.video)
    dst, dst_t = frames(out)
    assert len(dst) == len(src) == 40 and np.allclose(dst_t, src_t, atol=1e-3)  # same frames, same timing
    rows = query.scan_timelines(people.output).filter(pl.col("video_uri") == people.video).collect()
    h, w = src[0].shape[:2]
    changed_frames = 0
    for f_src, f_dst, t in zip(src, dst, src_t):
        diff = np.abs(f_dst - f_src).max(axis=2)
        near = np.zeros((h, w), bool)  # the boxes of the segments around t, grown for the line and the label
        now = rows.filter((pl.col("start_s") <= t) & (pl.col("end_s") > t))
        for r in now.iter_rows(named=True):
            track = rows.filter((pl.col("track_id") == r["track_id"]) &
                                (pl.col("segment_index").is_between(r["segment_index"] - 1, r["segment_index"] + 1)))
            x0, y0 = track["face_x0"].min() * w, track["face_y0"].min() * h
            x1, y1 = track["face_x1"].max() * w, track["face_y1"].max() * h
            near[max(0, int(y0) - 22):int(y1) + 22, max(0, int(x0) - 6):int(max(x1, x0 + 130)) + 6] = True
            # the box outline is drawn: its top edge differs strongly from the source
            bx0, by0 = int(r["face_x0"] * w), int(r["face_y0"] * h)
            edge = diff[max(0, by0 - 6):by0 + 6, bx0 + 5:int(r["face_x1"] * w) - 5]
            assert edge.mean() > 25, (t, r["track_id"], edge.mean())
        assert len(now) >= 1
        changed_frames += 1
        # elsewhere only the re-encoding's noise
        assert diff[~near].mean() < 3 and np.percentile(diff[~near], 99.5) < 30, (t, diff[~near].mean())
    assert changed_frames == len(src)


def test_overlay_refuses_failed_moved_and_unknown_videos(people, tmp_path, capsys):
    out = str(tmp_path / "a.mp4")
    assert overlay_main([people.output, people.broken, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "failed with ProbeError" in err and "nothing to draw" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert overlay_main([str(empty), people.video, "--out", out]) == 2
    assert "no videos Parquet files" in capsys.readouterr().err

    vid = query.scan_videos(people.output).filter(pl.col("video_uri") == people.video).collect()["video_id"][0]
    moved = tmp_path / "elsewhere" / "people.mp4"
    moved.parent.mkdir()
    shutil.move(people.video, moved)
    try:
        assert overlay_main([people.output, people.video, "--out", out]) == 2
        assert "file not found (moved or deleted since it was annotated?)" in capsys.readouterr().err
        assert overlay_main([people.output, str(moved), "--out", out]) == 2
        err = capsys.readouterr().err
        assert people.video in err and vid in err and "--video-id" in err
        assert overlay_main([people.output, str(moved), "--video-id", vid, "--out", out]) == 0
        assert len(frames(out)[0]) == 40
    finally:
        shutil.move(moved, people.video)
    with open(out, "wb") as fh:  # a changed file is not drawn on with stale boxes
        fh.write(open(people.video, "rb").read() + b"\0" * 10)
    assert overlay_main([people.output, out, "--video-id", vid, "--out", str(tmp_path / "b.mp4")]) == 2
    assert "bytes when it was annotated" in capsys.readouterr().err
    assert not (tmp_path / "b.mp4").exists()


def test_track_path_follows_moves_holds_and_stops_at_gaps():
    from cliper_batch.report.overlay import TrackPath

    seg = pl.DataFrame({
        "start_s": [0.0, 1.0, 3.0], "end_s": [1.0, 2.0, 4.0], "label": ["happy", "sad", "fear"],
        "confidence": [0.9, 0.6, 0.7],
        "face_x0": [0.0, 0.2, 0.5], "face_y0": [0.0, 0.0, 0.5], "face_x1": [0.1, 0.3, 0.6], "face_y1": [0.1, 0.1, 0.6],
    })
    path = TrackPath(7, seg)
    at = lambda t: path.at(t, 100, 100)  # noqa: E731
    assert at(0.2).box == pytest.approx((0, 0, 10, 10))  # held before the first midpoint
    assert at(1.0).box == pytest.approx((10, 0, 20, 10)) and at(1.0).label == "sad"  # halfway between midpoints
    assert at(0.9).label == "happy" and at(0.9).confidence == pytest.approx(0.9)
    assert at(1.8).box == pytest.approx((20, 0, 30, 10))  # held after the run's last midpoint
    assert at(2.5) is None  # not seen in [2, 3): nothing drawn, no box dragged across the gap
    assert at(3.2).box == pytest.approx((50, 50, 60, 60)) and at(3.2).track_id == 7  # a new run starts on its own box
    assert at(4.0) is None and at(-0.1) is None
