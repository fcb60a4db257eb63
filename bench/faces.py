"""Faces on vs off: detection frames/s, crops/s, and the end-to-end cost of --faces detect.

    .venv/bin/python -m bench.faces [--videos 6]

Same synthetic expression videos (one person each, cliper_batch.synthetic), same
tiny model, same machine, one run: the annotate job with --faces none and with
--faces detect, plus the detector alone on the sampled frames.
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
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.faces.detect import FaceDetector
from cliper_batch.model.checkpoint import save_checkpoint
from cliper_batch.model.factory import load_model
from cliper_batch.faces import framing as ff
from cliper_batch.pipeline import run as pipeline_run
from cliper_batch.probe import probe
from cliper_batch.sampling import plan_segments
from cliper_batch.synthetic import write_video_corpus
from cliper_batch.types import AnnotateConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--size", default="480x360")
    a = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    w, h = (int(v) for v in a.size.split("x"))
    tmp = tempfile.mkdtemp(prefix="cbfaces")
    videos = os.path.join(tmp, "videos")
    write_video_corpus(videos, a.videos, seed=0, size=(w, h))
    torch.manual_seed(0)
    ckpt = save_checkpoint(load_model("openclip:Tiny-ViT-T-16").model, os.path.join(tmp, "tiny.safetensors"))

    # detector alone, on the frames the job samples (8 per 2 s)
    paths = sorted(os.path.join(videos, f) for f in os.listdir(videos) if f.endswith((".mp4", ".webm")))
    info = probe(paths[0])
    ts = [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps]
    frames = np.stack(list(PyAVDecoder().iter_frames(paths[0], info, ts, size=ff.detection_size(info.width, info.height, 640))))
    det = FaceDetector()
    det.detect(frames[:4])
    t0 = time.perf_counter()
    found = det.detect(frames)
    det_fps = len(frames) / (time.perf_counter() - t0)
    recall = float(np.mean([len(f) >= 1 for f in found]))

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    res = {"videos": a.videos, "size": a.size, "detector_frames_per_s": det_fps, "detector_frame_recall": recall, **machine()}
    for faces in ("none", "detect"):
        cfg = AnnotateConfig(faces=faces, decoder="pyav", batch_size=8)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            s = pipeline_run.annotate(videos, os.path.join(tmp, f"out-{faces}"), ckpt, cfg)
            wall = time.perf_counter() - t0
        with open(os.path.join(tmp, f"out-{faces}", "runs", f"{s.run_id}.json")) as f:
            scoring = json.load(f)["scoring"]
        res[faces] = {
            "wall_s": wall,
            "video_seconds": s.video_seconds,
            "video_s_per_s": s.video_seconds / wall,
            "rows": s.segments,
            "crops": s.crops,
            "crops_per_s": s.crops / wall,
            "score_busy_fraction": scoring["busy_fraction"],
            "peak_rss_gib": mem.peak_gib,
        }
        print(faces, {k: round(v, 3) if isinstance(v, float) else v for k, v in res[faces].items()})
    ray.shutdown()
    res["detect_over_none_wall"] = res["detect"]["wall_s"] / res["none"]["wall_s"]
    print(f"detector {det_fps:.1f} frames/s (frame recall {recall:.2f}); faces detect/none wall ratio {res['detect_over_none_wall']:.2f}")
    print("->", write_result("faces", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
