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
* ``kernel.dali_crops``: the DALI crop primitive on the same frames and boxes,
  beside the Triton figure (skipped where nvidia.dali is not installed).
* ``model.*``: crops/s of the image encoder at batch 64/256/512/1024 for eager
  fp32, fp16 autocast, bf16 autocast, CUDA graphs (fp16, static batch),
  torch.compile (fp16, default mode) and Torch-TensorRT (if importable: one
  engine with the engine's own dynamic batch profile from
  ``cliper_batch.model.backends``, called through ``CompiledEncoder``), with achieved
  TFLOP/s and % of the bf16 dense roofline. Each point is written to the JSON
  as soon as it is measured, so a section that times out keeps its points.
* ``pipeline``: kernel (fp16 out) + fp16 encoder on GPU-resident frames at one batch.
* ``annotate``: the engine's shared per-video algorithm (``VideoAnnotator``)
  with frames uploaded to the GPU, on real H.264 and VP9 files (needs PyAV:
  carry its wheel; skipped with the reason otherwise).

The encoder is *architecture-equivalent* to open_clip's ``ViT-B-16`` visual
tower (width 768, 12 layers, 12 heads, patch 16, 224 px, 512-d projection)
with random weights: timm's ``vit_base_patch16_clip_224`` if timm imports,
else a plain-torch copy (:mod:`bench.gpu.vit`). Speed does not depend on weight values.

Output: ``$OUT/gpu_bench.json`` if ``$OUT`` is set, else
``bench/results/gpu_bench.json`` (or ``--out``), and a markdown summary on stdout.

Modules: :mod:`bench.gpu.harness` (budgets, timeouts, the JSON), :mod:`bench.gpu.vit` (the encoder),
``bench/gpu/sections/`` (one module per group of sections); this one is the driver.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

import torch

from bench.gpu.harness import Bench, BenchConfig, versions
from bench.gpu.sections.annotate import annotate_section
from bench.gpu.sections.crops import dali_crop_section, kernel_section
from bench.gpu.sections.decode import decode_section
from bench.gpu.sections.model import ModelBench, pipeline_section
from bench.gpu.vit import ARCH_NOTE, H100_SXM_BF16_DENSE_TFLOPS, ISSUE_NOMINAL_FLOPS_PER_CROP, analytic_flops_per_crop, build_encoder, measured_flops_per_crop


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
    dc = sec.get("kernel.dali_crops", {})
    if "ms" in dc:
        lines.append(f"DALI crops ({dc['device']}): {dc['ms']} ms, {dc['effective_GBps']} GB/s, max err {dc['max_abs_err']:.2e}"
                     + (f"; Triton is {dc['triton_speedup_over_dali']}x faster" if "triton_speedup_over_dali" in dc else ""))
    else:
        lines.append(f"DALI crops: {dc.get('status')} {dc.get('reason') or dc.get('error') or ''}")
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
        "versions": versions(), "config": asdict(cfg), "architecture_note": ARCH_NOTE,
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
    mb = ModelBench(cfg, device, model, flops_holder.get("value") or analytic_flops_per_crop(cfg)["flops"],
                    on_point=bench.record_point)
    meta["roofline"] = {"peak_bf16_dense_tflops_device": mb.peak, "peak_source": mb.peak_source,
                        "reference_tflops": H100_SXM_BF16_DENSE_TFLOPS, "flops_per_crop_used": mb.flops}
    bench.run("model.eager_fp32", lambda b: mb.eager(b, None))
    bench.run("model.fp16_autocast", lambda b: mb.eager(b, torch.float16))
    bench.run("model.bf16_autocast", lambda b: mb.eager(b, torch.bfloat16))
    bench.run("model.cudagraph_fp16", mb.cudagraph)
    bench.run("model.compile_fp16", lambda b: mb.compiled(b, dynamic=not args.static_compile))
    bench.run("model.tensorrt_fp16", mb.tensorrt)
    # The Triton kernel runs last: a faulting kernel poisons the CUDA context for the rest of the process.
    triton = bench.run("kernel", lambda b: kernel_section(cfg, device, b))
    bench.run("kernel.dali_crops", lambda b: dali_crop_section(cfg, device, b, triton))
    bench.run("annotate", lambda b: annotate_section(cfg, device, b))  # uses the Triton kernel on CUDA: after it
    bench.run("pipeline", lambda b: pipeline_section(cfg, device, mb, b))
    bench.write()
    print()
    print(markdown_summary(bench.results, cfg))
    print(f"\nJSON: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
