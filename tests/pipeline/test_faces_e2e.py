"""--faces detect end to end: two people, then a hard cut to a third; per-track timelines through real Ray."""
import json

import numpy as np
import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.shell.annotate_cli import main as annotate_main
from cliper_batch.pipeline.run import config_hash
from cliper_batch.types import AnnotateConfig

from two_scene import H, W, truth, write_two_scene_video


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def people_run(ray_runtime, tiny_checkpoint, tmp_path_factory):
    """The two-scene video annotated once with the defaults (detection stride 4): (output dir, the job's arguments)."""
    corpus = tmp_path_factory.mktemp("people")
    write_two_scene_video(str(corpus / "people.mp4"))
    out = tmp_path_factory.mktemp("people_out") / "out"
    args = ["--input", str(corpus), "--output", str(out), "--model", tiny_checkpoint, "--faces", "detect",
            "--segment-seconds", "1", "--frames-per-segment", "4", "--batch-size", "4"]
    assert annotate_main(args) == 0
    return out, args


def test_per_track_timelines_reset_at_the_cut(people_run):
    out, _ = people_run
    default = pl.col("config_hash") == config_hash(AnnotateConfig(segment_seconds=1.0, frames_per_segment=4))
    v = query.scan_videos(str(out)).filter(default).collect().row(0, named=True)
    assert v["status"] == "ok" and v["n_tracks"] == 3

    tl = query.scan_timelines(str(out)).filter(default).collect().sort("segment_index", "track_id")
    by_seg = {s: sorted(g["track_id"].to_list()) for (s,), g in tl.group_by("segment_index")}
    assert by_seg == {0: [1, 2], 1: [1, 2], 2: [3], 3: [3]}  # ids by first appearance; new id after the cut
    assert tl.filter(pl.col("frames_with_face").is_null()).height == 0
    assert tl["frames_with_face"].min() >= 3 and tl["frames_with_face"].max() <= 4
    assert tl["face_score"].min() > 0.9
    p = tl.select(pl.selectors.starts_with("p_")).to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)

    # the median box of each (track, segment) lies on one face drawn there, and a track stays with its person
    person_of: dict[int, set[int]] = {}
    for r in tl.iter_rows(named=True):
        mid = (r["start_s"] + r["end_s"]) / 2
        got = (r["face_x0"] * W, r["face_y0"] * H, r["face_x1"] * W, r["face_y1"] * H)
        scores = [iou(got, box) for _, _, box in truth(mid)]
        best = int(np.argmax(scores))
        assert scores[best] > 0.4, (r["track_id"], r["segment_index"], got, truth(mid))
        person_of.setdefault(r["track_id"], set()).add(best + (10 if mid >= 2.0 else 0))
    assert all(len(p) == 1 for p in person_of.values()), person_of
    assert person_of[1] != person_of[2]



def test_the_detection_stride_is_part_of_the_configuration(people_run):
    """The default run is done, so running it again annotates nothing. ``--detect-stride 1`` (every frame:
    what versions before the default of 4 computed, under the same hash as then) is another configuration
    and annotates the video again, next to the default's rows."""
    out, args = people_run
    assert annotate_main(args) == 0
    assert annotate_main([*args, "--detect-stride", "1"]) == 0
    runs = sorted((json.loads(f.read_text()) for f in (out / "runs").glob("*.json")), key=lambda r: r["started_at"])
    assert [(r["config"]["detect_stride"], r["plan"]["skipped_done"]) for r in runs] == [(4, 0), (4, 1), (1, 0)]
    default = config_hash(AnnotateConfig(segment_seconds=1.0, frames_per_segment=4))
    every_frame = config_hash(AnnotateConfig(segment_seconds=1.0, frames_per_segment=4, detect_stride=1))
    assert [r["config_hash"] for r in runs] == [default, default, every_frame] and default != every_frame
    current = query.scan_videos(str(out), current_only=True).collect()
    assert sorted(current["config_hash"].to_list()) == sorted([default, every_frame])
    assert set(current["status"].to_list()) == {"ok"} and set(current["n_tracks"].to_list()) == {3}


def test_min_face_bounds_the_faces_found_and_is_its_own_configuration(people_run):
    """``--min-face`` reaches the detector in the workers: under the drawn faces' size (80x100 px) the same three
    tracks are found; over it, none. Each value is its own configuration (annotated anew, its own hash)."""
    out, args = people_run
    base = dict(segment_seconds=1.0, frames_per_segment=4)
    for min_face, tracks in ((40, 3), (160, 0)):
        assert annotate_main([*args, "--min-face", str(min_face)]) == 0
        h = config_hash(AnnotateConfig(**base, min_face=min_face))
        v = query.scan_videos(str(out)).filter(pl.col("config_hash") == h).collect()
        assert v.height == 1 and v["status"].to_list() == ["ok"] and v["n_tracks"].to_list() == [tracks]
        n_rows = query.scan_timelines(str(out)).filter(pl.col("config_hash") == h).collect().height
        assert (n_rows > 0) == (tracks > 0)
    assert annotate_main([*args, "--min-face", "11"]) != 0  # under the detector's smallest cell: refused
