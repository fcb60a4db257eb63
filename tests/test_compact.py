"""Compaction merges parts without changing query results, and a killed compaction is recovered."""
import shutil

import numpy as np
import polars as pl

from cliper_batch import compact, query
from cliper_batch import rows
from cliper_batch.sampling import plan_segments
from cliper_batch.types import VideoInfo, VideoOutcome, VideoRef
from cliper_batch.writer import OutputWriter, recover_output

CLASSES = ("neutral", "happy", "sad")


def write_run(out, run_id, n_videos, seed):
    rng = np.random.default_rng(seed)
    w = OutputWriter(out, CLASSES, run_id=run_id, model_id="m", config_hash="c", videos_per_part=1)
    for i in range(n_videos):
        ref = VideoRef(f"{i:016x}", f"/v/{i}.mp4", fingerprint=f"{seed}")
        segs = plan_segments(4.0, 2.0, 1)
        seg = rows.segment_rows(ref, segs, np.zeros((2, 1, 2, 2, 3), np.uint8))
        seg = {k: v for k, v in seg.items() if k != "crops"}
        p = rng.dirichlet(np.ones(3), size=2).astype(np.float32)
        seg.update(probs=p, descriptor=np.zeros(2, np.int16))
        w.add_batch(seg)
        o = rows.outcome_row(VideoOutcome(ref, "ok", info=VideoInfo(4.0, 25.0, 8, 8, "h264"), n_segments=2), (1, 2, 2, 3))
        o = {k: v for k, v in o.items() if k != "crops"}
        o.update(probs=np.zeros((1, 3), np.float32), descriptor=np.zeros(1, np.int16))
        w.add_batch(o)
    w.close()


def snapshot(out):
    cur = query.scan_timelines(out).collect().sort("video_id", "segment_index", "run_id")
    raw = query.scan_timelines(out, current_only=False).collect().sort("video_id", "segment_index", "run_id")
    vids = query.scan_videos(out).collect().sort("video_id", "run_id")
    return cur, raw, vids


def parts(path, table):
    return sorted(p.name for p in (path / table).rglob("*.parquet"))


def test_compaction_keeps_query_results(tmp_path):
    out = str(tmp_path / "out")
    write_run(out, "20260101T000000Z-000001", 5, seed=1)
    write_run(out, "20260102T000000Z-000002", 3, seed=2)  # re-annotates videos 0..2
    before = snapshot(out)
    assert len(parts(tmp_path / "out", "videos")) == 8
    r = compact.compact(out)
    assert r.runs_compacted == ["20260101T000000Z-000001", "20260102T000000Z-000002"]
    assert parts(tmp_path / "out", "videos") == ["part-00000-00002.parquet", "part-00000-00004.parquet"]
    assert parts(tmp_path / "out", "timelines") == parts(tmp_path / "out", "videos")
    after = snapshot(out)
    for a, b in zip(before, after):
        assert a.equals(b)
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
    # killed after the merged timelines part only: it is an orphan, the originals stay
    out2 = tmp_path / "out2"
    write_run(str(out2), run, 4, seed=3)
    shutil.copy(shadow / "timelines" / run / merged, out2 / "timelines" / run / merged)
    rec = recover_output(str(out2), current_run_id="x")
    assert [p.split("/")[-1] for p in rec.orphan_parts_removed] == [merged]
    assert snapshot(str(out2))[0].equals(before[0])


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "out")
    write_run(out, "20260101T000000Z-000001", 3, seed=4)
    assert compact.main([out]) == 0
    assert "3 manifest parts -> 1" in capsys.readouterr().out
    assert pl.scan_parquet(str(tmp_path / "out" / "timelines" / "**" / "*.parquet")).collect().height == 6
