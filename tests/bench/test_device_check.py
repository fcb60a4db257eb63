"""bench/gpu/device_check.py on CPU: --smoke runs every phase without the packages the GPU box lacks, and its
parity really compares two different crop/encoder paths (a deliberately wrong crop on one side is reported)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
# Not on the GPU machine (torch 2.11 + triton, torchvision, timm, numpy, pynvml; av/open_clip are carried wheels)
ABSENT_ON_GPU_BOX = ("ray", "nvidia.dali", "torch_tensorrt", "polars")

pytest.importorskip("av")


def test_smoke_writes_every_phase_without_ray_polars_dali(tmp_path):
    out = tmp_path / "device_check.json"
    code = (
        "import runpy, sys\n"
        f"for name in {ABSENT_ON_GPU_BOX!r}:\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        f"sys.argv = ['device_check', '--smoke', '--out', {str(out)!r}]\n"
        "runpy.run_module('bench.gpu.device_check', run_name='__main__', alter_sys=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    sections = res["sections"]
    assert set(sections) == {"parity", "throughput", "detector", "encoder"}
    for name, sec in sections.items():
        assert sec["status"] == "ok" or (sec["status"] == "skipped" and sec["reason"]), (name, sec)
    parity = sections["parity"]
    assert parity["status"] == "ok" and parity["parity_ok"], parity
    assert {p["faces"] for p in parity["points"]} == {"none", "detect"}
    for p in parity["points"]:
        # two different paths: the interpreted Triton kernel and a torch.compile'd encoder against torch + eager
        assert p["a"]["crop"] == "torch" and p["a"]["encoder"] == "eager"
        assert p["b"]["crop"] == "triton-interpreted" and p["b"]["encoder"] == "torch.compile", p["b"]
        assert p["matched"] > 0 and p["crop_max_abs_err_b"] is not None and p["crop_max_abs_err_b"] <= 2e-2
        assert all(o["status"] == "ok" for o in p["outcomes_a"].values()) and all(o["status"] == "ok" for o in p["outcomes_b"].values())
    assert sections["detector"]["points"] and sections["encoder"]["points"]
    assert any(p["encoder"] == "torch.compile" for p in sections["encoder"]["points"])
    assert res["meta"]["versions"]["ray"].startswith("missing")


def test_smoke_parity_reports_a_wrong_crop_on_one_path(tmp_path, monkeypatch):
    """The check can fail: boxes shifted by 8 px inside path B's (interpreted Triton) crop show up as drift."""
    from bench.gpu.checks import common, parity
    from bench.gpu.harness import Bench, BenchConfig

    real = common.load_interpreted_triton_crop
    calls = []

    def wrong_crop_loader():
        fn = real()

        def shifted(frames, boxes, *args, **kwargs):
            calls.append(int(boxes.shape[0]))
            b = boxes.clone()
            b[:, 1:] += 8.0
            return fn(frames, b, *args, **kwargs)

        return shifted

    monkeypatch.setattr(parity, "load_interpreted_triton_crop", wrong_crop_loader)
    cfg = dataclasses.replace(common.CheckConfig.tiny(60), parity_faces=("none",))
    bcfg = BenchConfig.tiny()
    bcfg.budgets, bcfg.total_budget_s = {"parity": 120}, 150
    threads = torch.get_num_threads()
    try:
        bench = Bench(bcfg, tmp_path / "dc.json", None, set())
        res = bench.run("parity", lambda b: parity.parity_phase(cfg, bench, b))
    finally:
        torch.set_num_threads(threads)
    assert calls, "path B did not go through the (patched) Triton crop"
    assert res["status"] == "error" and not res["parity_ok"], res
    (p,) = res["points"]
    assert p["b"]["crop"] == "triton-interpreted" and not p["ok"]
    assert p["crop_max_abs_err_b"] > 0.1 and p["crop_max_abs_err_a"] == 0.0
    assert p["max_abs_dp"] > 0
    assert any("crop max error" in x for x in p["problems"])
    saved = json.loads((tmp_path / "dc.json").read_text())["sections"]["parity"]
    assert saved["status"] == "error" and saved["points"][0]["problems"] == p["problems"]
