"""Nightly operations: the bad-input zoo, incremental runs, and kill-and-resume without loss or duplicates."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.shell.annotate_cli import main as annotate_main
from cliper_batch.decode.testvideos import VideoSpec, write_video


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--segment-seconds", "1", "--frames-per-segment", "2", "--batch-size", "4", "--faces", "none"]


def run(input_, output, ckpt, *extra):
    return annotate_main(["--input", str(input_), "--output", str(output), "--model", ckpt, *FAST, *extra])


def manifest_by_name(out, root):
    v = query.scan_videos(str(out)).sort("run_id").collect()
    return {os.path.relpath(u, root) if u.startswith(str(root)) else u: row
            for u, row in zip(v["video_uri"], v.iter_rows(named=True))}


# -- the bad-input zoo ------------------------------------------------------------------


def test_bad_input_zoo_in_one_run(ray_runtime, tiny_checkpoint, tmp_path, bad_input_zoo):
    zoo, expected = bad_input_zoo
    out = tmp_path / "out"
    assert run(zoo, out, tiny_checkpoint) == 0
    got = manifest_by_name(out, zoo)
    assert {k: (r["status"], r["error_type"]) for k, r in got.items()} == expected
    for name, (status, _) in expected.items():
        row = got[name]
        if status == "failed":
            assert row["error"] and row["n_segments"] == 0, name
        else:
            assert row["n_segments"] >= 1, name
    assert (got["rotated.mp4"]["rotation"], got["rotated.mp4"]["width"], got["rotated.mp4"]["height"]) == (270, 64, 96)
    assert (got["uhd.mp4"]["width"], got["uhd.mp4"]["height"]) == (3840, 2160)
    tl = query.scan_timelines(str(out)).collect()
    assert set(tl["video_uri"].unique()) == {str(zoo / k) for k, (s, _) in expected.items() if s == "ok"}


def test_unknown_scheme_and_missing_file_in_a_manifest(ray_runtime, tiny_checkpoint, tmp_path, h264_video):
    good = tmp_path / "good.mp4"
    shutil.copy(h264_video[0], good)
    man = tmp_path / "list.txt"
    man.write_text(f"{good}\nnosuchscheme://bucket/a.mp4\n{tmp_path / 'missing.mp4'}\n")
    out = tmp_path / "out"
    assert run(man, out, tiny_checkpoint) == 0
    v = query.scan_videos(str(out)).collect()
    status = dict(zip(v["video_uri"], v["status"]))
    assert status == {str(good): "ok", "nosuchscheme://bucket/a.mp4": "failed", str(tmp_path / "missing.mp4"): "failed"}
    err = dict(zip(v["video_uri"], v["error"]))["nosuchscheme://bucket/a.mp4"]
    assert "nosuchscheme" in err


# -- incremental runs -------------------------------------------------------------------------


def _write(path, seed, duration=2.0):
    write_video(str(path), VideoSpec(codec="h264" if str(path).endswith(".mp4") else "vp9", duration_s=duration,
                                     width=64, height=48, seed=seed))


def test_incremental_runs_do_only_new_and_changed_videos(ray_runtime, tiny_checkpoint, tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    for i in range(3):
        _write(corpus / f"v{i}.mp4", seed=i)
    assert run(corpus, out, tiny_checkpoint) == 0
    first = query.scan_videos(str(out)).collect()
    assert first.height == 3 and first["run_id"].n_unique() == 1

    _write(corpus / "v3.webm", seed=3)  # new
    time.sleep(0.05)
    _write(corpus / "v1.mp4", seed=11, duration=3.0)  # changed content, size and mtime
    assert run(corpus, out, tiny_checkpoint) == 0
    videos = query.scan_videos(str(out)).collect()
    runs = sorted(videos["run_id"].unique().to_list())
    second = videos.filter(pl.col("run_id") == runs[1])
    assert sorted(os.path.basename(u) for u in second["video_uri"]) == ["v1.mp4", "v3.webm"]

    tl = query.scan_timelines(str(out)).collect()
    per_video = dict(tl.group_by("video_uri").len().iter_rows())
    assert per_video == {str(corpus / "v0.mp4"): 2, str(corpus / "v1.mp4"): 3, str(corpus / "v2.mp4"): 2,
                         str(corpus / "v3.webm"): 2}
    assert tl.select("video_id", "track_id", "segment_index").is_duplicated().sum() == 0
    # nothing to do: a third run annotates nothing, --force redoes everything
    assert run(corpus, out, tiny_checkpoint) == 0
    assert query.scan_videos(str(out)).collect()["run_id"].n_unique() == 2
    assert run(corpus, out, tiny_checkpoint, "--force", "--limit", "2") == 0
    videos = query.scan_videos(str(out)).collect()
    assert videos.filter(pl.col("run_id") == videos["run_id"].max()).height == 2


# -- kill and resume --------------------------------------------------------------------------


def current_rows(out):
    tl = query.scan_timelines(str(out)).collect()
    p_cols = [c for c in tl.columns if c.startswith("p_")]
    return tl.select("video_id", "track_id", "segment_index", "start_s", "end_s", "label", *p_cols).sort(
        "video_id", "track_id", "segment_index")


def test_sigkill_mid_run_then_rerun_equals_a_clean_run(ray_runtime, tiny_checkpoint, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(10):
        _write(corpus / f"k{i:02d}.mp4", seed=100 + i, duration=3.0)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert run(corpus, clean, tiny_checkpoint) == 0

    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, os.path.join(REPO, "jobs", "annotate.py"), "--input", str(corpus), "--output", str(killed),
           "--model", tiny_checkpoint, *FAST, "--batch-size", "1", "--commit-every", "1", "--decode-workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if list((killed / "videos").rglob("*.parquet")) if (killed / "videos").exists() else []:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything its embedded Ray started
        proc.wait(timeout=60)
    committed = len(list((killed / "videos").rglob("*.parquet")))
    assert committed >= 1, "the run was killed before it committed anything: the test proves nothing"
    partial = query.scan_videos(str(killed)).collect().height
    assert partial < 10, "the run finished before it was killed: make the corpus bigger"

    assert run(corpus, killed, tiny_checkpoint) == 0  # resume: takes over the stale lock, recovers, does the rest
    a, b = current_rows(clean), current_rows(killed)
    assert a.select("video_id", "segment_index", "label").equals(b.select("video_id", "segment_index", "label"))
    np.testing.assert_allclose(a.select(pl.selectors.starts_with("p_")).to_numpy(),
                               b.select(pl.selectors.starts_with("p_")).to_numpy(), atol=1e-5)
    raw = pl.scan_parquet(str(killed / "timelines" / "**" / "*.parquet")).collect()
    assert raw.select("video_id", "track_id", "segment_index", "model_id").is_duplicated().sum() == 0
    videos = query.scan_videos(str(killed)).collect()
    assert videos.filter(pl.col("status") == "ok").select("video_id").is_duplicated().sum() == 0
    assert not (killed / "_lock.json").exists()
    runs = {p.name for p in (killed / "runs").glob("*.json")}
    assert len(runs) == 2  # the resumed run, plus an 'interrupted' record written for the killed one


# -- worker crashes ---------------------------------------------------------------------------


def test_a_video_that_kills_its_worker_is_recorded_and_the_run_goes_on(ray_runtime, tiny_checkpoint, tmp_path):
    import ray.cloudpickle

    import faulty_stage
    from cliper_batch.pipeline.run import RunOptions, Stages, annotate, describe_model
    from cliper_batch.types import AnnotateConfig

    ray.cloudpickle.register_pickle_by_value(faulty_stage)  # workers can't import tests/
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, seed in (("a.mp4", 1), ("crash_me.mp4", 2), ("b.mp4", 3)):
        _write(corpus / name, seed=seed)
    cfg = AnnotateConfig(segment_seconds=1.0, frames_per_segment=2, batch_size=4, decoder="pyav", faces="none")
    s = annotate(str(corpus), str(tmp_path / "out"), tiny_checkpoint, cfg, stages=Stages(decode=faulty_stage.CrashingDecodeStage),
                 options=RunOptions(worker="staged"),
                 model_info=describe_model(tiny_checkpoint))
    assert (s.videos_ok, s.videos_failed) == (2, 1)
    v = query.scan_videos(str(tmp_path / "out")).collect()
    row = v.filter(pl.col("video_uri").str.ends_with("crash_me.mp4")).row(0, named=True)
    assert row["status"] == "failed" and row["error_type"] == "WorkerLost"
    assert sorted(os.path.basename(u) for u in query.scan_timelines(str(tmp_path / "out")).collect()["video_uri"].unique()) == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize("n_good", [2, 5])
def test_a_video_that_kills_the_single_actor_is_recorded_and_the_run_goes_on(ray_runtime, tiny_checkpoint, tmp_path,
                                                                               n_good):
    """A short run on one fused actor (driven without Ray Data): the actor dies on one video every time it
    is retried; that video becomes WorkerLost, a new actor does the rest (n_good=5: some of them were queued
    on the dead actor), and every other video is annotated."""
    import json

    import ray.cloudpickle

    import faulty_stage
    from cliper_batch.pipeline.run import RunOptions, Stages, annotate, describe_model
    from cliper_batch.types import AnnotateConfig

    ray.cloudpickle.register_pickle_by_value(faulty_stage)  # workers can't import tests/
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = ["crash_me.mp4"] + [f"g{i}.mp4" for i in range(n_good)]
    for seed, name in enumerate(names):
        _write(corpus / name, seed=seed + 1, duration=1.0)
    cfg = AnnotateConfig(segment_seconds=1.0, frames_per_segment=2, batch_size=4, decoder="pyav", faces="none")
    s = annotate(str(corpus), str(tmp_path / "out"), tiny_checkpoint, cfg, stages=Stages(fused=faulty_stage.CrashingFusedStage),
                 options=RunOptions(worker="fused", videos_per_task=1, score_workers=1),
                 model_info=describe_model(tiny_checkpoint))
    record = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert record["executor"] == "single_actor"
    assert (s.videos_ok, s.videos_failed) == (n_good, 1)
    v = query.scan_videos(str(tmp_path / "out")).collect()
    row = v.filter(pl.col("video_uri").str.ends_with("crash_me.mp4")).row(0, named=True)
    assert row["status"] == "failed" and row["error_type"] == "WorkerLost"
    annotated = query.scan_timelines(str(tmp_path / "out")).collect()["video_uri"].unique()
    assert sorted(os.path.basename(u) for u in annotated) == sorted(names[1:])


# -- retry policy ---------------------------------------------------------------------------


def test_broken_files_are_not_retried_until_they_change(ray_runtime, tiny_checkpoint, tmp_path, capsys):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    _write(corpus / "good.mp4", seed=1)
    (corpus / "empty.mp4").write_bytes(b"")
    (corpus / "notes.mp4").write_text("not a video\n")
    assert run(corpus, out, tiny_checkpoint) == 0
    v = query.scan_videos(str(out)).collect()
    assert sorted(zip(v["status"], v["error_class"].fill_null("-"), v["attempt"])) == [
        ("failed", "data", 1), ("failed", "data", 1), ("ok", "-", 1)]
    capsys.readouterr()
    assert run(corpus, out, tiny_checkpoint) == 0  # unchanged corpus: nothing to do, and it says so
    line = capsys.readouterr().out
    assert "nothing to do" in line and "2 failed before and not retried (2 bad data" in line, line
    assert query.scan_videos(str(out)).collect().height == 3
    _write(corpus / "notes.mp4", seed=2)  # the owner replaced the broken file
    assert run(corpus, out, tiny_checkpoint) == 0
    cur = pl.scan_parquet(str(out / "videos" / "**" / "*.parquet")).collect()  # plain scan: the current state
    assert dict(zip([os.path.basename(u) for u in cur["video_uri"]], cur["status"])) == {
        "good.mp4": "ok", "notes.mp4": "ok", "empty.mp4": "failed"}
    assert run(corpus, out, tiny_checkpoint, "--retry-failed") == 0  # every failed video once more
    row = query.scan_videos(str(out), current_only=True).filter(pl.col("video_uri").str.ends_with("empty.mp4")).collect()
    assert (row["status"][0], row["attempt"][0], row["error_class"][0]) == ("failed", 2, "data")


def test_transient_failures_are_retried_up_to_max_attempts(ray_runtime, tiny_checkpoint, tmp_path, capsys):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    _write(corpus / "slow.mp4", seed=5)
    timeout = ["--video-timeout", "0.000001", "--max-attempts", "2"]  # every try times out (transient)
    # every video of the run failed for one reason that is not the data's: the run says so (exit 1), rows are kept
    assert run(corpus, out, tiny_checkpoint, *timeout) == 1
    assert "every video of this run (1) failed with VideoTimeout" in capsys.readouterr().err
    assert run(corpus, out, tiny_checkpoint, *timeout) == 1  # retried: attempt 2
    v = query.scan_videos(str(out)).sort("run_id").collect()
    assert list(zip(v["error_type"], v["error_class"], v["attempt"])) == [("VideoTimeout", "transient", 1),
                                                                         ("VideoTimeout", "transient", 2)]
    capsys.readouterr()
    assert run(corpus, out, tiny_checkpoint, "--max-attempts", "2") == 0  # out of attempts: left alone
    assert "1 out of attempts" in capsys.readouterr().out
    assert run(corpus, out, tiny_checkpoint, "--max-attempts", "2", "--retry-failed") == 0
    cur = pl.scan_parquet(str(out / "videos" / "**" / "*.parquet")).collect()
    assert (cur.height, cur["status"][0], cur["attempt"][0]) == (1, "ok", 3)


# -- stop signals -----------------------------------------------------------------------------


def _annotate_subprocess(corpus, out, ckpt, *extra):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, os.path.join(REPO, "jobs", "annotate.py"), "--input", str(corpus), "--output", str(out),
           "--model", ckpt, *FAST, "--batch-size", "1", "--commit-every", "1", "--decode-workers", "1", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_commit(proc, out, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (out / "videos").exists() and list((out / "videos").rglob("*.parquet")):
            return
        time.sleep(0.2)
    raise AssertionError(f"no commit before the signal (exit {proc.poll()})")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_stop_signal_ends_the_run_promptly_and_the_next_run_resumes(ray_runtime, tiny_checkpoint, tmp_path, sig):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    for i in range(12):
        _write(corpus / f"s{i:02d}.mp4", seed=200 + i, duration=3.0)
    proc = _annotate_subprocess(corpus, out, tiny_checkpoint)
    try:
        _wait_for_commit(proc, out)
        t0 = time.time()
        os.kill(proc.pid, sig)  # the driver only, as a terminal's Ctrl-C or a scheduler's SIGTERM reaches it
        text, _ = proc.communicate(timeout=60)
        stopped_in = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == 128 + sig, text[-3000:]
    assert stopped_in < 30, stopped_in
    assert "INTERRUPTED" in text and "the next run resumes" in text, text[-3000:]
    import json
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert record["status"] == "interrupted" and record["summary"]["videos_ok"] >= 1
    done = query.scan_videos(str(out)).collect()
    assert 1 <= done.height < 12 and set(done["status"]) == {"ok"}  # unfinished videos are not recorded
    assert not (out / "_lock.json").exists()

    assert run(corpus, out, tiny_checkpoint) == 0  # resumes: only the rest
    videos = query.scan_videos(str(out)).collect()
    assert videos.height == 12 and videos["video_id"].n_unique() == 12 and set(videos["status"]) == {"ok"}
