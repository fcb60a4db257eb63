"""The GPU benchmark's harness: its configuration, per-section budgets with a hard timeout, the JSON it keeps, timing."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class BenchConfig:
    """Sizes and time budgets for one run (full or smoke)."""

    smoke: bool
    batches: list[int]
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    embed_dim: int = 512
    warmup_iters: int = 2
    seconds_per_point: float = 1.5  # timed phase per (mode, batch)
    max_iters: int = 50
    kernel_frames: int = 64
    kernel_height: int = 1080
    kernel_width: int = 1920
    kernel_boxes: int = 512
    kernel_size: int = 224
    decode_width: int = 1920
    decode_height: int = 1080
    decode_frames: int = 120
    decode_seconds: float = 6.0
    total_budget_s: float = 420.0  # 7 min for all sections (+ a hard-timeout grace) keeps a run < 8 min
    budgets: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def full() -> "BenchConfig":
        return BenchConfig(
            smoke=False,
            batches=[64, 256, 512, 1024],
            budgets={
                "decode": 40, "flops": 20, "kernel": 45,
                "model.eager_fp32": 35, "model.fp16_autocast": 20, "model.bf16_autocast": 20,
                "model.cudagraph_fp16": 35, "pipeline": 15, "model.compile_fp16": 150, "model.tensorrt_fp16": 60,
                "kernel.dali_crops": 20, "annotate": 40,
            },
        )

    @staticmethod
    def tiny() -> "BenchConfig":
        return BenchConfig(
            smoke=True, batches=[2, 4], image_size=32, patch_size=16, width=64, layers=2, heads=2, embed_dim=32,
            warmup_iters=1, seconds_per_point=0.05, max_iters=3,
            kernel_frames=2, kernel_height=48, kernel_width=64, kernel_boxes=6, kernel_size=16,
            decode_width=128, decode_height=96, decode_frames=20, decode_seconds=0.5, total_budget_s=120.0,
            budgets={
                "decode": 20, "flops": 10, "kernel": 30,
                "model.eager_fp32": 10, "model.fp16_autocast": 10, "model.bf16_autocast": 10,
                "model.cudagraph_fp16": 10, "pipeline": 10, "model.compile_fp16": 60, "model.tensorrt_fp16": 30,
                "kernel.dali_crops": 20, "annotate": 30,
            },
        )


class SkipSection(Exception):
    """A section cannot run here (missing package or device); the message is the reason."""


class SectionTimeout(Exception):
    """A section overran its hard time limit.

    An ``Exception``, so nothing outside :meth:`Bench.run` ever sees it; handlers
    inside a section that catch ``Exception`` per point re-raise it first, and
    :meth:`Bench.run` keeps every point the section measured before it fired.
    """


@contextlib.contextmanager
def hard_timeout(seconds: float):
    """Raise SectionTimeout in the main thread after ``seconds`` (SIGALRM; no-op where unavailable)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise SectionTimeout(f"hard timeout after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Bench:
    """Runs sections under budgets, collects their results, rewrites the JSON after each one."""

    RESERVE_S = 5.0  # kept back for writing results
    GRACE_S = 20.0  # hard limit = soft budget + grace

    def __init__(self, cfg: BenchConfig, out_path: Path, only: set[str] | None, skip: set[str]):
        self.cfg = cfg
        self.out_path = out_path
        self.only = only
        self.skip = skip
        self.t0 = time.perf_counter()
        self.results: dict = {"meta": {}, "sections": {}}
        self._live: dict | None = None  # the running section's partial result (points so far)

    def remaining(self) -> float:
        return self.cfg.total_budget_s - (time.perf_counter() - self.t0)

    def record_point(self, point: dict) -> None:
        """Keep one measured point of the running section and rewrite the JSON, so no timeout or kill loses it."""
        if self._live is not None:
            self._live.setdefault("points", []).append(point)
            self.write()

    def run(self, key: str, fn: Callable[[float], dict]) -> dict:
        budget = min(self.cfg.budgets.get(key, 30.0), self.remaining() - self.RESERVE_S)
        t = time.perf_counter()
        if self.only is not None and not any(key == s or key.startswith(s + ".") for s in self.only):
            res = {"status": "skipped", "reason": "not selected (--only)"}
        elif any(key == s or key.startswith(s + ".") for s in self.skip):
            res = {"status": "skipped", "reason": "deselected (--skip)"}
        elif budget < 1.0:
            res = {"status": "skipped", "reason": f"total time budget ({self.cfg.total_budget_s:.0f} s) exhausted"}
        else:
            print(f"[bench] {key}: budget {budget:.0f} s", flush=True)
            self._live = {"status": "running"}
            self.results["sections"][key] = self._live
            try:
                with hard_timeout(budget + self.GRACE_S):
                    res = fn(budget) or {}
                res.setdefault("status", "ok")
            except SkipSection as e:
                res = {"status": "skipped", "reason": str(e)}
            except Exception as e:  # noqa: BLE001 - a section's failure (or timeout) must not stop the others
                kept = {k: v for k, v in self._live.items() if k != "status"}
                res = {
                    **kept,
                    "status": "timeout" if isinstance(e, SectionTimeout) else "error",
                    "error": f"{type(e).__name__}: {e}"[:2000],
                    "traceback": traceback.format_exc()[-3000:],
                    "points_kept": len(kept.get("points", [])),
                }
            finally:
                self._live = None
                free_cuda()
            res["budget_s"] = round(budget, 1)
        res["elapsed_s"] = round(time.perf_counter() - t, 2)
        self.results["sections"][key] = res
        status = res["status"] + (f" ({res.get('reason') or res.get('error')})" if res["status"] != "ok" else "")
        print(f"[bench] {key}: {status} in {res['elapsed_s']:.1f} s", flush=True)
        self.write()
        return res

    def write(self) -> None:
        self.results["meta"]["total_elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=2, default=str))
        os.replace(tmp, self.out_path)


def free_cuda() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, seconds: float, max_iters: int,
              min_iters: int = 3) -> dict:
    """Mean seconds per call of ``fn`` after ``warmup`` calls; iteration count sized to ~``seconds``."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - t, 1e-6)
    iters = int(min(max(seconds / once, min_iters), max_iters))
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        sec = start.elapsed_time(end) / 1000.0 / iters
    else:
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        sec = (time.perf_counter() - t) / iters
    return {"s_per_call": sec, "iters": iters}


def versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "numpy": np.__version__}
    for mod in ("triton", "timm", "cv2", "av", "torch_tensorrt", "cupy", "onnxruntime"):
        try:
            v[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001
            v[mod] = f"missing ({type(e).__name__})"
    return v
