"""`ray job submit` exactly as the README says, against a real local Ray head started the README's way.

Token authentication is on (``RAY_AUTH_MODE=token``, token from ``ray get-auth-token
--generate`` in the head's own temp ``HOME``); loopback only, own temp dir, free
ports, stopped by PID (see ``raycluster.py``).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from cliper_batch.output import query
from cliper_batch.model.checkpoint import save_checkpoint
from cliper_batch.model.factory import load_model
from cliper_batch.decode.testvideos import VideoSpec, write_video

from raycluster import VENV_BIN, LocalRayHead

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def head():
    with LocalRayHead(num_cpus=2) as h:
        yield h


@pytest.mark.ray
def test_job_submit_annotates_corpus(head, tmp_path):
    corpus = tmp_path / "videos"
    corpus.mkdir()
    write_video(str(corpus / "one.mp4"), VideoSpec(codec="h264", duration_s=2.0, width=64, height=64, seed=5))
    write_video(str(corpus / "two.webm"), VideoSpec(codec="vp9", duration_s=3.0, width=64, height=48, seed=6))
    (corpus / "bad.mp4").write_bytes(b"definitely not a video")
    torch.manual_seed(0)
    ckpt = save_checkpoint(load_model("openclip:Tiny-ViT-T-16").model, str(tmp_path / "tiny.safetensors"))
    out = tmp_path / "annotations"
    # README: `ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/annotate.py ...`
    # from the checkout, with RAY_AUTH_MODE=token exported (the dashboard port is a free one here).
    cmd = [
        os.path.join(VENV_BIN, "ray"), "job", "submit",
        "--address", head.dashboard_url,
        "--working-dir", ".",
        "--submission-id", f"test-{os.getpid()}",
        "--",
        "python", "jobs/annotate.py", "--input", str(corpus), "--output", str(out), "--model", ckpt,
        "--segment-seconds", "1", "--frames-per-segment", "2", "--batch-size", "4", "--faces", "none",
    ]
    proc = subprocess.run(cmd, env=head.env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    log = proc.stdout[-8000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert "succeeded" in log.lower(), log
    assert "videos ok=2 failed=1 of 3" in log, log
    assert "progress: 3/3 videos (100%)" in log, log
    for noise in ("Deprecat", "Progress bars disabled", "Traceback"):  # a clean first run
        assert noise not in proc.stdout + proc.stderr, noise + "\n" + log

    videos = query.scan_videos(str(out)).sort("video_uri").collect()
    assert videos["status"].to_list() == ["failed", "ok", "ok"]
    tl = query.scan_timelines(str(out)).collect()
    counts = dict(tl.group_by("video_uri").len().iter_rows())
    assert counts == {str(corpus / "one.mp4"): 2, str(corpus / "two.webm"): 3}


@pytest.mark.ray
def test_job_imports_kernels_and_training_by_their_one_name_from_the_working_dir(head):
    """`cliper_batch.kernels` / `cliper_batch.training` travel with `--working-dir .` (links to the top-level folders)."""
    probe = (
        "import cliper_batch, cliper_batch.kernels, cliper_batch.training.train as t; "
        "print('FROM', cliper_batch.__file__, cliper_batch.kernels.__file__, t.__file__, t._loop_function().__module__)"
    )
    runtime_env = {"excludes": [".venv", ".git", "*.egg-info", "__pycache__", "bench/results", "demo", "annotations"]}
    cmd = [
        os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", head.dashboard_url, "--working-dir", REPO,
        "--runtime-env-json", json.dumps(runtime_env), "--submission-id", f"test-names-{os.getpid()}",
        "--", "python", "-c", probe,
    ]
    proc = subprocess.run(cmd, env=head.env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, log
    line = next(ln for ln in log.splitlines() if ln.startswith("FROM "))
    init, kernels, train, loop_module = line.split()[1:]
    # the job runs the uploaded copy of the working dir, not this checkout: every module comes from that one copy
    here = os.path.realpath(REPO)
    for path in (init, kernels, train):
        assert not os.path.realpath(path).startswith(here + os.sep), log
    root = os.path.dirname(os.path.dirname(init))
    assert kernels == os.path.join(root, "cliper_batch", "kernels", "__init__.py"), log
    assert train == os.path.join(root, "cliper_batch", "training", "train.py"), log
    assert loop_module == "cliper_batch.training.loop", log


@pytest.mark.ray
def test_the_head_refuses_clients_without_the_token(head):
    """Token auth really is on: no token, or token mode not asked for (the README's export missing), is refused."""
    list_jobs = [os.path.join(VENV_BIN, "ray"), "job", "list", "--address", head.dashboard_url]
    ok = subprocess.run(list_jobs, env=head.env(), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-3000:]
    stranger = subprocess.run(list_jobs, env=head.env_without_token(), capture_output=True, text=True, timeout=120)
    assert stranger.returncode != 0
    assert "token" in (stranger.stdout + stranger.stderr).lower(), stranger.stderr[-3000:]
    no_mode = head.env()
    no_mode.pop("RAY_AUTH_MODE")
    plain = subprocess.run(list_jobs, env=no_mode, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "AuthenticationError" in plain.stdout + plain.stderr, plain.stderr[-3000:]


def test_a_clusters_ports_are_all_distinct_and_outside_its_worker_ranges():
    from raycluster import PortPicker

    picker = PortPicker()
    singles = [picker.port() for _ in range(30)]
    ranges = [picker.port_range(40) for _ in range(2)]
    in_ranges = [p for lo in ranges for p in range(lo, lo + 40)]
    assert len(set(singles)) == len(singles)
    assert len(set(in_ranges)) == len(in_ranges)
    assert not set(singles) & set(in_ranges)
