"""Losing a worker node mid-run, on a real two-node Ray cluster on this machine (head + worker node, loopback).

The job attaches with --ray-address; 30 s in, the worker node's processes are
SIGKILLed. The run must end by itself: finished on what is left, or stopped by
the stall watchdog with a message, what was done committed and every other
video recorded as a transient failure. The next run completes the corpus.
"""
import os
import subprocess
import sys
import time

import polars as pl
import pytest

from cliper_batch import query
from cliper_batch.testvideos import VideoSpec, write_video

from raycluster import LocalRayHead, LocalRayWorkerNode, alive_nodes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--segment-seconds", "1", "--frames-per-segment", "2", "--batch-size", "2", "--faces", "none"]
STALL_S = 45


@pytest.mark.slow
def test_losing_a_worker_node_never_hangs_and_the_next_run_completes(tiny_checkpoint, tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    n = 24
    for i in range(n):
        write_video(str(corpus / f"n{i:02d}.mp4"), VideoSpec(codec="h264", duration_s=3.0, width=64, height=48, seed=300 + i))
    head = LocalRayHead(num_cpus=1).start()
    node = None
    try:
        node = LocalRayWorkerNode(head, num_cpus=2).start()
        assert alive_nodes(head) == 2
        cmd = [sys.executable, os.path.join(REPO, "jobs", "annotate.py"), "--input", str(corpus), "--output", str(out),
               "--model", tiny_checkpoint, *FAST, "--commit-every", "1", "--ray-address", head.address,
               "--stall-timeout", str(STALL_S)]
        proc = subprocess.Popen(cmd, env=head.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:  # wait until work is under way, then lose the node
                if (out / "videos").exists() and list((out / "videos").rglob("*.parquet")):
                    break
                time.sleep(0.5)
            assert proc.poll() is None, "the run ended before the node was lost: make the corpus bigger"
            node.kill()
            t_kill = time.time()
            text, _ = proc.communicate(timeout=STALL_S + 240)  # bounded: never a hang
            ended_after = time.time() - t_kill
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=60)
        assert proc.returncode in (0, 1), text[-4000:]
        if proc.returncode == 1:
            assert "no progress for" in text and "the next run resumes" in text, text[-4000:]
        print(f"node lost: exit {proc.returncode} {ended_after:.0f} s after the kill")
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
