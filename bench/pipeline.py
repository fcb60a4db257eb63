"""Pipeline efficiency: end-to-end scored crops/s divided by model-only crops/s, same crops, same model, one run.

    .venv/bin/python -m bench.pipeline --model tiny     # Tiny-ViT-T-16 (random weights)
    .venv/bin/python -m bench.pipeline --model vitb16   # ViT-B-16 (random weights; same compute as pretrained)

End-to-end = the real annotate job (embedded Ray, decode actors + scoring actor,
driver-side Parquet writer) over a generated H.264+VP9 corpus. Model-only = the
same crops (decoded beforehand, in memory) pushed through the same scoring
function with the same batch size and thread count. Both are reported as total
(including listing, actor start-up and model load) and steady state (crops per
second of the scoring window: from the first scoring batch's start to the last
one's end, as the scoring actor timed them). ``busy_fraction`` is how much of
that window the model was computing. Peak RSS sums the driver and every Ray worker.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import ray
import torch

from bench.common import PeakRSS, machine, write_result
from cliper_batch.model.checkpoint import save_checkpoint
from cliper_batch.model.cliper import score_clips
from cliper_batch.model.factory import load_model
from cliper_batch.pipeline import run as pipeline_run
from cliper_batch.pipeline.decode_stage import DecodeStage
from cliper_batch.testvideos import make_corpus
from cliper_batch.types import AnnotateConfig, VideoRef
from cliper_batch.uris import video_id_for

MODELS = {"tiny": "openclip:Tiny-ViT-T-16", "vitb16": "openclip:ViT-B-16"}


def model_only(spec: str, crops: np.ndarray, batch_size: int, threads: int) -> float:
    torch.set_num_threads(threads)
    model = load_model(spec).model.eval()
    batches = [torch.from_numpy(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    score_clips(model, batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        score_clips(model, b)
    return crops.shape[0] * crops.shape[1] / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", default="320x240")
    p.add_argument("--frames-per-segment", type=int, default=8)
    p.add_argument("--segment-seconds", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8, help="segments per scoring batch")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = tempfile.mkdtemp(prefix="cbbench")
    paths = make_corpus(os.path.join(tmp, "videos"), a.videos, duration_s=a.duration, width=w, height=h)
    spec = MODELS[a.model]
    torch.manual_seed(0)
    loaded = load_model(spec)
    if a.model == "tiny":  # exercise the checkpoint path like a user would
        spec = save_checkpoint(loaded.model, os.path.join(tmp, "tiny.safetensors"))
    cfg = AnnotateConfig(segment_seconds=a.segment_seconds, frames_per_segment=a.frames_per_segment, batch_size=a.batch_size, decoder="pyav", faces="none")
    cpus = os.cpu_count() or 1

    # Model-only baseline on exactly the crops the pipeline will score.
    stage = DecodeStage(cfg, loaded.image_size)
    crops = []
    for path in paths:
        for block in stage.process(VideoRef(video_id_for(path), path)):
            crops.append(block["crops"][block["row_kind"] == "segment"])
    crops = np.concatenate(crops)
    base = model_only(spec, crops, a.batch_size, cpus)
    del loaded

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        s = pipeline_run.annotate(os.path.join(tmp, "videos"), os.path.join(tmp, "out"), spec, cfg)
        t_end = time.perf_counter()
    ray.shutdown()
    assert s.crops == crops.shape[0] * crops.shape[1], (s.crops, crops.shape)
    with open(os.path.join(tmp, "out", "runs", f"{s.run_id}.json")) as f:
        scoring = json.load(f)["scoring"]
    e2e_total = s.crops / (t_end - t0)
    e2e_steady = scoring["crops_per_window_s"]
    result = {
        "model": a.model,
        "videos": a.videos,
        "video_seconds": s.video_seconds,
        "frame_size": a.size,
        "crops": s.crops,
        "batch_size_segments": a.batch_size,
        "model_only_crops_per_s": base,
        "e2e_total_crops_per_s": e2e_total,
        "e2e_steady_crops_per_s": e2e_steady,
        "ratio_total": e2e_total / base,
        "ratio_steady": e2e_steady / base,
        "wall_s": t_end - t0,
        "score_busy_fraction": scoring["busy_fraction"],
        "score_crops_per_busy_s": scoring["crops_per_busy_s"],
        "peak_rss_gib": mem.peak_gib,
        **machine(),
    }
    path = write_result(f"pipeline-{a.model}", result)
    print(
        f"{a.model}: model-only {base:.1f} crops/s | end-to-end {e2e_total:.1f} total, {e2e_steady:.1f} steady crops/s | "
        f"ratio {result['ratio_total']:.2f} total, {result['ratio_steady']:.2f} steady | "
        f"scorer busy {scoring['busy_fraction']:.2f} | peak RSS {mem.peak_gib:.2f} GiB -> {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
