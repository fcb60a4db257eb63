"""Pipeline efficiency: end-to-end scored crops/s divided by model-only crops/s, same crops, same model, one run.

    .venv/bin/python -m bench.pipeline --model tiny     # Tiny-ViT-T-16 (random weights)
    .venv/bin/python -m bench.pipeline --model vitb16   # ViT-B-16 (random weights; same compute as pretrained)
    .venv/bin/python -m bench.pipeline --model demo --faces detect --layouts auto,staged --videos 1

End-to-end = the real annotate job (embedded Ray, decode actors + scoring actor,
driver-side Parquet writer) over a generated H.264+VP9 corpus. Model-only = the
same crops (decoded beforehand, in memory) pushed through the same scoring
function with the same batch size and thread count, at the Ray workers' niceness
(Ray runs its workers at +15), before and after the end-to-end runs (the ratio uses
both passes, so load drifting on a shared host hits both sides alike). Both are reported as total
(including listing, actor start-up and model load) and steady state (crops per
second of the scoring window: from the first scoring batch's start to the last
one's end, as the scoring actor timed them). ``busy_fraction`` is how much of
that window the model was computing. Peak RSS sums the driver and every Ray worker;
CPU seconds (``PeakRSS.cpu_s``) sum every process of the run, which load from other
users does not inflate the way it inflates wall time.

``--layouts auto,staged`` runs the end-to-end job once per worker layout, side by
side against the same model-only baseline (``auto`` is the engine's sizing,
``pipeline.sizing.size_workers``; ``staged`` was the CPU default before it).
Per model the result also holds ``ms_per_crop_1_thread`` (the model on one core)
and ``visual_gflops`` (the estimate from the checkpoint header that the sizing uses).
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

from bench.common import PeakRSS, machine, write_result, write_two_face_cut_video
from cliper_batch.model.checkpoint import save_checkpoint
from cliper_batch.model.cliper import score_clips
from cliper_batch.model.factory import load_model
from cliper_batch.model.spec import inspect_model
from cliper_batch.pipeline import run as pipeline_run
from cliper_batch.pipeline.run import RunOptions
from cliper_batch.pipeline.decode_stage import DecodeStage
from cliper_batch.decode.testvideos import make_corpus
from cliper_batch.types import AnnotateConfig, VideoRef
from cliper_batch.uris import video_id_for

WORKER_NICENESS = 15  # Ray's default worker niceness (raylet config worker_niceness), relative to the raylet
MODELS = {"demo": "models/cliper-demo.safetensors", "tiny": "openclip:Tiny-ViT-T-16", "vitb16": "openclip:ViT-B-16"}


def model_only(spec: str, crops: np.ndarray, batch_size: int, threads: int) -> tuple[float, float]:
    """(crops per wall second, CPU seconds of this process) scoring ``crops`` after one warm-up batch."""
    torch.set_num_threads(threads)
    model = load_model(spec).model.eval()
    batches = [torch.from_numpy(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    score_clips(model, batches[0])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        score_clips(model, b)
    return crops.shape[0] * crops.shape[1] / (time.perf_counter() - t0), time.process_time() - c0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", default="320x240")
    p.add_argument("--frames-per-segment", type=int, default=8)
    p.add_argument("--segment-seconds", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8, help="segments per scoring batch")
    p.add_argument("--faces", choices=["none", "detect"], default="none",
                   help="detect: the laptop benchmark video (bench.common.write_two_face_cut_video) so there are faces to find")
    p.add_argument("--layouts", default="auto", help="worker layouts to run end to end, comma-separated (auto,staged,fused)")
    p.add_argument("--no-baseline-after", dest="baseline_after", action="store_false",
                   help="skip the second model-only pass after the end-to-end runs")
    p.add_argument("--one-thread-crops", type=int, default=16, help="crops timed for the one-core model cost (0 skips)")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = tempfile.mkdtemp(prefix="cbbench")
    videos = os.path.join(tmp, "videos")
    if a.faces == "detect":  # the laptop benchmark video (two faces, a cut, one face; looped), --duration long
        os.makedirs(videos)
        paths = [os.path.join(videos, f"two_faces_{i}.mp4") for i in range(a.videos)]
        for path in paths:
            write_two_face_cut_video(path, seconds=a.duration, size=(w, h))
    else:
        paths = make_corpus(videos, a.videos, duration_s=a.duration, width=w, height=h)
    spec = MODELS[a.model]
    torch.manual_seed(0)
    loaded = load_model(spec)
    if not spec.endswith(".safetensors"):  # a checkpoint, as a user runs it: the driver reads only its header
        spec = save_checkpoint(loaded.model, os.path.join(tmp, f"{a.model}.safetensors"))
    gflops = inspect_model(spec).visual_gflops
    cfg = AnnotateConfig(segment_seconds=a.segment_seconds, frames_per_segment=a.frames_per_segment, batch_size=a.batch_size, decoder="pyav", faces=a.faces)
    cpus = os.cpu_count() or 1

    # Ray starts its workers 15 nicer than the raylet (RAY_worker_niceness): on a shared host a
    # baseline in this process at the driver's priority would get more CPU than the actors it is
    # compared with. So Ray starts first, then this process drops to the workers' niceness.
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    os.nice(WORKER_NICENESS)

    # Model-only baseline on exactly the crops the pipeline will score.
    # (on one torch thread, as in a 1-CPU Ray actor, timed: what decoding + faces + cropping cost a crop on one core)
    stage = DecodeStage(cfg, loaded.image_size)
    torch.set_num_threads(1)
    crops = []
    c0 = time.process_time()
    for path in paths:
        for block in stage.process(VideoRef(video_id_for(path), path)):
            crops.append(block["crops"][block["row_kind"] == "segment"])
    crops = np.concatenate(crops)
    decode_ms = 1000.0 * (time.process_time() - c0) / (crops.shape[0] * crops.shape[1])
    del loaded, stage
    one = None
    if a.one_thread_crops:
        n1 = max(1, a.one_thread_crops // crops.shape[1])
        one = 1000.0 * model_only(spec, crops[:n1], 1, 1)[1] / (n1 * crops.shape[1])  # CPU ms: robust to load
    base_before, base_cpu_s = model_only(spec, crops, a.batch_size, cpus)

    result = {
        "model": a.model,
        "visual_gflops": gflops,
        "ms_per_crop_1_thread": one,
        "decode_cpu_ms_per_crop_1_thread": decode_ms,  # decode (+ faces) + crop, first pass (includes warm-up)
        "faces": a.faces,
        "videos": a.videos,
        "frame_size": a.size,
        "crops": int(crops.shape[0] * crops.shape[1]),
        "batch_size_segments": a.batch_size,
        "model_only_crops_per_s_before": base_before,
        "model_only_cpu_s": base_cpu_s,
        "load_average_1m_at_start": os.getloadavg()[0],
        "niceness": os.nice(0),
        **machine(),
    }
    for layout in a.layouts.split(","):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            s = pipeline_run.annotate(videos, os.path.join(tmp, f"out-{layout}"), spec, cfg, options=RunOptions(worker=layout))
            t_end = time.perf_counter()
        assert s.crops == crops.shape[0] * crops.shape[1], (s.crops, crops.shape)
        with open(os.path.join(tmp, f"out-{layout}", "runs", f"{s.run_id}.json")) as f:
            record = json.load(f)
        scoring = record["scoring"]
        e2e_total = s.crops / (t_end - t0)
        e2e_steady = scoring["crops_per_window_s"]
        result[layout] = r = {
            "resources": record["resources"],
            "video_seconds": s.video_seconds,
            "e2e_total_crops_per_s": e2e_total,
            "e2e_steady_crops_per_s": e2e_steady,
            "cpu_ratio_total": base_cpu_s / mem.cpu_s,  # model-only CPU s over every process's CPU s
            "wall_s": t_end - t0,
            "cpu_s": mem.cpu_s,
            "score_busy_s": scoring["busy_s"],
            "score_busy_fraction": scoring["busy_fraction"],
            "score_crops_per_busy_s": scoring["crops_per_busy_s"],
            "peak_rss_gib": mem.peak_gib,
        }
    # model-only again after the end-to-end runs: on a shared host the load drifts, so the
    # ratio uses the model-only rate over both passes (total crops / total time)
    base_after = model_only(spec, crops, a.batch_size, cpus)[0] if a.baseline_after else base_before
    base = 2.0 / (1.0 / base_before + 1.0 / base_after)
    ray.shutdown()
    result.update(model_only_crops_per_s_after=base_after, model_only_crops_per_s=base)
    for layout in a.layouts.split(","):
        r = result[layout]
        r.update(ratio_total=r["e2e_total_crops_per_s"] / base, ratio_steady=r["e2e_steady_crops_per_s"] / base)
        print(
            f"{a.model} --faces {a.faces} [{layout}: {r['resources']['worker']} x{r['resources']['score_workers']}]: "
            f"model-only {base:.2f} crops/s ({base_before:.2f} before, {base_after:.2f} after) | end-to-end "
            f"{r['e2e_total_crops_per_s']:.2f} total, {r['e2e_steady_crops_per_s']:.2f} steady crops/s | ratio "
            f"{r['ratio_total']:.2f} total, {r['ratio_steady']:.2f} steady | CPU: model-only {base_cpu_s:.1f} s, "
            f"end-to-end {r['cpu_s']:.1f} s, ratio {r['cpu_ratio_total']:.2f} | wall {r['wall_s']:.1f} s | "
            f"scorer busy {r['score_busy_s']:.2f} s ({r['score_busy_fraction']:.2f}) | peak RSS {r['peak_rss_gib']:.2f} GiB"
        )
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    print(f"{a.model}: {gflops:.3g} GFLOPs/crop (header estimate), {one or float('nan'):.1f} ms/crop on one core; "
          f"decode{' + faces' if a.faces == 'detect' else ''} {decode_ms:.1f} CPU ms/crop "
          f"-> {write_result(f'pipeline-{a.model}-{a.faces}', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
