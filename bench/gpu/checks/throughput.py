"""The ``throughput`` phase: the fused worker on the device over a generated 720p corpus."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time

import numpy as np
import torch

from bench.gpu.harness import Bench, SkipSection, sync
from bench.gpu.checks.common import CheckConfig, refs_batch, shipped_models
from bench.gpu.checks.parity import PathSpec, build_worker, run_worker


class GpuBusySampler:
    """GPU utilisation (NVML, % of time a kernel ran) sampled every ``period`` s on a thread; None without pynvml."""

    def __init__(self, device: torch.device, period: float = 0.1) -> None:
        self.samples: list[int] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.type != "cuda":
            self.reason = "not a CUDA device"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._nvml = pynvml
        except Exception as e:  # noqa: BLE001
            self.reason = f"pynvml unusable: {type(e).__name__}: {e}"
            return
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            with contextlib.suppress(Exception):
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu))

    def __enter__(self) -> "GpuBusySampler":
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_busy_pct": None, "reason": self.reason or "no samples"}
        return {"gpu_busy_pct": round(float(np.mean(self.samples)), 1), "samples": len(self.samples)}


def throughput_phase(cfg: CheckConfig, device: torch.device, bench: Bench, budget: float) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"PyAV not installed ({e}): carry the av wheel") from None
    from cliper_batch.decode.testvideos import make_corpus

    models, note = shipped_models(cfg.smoke)
    spec = models[0]
    w, h = cfg.throughput_size
    out: dict = {"model": spec, "model_note": note, "faces": "none", "decoder": "pyav (no NVDEC: DALI absent)",
                 "size": [w, h], "seconds_per_video": cfg.throughput_seconds}
    with tempfile.TemporaryDirectory(prefix="cliper_throughput_") as tmp:
        t = time.perf_counter()
        paths = make_corpus(tmp, cfg.throughput_videos, seed=5, duration_s=cfg.throughput_seconds, width=w, height=h)
        warm = make_corpus(os.path.join(tmp, "warm"), 1, seed=9, duration_s=2.0, width=w, height=h)
        out["generate_s"] = round(time.perf_counter() - t, 2)
        errs: list[float] = []
        stage, info = build_worker(spec, "none", cfg, PathSpec("throughput", str(device)), errs)
        out["worker"] = info
        run_worker(stage, refs_batch(warm), False)  # warm-up: kernels compiled, decoders built
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        busy0 = stage.scorer.busy_s
        with GpuBusySampler(device) as gpu:
            seg, outcomes, wall = run_worker(stage, refs_batch(paths), False)
        sync(device)
        clips = len(seg)
        frames = clips * cfg.frames_per_segment
        out.update({
            "videos": len(paths), "outcomes_ok": sum(o["status"] == "ok" for o in outcomes.values()),
            "clips": clips, "sampled_frames": frames, "wall_s": round(wall, 3),
            "sampled_frames_per_s": round(frames / wall, 1), "crops_per_s": round(frames / wall, 1),
            "model_busy_share": round((stage.scorer.busy_s - busy0) / wall, 3),
            "crop_max_abs_err_vs_torch": max(errs) if errs else None, **gpu.summary(),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        })
    return out
