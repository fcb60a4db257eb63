"""Corpus-scale run: wall time, videos/s and peak RSS for 100 vs 500 short generated videos.

    .venv/bin/python -m bench.nightly [--sizes 100 500]

Each size is annotated into a fresh output through one embedded local Ray
(tiny model, --faces none: the cost under test is the engine's per-video
overhead and memory, not the model). Peak RSS sums the driver and all Ray
processes. Flat memory means peak(500) / peak(100) close to 1.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray
import torch

from bench.common import PeakRSS, machine, write_result
from cliper_batch.model.checkpoint import save_checkpoint
from cliper_batch.model.factory import load_model
from cliper_batch.pipeline import run as pipeline_run
from cliper_batch.decode.testvideos import make_corpus
from cliper_batch.types import AnnotateConfig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    p.add_argument("--duration", type=float, default=2.0)
    a = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = tempfile.mkdtemp(prefix="cbnightly")
    torch.manual_seed(0)
    ckpt = save_checkpoint(load_model("openclip:Tiny-ViT-T-16").model, os.path.join(tmp, "tiny.safetensors"))
    corpus = os.path.join(tmp, "videos")
    make_corpus(corpus, max(a.sizes), duration_s=a.duration, width=96, height=64)
    names = sorted(os.listdir(corpus))
    cfg = AnnotateConfig(faces="none", decoder="pyav", segment_seconds=1.0, frames_per_segment=4, batch_size=32)
    res = {"duration_s_per_video": a.duration, **machine()}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    for n in a.sizes:
        manifest = os.path.join(tmp, f"list-{n}.txt")
        with open(manifest, "w") as f:
            f.write("\n".join(os.path.join(corpus, x) for x in names[:n]) + "\n")
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            s = pipeline_run.annotate(manifest, os.path.join(tmp, f"out-{n}"), ckpt, cfg)
            wall = time.perf_counter() - t0
        assert s.videos_ok == n, s
        res[str(n)] = {"wall_s": wall, "videos_per_s": n / wall, "peak_rss_gib": mem.peak_gib, "segments": s.segments}
        print(n, {k: round(v, 3) if isinstance(v, float) else v for k, v in res[str(n)].items()}, flush=True)
    ray.shutdown()
    if len(a.sizes) >= 2:
        lo, hi = str(min(a.sizes)), str(max(a.sizes))
        res["peak_rss_ratio"] = res[hi]["peak_rss_gib"] / res[lo]["peak_rss_gib"]
        print(f"peak RSS {hi}/{lo} videos: {res['peak_rss_ratio']:.2f}")
    print("->", write_result("nightly", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
