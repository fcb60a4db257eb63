"""The ``encoder`` phase: open_clip ViT-B-16 crops/s, eager and torch.compile, against a measured matmul ceiling."""
from __future__ import annotations

import time
from functools import partial

import torch

from bench.gpu.harness import Bench, BenchConfig, SkipSection, time_call
from bench.gpu.vit import analytic_flops_per_crop, peak_bf16_tflops
from bench.gpu.checks.common import CheckConfig


def matmul_ceiling(device: torch.device, n: int, seconds: float) -> dict:
    """Measured dense matmul TFLOP/s (bf16 on CUDA, fp32 on CPU) at n x n x n."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_call(lambda: a @ b, device, 2, seconds, 200)
    return {"dtype": str(dtype), "n": n, "tflops": round(2 * n**3 / t["s_per_call"] / 1e12, 4)}


def _dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001
        return -1


def encoder_phase(cfg: CheckConfig, device: torch.device, bench: Bench, budget: float) -> dict:
    try:
        import open_clip  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"open_clip not installed ({e}): carry the open_clip_torch, ftfy, wcwidth wheels") from None
    import torch.nn.functional as F

    from cliper_batch.model.backends import compile_encoder
    from cliper_batch.model.cliper import score_images
    from cliper_batch.model.factory import load_model

    loaded = load_model(f"openclip:{cfg.encoder_arch}", device=device)
    model = loaded.model.eval()
    S, T = loaded.image_size, cfg.frames_per_segment
    half = torch.float16 if device.type == "cuda" else torch.float32  # fp16 on CPU is refused by select_dtype
    ceiling = matmul_ceiling(device, cfg.matmul_n, min(cfg.seconds_per_point, budget / 10))
    peak, peak_src = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else (None, "cpu")
    flops = None
    if cfg.encoder_arch == "ViT-B-16":
        flops = analytic_flops_per_crop(BenchConfig.full())["flops"]
    out: dict = {"arch": cfg.encoder_arch, "weights": "random init (no weights offline)", "image_size": S,
                 "dtype": str(half), "matmul_ceiling": ceiling, "spec_peak_bf16_tflops": peak, "peak_source": peak_src,
                 "flops_per_crop": flops}
    if flops:
        out["ceiling_crops_per_s"] = round(ceiling["tflops"] * 1e12 / flops, 0)
    gen = torch.Generator().manual_seed(0)
    n_check = 16
    with torch.inference_mode():
        probe = torch.randn(n_check, 3, S, S, generator=gen).to(device)
    ref32 = compile_encoder(model, "eager", device, dtype=torch.float32)(probe)
    compile_opts = {"backend": "aot_eager"} if cfg.smoke else {}
    for backend in ("eager", "torch.compile"):
        t0 = time.perf_counter()
        enc = compile_encoder(model, backend, device, dtype=half, example_batch=max(cfg.encoder_batches),
                              compile_options=compile_opts)
        build_s = time.perf_counter() - t0
        cos = float(F.cosine_similarity(enc(probe), ref32, dim=-1).min())
        for crops in cfg.encoder_batches:
            with torch.inference_mode():
                images = torch.randn(crops // T, T, 3, S, S, generator=gen).to(device)
            fn = partial(score_images, model, images, encoder=enc, autocast_dtype=half if device.type == "cuda" else None)
            fn()  # warm-up at this shape
            g0 = _dynamo_graphs()
            timing = time_call(fn, device, 1, min(cfg.seconds_per_point, budget / 8), 200)
            point = {"encoder": enc.backend, "requested": backend, "crops": crops, "build_s": round(build_s, 2),
                     "crops_per_s": round(crops / timing["s_per_call"], 1), "ms_per_call": round(timing["s_per_call"] * 1e3, 3),
                     "recompiles_after_warmup": (_dynamo_graphs() - g0) if backend == "torch.compile" else None,
                     "min_cosine_vs_fp32": round(cos, 6), "iters": timing["iters"],
                     "compile_options": compile_opts if backend == "torch.compile" else None}
            if flops:
                point["fraction_of_measured_ceiling"] = round(point["crops_per_s"] / out["ceiling_crops_per_s"], 3)
            bench.record_point(point)
        del enc
    return {**out, "points": list(bench._live.get("points", []))}
