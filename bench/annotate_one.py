"""--faces detect per video, in-process: one decode vs two, decode overlapped with detection vs not.

    .venv/bin/python -m bench.annotate_one [--seconds 60] [--videos 6] [--rounds 3] [--variants ...]

``VideoAnnotator.annotate`` - the per-video algorithm the fused worker runs - on
the CPU with the fused worker's primitives (frames on the host, normalised crops
at the demo model's input size, MTCNN with a frame pool of ``--threads``), for
each code path side by side:

* ``two_inline``: pass 2 decodes the frames again; pass 1 decodes, then detects
  (what the engine did before: ``keep_frames_bytes=0, prefetch_chunks=0``);
* ``one_inline``: pass 2 crops from pass 1's frames (``prefetch_chunks=0``);
* ``two_prefetch``: a second decode, pass 1 decoding one chunk ahead on a thread;
* ``one_prefetch``: both (the defaults).

Inputs: the laptop benchmark video (``bench.common.write_two_face_cut_video``,
640x360, 25 fps, H.264, ``--seconds`` long) and the synthetic corpus of
``bench.faces`` (``--videos`` videos, 480x360). Rounds interleave the variants
(in a rotating order), so host load hits each alike; per variant the median
round's wall and process CPU seconds (every thread: decode, FFmpeg's threads,
the detector's pool) are reported, and the ratio to ``two_inline`` as the
median over rounds of the ratio within a round (runs seconds apart share the
host's load, so this drifts less than a ratio of medians), plus whether every variant gave the same
rows and crops as ``two_inline`` (a hash of both, per video), the minimum
rounds too (the least disturbed on a shared host), and what the host lent this
process before and after (``bench.faces._cores_free``: two GIL-free convolution
threads; 2.0 on an idle 2-core host).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time

import torch

from bench.common import machine, write_result, write_two_face_cut_video
from bench.faces import _cores_free
from cliper_batch.crops.primitives import normalized_crops
from cliper_batch.faces.framing import FramingParams
from cliper_batch.synthetic import write_video_corpus
from cliper_batch.types import AnnotateConfig, VideoOutcome, VideoRef
from cliper_batch.uris import normalize_uri
from cliper_batch.video_annotation import ClipPiece, FramePrimitives, VideoAnnotator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(ROOT, "models", "cliper-demo.safetensors")

VARIANTS = {
    "two_inline": dict(keep_frames_bytes=0, prefetch_chunks=0),
    "one_inline": dict(prefetch_chunks=0),
    "two_prefetch": dict(keep_frames_bytes=0),
    "one_prefetch": dict(),
}


def annotate_all(annotator: VideoAnnotator, paths: list[str]) -> tuple[float, float, str, list[int]]:
    """(wall s, process CPU s, hash of every row and crop, decode passes per video) for ``paths`` in order."""
    h = hashlib.sha256()
    passes = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i, path in enumerate(paths):
        for item in annotator.annotate(VideoRef(video_id=str(i), uri=normalize_uri(path))):
            if isinstance(item, ClipPiece):
                for k in sorted(item.rows):
                    h.update(k.encode())
                    h.update(repr(item.rows[k].tolist()).encode())
                h.update(item.crops.contiguous().numpy().tobytes())
            else:
                assert isinstance(item, VideoOutcome)
                if item.status != "ok":
                    raise RuntimeError(f"{path}: {item.error_type}: {item.error}")
                passes.append(item.extra["decode_passes"])
    return time.perf_counter() - t0, time.process_time() - c0, h.hexdigest()[:16], passes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="laptop video length")
    p.add_argument("--videos", type=int, default=6, help="synthetic corpus size (bench.faces' corpus); 0 skips it")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads = the detector's frame pool (the fused actor's)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--inputs", default="laptop,synthetic", help="which of laptop,synthetic")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    from cliper_batch.model.factory import load_model

    model = load_model(DEMO_MODEL)
    size = int(model.image_size)
    mean, std = tuple(float(v) for v in model.model.mean), tuple(float(v) for v in model.model.std)
    del model

    with tempfile.TemporaryDirectory() as tmp:
        wanted = {x.strip() for x in a.inputs.split(",") if x.strip()}
        laptop = os.path.join(tmp, "laptop.mp4")
        write_two_face_cut_video(laptop, seconds=a.seconds)
        inputs = {"laptop": [laptop]} if "laptop" in wanted else {}
        if a.videos and "synthetic" in wanted:
            corpus = os.path.join(tmp, "corpus")
            write_video_corpus(corpus, a.videos, seed=0, size=(480, 360))
            inputs["synthetic"] = sorted(
                os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith((".mp4", ".webm", ".mkv"))
            )
        cfg = AnnotateConfig(faces="detect", decoder="pyav", device="cpu")  # every other setting: the job's default
        cpu = torch.device("cpu")
        prims = FramePrimitives(cpu, "cpu", normalized_crops("torch", size, mean, std, device=cpu), "torch", cpu)
        annotators = {v: VideoAnnotator(cfg, size, prims, framing_params=FramingParams(**VARIANTS[v])) for v in variants}
        for ann in annotators.values():  # build the detector and warm every code path once
            annotate_all(ann, [laptop])
        result: dict = {"machine": machine(), "threads": a.threads, "rounds": a.rounds, "image_size": size,
                        "cores_lent_before": round(_cores_free(), 2), "load_before": os.getloadavg(),
                        "inputs": {k: len(v) for k, v in inputs.items()}, "seconds": a.seconds, "by_input": {}}
        for name, paths in inputs.items():
            runs: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
            hashes: dict[str, set[str]] = {v: set() for v in variants}
            passes: dict[str, list[int]] = {}
            for r in range(a.rounds):
                order = variants[r % len(variants):] + variants[: r % len(variants)]
                for v in order:
                    wall, cpu_s, digest, passes[v] = annotate_all(annotators[v], paths)
                    runs[v].append((wall, cpu_s))
                    hashes[v].add(digest)
                    print(f"{name} round {r} {v}: {wall:.2f} s wall, {cpu_s:.2f} CPU s", flush=True)
            ref = variants[0]
            table = {}
            for v in variants:
                walls, cpus = [w for w, _ in runs[v]], [c for _, c in runs[v]]
                table[v] = {
                    "wall_s": round(statistics.median(walls), 3),
                    "cpu_s": round(statistics.median(cpus), 3),
                    "wall_min_s": round(min(walls), 3),
                    "cpu_min_s": round(min(cpus), 3),
                    "walls": [round(w, 3) for w in walls],
                    "cpus": [round(c, 3) for c in cpus],
                    "decode_passes": passes[v],
                    "same_output_as_" + ref: hashes[v] == hashes[ref] and len(hashes[v]) == 1,
                }
            for v in variants:
                # per round (runs seconds apart, so under the same load), then the median over rounds
                table[v]["wall_vs_" + ref] = round(
                    statistics.median(w / w0 for (w, _), (w0, _) in zip(runs[v], runs[ref])), 3)
                table[v]["cpu_vs_" + ref] = round(
                    statistics.median(c / c0 for (_, c), (_, c0) in zip(runs[v], runs[ref])), 3)
            result["by_input"][name] = table
            for v in variants:
                t = table[v]
                print(f"{name:9s} {v:13s} wall {t['wall_s']:7.2f} s ({t['wall_vs_' + ref]:.2f}x, min {t['wall_min_s']:.2f})  "
                      f"CPU {t['cpu_s']:7.2f} s ({t['cpu_vs_' + ref]:.2f}x, min {t['cpu_min_s']:.2f})  "
                      f"passes {sorted(set(t['decode_passes']))}  same output: {t['same_output_as_' + ref]}", flush=True)
        result["cores_lent_after"] = round(_cores_free(), 2)
        result["load_after"] = os.getloadavg()
    print(f"cores lent to two GIL-free threads: {result['cores_lent_before']} before, {result['cores_lent_after']} after; "
          f"load {result['load_before']} -> {result['load_after']}")
    print("wrote", write_result("annotate_one", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
