"""The run's metrics (cliper_batch/pipeline/metrics.py): what the driver records, and a real Ray head exporting them.

The slow test starts a head the README's way (token auth, loopback, free ports; tests/raycluster.py),
runs the job against it and scrapes the head's Prometheus endpoint (``ray start
--metrics-export-port``) during and after the run.
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from cliper_batch.output.regroup import WriterStats
from cliper_batch.pipeline import metrics as M

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(REPO, "docs")


class _Recorder:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def inc(self, value, tags):
        self.calls.append(("inc", self.name, value, tags))

    def set(self, value, tags):
        self.calls.append(("set", self.name, value, tags))

    def observe(self, value, tags):
        self.calls.append(("observe", self.name, value, tags))


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(M, "_created", {d.name: _Recorder(d.name, calls) for d in M.DEFINITIONS})
    return calls


def _total(calls, op, name, **tags):
    return sum(v for o, n, v, t in calls if o == op and n == name and all(t.get(k) == x for k, x in tags.items()))


def test_every_metric_is_named_once_with_the_prefix_and_documented():
    names = [d.name for d in M.DEFINITIONS]
    assert len(names) == len(set(names))
    ops = open(os.path.join(DOCS, "operations.md"), encoding="utf-8").read()
    for d in M.DEFINITIONS:
        assert d.name.startswith(M.PREFIX) and re.fullmatch(r"[a-z_]+", d.name), d.name
        assert "run_id" in d.tag_keys, d.name
        assert f"`{d.name}`" in ops, f"{d.name} is not documented in docs/operations.md"


def test_the_grafana_dashboard_plots_only_defined_metrics_and_each_of_them():
    board = json.load(open(os.path.join(DOCS, "grafana-cliper.json"), encoding="utf-8"))
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bray_cliper_[a-z_]+", e)}
    exported = {d.exported for d in M.DEFINITIONS}
    base = {re.sub(r"_(bucket|sum|count)$", "", u) for u in used}
    assert base <= exported, base - exported
    assert base == exported, exported - base  # every metric has a panel


def test_driver_records_counts_stages_fill_and_queues(recorded):
    m = M.RunMetrics("r1", videos_total=3, batch_size=4, frames_per_segment=2, device="cuda:0", score_workers=1,
                     enabled=True)
    block = {
        "row_kind": np.array(["segment"] * 5 + ["video"], dtype=object),
        "outcome": np.array([""] * 5 + [json.dumps({"extra": {"decode_s": 1.5, "detect_s": 0.75, "crop_s": 0.25}})],
                            dtype=object),
        "score_t0": np.array([10.0] * 4 + [11.0] * 2),  # two model batches: 4 clips, then 1 clip (+ the outcome row)
        "score_busy_s": np.full(6, 0.1),
    }
    m.batch(block)
    stats = WriterStats(videos_ok=2, videos_failed=1, video_seconds=5.0, failed_by_class={"data": 1},
                        score_busy_s=0.6, score_first_t=10.0, score_last_t=12.0)
    m.written(stats, incomplete=1, uncommitted=2)
    m.committed(0.25, 3)
    m.tick(4.0, 2)
    stats.failed_by_class["transient"] = 1
    stats.videos_failed = 2
    m.finish(stats, "stalled")  # e.g. a ClusterStalled row written at close: counted once, at the end
    c = recorded
    assert _total(c, "inc", "cliper_crops") == 10
    assert _total(c, "inc", "cliper_stage_seconds", stage="score") == pytest.approx(0.6)
    assert _total(c, "inc", "cliper_stage_seconds", stage="decode") == 0.5  # the worker's 1.5 s less detect and crop
    assert _total(c, "inc", "cliper_stage_seconds", stage="detect") == 0.75
    assert _total(c, "inc", "cliper_stage_seconds", stage="crop") == 0.25
    assert _total(c, "inc", "cliper_stage_seconds", stage="write") == 0.25
    # the same totals, kept for the run record
    assert m.stage_seconds == pytest.approx({"decode": 0.5, "detect": 0.75, "crop": 0.25, "score": 0.6, "write": 0.25})
    assert sorted(v for o, n, v, t in c if n == "cliper_batch_fill") == [0.25, 1.0]
    assert [v for o, n, v, t in c if n == "cliper_video_decode_seconds"] == [1.5]
    assert [v for o, n, v, t in c if n == "cliper_commit_seconds"] == [0.25]
    assert _total(c, "inc", "cliper_videos_done", status="ok") == 2
    assert _total(c, "inc", "cliper_videos_done", status="failed") == 2
    assert _total(c, "inc", "cliper_videos_failed", error_class="data") == 1
    assert _total(c, "inc", "cliper_videos_failed", error_class="transient") == 1
    assert _total(c, "inc", "cliper_video_seconds") == 5.0
    last = {(n, tuple(sorted(t.items()))): v for o, n, v, t in c if o == "set"}
    assert last[("cliper_score_busy_fraction", (("device", "cuda"), ("run_id", "r1")))] == pytest.approx(0.3)
    assert last[("cliper_seconds_since_progress", (("run_id", "r1"),))] == 4.0
    assert last[("cliper_videos_remaining", (("run_id", "r1"),))] == 0
    assert last[("cliper_run_active", (("run_id", "r1"), ("status", "running")))] == 0
    assert last[("cliper_run_active", (("run_id", "r1"), ("status", "stalled")))] == 1
    assert all(t["run_id"] == "r1" for *_, t in c)


def test_without_ray_recording_is_a_no_op(recorded, monkeypatch):
    import ray

    # an earlier test of the same session may have left a Ray runtime up: this one is about a process without one
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    m = M.RunMetrics("r2", videos_total=1, batch_size=1, frames_per_segment=1)
    assert not m.enabled
    m.batch({"row_kind": np.array(["segment"], dtype=object)})
    m.written(WriterStats(videos_ok=1))
    m.committed(1.0)
    m.tick(1.0, 0)
    m.finish(WriterStats(videos_ok=1), "finished")
    assert recorded == []
    # the run record's stage seconds are still summed
    m.batch({"row_kind": np.array(["video"], dtype=object),
             "outcome": np.array([json.dumps({"extra": {"decode_s": 2.0, "detect_s": 1.5, "crop_s": 0.0}})], dtype=object),
             "score_busy_s": np.array([0.0])})
    assert m.stage_seconds["detect"] == 1.5 and m.stage_seconds["decode"] == 0.5


def test_a_broken_metrics_api_never_breaks_the_run(monkeypatch):
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("metrics agent gone")

    monkeypatch.setattr(M, "_created", {d.name: Broken() for d in M.DEFINITIONS})
    m = M.RunMetrics("r3", videos_total=1, batch_size=1, frames_per_segment=1, enabled=True)
    m.batch({"row_kind": np.array(["segment"], dtype=object), "score_busy_s": np.ones(1), "score_t0": np.ones(1)})
    m.written(WriterStats(videos_ok=1, video_seconds=1.0))
    m.committed(0.1)
    m.finish(WriterStats(videos_ok=1), "finished")


# -- against a real Ray head -------------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text -> {(name, labels): value} (cliper_ samples only)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith("ray_cliper_"):
            continue
        m = re.match(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


FAST = ["--segment-seconds", "1", "--frames-per-segment", "2", "--batch-size", "4", "--faces", "none"]


@pytest.mark.slow
def test_a_run_exports_its_metrics_on_the_heads_prometheus_endpoint(tiny_checkpoint, tmp_path):
    from cliper_batch.decode.testvideos import VideoSpec, write_video

    from raycluster import LocalRayHead

    corpus, out = tmp_path / "videos", tmp_path / "annotations"
    corpus.mkdir()
    write_video(str(corpus / "one.mp4"), VideoSpec(codec="h264", duration_s=2.0, width=64, height=64, seed=5))
    write_video(str(corpus / "two.webm"), VideoSpec(codec="vp9", duration_s=3.0, width=64, height=48, seed=6))
    (corpus / "bad.mp4").write_bytes(b"definitely not a video")
    # Ray pushes each process's metrics to its node's agent every metrics_report_interval_ms (10 s by default)
    fast_report = {"RAY_metrics_report_interval_ms": "1000"}
    with LocalRayHead(num_cpus=2, env=fast_report) as head:
        cmd = [sys.executable, os.path.join(REPO, "jobs", "annotate.py"), "--input", str(corpus), "--output", str(out),
               "--model", tiny_checkpoint, *FAST, "--ray-address", head.address]
        proc = subprocess.Popen(cmd, env=head.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        seen_during = {}
        try:
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline:
                try:
                    s = scrape(head.metrics_url)
                except OSError:
                    s = {}
                if value(s, "ray_cliper_videos_todo") and not seen_during:
                    seen_during = s
                time.sleep(0.5)
            text, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=60)
        assert proc.returncode == 0, text[-4000:]
        assert "videos ok=2 failed=1 of 3" in text, text[-4000:]
        run_id = re.search(r"run (\S+): videos ok=", text).group(1)
        assert seen_during, "no cliper_ metric on the head's endpoint while the run went on"
        assert value(seen_during, "ray_cliper_videos_todo", run_id=run_id) == 3

        want = {
            ("ray_cliper_videos_done_total", (("status", "ok"),)): 2,
            ("ray_cliper_videos_done_total", (("status", "failed"),)): 1,
            ("ray_cliper_videos_failed_total", (("error_class", "data"),)): 1,
            ("ray_cliper_video_seconds_total", ()): 5.0,
            ("ray_cliper_crops_total", ()): 10,  # 2 + 3 one-second segments x 2 frames
            ("ray_cliper_videos_remaining", ()): 0,
            ("ray_cliper_run_active", (("status", "finished"),)): 1,
        }
        deadline = time.time() + 60  # the driver's last values reach the endpoint within a report interval
        while True:
            s = scrape(head.metrics_url)
            got = {k: value(s, k[0], run_id=run_id, **dict(k[1])) for k in want}
            if all(abs(got[k] - v) < 0.05 for k, v in want.items()) or time.time() > deadline:
                break
            time.sleep(1.0)
        assert got == pytest.approx(want, abs=0.05), sorted((k[0], dict(k[1]), v) for k, v in s.items())
        assert value(s, "ray_cliper_stage_seconds_total", run_id=run_id, stage="decode") > 0
        assert value(s, "ray_cliper_stage_seconds_total", run_id=run_id, stage="crop") > 0
        assert value(s, "ray_cliper_stage_seconds_total", run_id=run_id, stage="detect") == 0  # --faces none
        assert value(s, "ray_cliper_stage_seconds_total", run_id=run_id, stage="score") > 0
        assert value(s, "ray_cliper_stage_seconds_total", run_id=run_id, stage="write") > 0
        assert value(s, "ray_cliper_commit_seconds_count", run_id=run_id) >= 1
        assert value(s, "ray_cliper_video_decode_seconds_count", run_id=run_id) >= 2  # the bad file may fail in < 0.1 ms
        assert value(s, "ray_cliper_batch_fill_count", run_id=run_id) >= 2  # 5 clips in batches of 4
        assert value(s, "ray_cliper_crops_per_second", run_id=run_id) > 0
