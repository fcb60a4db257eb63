"""The streamed plan (issue 27): listing, diff and work list hold a bounded number of videos, whatever the corpus.

Not timed: the bounds are counted (chunks pulled from the listing ahead of the planner, videos
held by the work list), so a change that materialises the corpus again fails here.
"""
import json
import os

import numpy as np
import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.corpus.incremental import DoneState, PlanTotals, done_state, manifest_state, plan_chunks
from cliper_batch.corpus.listing import CHUNK, iter_videos, list_videos
from cliper_batch.output.writer import OutputWriter
from cliper_batch.pipeline import worklist
from cliper_batch.pipeline.worklist import WorkList
from cliper_batch.types import VideoRef
from cliper_batch.uris import normalized_id

from synthetic_output import CLASSES, write_run

RUN1 = "20260101T000000Z-000001"


def refs(lo, hi, fp="1:1"):
    return [VideoRef(video_id=normalized_id(f"/c/v{i:06d}.mp4"), uri=f"/c/v{i:06d}.mp4", size_bytes=1, mtime=1.0,
                     fingerprint=fp) for i in range(lo, hi)]


class CountingListing:
    """A listing of ``n`` videos in chunks of ``chunk``; records how far it ran ahead of the planner."""

    def __init__(self, n, chunk):
        self.n, self.chunk, self.pulled = n, chunk, 0

    def __iter__(self):
        for lo in range(0, self.n, self.chunk):
            self.pulled += 1
            yield refs(lo, min(self.n, lo + self.chunk))


def test_plan_streams_chunk_by_chunk_and_the_work_list_holds_a_bounded_window(tmp_path):
    listing = CountingListing(2_000, chunk=100)
    work = WorkList(str(tmp_path / "out"), "r1", in_memory=150)
    totals = PlanTotals()
    for i, plan in enumerate(plan_chunks(listing, DoneState.empty(), totals), start=1):
        assert listing.pulled == i  # the planner never pulls the listing ahead: one chunk in hand
        work.add(plan)
    work.close()
    assert (totals.listed, totals.todo, work.total) == (2_000, 2_000, 2_000)
    assert work.peak_held <= 150 + 100  # at most the in-memory bound plus one chunk, never the corpus
    assert work.spilled and len(work.files) == 2_000 // 200
    assert [r for c in work.chunks() for r in c] == refs(0, 2_000)  # written and read back in listing order
    with pytest.raises(RuntimeError):
        work.refs


def test_spilled_work_list_reads_back_as_blocks_of_the_block_size(tmp_path):
    """The Ray Data source of a spilled work list: one read task per file, its rows in blocks (run here, no cluster)."""
    from cliper_batch.pipeline.worklist import _source_class

    work = WorkList(str(tmp_path / "out"), "r1", in_memory=40)
    for plan in plan_chunks([refs(0, 50), refs(50, 90)], DoneState.empty(), PlanTotals()):
        work.add(plan)
    work.close()
    tasks = _source_class()(work.output_uri, {}, work.files, 7).get_read_tasks(1)
    assert [t.metadata.num_rows for t in tasks] == [50, 40]
    blocks = [b for t in tasks for b in t()]
    assert [b.num_rows for b in blocks] == [7] * 7 + [1] + [7] * 5 + [5]  # blocks never span two files
    assert [v for b in blocks for v in b.column("video_id").to_pylist()] == [r.video_id for r in refs(0, 90)]


def test_short_work_list_stays_in_memory(tmp_path):
    work = WorkList(str(tmp_path / "out"), "r1", in_memory=150)
    for plan in plan_chunks([refs(0, 100), refs(100, 150)], DoneState.empty(), PlanTotals()):
        work.add(plan)
    assert not work.close().spilled and work.refs == refs(0, 150) and not (tmp_path / "out").exists()


def test_limit_counts_across_chunks_and_done_videos_are_skipped(tmp_path):
    out = tmp_path / "out"
    write_run(out, RUN1, 5, seed=1)  # videos f"{i:016x}", fingerprint per synthetic_output
    done = pl.from_arrow(query.scan_videos(str(out)).select("video_id", "fingerprint").collect().to_arrow())
    listed = [VideoRef(video_id=v, uri=f"/c/{v}.mp4", fingerprint=fp) for v, fp in done.iter_rows()]
    listed += refs(0, 7)
    state = done_state(str(out), "m", "c")
    assert state.df.height == 5 and state.df.equals(DoneState.from_state(manifest_state(str(out), "m", "c")).df)
    totals = PlanTotals()
    todo = [r for p in plan_chunks([listed[:4], listed[4:8], listed[8:]], state, totals, limit=4) for r in p.todo]
    assert todo == refs(0, 4)
    assert (totals.listed, totals.skipped_done, totals.todo, totals.deferred_limit) == (12, 5, 4, 3)


@pytest.mark.parametrize("batch_rows", [1, 5, 200_000])  # files reduced one at a time, a few at a time, all at once
def test_compact_done_set_matches_the_string_state_over_several_runs(tmp_path, monkeypatch, batch_rows):
    """done_state (hashes, sorted, reduced with numpy) says per video what manifest_state (strings, group-by) says."""
    from cliper_batch.corpus import incremental

    monkeypatch.setattr(incremental, "_BATCH_ROWS", batch_rows)
    out = tmp_path / "out"
    write_run(out, RUN1, 6, seed=1, failed={5: "ProbeError"})
    write_run(out, "20260102T000000Z-000002", 4, seed=2, failed={1: "VideoTimeout", 2: "ProbeError"})
    write_run(out, "20260103T000000Z-000003", 2, seed=3, failed={0: "VideoTimeout"})
    compact = done_state(str(out), "m", "c").df
    assert compact.height == 6 and compact["ever_ok"].sum() == 5  # video 5 never succeeded
    assert compact.equals(DoneState.from_state(manifest_state(str(out), "m", "c")).df)


def test_done_set_reads_manifest_files_of_older_runs_and_other_configs(tmp_path):
    """Files without the later columns (error_class, attempt) read as the string state reads them; rows of
    another (model, config) and videos whose latest ok row has no fingerprint are kept apart and null."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    write_run(out, RUN1, 4, seed=1, failed={3: "ProbeError"})
    for f in query.manifest_files(str(out))[1]:  # the first run as written before error_class and attempt existed
        t = pq.read_table(f)
        pq.write_table(t.drop_columns(["error_class", "attempt"]).replace_schema_metadata(t.schema.metadata), f)
    w = OutputWriter(str(out), CLASSES, run_id="20260102T000000Z-000002", model_id="m", config_hash="other")
    from synthetic_output import feed_video
    feed_video(w, VideoRef(f"{0:016x}", "/v/0.mp4", fingerprint="9"), np.random.default_rng(0))
    w.close()
    w = OutputWriter(str(out), CLASSES, run_id="20260103T000000Z-000003", model_id="m", config_hash="c")
    feed_video(w, VideoRef(f"{1:016x}", "/v/1.mp4", fingerprint=None), np.random.default_rng(0))
    feed_video(w, VideoRef(f"{2:016x}", "/v/2.mp4", fingerprint="1"), np.random.default_rng(0), failed="VideoTimeout")
    w.close()
    compact = done_state(str(out), "m", "c").df
    assert compact.equals(DoneState.from_state(manifest_state(str(out), "m", "c")).df)
    by_key = {r["key"]: r for r in compact.iter_rows(named=True)}
    key = lambda i: pl.Series([f"{i:016x}"]).hash(seed=0)[0]
    assert by_key[key(1)]["ever_ok"] and by_key[key(1)]["ok_fp"] is None  # latest ok row: unknown fingerprint
    assert by_key[key(2)]["ever_ok"] and by_key[key(2)]["last_failed"] and not by_key[key(2)]["last_data"]
    assert by_key[key(3)]["last_data"] and by_key[key(3)]["last_attempt"] == 1  # attempt absent from old files: 1
    assert done_state(str(out), "m", "other").df.height == 1
    assert done_state(str(out), "nope", "c").df.is_empty()


def test_writer_accounts_for_a_spilled_work_list(tmp_path):
    """Videos of a spilled work list that never report become WorkerLost rows; an interrupted run drops them."""
    from synthetic_output import feed_video

    work = WorkList(str(tmp_path / "out"), RUN1, in_memory=3)
    for plan in plan_chunks([refs(0, 4), refs(4, 8)], DoneState.empty(), PlanTotals()):
        work.add(plan)
    work.close()
    assert work.spilled
    rng = np.random.default_rng(0)
    with OutputWriter(str(tmp_path / "out"), CLASSES, run_id=RUN1, model_id="m", config_hash="c", expected=work) as w:
        for r in refs(0, 8)[::2]:
            feed_video(w, r, rng)
        stats = w.close()
    assert (stats.videos_ok, stats.videos_failed) == (4, 4)
    rows = query.scan_videos(str(tmp_path / "out")).collect()
    lost = rows.filter(pl.col("status") == "failed")
    assert sorted(lost["video_uri"].to_list()) == [r.uri for r in refs(0, 8)[1::2]]
    assert set(lost["error_type"]) == {"WorkerLost"}
    assert not os.path.exists(tmp_path / "out" / "_staging" / RUN1)  # the spilled work list went with staging

    work2 = WorkList(str(tmp_path / "out2"), RUN1, in_memory=3)
    for plan in plan_chunks([refs(0, 4), refs(4, 8)], DoneState.empty(), PlanTotals()):
        work2.add(plan)
    with OutputWriter(str(tmp_path / "out2"), CLASSES, run_id=RUN1, model_id="m", config_hash="c", expected=work2.close()) as w:
        feed_video(w, refs(0, 1)[0], rng)
        stats = w.close(lost_error_type=None)
    assert (stats.videos_ok, stats.videos_failed, stats.videos_dropped) == (1, 0, 7)


def test_iter_videos_chunks_a_folder_in_uri_order(tmp_path):
    for name in ["b/x.mp4", "a.mp4", "b.mp4", "b-c.mp4", "b/a/z.webm", "c/d/e/f.mkv", "n.txt"]:
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    chunks = list(iter_videos(str(tmp_path), chunk_size=2))
    assert [len(c) for c in chunks] == [2, 2, 2]
    assert [r.uri for c in chunks for r in c] == [r.uri for r in list_videos(str(tmp_path))]  # globally sorted
    assert CHUNK >= 1_000


def test_manifest_longer_than_a_chunk_is_deduplicated_across_chunks(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.mp4").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("\n".join(f"{i}.mp4" for i in [3, 1, 3, 0, 1, 4, 2, 0]))
    got = [[os.path.basename(r.uri) for r in c] for c in iter_videos(str(tmp_path / "list.txt"), chunk_size=3)]
    assert got == [["1.mp4", "3.mp4"], ["0.mp4", "4.mp4"], ["2.mp4"]]  # each chunk sorted, each video once


def test_annotate_with_a_spilled_work_list_on_ray(ray_runtime, tmp_path, monkeypatch):
    """End to end on the embedded Ray: the work list goes to staging files and Ray Data reads them back."""
    from bench.plan_scale import CLASSES as BENCH_CLASSES, InstantStage, synthetic_listing
    from cliper_batch.model.spec import ModelInfo
    from cliper_batch.output import run_record
    from cliper_batch.pipeline import run as run_mod
    from cliper_batch.pipeline.executors import Stages
    from cliper_batch.types import AnnotateConfig, RunOptions

    monkeypatch.setattr(worklist, "IN_MEMORY", 10)
    spilled = []  # files per run whose work list Ray Data read from staging
    read_back = worklist.WorkList.dataset
    monkeypatch.setattr(worklist.WorkList, "dataset", lambda self: spilled.append(len(self.files)) or read_back(self))
    import ray.data

    reads = []  # Ray Data's real read, its arguments recorded: the read tasks must be bounded (a worker process each)
    read_datasource = ray.data.read_datasource
    monkeypatch.setattr(ray.data, "read_datasource", lambda *a, **k: reads.append(k) or read_datasource(*a, **k))
    info = ModelInfo(spec="bench", kind="bench", classes=BENCH_CLASSES, descriptors_per_class=1, image_size=64,
                     model_id="bench")
    out = str(tmp_path / "out")

    def night(n):
        return run_mod.annotate("/synthetic/corpus", out, "bench", AnnotateConfig(device="cpu", faces="none"),
                                options=RunOptions(worker="fused"), model_info=info, stages=Stages(fused=InstantStage),
                                listing=synthetic_listing(n, 7))

    first = night(30)
    assert (first.listed, first.videos_total, first.videos_ok) == (30, 30, 30)
    second = night(45)  # 30 done, 15 new: 45 > 10 still spills
    assert (second.listed, second.skipped_done, second.videos_total, second.videos_ok) == (45, 30, 15, 15)
    assert spilled == [3, 2]  # chunks of 7, spilled past 10: 14 + 14 + 2, then 12 + 3 (the 30 done are skipped)
    assert [(k["num_cpus"], k["concurrency"]) for k in reads] == [(0, worklist.READ_CONCURRENCY)] * 2
    assert worklist.READ_CONCURRENCY <= 2
    rows = query.scan_videos(out).collect()
    assert rows.height == 45 and rows["video_id"].n_unique() == 45 and set(rows["status"]) == {"ok"}
    with open(run_record.record_path(out, second.run_id)) as f:
        rec = json.load(f)
    assert (rec["listed"], rec["plan"]["skipped_done"], rec["summary"]["videos_total"]) == (45, 30, 15)
    assert not any(os.path.exists(os.path.join(out, "_staging", r.run_id)) for r in (first, second))  # work lists gone
