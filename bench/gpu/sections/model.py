"""The ``model.*`` sections (encoder crops/s per precision and backend) and ``pipeline`` (crop kernel feeding the encoder)."""
from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from bench.gpu.harness import BenchConfig, SectionTimeout, SkipSection, free_cuda, time_call
from bench.gpu.sections.crops import random_boxes, random_frames
from bench.gpu.vit import H100_SXM_BF16_DENSE_TFLOPS, ISSUE_NOMINAL_FLOPS_PER_CROP, peak_bf16_tflops


class ModelBench:
    """Shared state for the encoder sections: model, inputs, FLOPs, roofline."""

    def __init__(self, cfg: BenchConfig, device: torch.device, model: nn.Module, flops_per_crop: float | None,
                 on_point: Callable[[dict], None] = lambda point: None):
        self.cfg = cfg
        self.device = device
        self.model = model
        self.flops = flops_per_crop
        self.on_point = on_point  # called with each point as soon as it is measured (Bench.record_point)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        self.peak, self.peak_source = peak_bf16_tflops(name)
        self.x_max = None

    def inputs(self, batch: int) -> torch.Tensor:
        if self.x_max is None or self.x_max.shape[0] < batch:
            self.x_max = None
            free_cuda()
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
                self.on_point(points[-1])
            except SectionTimeout:
                raise
            except torch.cuda.OutOfMemoryError as e:
                skipped.append({"batch": b, "reason": f"CUDA OOM: {str(e)[:200]}"})
            except Exception as e:  # noqa: BLE001 - one batch size failing must not hide the others
                skipped.append({"batch": b, "reason": f"{type(e).__name__}: {str(e)[:500]}"})
            finally:
                fn = None
                free_cuda()
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
        from cliper_batch.model.backends import (
            DEFAULT_MAX_BATCH,
            CompiledEncoder,
            tensorrt_compile_kwargs,
            tensorrt_input_spec,
        )

        # The engine the fused worker builds: one dynamic-batch profile (compile.py's defaults), fp16 weights,
        # the same explicit-typing handling; calls above max_batch are chunked by CompiledEncoder as in production.
        max_batch = min(DEFAULT_MAX_BATCH, max(self.cfg.batches))
        spec, opt = tensorrt_input_spec(torch_tensorrt, self.cfg.image_size, torch.half, max(self.cfg.batches), max_batch)
        half = copy.deepcopy(self.model).half()
        t = time.perf_counter()
        with torch.no_grad():
            trt = torch_tensorrt.compile(half, ir="dynamo", inputs=[spec],
                                         **tensorrt_compile_kwargs(torch_tensorrt, torch.half))
        build_s = round(time.perf_counter() - t, 1)
        print(f"[bench]   tensorrt dynamic engine (1..{max_batch}, opt {opt}) built in {build_s} s", flush=True)

        def run(x: torch.Tensor) -> torch.Tensor:
            out = trt(x.half())
            return out[0] if isinstance(out, (tuple, list)) else out

        enc = CompiledEncoder(run, "tensorrt", "tensorrt", "bench", self.device, torch.half, max_batch, opt)

        def make(b: int):
            x = self.inputs(b)
            return lambda: enc(x)

        res = self.sweep(max(budget - build_s, 1.0), make, "tensorrt fp16")
        res.update({"build_s": build_s, "profile": {"min": 1, "opt": opt, "max": max_batch},
                    "explicit_typing": not tensorrt_compile_kwargs(torch_tensorrt, torch.half),
                    "torch_tensorrt": getattr(torch_tensorrt, "__version__", "?")})
        return res


def pipeline_section(cfg: BenchConfig, device: torch.device, mb: ModelBench, budget: float) -> dict:
    """Kernel (fp16 out) feeding the fp16-autocast encoder, frames already on the GPU."""
    if device.type != "cuda":
        raise SkipSection("end-to-end GPU pipeline timing needs CUDA")
    from cliper_batch.kernels.crop_resize import crop_resize_normalize_triton

    b = 512 if 512 in cfg.batches else cfg.batches[-1]
    frames = random_frames(cfg, device, seed=2)
    boxes = random_boxes(cfg, b, seed=3).to(device)
    crop = torch.empty((b, 3, cfg.image_size, cfg.image_size), dtype=torch.float16, device=device)

    def fn():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            crop_resize_normalize_triton(frames, boxes, cfg.image_size, out_dtype=torch.float16, out=crop,
                                         check_boxes=False)
            return mb.model(crop)

    timing = time_call(fn, device, cfg.warmup_iters, min(cfg.seconds_per_point, budget / 3), cfg.max_iters)
    return {"points": [mb.point(b, timing)], "note": f"{cfg.kernel_frames} frames of "
            f"{cfg.kernel_width}x{cfg.kernel_height} resident on the GPU; crops of {cfg.image_size} px"}
