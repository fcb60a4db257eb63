#!/usr/bin/env python
"""One prepared device check (issue 24): parity, throughput, detector, encoder; < 8 min on one GPU.

Run from the repository root on the GPU machine (torch + triton + torchvision/timm/numpy/pynvml, plus
the carried ``av``, ``open_clip_torch``, ``ftfy`` and ``wcwidth`` wheels; no Ray, DALI, polars or
TensorRT)::

    python -m bench.gpu.device_check --out $OUT/device_check.json
    python -m bench.gpu.device_check --smoke      # CPU, tiny sizes, < 1 min: every phase's CPU code path

Phases, most valuable first, each with its own budget (``Bench`` of :mod:`bench.gpu.harness`: a SIGALRM hard
limit, a failure or timeout recorded and the next phase run); the JSON is rewritten after every measured
point, so a timeout keeps what was measured:

1. ``parity``: the fused worker (:class:`~cliper_batch.pipeline.fused_stage.FusedStage`, driven directly,
   no Ray) over the same generated synthetic-face videos (H.264 + VP9), ``--faces detect`` and ``none``,
   with the shipped models, on path A and path B. Rows are matched by (video, segment, track): max
   ``|dp|``, argmax flips outside near-ties (top-2 gap < 0.02), face-box drift (normalised
   coordinates), and the crop primitive's own max error against the torch reference on the same frames.
   On a GPU: A = CPU (torch crop, fp32 eager), B = CUDA as shipped (Triton crop, fp16 encoder, MTCNN on
   CUDA), and B again in strict fp32 (fp32 crops and encoder, TF32 off). With ``--smoke``: A = CPU
   torch crop + eager encoder; B = CPU, the Triton kernel run by Triton's interpreter (loaded privately,
   as ``tests/crops/test_kernels.py`` does) + the encoder through ``torch.compile`` (``aot_eager`` backend:
   dynamo graph capture and aten decomposition, no C++ build).
2. ``throughput``: the fused worker on the device over a generated 720p corpus (``--faces none``):
   sampled frames/s, crops/s, model-busy share, GPU busy % (pynvml, sampled), peak memory.
3. ``detector``: MTCNN frames/s and ms per 1/4/16-frame call, host syncs per call
   (``torch.cuda.set_sync_debug_mode``), faces vs the CPU detector (smoke: batched CPU vs frame by frame).
4. ``encoder``: open_clip ``ViT-B-16`` (random init) crops/s through ``score_images`` with the
   ``compile_encoder`` eager (fp16) and ``torch.compile`` encoders, recompiles after warm-up, cosine vs
   fp32, against a measured bf16 matmul ceiling of the card.

Modules: ``bench/gpu/checks/`` (``common.py`` and one module per phase); this one is the driver.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

import torch

from bench.gpu.harness import Bench, BenchConfig
from bench.gpu.checks.common import CheckConfig
from bench.gpu.checks.detector import detector_phase
from bench.gpu.checks.encoder import encoder_phase
from bench.gpu.checks.parity import parity_phase
from bench.gpu.checks.throughput import throughput_phase


PHASES = ("parity", "throughput", "detector", "encoder")


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for mod in ("triton", "av", "open_clip", "timm", "torchvision", "pynvml", "ray", "polars"):
        try:
            v[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001
            v[mod] = f"missing ({type(e).__name__})"
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (< 1 min): every phase's CPU code path")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default $OUT/device_check.json, else bench/results/device_check[_smoke].json)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="seconds for all phases together (default 480)")
    ap.add_argument("--only", type=str, default=None, help="comma-separated phases: " + ",".join(PHASES))
    args = ap.parse_args(argv)

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.smoke:
        print("no CUDA device: the device check needs a GPU; use --smoke for the CPU check", file=sys.stderr)
        return 2
    cfg = CheckConfig.tiny(args.budget_s) if args.smoke else CheckConfig.full(args.budget_s)
    device = torch.device("cuda" if has_cuda and not args.smoke else "cpu")
    if args.out is not None:
        out_path = args.out
    elif os.environ.get("OUT"):
        out_path = Path(os.environ["OUT"]) / "device_check.json"
    else:
        out_path = REPO_ROOT / "bench" / "results" / ("device_check_smoke.json" if args.smoke else "device_check.json")
    bcfg = BenchConfig.tiny() if args.smoke else BenchConfig.full()
    bcfg.budgets, bcfg.total_budget_s = dict(cfg.budgets), cfg.budget_s
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    bench = Bench(bcfg, out_path, only, set())
    bench.GRACE_S = 5.0 if args.smoke else 15.0
    bench.results["meta"].update({
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": cfg.smoke, "host": platform.node(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "versions": _versions(),
        "config": dataclasses.asdict(cfg), "argv": sys.argv[1:] if argv is None else argv,
    })
    bench.write()
    bench.run("parity", lambda b: parity_phase(cfg, bench, b))
    bench.run("throughput", lambda b: throughput_phase(cfg, device, bench, b))
    bench.run("detector", lambda b: detector_phase(cfg, device, bench, b))
    bench.run("encoder", lambda b: encoder_phase(cfg, device, bench, b))
    bench.write()
    for name, sec in bench.results["sections"].items():
        print(f"[device_check] {name}: {sec['status']} {sec.get('reason') or sec.get('error') or ''}"[:400])
    print(f"JSON: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
