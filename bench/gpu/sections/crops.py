"""The ``kernel`` section (the fused Triton crop kernel) and ``kernel.dali_crops`` (the DALI crop primitive beside it)."""
from __future__ import annotations

import os
import time

import torch

from bench.gpu.harness import BenchConfig, SkipSection, time_call


def random_boxes(cfg: BenchConfig, n: int, seed: int = 0) -> torch.Tensor:
    """Square face-like boxes: sides 5-60% of the frame height, ~15% partly outside the frame."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.kernel_height, cfg.kernel_width
    side = h * (0.05 + 0.55 * torch.rand(n, generator=g))
    cx = w * (-0.05 + 1.1 * torch.rand(n, generator=g))
    cy = h * (-0.05 + 1.1 * torch.rand(n, generator=g))
    fi = torch.randint(0, cfg.kernel_frames, (n,), generator=g).float()
    return torch.stack([fi, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


def random_frames(cfg: BenchConfig, device: torch.device, seed: int) -> torch.Tensor:
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
    from cliper_batch.crops.reference import crop_resize_normalize

    kdev = torch.device("cpu") if interpret else device
    t_start = time.perf_counter()
    frames = random_frames(cfg, kdev, seed=1)
    boxes = random_boxes(cfg, cfg.kernel_boxes).to(kdev)
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


def dali_crop_section(cfg: BenchConfig, device: torch.device, budget: float, triton: dict) -> dict:
    """The DALI crop primitive (per-box ROI crop, cliper_batch/crops/dali.py) on the kernel section's frames and boxes.

    Skipped where DALI is absent (the GPU test box has no DALI). ``triton`` is
    the kernel section's result, for the side-by-side ratio.
    """
    from cliper_batch.decode.dali_backend import dali_available

    if not dali_available():
        raise SkipSection("nvidia.dali not installed")
    from cliper_batch.kernels.crop_resize import crop_resize_bytes_moved

    from cliper_batch.crops.reference import crop_resize_normalize
    from cliper_batch.crops.dali import PAD_TOLERANCE, DaliBoxCropper

    frames = random_frames(cfg, device, seed=1)
    boxes = random_boxes(cfg, cfg.kernel_boxes).to(device)
    s = cfg.kernel_size
    cropper = DaliBoxCropper(device="gpu" if device.type == "cuda" else "cpu", max_batch=cfg.kernel_boxes)
    err = float((cropper(frames, boxes, s) - crop_resize_normalize(frames, boxes, s)).abs().max())
    warm, iters, secs = (1, 2, 0.05) if cfg.smoke else (2, 20, min(1.0, budget / 4))
    t = time_call(lambda: cropper(frames, boxes, s), device, warm, secs, iters, min_iters=1)["s_per_call"]
    nbytes = crop_resize_bytes_moved(frames.shape, boxes, s, torch.float32)["total"]
    out = {"device": str(device), "boxes": cfg.kernel_boxes, "size": s, "max_abs_err": err,
           "tolerance": PAD_TOLERANCE, "correct": err <= PAD_TOLERANCE, "ms": round(t * 1e3, 4),
           "crops_per_s": round(cfg.kernel_boxes / t, 1), "effective_GBps": round(nbytes / t / 1e9, 2)}
    if not out["correct"]:
        out.update(status="error", error=f"DALI crops differ from the torch reference by {err:.4g} > {PAD_TOLERANCE:.4g}")
    if "fp32" in triton:
        out["triton_fp32_ms"] = triton["fp32"]["ms"]
        out["triton_speedup_over_dali"] = round(out["ms"] / triton["fp32"]["ms"], 2)
    return out
