"""The current view: after a run, plain scans of timelines/ and videos/ give exactly the current rows;
superseded rows are kept under history/; a kill at any step of a commit is recovered."""
import shutil

import numpy as np
import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.output.recovery import recover_output
from cliper_batch.output.writer import OutputWriter
from cliper_batch.types import VideoRef
from cliper_batch.uris import filesystem_for

from synthetic_output import CLASSES, feed_video, write_run

RUN1, RUN2 = "20260101T000000Z-000001", "20260102T000000Z-000002"
SEG_KEY = ["video_id", "track_id", "segment_index", "run_id"]


def plain(out, table):
    return pl.scan_parquet(str(out / table / "**" / "*.parquet")).collect()


def check_invariants(out):
    """What must hold after any finished run or recovery."""
    cur = query.scan_timelines(str(out)).collect().sort(SEG_KEY)
    assert plain(out, "timelines").select(cur.columns).sort(SEG_KEY).equals(cur)
    vids = plain(out, "videos")
    assert vids.select("video_id", "model_id", "config_hash").is_duplicated().sum() == 0  # one current row per video
    latest = query.scan_videos(str(out)).sort("run_id").group_by("video_id").agg(pl.col("run_id").last()).collect()
    assert dict(latest.iter_rows()) == dict(vids.select("video_id", "run_id").iter_rows())
    every_tl = query.scan_timelines(str(out), current_only=False).collect()
    assert every_tl.select(SEG_KEY).is_duplicated().sum() == 0  # history + current: every row exactly once
    every_v = query.scan_videos(str(out)).collect()
    assert every_v.select("video_id", "run_id").is_duplicated().sum() == 0
    return every_tl, every_v


def test_reannotated_and_failed_videos_leave_a_plain_scan_current(tmp_path):
    out = tmp_path / "out"
    write_run(out, RUN1, 5, seed=1, videos_per_part=2)
    # run 2: videos 0, 2 changed and re-annotated; video 1 changed and its new version fails
    write_run(out, RUN2, 3, seed=2, failed={1: "VideoTimeout"}, videos_per_part=2)
    every_tl, every_v = check_invariants(out)
    cur = plain(out, "timelines")
    assert dict(cur.group_by("video_id").agg(pl.col("run_id").first()).iter_rows()) == {
        f"{0:016x}": RUN2, f"{1:016x}": RUN1, f"{2:016x}": RUN2, f"{3:016x}": RUN1, f"{4:016x}": RUN1,
    }  # video 1 keeps its last good annotation
    vids = plain(out, "videos").sort("video_id")
    assert vids["run_id"].to_list() == [RUN2, RUN2, RUN2, RUN1, RUN1]
    assert vids.filter(pl.col("video_id") == f"{1:016x}")[["status", "error_class", "attempt"]].row(0) == ("failed", "transient", 1)
    assert every_tl.height == 5 * 2 + 2 * 2 and every_v.height == 5 + 3  # nothing deleted
    assert plain(out / "history", "timelines").height == 4 and plain(out / "history", "videos").height == 3


def _killed_at(k):
    class Killed(BaseException):
        pass

    calls = {"n": 0}

    def wrap(fn):
        def inner(*a, **kw):
            if calls["n"] == k:
                raise Killed(f"killed before filesystem step {k}")
            calls["n"] += 1
            return fn(*a, **kw)

        return inner

    return Killed, calls, wrap


def test_a_kill_at_every_step_of_a_commit_is_recovered(tmp_path, monkeypatch):
    template = tmp_path / "template"
    write_run(template, RUN1, 5, seed=1, videos_per_part=2)
    fs, _ = filesystem_for(str(template))
    total = None
    for k in range(200):
        out = tmp_path / f"out{k}"
        shutil.copytree(template, out)
        Killed, calls, wrap = _killed_at(k)
        with monkeypatch.context() as m:
            m.setattr(fs, "mv", wrap(fs.mv))
            m.setattr(fs, "rm", wrap(fs.rm))
            try:
                write_run(out, RUN2, 3, seed=2, failed={1: "VideoTimeout"}, videos_per_part=2)
                total = calls["n"]
            except Killed:
                pass
        recover_output(str(out), current_run_id="20260103T000000Z-000003")
        every_tl, every_v = check_invariants(out)
        assert every_tl.filter(pl.col("run_id") == RUN1).height == 10 and every_v.filter(pl.col("run_id") == RUN1).height == 5
        if total is not None:
            break
        shutil.rmtree(out)
    assert total is not None and total > 6, total  # the commit took this many steps; a kill before each was tried


def test_writer_is_a_context_manager_that_keeps_finished_videos(tmp_path):
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    refs = [VideoRef(f"{i:016x}", f"/v/{i}.mp4", fingerprint="1") for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        with OutputWriter(str(out), CLASSES, run_id=RUN1, model_id="m", config_hash="c", expected=refs) as w:
            feed_video(w, refs[0], rng)
            feed_video(w, refs[1], rng, failed="DecodeError")
            raise KeyboardInterrupt
    v = plain(out, "videos").sort("video_id")
    assert v["status"].to_list() == ["ok", "failed"] and v["error_class"].to_list() == [None, "data"]
    assert w.stats.videos_dropped == 1  # video 2 never reported: not recorded, the next run does it
