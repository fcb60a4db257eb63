"""Losing a worker node mid-run, on a real two-node Ray cluster on this machine (head + worker node, loopback).

The job attaches with --ray-address; 30 s in, the worker node's processes are
SIGKILLed. The run must end by itself: finished on what is left, or stopped by
the stall watchdog with a message, what was done committed and every other
video recorded as a transient failure. The next run completes the corpus.
"""
import json
import os
import subprocess
import sys
import time

import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.decode.testvideos import VideoSpec, write_video

from raycluster import LocalRayHead, LocalRayWorkerNode, alive_nodes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--segment-seconds", "1", "--frames-per-segment", "2", "--batch-size", "2", "--faces", "none"]
STALL_S = 45


def job(corpus, out, checkpoint, head, stall_timeout_s: int, n: int, seed: int, *extra: str) -> list[str]:
    """Write ``n`` 3 s videos into ``corpus``; the job's command line against ``head`` (a part committed per video)."""
    corpus.mkdir()
    for i in range(n):
        write_video(str(corpus / f"n{i:02d}.mp4"), VideoSpec(codec="h264", duration_s=3.0, width=64, height=48, seed=seed + i))
    return [sys.executable, os.path.join(REPO, "jobs", "annotate.py"), "--input", str(corpus), "--output", str(out),
            "--model", checkpoint, *FAST, "--commit-every", "1", "--ray-address", head.address,
            "--stall-timeout", str(stall_timeout_s), *extra]


def run_and_lose_the_node(cmd, env, out, node, timeout_after_kill: float, poll_s: float = 0.5):
    """Start the job, wait until a part is committed (work under way), SIGKILL the worker node's processes and wait
    (bounded) for the job to end: (exit code, output, seconds from the kill to the end)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # wait until work is under way, then lose the node
            if (out / "videos").exists() and list((out / "videos").rglob("*.parquet")):
                break
            time.sleep(poll_s)
        assert proc.poll() is None, "the run ended before the node was lost: make the corpus bigger"
        node.kill()
        t_kill = time.time()
        text, _ = proc.communicate(timeout=timeout_after_kill)  # bounded: never a hang
        return proc.returncode, text, time.time() - t_kill
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=60)


@pytest.mark.slow
def test_losing_a_worker_node_never_hangs_and_the_next_run_completes(tiny_checkpoint, tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    n = 24
    head = LocalRayHead(num_cpus=1).start()
    node = None
    try:
        node = LocalRayWorkerNode(head, num_cpus=2).start()
        assert alive_nodes(head) == 2
        cmd = job(corpus, out, tiny_checkpoint, head, STALL_S, n, seed=300)
        returncode, text, ended_after = run_and_lose_the_node(cmd, head.env(), out, node, STALL_S + 240)
        assert returncode in (0, 1), text[-4000:]
        if returncode == 1:
            assert "no progress for" in text and "the next run resumes" in text, text[-4000:]
        print(f"node lost: exit {returncode} {ended_after:.0f} s after the kill")
        v = query.scan_videos(str(out)).collect()
        assert v.height == n and v["video_id"].n_unique() == n  # every video exactly once: annotated or failed
        failed = v.filter(pl.col("status") == "failed")
        assert set(failed["error_class"].to_list()) <= {"transient"}, failed.select("video_uri", "error_type", "error")
        ok_ids = set(v.filter(pl.col("status") == "ok")["video_id"])
        tl = query.scan_timelines(str(out)).collect()
        assert set(tl["video_id"]) == ok_ids
        assert tl.select("video_id", "track_id", "segment_index").is_duplicated().sum() == 0

        # the next run, on what is left of the cluster (the head alone), completes the corpus
        rerun = subprocess.run(cmd, env=head.env(), capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        cur = pl.scan_parquet(str(out / "videos" / "**" / "*.parquet")).collect()
        assert cur.height == n and set(cur["status"]) == {"ok"}
        assert cur.filter(pl.col("video_id").is_in(list(failed["video_id"])))["attempt"].to_list() == [2] * failed.height
    finally:
        if node is not None:
            node.stop()
        head.stop()


STALL_FIRES_S = 45  # above the actors' start-up on a loaded 2-core host (the watchdog runs from the first poll)


@pytest.mark.slow
def test_the_stall_watchdog_fires_when_no_capacity_is_left(tiny_checkpoint, tmp_path):
    """The head offers no CPU for work (``--num-cpus=0``); the worker node is lost mid-run. Nothing can run the
    rest, so the run must not finish: it stops within ``--stall-timeout``, commits what was done, records every
    other video ``ClusterStalled`` (transient: the next run retries it) and exits 1."""
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    n = 40
    head = LocalRayHead(num_cpus=0).start()
    node = None
    try:
        node = LocalRayWorkerNode(head, num_cpus=2).start()
        # one video per task: when the node goes, most blocks still wait for an actor (not only those in flight,
        # which Ray Data retries and then drops as WorkerLost, and the run would simply finish)
        cmd = job(corpus, out, tiny_checkpoint, head, STALL_FIRES_S, n, 500, "--videos-per-task", "1")
        returncode, text, ended_after = run_and_lose_the_node(cmd, head.env(), out, node, STALL_FIRES_S + 180,
                                                              poll_s=0.2)
        print(f"no capacity: exit {returncode} {ended_after:.0f} s after the kill")
        assert returncode == 1, text[-4000:]
        assert "no progress for" in text and f"--stall-timeout {STALL_FIRES_S}" in text, text[-4000:]
        assert "STALLED" in text and "the next run resumes" in text, text[-4000:]
        # the watchdog's clock starts at the last batch, which came before the kill: the stop comes within the
        # timeout plus the final commit and Ray's shutdown
        assert ended_after < STALL_FIRES_S + 60, (ended_after, text[-4000:])
        v = query.scan_videos(str(out)).collect()
        assert v.height == n and v["video_id"].n_unique() == n  # every video exactly once
        stalled = v.filter(pl.col("error_type") == "ClusterStalled")
        assert stalled.height >= 1, v.select("video_uri", "status", "error_type")
        assert set(stalled["error_class"]) == {"transient"}
        assert all("no progress for" in e for e in stalled["error"]), stalled["error"].to_list()[:3]
        assert set(v.filter(pl.col("status") == "failed")["error_type"]) <= {"ClusterStalled", "WorkerLost", "IncompleteVideo"}
        ok_ids = set(v.filter(pl.col("status") == "ok")["video_id"])
        assert ok_ids, "nothing was committed before the node was lost"
        tl = query.scan_timelines(str(out)).collect()
        assert set(tl["video_id"]) == ok_ids
        run = json.load(open(next((out / "runs").glob("*.json"))))
        assert run["status"] == "stalled" and "no progress for" in run["stopped_because"]
    finally:
        if node is not None:
            node.stop()
        head.stop()
