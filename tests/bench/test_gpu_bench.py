"""python -m bench.gpu.run on CPU: imports without the packages the GPU box lacks, and a timeout never loses measured points."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cliper_batch.decode.dali_backend import dali_available

REPO = Path(__file__).resolve().parents[2]
# What the GPU test machine does not have (torch 2.11 + triton only): every module the bench imports must do without.
ABSENT_ON_GPU_BOX = ("ray", "nvidia.dali", "torch_tensorrt", "polars", "av", "open_clip")


def _run_bench(args: list[str], blocked: tuple[str, ...], timeout: int = 240) -> subprocess.CompletedProcess:
    code = (
        "import runpy, sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        f"sys.argv = ['run.py', *{args!r}]\n"
        "runpy.run_module('bench.gpu.run', run_name='__main__', alter_sys=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_smoke_runs_without_the_packages_the_gpu_box_lacks(tmp_path):
    out = tmp_path / "gpu_bench.json"
    proc = _run_bench(["--smoke", "--out", str(out), "--skip", "decode"], ABSENT_ON_GPU_BOX)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    for name, sec in sections.items():
        assert sec["status"] in ("ok", "skipped"), (name, sec)
    assert sections["kernel.dali_crops"] == {**sections["kernel.dali_crops"], "status": "skipped",
                                             "reason": "nvidia.dali not installed"}
    assert sections["model.tensorrt_fp16"]["status"] == "skipped"
    # the per-video algorithm's modules imported (before the check for PyAV), then it skipped for want of PyAV
    assert sections["annotate"]["status"] == "skipped" and "PyAV not installed" in sections["annotate"]["reason"]
    assert sections["kernel"]["status"] == "ok" and sections["kernel"]["correct"]
    assert sections["model.eager_fp32"]["status"] == "ok"
    assert "DALI crops: skipped nvidia.dali not installed" in proc.stdout


def test_smoke_runs_the_per_video_algorithm_on_real_videos(tmp_path):
    """--smoke on CPU in CI: the shared per-video algorithm on H.264 and VP9 files, every video ok, crops checked."""
    out = tmp_path / "gpu_bench.json"
    proc = _run_bench(["--smoke", "--out", str(out), "--only", "kernel,annotate"], ())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    ann = sections["annotate"]
    assert ann["status"] == "ok", ann
    for codec in ("h264", "vp9"):
        v = ann["videos"][codec]
        assert v["status"] == "ok" and v["clips"] == v["expected_clips"] > 0 and v["crops_on_device"] and v["finite"], v
        assert v["max_abs_err_vs_torch_crop"] is not None and v["max_abs_err_vs_torch_crop"] <= 2e-2
    if not dali_available():
        return
    dc = sections["kernel.dali_crops"]
    assert dc["status"] == "ok" and dc["correct"] and dc["max_abs_err"] <= dc["tolerance"], dc
    assert dc["ms"] > 0 and dc["triton_fp32_ms"] == sections["kernel"]["fp32"]["ms"]


@pytest.fixture(scope="module")
def bench_module():
    from types import SimpleNamespace

    harness = importlib.import_module("bench.gpu.harness")
    model = importlib.import_module("bench.gpu.sections.model")
    return SimpleNamespace(Bench=harness.Bench, BenchConfig=harness.BenchConfig, ModelBench=model.ModelBench)


def test_a_section_timeout_keeps_its_measured_points_and_the_run_goes_on(bench_module, tmp_path):
    m = bench_module
    cfg = m.BenchConfig.tiny()
    cfg.budgets = {"model.slow": 1.5, "model.next": 10.0}
    out = tmp_path / "bench.json"
    bench = m.Bench(cfg, out, None, set())
    bench.GRACE_S = 1.0  # hard limit 2.5 s
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8)).eval()
    mb = m.ModelBench(cfg, torch.device("cpu"), model, 1e6, on_point=bench.record_point)
    seen_on_disk = []

    def make(b: int):
        if b == cfg.batches[1]:  # the second point hangs (an engine build that never ends)
            seen_on_disk.extend(json.loads(out.read_text())["sections"]["model.slow"].get("points", []))
            time.sleep(30)
        x = mb.inputs(b)
        return lambda: model(x)

    t = time.perf_counter()
    res = bench.run("model.slow", lambda budget: mb.sweep(budget, make, "slow"))
    assert time.perf_counter() - t < 10
    assert res["status"] == "timeout" and "SectionTimeout" in res["error"]
    assert res["points_kept"] == 1 and res["points"][0]["batch"] == cfg.batches[0]
    assert [p["batch"] for p in seen_on_disk] == [cfg.batches[0]]  # written as soon as measured
    nxt = bench.run("model.next", lambda budget: mb.sweep(budget, lambda b: (lambda: model(mb.inputs(b))), "next"))
    assert nxt["status"] == "ok" and len(nxt["points"]) == len(cfg.batches)
    saved = json.loads(out.read_text())["sections"]
    assert saved["model.slow"]["points"] == res["points"] and saved["model.next"]["status"] == "ok"
