"""Compaction merges parts without changing query results, and a killed compaction is recovered."""
import shutil

import polars as pl

from cliper_batch.output import compaction as compact, query
from cliper_batch.output.recovery import recover_output

from synthetic_output import write_run


def snapshot(out):
    cur = query.scan_timelines(out).collect().sort("video_id", "segment_index", "run_id")
    every = query.scan_timelines(out, current_only=False).collect().sort("video_id", "segment_index", "run_id")
    vids = query.scan_videos(out).collect().sort("video_id", "run_id")
    return cur, every, vids


def parts(path, table, base=""):
    return sorted(p.name for p in (path / base / table).rglob("*.parquet"))


def plain(path, table):
    return pl.scan_parquet(str(path / table / "**" / "*.parquet")).collect()


def test_compaction_keeps_query_results(tmp_path):
    out = str(tmp_path / "out")
    write_run(out, "20260101T000000Z-000001", 5, seed=1)
    write_run(out, "20260102T000000Z-000002", 3, seed=2)  # re-annotates videos 0..2
    before = snapshot(out)
    # run 2 superseded videos 0..2 of run 1: their one-video parts moved to history/ whole
    assert parts(tmp_path / "out", "videos") == [f"part-0000{i}.parquet" for i in range(5)]  # run 2: 0..2, run 1: 3, 4
    assert len(parts(tmp_path / "out", "videos", "history")) == 3
    r = compact.compact(out)
    assert r.runs_compacted == ["20260101T000000Z-000001", "20260102T000000Z-000002"]
    assert r.rows_retired == {}  # the runs' own commits had done it
    assert parts(tmp_path / "out", "videos") == ["part-00000-00002.parquet", "part-00003-00004.parquet"]
    assert parts(tmp_path / "out", "timelines") == parts(tmp_path / "out", "videos")
    after = snapshot(out)
    for a, b in zip(before, after):
        assert a.equals(b)
    assert plain(tmp_path / "out", "timelines").sort("video_id", "segment_index").equals(after[0].sort("video_id", "segment_index"))
    assert compact.compact(out).runs_compacted == []  # idempotent
    assert not (tmp_path / "out" / "_lock.json").exists()


def test_killed_compaction_is_recovered(tmp_path):
    out = tmp_path / "out"
    write_run(str(out), "20260101T000000Z-000001", 4, seed=3)
    before = snapshot(str(out))
    shadow = tmp_path / "shadow"
    shutil.copytree(out, shadow)
    compact.compact(str(shadow))
    merged = "part-00000-00003.parquet"
    run = "20260101T000000Z-000001"
    # killed after both merged parts were committed, before the originals were deleted
    for table in ("timelines", "videos"):
        shutil.copy(shadow / table / run / merged, out / table / run / merged)
    rec = recover_output(str(out), current_run_id="x")
    assert len(rec.orphan_parts_removed) == 8
    for a, b in zip(before, snapshot(str(out))):
        assert a.equals(b)
    # killed after the merged timelines part only: a merged part is complete, so it wins in its table
    out2 = tmp_path / "out2"
    write_run(str(out2), run, 4, seed=3)
    shutil.copy(shadow / "timelines" / run / merged, out2 / "timelines" / run / merged)
    rec = recover_output(str(out2), current_run_id="x")
    assert sorted(p.split("/")[-1] for p in rec.orphan_parts_removed) == [f"part-0000{i}.parquet" for i in range(4)]
    assert parts(out2, "timelines") == [merged] and len(parts(out2, "videos")) == 4
    for a, b in zip(before, snapshot(str(out2))):
        assert a.equals(b)


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "out")
    write_run(out, "20260101T000000Z-000001", 3, seed=4)
    assert compact.main([out]) == 0
    assert "3 manifest parts -> 1" in capsys.readouterr().out
    assert pl.scan_parquet(str(tmp_path / "out" / "timelines" / "**" / "*.parquet")).collect().height == 6
