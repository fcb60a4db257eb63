#!/usr/bin/env python
"""Single-GPU benchmark for cliper-batch: encoder throughput, crop-kernel bandwidth, CPU decode rate.

Run from the repository root on the GPU test machine (torch + triton + timm/opencv;
no open_clip, ray, DALI, PyAV or TensorRT needed)::

    python -m bench.gpu.run            # full run, < 8 min on one H100
    python -m bench.gpu.run --smoke    # tiny sizes; also runs on a CPU-only box (~30 s)

Sections (each has its own time budget and try/except, so one failure or
timeout never kills the rest; results are rewritten to JSON after every
section, so even a killed run leaves what it measured):

* ``decode``: CPU decode frames/s (PyAV if importable, else ``cv2.VideoCapture``)
  of a generated 1080p video, one process with codec threads, and one
  single-threaded process per core.
* ``flops``: FLOPs per crop of the encoder, counted analytically and with
  ``torch.utils.flop_counter``; the issue's nominal 35 GFLOP is printed beside them.
* ``kernel``: the fused Triton crop+resize+normalise kernel on 64 1080p frames
  and 512 boxes at 224 px: correctness against the torch reference, effective
  GB/s (distinct input bytes its taps read + output bytes written) and a
  device-to-device ``copy_`` of the same byte count.
* ``model.*``: crops/s of the image encoder at batch 64/256/512/1024 for eager
  fp32, fp16 autocast, bf16 autocast, CUDA graphs (fp16, static batch),
  torch.compile (fp16, default mode) and Torch-TensorRT (if importable),
  with achieved TFLOP/s and % of the bf16 dense roofline.
* ``pipeline``: kernel (fp16 out) + fp16 encoder on GPU-resident frames at one batch.

The encoder is *architecture-equivalent* to open_clip's ``ViT-B-16`` visual
tower (width 768, 12 layers, 12 heads, patch 16, 224 px, 512-d projection)
with random weights: timm's ``vit_base_patch16_clip_224`` if timm imports,
else a plain-torch copy defined below. Speed does not depend on weight values.

Output: ``$OUT/gpu_bench.json`` if ``$OUT`` is set, else
``bench/results/gpu_bench.json`` (or ``--out``), and a markdown summary on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import multiprocessing as mp
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ISSUE_NOMINAL_FLOPS_PER_CROP = 35e9
H100_SXM_BF16_DENSE_TFLOPS = 989.0
ARCH_NOTE = (
    "random weights; architecture-equivalent to open_clip ViT-B-16 visual tower "
    "(conv patch embed, class token, ln_pre, 12 pre-LN blocks, ln_post on CLS, 768->512 projection)"
)


# --------------------------------------------------------------------------- configuration


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
            },
        )


class SkipSection(Exception):
    """A section cannot run here (missing package or device); the message is the reason."""


class SectionTimeout(BaseException):
    """A section overran its hard time limit (BaseException: per-point handlers must not swallow it)."""


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

    def remaining(self) -> float:
        return self.cfg.total_budget_s - (time.perf_counter() - self.t0)

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
            try:
                with hard_timeout(budget + self.GRACE_S):
                    res = fn(budget) or {}
                res.setdefault("status", "ok")
            except SkipSection as e:
                res = {"status": "skipped", "reason": str(e)}
            except (Exception, SectionTimeout) as e:  # noqa: BLE001 - a section's failure must not stop the others
                res = {
                    "status": "error",
                    "error": f"{type(e).__name__}: {e}"[:2000],
                    "traceback": traceback.format_exc()[-3000:],
                }
            finally:
                _free_cuda()
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


def _free_cuda() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, seconds: float, max_iters: int,
              min_iters: int = 3) -> dict:
    """Mean seconds per call of ``fn`` after ``warmup`` calls; iteration count sized to ~``seconds``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
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


# --------------------------------------------------------------------------- encoder


class _Block(nn.Module):
    """Pre-LN transformer block as in open_clip's ResidualAttentionBlock (GELU MLP, ratio 4)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # == nn.MultiheadAttention in_proj (with bias)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.out_proj(a.transpose(1, 2).reshape(b, t, c))
        return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))


class ClipVisionTower(nn.Module):
    """Plain-torch equivalent of open_clip's VisionTransformer (ViT-B-16 sizes by default)."""

    def __init__(self, image_size=224, patch_size=16, width=768, layers=12, heads=12, embed_dim=512):
        super().__init__()
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([_Block(width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid^2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_post(x[:, 0]) @ self.proj.to(x.dtype)


def build_encoder(cfg: BenchConfig, impl: str) -> tuple[nn.Module, str]:
    """The benchmark encoder (eval mode, no grads) and a name for the implementation used."""
    model: nn.Module | None = None
    name = ""
    if impl in ("auto", "timm"):
        try:
            import timm
            from timm.models.vision_transformer import VisionTransformer

            if cfg.smoke or (cfg.image_size, cfg.patch_size, cfg.width, cfg.layers, cfg.heads) != (224, 16, 768, 12, 12):
                model = VisionTransformer(
                    img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.width, depth=cfg.layers,
                    num_heads=cfg.heads, pre_norm=True, num_classes=cfg.embed_dim, global_pool="token",
                )
                name = f"timm {timm.__version__} VisionTransformer (CLIP layout, tiny)"
            else:
                model = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=cfg.embed_dim)
                name = f"timm {timm.__version__} vit_base_patch16_clip_224"
        except Exception as e:  # noqa: BLE001 - fall back to the plain-torch tower
            if impl == "timm":
                raise
            print(f"[bench] timm unavailable ({type(e).__name__}: {e}); using the plain-torch tower", flush=True)
    if model is None:
        model = ClipVisionTower(cfg.image_size, cfg.patch_size, cfg.width, cfg.layers, cfg.heads, cfg.embed_dim)
        name = "plain-torch ClipVisionTower"
    model.eval().requires_grad_(False)
    return model, name


def analytic_flops_per_crop(cfg: BenchConfig, mlp_ratio: float = 4.0) -> dict:
    """Matmul FLOPs (2 x MACs) of one forward pass; norms, softmax and adds are ignored (< 1%)."""
    grid = cfg.image_size // cfg.patch_size
    t, w = grid * grid + 1, cfg.width
    hidden = int(w * mlp_ratio)
    patch = grid * grid * (3 * cfg.patch_size**2) * w
    per_layer = t * w * 3 * w + 2 * t * t * w + t * w * w + 2 * t * w * hidden
    head = w * cfg.embed_dim
    macs = patch + cfg.layers * per_layer + head
    return {
        "flops": 2 * macs,
        "patch_embed": 2 * patch,
        "attention_scores_and_mix": 2 * cfg.layers * 2 * t * t * w,
        "linear_layers": 2 * cfg.layers * (per_layer - 2 * t * t * w),
        "projection": 2 * head,
        "tokens": t,
    }


def measured_flops_per_crop(model: nn.Module, cfg: BenchConfig) -> int:
    """FLOPs of one crop counted by torch's FlopCounterMode (math SDPA so attention is counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    m = copy.deepcopy(model).cpu().float()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.inference_mode():
        m(x)
    return int(fc.get_total_flops())


def peak_bf16_tflops(device_name: str) -> tuple[float | None, str]:
    """Dense bf16 tensor-core peak for known parts (vendor spec sheets, no sparsity)."""
    n = device_name.upper()
    if "H100" in n and "PCIE" in n:
        return 756.0, "H100 PCIe dense bf16"
    if "H100" in n and "NVL" in n:
        return 835.0, "H100 NVL dense bf16"
    if "H100" in n or "H200" in n or "GH200" in n or "H800" in n:
        return H100_SXM_BF16_DENSE_TFLOPS, "H100/H200 SXM dense bf16"
    if "A100" in n:
        return 312.0, "A100 dense bf16"
    if "L40S" in n:
        return 362.0, "L40S dense bf16"
    return None, f"unknown peak for {device_name!r}"


# --------------------------------------------------------------------------- model sections


class ModelBench:
    """Shared state for the encoder sections: model, inputs, FLOPs, roofline."""

    def __init__(self, cfg: BenchConfig, device: torch.device, model: nn.Module, flops_per_crop: float | None):
        self.cfg = cfg
        self.device = device
        self.model = model
        self.flops = flops_per_crop
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        self.peak, self.peak_source = peak_bf16_tflops(name)
        self.x_max = None

    def inputs(self, batch: int) -> torch.Tensor:
        if self.x_max is None or self.x_max.shape[0] < batch:
            self.x_max = None
            _free_cuda()
            g = torch.Generator(device=self.device).manual_seed(0)
            s = self.cfg.image_size
            self.x_max = torch.randn(max(self.cfg.batches), 3, s, s, generator=g, device=self.device)
        return self.x_max[:batch]

    def point(self, batch: int, timing: dict, extra: dict | None = None) -> dict:
        cps = batch / timing["s_per_call"]
        p = {"batch": batch, "ms_per_batch": round(timing["s_per_call"] * 1e3, 3), "crops_per_s": round(cps, 1),
             "iters": timing["iters"]}
        if self.flops:
            tf = cps * self.flops / 1e12
            p["tflops"] = round(tf, 2)
            p["pct_of_989_bf16_dense"] = round(100 * tf / H100_SXM_BF16_DENSE_TFLOPS, 2)
            p["pct_of_989_at_35gflop"] = round(100 * cps * ISSUE_NOMINAL_FLOPS_PER_CROP / 1e12 / H100_SXM_BF16_DENSE_TFLOPS, 2)
            if self.peak:
                p["pct_of_device_peak"] = round(100 * tf / self.peak, 2)
        if self.device.type == "cuda":
            p["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        if extra:
            p.update(extra)
        return p

    def sweep(self, budget: float, make_fn: Callable[[int], Callable[[], object]], label: str) -> dict:
        """Time ``make_fn(batch)()`` for every batch, within ``budget`` seconds; OOM/errors per point."""
        t0 = time.perf_counter()
        points, skipped = [], []
        for b in self.cfg.batches:
            left = budget - (time.perf_counter() - t0)
            if left < 1.0:
                skipped.append({"batch": b, "reason": "section budget exhausted"})
                continue
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            try:
                fn = make_fn(b)
                secs = min(self.cfg.seconds_per_point, max(left / 4, 0.05))
                timing = time_call(fn, self.device, self.cfg.warmup_iters, secs, self.cfg.max_iters)
                points.append(self.point(b, timing))
            except torch.cuda.OutOfMemoryError as e:
                skipped.append({"batch": b, "reason": f"CUDA OOM: {str(e)[:200]}"})
            except Exception as e:  # noqa: BLE001 - one batch size failing must not hide the others
                skipped.append({"batch": b, "reason": f"{type(e).__name__}: {str(e)[:500]}"})
            finally:
                fn = None
                _free_cuda()
            print(f"[bench]   {label} batch {b}: " + (f"{points[-1]['crops_per_s']:.0f} crops/s" if points and points[-1]["batch"] == b else "skipped"), flush=True)
        if not points:
            raise RuntimeError(f"no batch size completed: {skipped}")
        return {"points": points, "skipped_points": skipped, "status": "ok" if not skipped else "partial"}

    # ---- modes

    def eager(self, budget: float, dtype: torch.dtype | None) -> dict:
        dev = self.device.type

        def make(b: int):
            x = self.inputs(b)

            def fn():
                with torch.inference_mode():
                    if dtype is None:
                        return self.model(x)
                    with torch.autocast(dev, dtype=dtype):
                        return self.model(x)

            return fn

        res = self.sweep(budget, make, f"autocast {dtype}" if dtype else "eager fp32")
        if dtype is None and dev == "cuda":
            res["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
            res["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        return res

    def cudagraph(self, budget: float) -> dict:
        if self.device.type != "cuda":
            raise SkipSection("CUDA graphs need a CUDA device")

        def make(b: int):
            static_x = self.inputs(b)
            with torch.no_grad():
                ref = self._fp16(static_x)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        self._fp16(static_x)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_y = self._fp16(static_x)
            graph.replay()
            torch.cuda.synchronize()
            diffs.append(float((static_y.float() - ref.float()).abs().max()))

            def fn():
                graph.replay()
                return static_y

            return fn

        diffs: list[float] = []
        res = self.sweep(budget, make, "cudagraph fp16")
        res["max_abs_diff_vs_eager_fp16"] = max(diffs) if diffs else None
        return res

    def _fp16(self, x: torch.Tensor) -> torch.Tensor:
        # cache_enabled=False: autocast's weight-cast cache must not be captured by a CUDA graph.
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            return self.model(x)

    def compiled(self, budget: float, dynamic: bool) -> dict:
        if self.device.type != "cuda":
            raise SkipSection("torch.compile benchmark runs on CUDA only (the CPU smoke run skips the slow inductor compile)")
        import torch._dynamo

        torch._dynamo.reset()
        # Default mode (max-autotune would blow the budget). dynamic: one compile with a symbolic batch
        # dimension only (mark_dynamic below); else one static compile per batch size.
        cm = torch.compile(self.model, dynamic=None if dynamic else False)
        compile_times: dict[int, float] = {}

        def make(b: int):
            x = self.inputs(b)
            if dynamic:
                torch._dynamo.mark_dynamic(x, 0)

            def fn():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                    return cm(x)

            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            compile_times[b] = round(time.perf_counter() - t, 1)
            print(f"[bench]   compile batch {b}: first call {compile_times[b]} s", flush=True)
            return fn

        res = self.sweep(budget, make, "compile fp16")
        res["first_call_s"] = compile_times
        res["dynamic_batch"] = dynamic
        res["mode"] = "default"
        torch._dynamo.reset()
        return res

    def tensorrt(self, budget: float) -> dict:
        if self.device.type != "cuda":
            raise SkipSection("TensorRT needs a CUDA device")
        try:
            import torch_tensorrt
        except Exception as e:  # noqa: BLE001 - ImportError or a broken install (missing libnvinfer)
            raise SkipSection(f"torch_tensorrt not importable: {type(e).__name__}: {e}") from None
        half = copy.deepcopy(self.model).half()
        build_times: dict[int, float] = {}

        def make(b: int):
            x = self.inputs(b).half()
            t = time.perf_counter()
            trt = torch_tensorrt.compile(
                half, ir="dynamo", inputs=[torch_tensorrt.Input(shape=list(x.shape), dtype=torch.half)],
                enabled_precisions={torch.half},
            )
            build_times[b] = round(time.perf_counter() - t, 1)

            def fn():
                with torch.inference_mode():
                    return trt(x)

            return fn

        res = self.sweep(budget, make, "tensorrt fp16")
        res["build_s"] = build_times
        res["torch_tensorrt"] = getattr(torch_tensorrt, "__version__", "?")
        return res


# --------------------------------------------------------------------------- crop kernel


def _random_boxes(cfg: BenchConfig, n: int, seed: int = 0) -> torch.Tensor:
    """Square face-like boxes: sides 5-60% of the frame height, ~15% partly outside the frame."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.kernel_height, cfg.kernel_width
    side = h * (0.05 + 0.55 * torch.rand(n, generator=g))
    cx = w * (-0.05 + 1.1 * torch.rand(n, generator=g))
    cy = h * (-0.05 + 1.1 * torch.rand(n, generator=g))
    fi = torch.randint(0, cfg.kernel_frames, (n,), generator=g).float()
    return torch.stack([fi, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


def _random_frames(cfg: BenchConfig, device: torch.device, seed: int) -> torch.Tensor:
    """uint8 noise frames [F, H, W, 3], generated on ``device`` (content does not affect the kernel's speed)."""
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (cfg.kernel_frames, cfg.kernel_height, cfg.kernel_width, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=g)


def kernel_section(cfg: BenchConfig, device: torch.device, budget: float) -> dict:
    """Correctness vs the torch reference, effective GB/s, and a same-bytes copy_ baseline."""
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if device.type != "cuda" and not interpret:
        raise SkipSection("the Triton kernel needs CUDA (or TRITON_INTERPRET=1 with --smoke)")
    try:
        from cliper_batch.kernels.crop_resize import crop_resize_bytes_moved, crop_resize_normalize_triton
    except ImportError as e:
        raise SkipSection(f"cannot import cliper_batch.kernels.crop_resize: {e}") from None
    from cliper_batch.crops import crop_resize_normalize

    kdev = torch.device("cpu") if interpret else device
    t_start = time.perf_counter()
    frames = _random_frames(cfg, kdev, seed=1)
    boxes = _random_boxes(cfg, cfg.kernel_boxes).to(kdev)
    s = cfg.kernel_size
    out: dict = {"frames": list(frames.shape), "boxes": cfg.kernel_boxes, "size": s, "interpreted": interpret,
                 "device": str(kdev)}

    ref = crop_resize_normalize(frames, boxes, s)
    got32 = crop_resize_normalize_triton(frames, boxes, s)
    got16 = crop_resize_normalize_triton(frames, boxes, s, out_dtype=torch.float16)
    out["max_abs_err_fp32"] = float((got32 - ref).abs().max())
    out["max_abs_err_fp16"] = float((got16.float() - ref).abs().max())
    out["correct"] = out["max_abs_err_fp32"] <= 1e-2 and out["max_abs_err_fp16"] <= 2e-2
    del ref, got16
    if not out["correct"]:
        out["status"] = "error"
        out["error"] = "kernel output differs from the torch reference beyond tolerance"

    warm, iters = (1, 2) if cfg.smoke else (3, 30)
    secs = 0.05 if cfg.smoke else 0.5

    def timed(fn) -> float:
        return time_call(fn, kdev, warm, secs, iters)["s_per_call"]

    configs = [(1024, 4)] if cfg.smoke else [(256, 2), (512, 4), (1024, 4), (1024, 8), (2048, 8)]
    sweep = []
    for block, warps in configs:
        if time.perf_counter() - t_start > budget * 0.6:
            break
        t = timed(lambda block=block, warps=warps: crop_resize_normalize_triton(
            frames, boxes, s, out=got32, block=block, num_warps=warps, check_boxes=False))
        sweep.append({"block": block, "num_warps": warps, "ms": round(t * 1e3, 4)})
    best = min(sweep, key=lambda r: r["ms"])
    out["config_sweep"] = sweep
    out["best_config"] = {"block": best["block"], "num_warps": best["num_warps"]}

    for dt, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        nbytes = crop_resize_bytes_moved(frames.shape, boxes, s, dt)
        buf = torch.empty((cfg.kernel_boxes, 3, s, s), dtype=dt, device=kdev)
        t = timed(lambda dt=dt, buf=buf: crop_resize_normalize_triton(
            frames, boxes, s, out_dtype=dt, out=buf, block=best["block"], num_warps=best["num_warps"],
            check_boxes=False))
        half = nbytes["total"] // 2
        src = torch.empty(half, dtype=torch.uint8, device=kdev)
        dst = torch.empty_like(src)
        tc = timed(lambda src=src, dst=dst: dst.copy_(src))
        del src, dst, buf
        kgbs = nbytes["total"] / t / 1e9
        cgbs = 2 * half / tc / 1e9
        out[name] = {
            "bytes_read": nbytes["read"], "bytes_written": nbytes["written"], "bytes_total": nbytes["total"],
            "ms": round(t * 1e3, 4), "crops_per_s": round(cfg.kernel_boxes / t, 1),
            "effective_GBps": round(kgbs, 1), "copy_same_bytes_ms": round(tc * 1e3, 4),
            "copy_GBps": round(cgbs, 1), "fraction_of_copy": round(kgbs / cgbs, 3),
        }
    if time.perf_counter() - t_start < budget * 0.8:
        tr = time_call(lambda: crop_resize_normalize(frames, boxes, s), kdev, 1, secs, 5 if not cfg.smoke else 1,
                       min_iters=1)["s_per_call"]
        out["torch_reference_ms"] = round(tr * 1e3, 3)
        out["speedup_vs_torch_reference"] = round(tr / (out["fp32"]["ms"] / 1e3), 2)
    return out


def pipeline_section(cfg: BenchConfig, device: torch.device, mb: ModelBench, budget: float) -> dict:
    """Kernel (fp16 out) feeding the fp16-autocast encoder, frames already on the GPU."""
    if device.type != "cuda":
        raise SkipSection("end-to-end GPU pipeline timing needs CUDA")
    from cliper_batch.kernels.crop_resize import crop_resize_normalize_triton

    b = 512 if 512 in cfg.batches else cfg.batches[-1]
    frames = _random_frames(cfg, device, seed=2)
    boxes = _random_boxes(cfg, b, seed=3).to(device)
    crop = torch.empty((b, 3, cfg.image_size, cfg.image_size), dtype=torch.float16, device=device)

    def fn():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            crop_resize_normalize_triton(frames, boxes, cfg.image_size, out_dtype=torch.float16, out=crop,
                                         check_boxes=False)
            return mb.model(crop)

    timing = time_call(fn, device, cfg.warmup_iters, min(cfg.seconds_per_point, budget / 3), cfg.max_iters)
    return {"points": [mb.point(b, timing)], "note": f"{cfg.kernel_frames} frames of "
            f"{cfg.kernel_width}x{cfg.kernel_height} resident on the GPU; crops of {cfg.image_size} px"}


# --------------------------------------------------------------------------- CPU decode


def _synthetic_frames(w: int, h: int, n: int) -> list[np.ndarray]:
    """Textured, moving RGB frames (noise + gradient, rolled per frame) so the codec has real work."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], -1)
    tile = rng.integers(0, 48, size=(64, 64, 3))
    tex = np.tile(tile, (h // 64 + 1, w // 64 + 1, 1))[:h, :w]
    img = np.clip(base + tex, 0, 255).astype(np.uint8)
    return [np.roll(img, shift=(3 * i, 5 * i), axis=(0, 1)) for i in range(n)]


def _make_video_pyav(path: str, frames: list[np.ndarray], fps: int) -> str:
    import av

    h, w, _ = frames[0].shape
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "23"}
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return "h264"


def _make_video_cv2(tmpdir: str, frames: list[np.ndarray], fps: int) -> tuple[str, str]:
    import cv2

    h, w, _ = frames[0].shape
    for fourcc, ext in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        path = os.path.join(tmpdir, f"bench_{fourcc}{ext}")
        wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
        if not wr.isOpened():
            continue
        for f in frames:
            wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        wr.release()
        cap = cv2.VideoCapture(path)
        ok, _ = cap.read()
        cap.release()
        if ok:
            return path, fourcc
    raise SkipSection("cv2.VideoWriter could not write mp4v or MJPG video here")


def _decode_pass(backend: str, path: str, deadline: float, threads: int) -> int:
    """Decode ``path`` once to RGB arrays (stopping at ``deadline``); returns frames decoded."""
    n = 0
    if backend == "pyav":
        import av

        with av.open(path) as c:
            st = c.streams.video[0]
            if threads == 1:
                st.thread_count = 1
            else:
                st.thread_type = "AUTO"
            for frame in c.decode(st):
                frame.to_ndarray(format="rgb24")
                n += 1
                if time.time() >= deadline:
                    break
    else:
        import cv2

        if threads == 1:
            cv2.setNumThreads(1)
        cap = cv2.VideoCapture(path)
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                n += 1
                if time.time() >= deadline:
                    break
        finally:
            cap.release()
    return n


def _decode_worker(args: tuple) -> int:
    """Decode repeatedly between wall-clock ``t_start`` and ``t_end``; frames decoded (a pool task)."""
    backend, path, t_start, t_end, threads = args
    while time.time() < t_start:
        time.sleep(0.002)
    n = 0
    while time.time() < t_end:
        k = _decode_pass(backend, path, t_end, threads)
        if k == 0:
            raise RuntimeError(f"decoded no frames from {path}")
        n += k
    return n


def decode_section(cfg: BenchConfig, backend_pref: str, budget: float) -> dict:
    backend = None
    reasons = []
    for cand in (["pyav", "cv2"] if backend_pref == "auto" else [backend_pref]):
        try:
            __import__("av" if cand == "pyav" else "cv2")
            backend = cand
            break
        except Exception as e:  # noqa: BLE001
            reasons.append(f"{cand}: {type(e).__name__}: {e}")
    if backend is None:
        raise SkipSection("no decoder importable (" + "; ".join(reasons) + ")")
    t0 = time.perf_counter()
    fps = 30
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="cliper_decode_bench_") as tmp:
        frames = _synthetic_frames(cfg.decode_width, cfg.decode_height, cfg.decode_frames)
        if backend == "pyav":
            path = os.path.join(tmp, "bench.mp4")
            codec = _make_video_pyav(path, frames, fps)
        else:
            path, codec = _make_video_cv2(tmp, frames, fps)
        del frames
        size = os.path.getsize(path)
        gen_s = time.perf_counter() - t0
        dur = min(cfg.decode_seconds, max((budget - gen_s) / 3, 0.2))
        out = {"backend": backend, "codec": codec, "width": cfg.decode_width, "height": cfg.decode_height,
               "frames_in_file": cfg.decode_frames, "bitrate_mbps": round(size * 8 / (cfg.decode_frames / fps) / 1e6, 2),
               "generate_s": round(gen_s, 2), "cores": cores, "includes": "decode + conversion to RGB uint8 arrays"}
        t1 = time.time()
        n1 = _decode_worker((backend, path, t1, t1 + dur, 0))
        out["one_process_codec_threads_fps"] = round(n1 / (time.time() - t1), 1)
        procs = max(1, cores)
        method = "fork" if ("fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized()) else "spawn"
        ctx = mp.get_context(method)
        with ctx.Pool(procs) as pool:
            t_start = time.time() + (1.0 if method == "fork" else 8.0)  # let the workers come up first
            counts = pool.map(_decode_worker, [(backend, path, t_start, t_start + dur, 1)] * procs)
        agg = sum(counts) / dur
        out.update({"processes": procs, "start_method": method, "all_cores_fps": round(agg, 1),
                    "per_process_single_thread_fps": round(agg / procs, 1), "seconds_per_measure": round(dur, 2)})
    return out


# --------------------------------------------------------------------------- driver


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "numpy": np.__version__}
    for mod in ("triton", "timm", "cv2", "av", "torch_tensorrt", "cupy", "onnxruntime"):
        try:
            v[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001
            v[mod] = f"missing ({type(e).__name__})"
    return v


MODEL_MODES = ("eager_fp32", "fp16_autocast", "bf16_autocast", "cudagraph_fp16", "compile_fp16", "tensorrt_fp16")


def markdown_summary(results: dict, cfg: BenchConfig) -> str:
    sec = results["sections"]
    lines = [f"## cliper-batch GPU bench ({results['meta'].get('device')}; {results['meta'].get('model_impl')})", ""]
    fl = sec.get("flops", {})
    if fl.get("status") == "ok":
        lines.append(f"FLOPs/crop: analytic {fl['analytic_gflops']:.2f} G, counted {fl.get('measured_gflops')} G, "
                     f"issue nominal {ISSUE_NOMINAL_FLOPS_PER_CROP / 1e9:.0f} G")
        lines.append("")
    lines.append("| mode | " + " | ".join(f"b={b} crops/s" for b in cfg.batches) + " | best % of 989 TF |")
    lines.append("|---|" + "---|" * (len(cfg.batches) + 1))
    for mode in MODEL_MODES:
        r = sec.get(f"model.{mode}", {})
        pts = {p["batch"]: p for p in r.get("points", [])}
        if not pts:
            why = r.get("reason") or r.get("error") or r.get("status", "not run")
            lines.append(f"| {mode} | " + " | ".join("-" for _ in cfg.batches) + f" | {str(why)[:80]} |")
            continue
        best = max((p.get("pct_of_989_bf16_dense", 0) for p in pts.values()), default=0)
        cells = [f"{pts[b]['crops_per_s']:.0f}" if b in pts else "-" for b in cfg.batches]
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {best:.1f}% |")
    lines.append("")
    k = sec.get("kernel", {})
    if "fp32" in k:
        lines.append(f"crop kernel ({k['boxes']} boxes -> {k['size']} px, {k['frames'][0]} frames "
                     f"{k['frames'][2]}x{k['frames'][1]}): fp32 {k['fp32']['ms']} ms, {k['fp32']['effective_GBps']} GB/s "
                     f"= {k['fp32']['fraction_of_copy']:.2f} of copy_ ({k['fp32']['copy_GBps']} GB/s); fp16 out "
                     f"{k['fp16']['ms']} ms, {k['fp16']['effective_GBps']} GB/s; max err fp32 {k['max_abs_err_fp32']:.2e}"
                     + (" [interpreted]" if k.get("interpreted") else ""))
    else:
        lines.append(f"crop kernel: {k.get('status')} {k.get('reason') or k.get('error') or ''}")
    p = sec.get("pipeline", {})
    if p.get("points"):
        pp = p["points"][0]
        lines.append(f"kernel + fp16 encoder, batch {pp['batch']}: {pp['crops_per_s']:.0f} crops/s")
    d = sec.get("decode", {})
    if d.get("status") == "ok":
        lines.append(f"CPU decode ({d['backend']}, {d['codec']} {d['width']}x{d['height']}, {d['bitrate_mbps']} Mb/s): "
                     f"1 process {d['one_process_codec_threads_fps']} fps; {d['processes']} processes "
                     f"{d['all_cores_fps']} fps")
    else:
        lines.append(f"CPU decode: {d.get('status')} {d.get('reason') or d.get('error') or ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU (CUDA-only parts are skipped)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_bench.json or bench/results/)")
    ap.add_argument("--model", choices=["auto", "timm", "torch"], default="auto")
    ap.add_argument("--decoder", choices=["auto", "pyav", "cv2"], default="auto")
    ap.add_argument("--batches", type=str, default=None, help="comma-separated batch sizes (override)")
    ap.add_argument("--only", type=str, default=None, help="comma-separated sections, e.g. kernel,model.eager_fp32")
    ap.add_argument("--skip", type=str, default="", help="comma-separated sections to skip")
    ap.add_argument("--static-compile", action="store_true", help="torch.compile with dynamic=False (recompiles per batch)")
    ap.add_argument("--total-budget", type=float, default=None, help="seconds for all sections")
    args = ap.parse_args(argv)

    cfg = BenchConfig.tiny() if args.smoke else BenchConfig.full()
    if args.batches:
        cfg.batches = [int(b) for b in args.batches.split(",") if b]
    if args.total_budget:
        cfg.total_budget_s = args.total_budget
    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.smoke:
        print("no CUDA device: the full benchmark needs a GPU; use --smoke for a CPU check", file=sys.stderr)
        return 2
    if not has_cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # CPU smoke: run the Triton kernel in the interpreter
    device = torch.device("cuda" if has_cuda else "cpu")
    if args.out is not None:
        out_path = args.out
    elif os.environ.get("OUT"):
        out_path = Path(os.environ["OUT"]) / "gpu_bench.json"
    else:
        out_path = REPO_ROOT / "bench" / "results" / ("gpu_bench_smoke.json" if args.smoke else "gpu_bench.json")
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bench = Bench(cfg, out_path, only, skip)
    meta = bench.results["meta"]
    meta.update({
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": cfg.smoke,
        "argv": sys.argv[1:] if argv is None else argv, "host": platform.node(), "cpu_count": os.cpu_count(),
        "versions": _versions(), "config": asdict(cfg), "architecture_note": ARCH_NOTE,
    })
    bench.write()

    # CPU decode first: before CUDA is initialised (get_device_name would do it), so the pool can fork.
    bench.run("decode", lambda b: decode_section(cfg, args.decoder, b))
    meta["device"] = torch.cuda.get_device_name(0) if has_cuda else "cpu"
    if has_cuda:
        props = torch.cuda.get_device_properties(0)
        meta["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        meta["sm_count"] = props.multi_processor_count

    model, impl = build_encoder(cfg, args.model)
    meta["model_impl"] = impl
    meta["model_params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    flops_holder: dict = {}

    def flops(budget: float) -> dict:
        a = analytic_flops_per_crop(cfg)
        res = {"analytic_flops": a["flops"], "analytic_gflops": round(a["flops"] / 1e9, 3), "analytic_breakdown": a,
               "issue_nominal_gflops": ISSUE_NOMINAL_FLOPS_PER_CROP / 1e9}
        flops_holder["value"] = a["flops"]
        m = measured_flops_per_crop(model, cfg)
        res["measured_flops"] = m
        res["measured_gflops"] = round(m / 1e9, 3)
        flops_holder["value"] = m
        return res

    bench.run("flops", flops)
    model = model.to(device)
    mb = ModelBench(cfg, device, model, flops_holder.get("value") or analytic_flops_per_crop(cfg)["flops"])
    meta["roofline"] = {"peak_bf16_dense_tflops_device": mb.peak, "peak_source": mb.peak_source,
                        "reference_tflops": H100_SXM_BF16_DENSE_TFLOPS, "flops_per_crop_used": mb.flops}
    bench.run("model.eager_fp32", lambda b: mb.eager(b, None))
    bench.run("model.fp16_autocast", lambda b: mb.eager(b, torch.float16))
    bench.run("model.bf16_autocast", lambda b: mb.eager(b, torch.bfloat16))
    bench.run("model.cudagraph_fp16", mb.cudagraph)
    bench.run("model.compile_fp16", lambda b: mb.compiled(b, dynamic=not args.static_compile))
    bench.run("model.tensorrt_fp16", mb.tensorrt)
    # The Triton kernel runs last: a faulting kernel poisons the CUDA context for the rest of the process.
    bench.run("kernel", lambda b: kernel_section(cfg, device, b))
    bench.run("pipeline", lambda b: pipeline_section(cfg, device, mb, b))
    bench.write()
    print()
    print(markdown_summary(bench.results, cfg))
    print(f"\nJSON: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
