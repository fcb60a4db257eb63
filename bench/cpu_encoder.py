"""The CPU eager encoder, folded (BatchNorm into convolutions, channels-last) vs plain, side by side in one process.

    .venv/bin/python -m bench.cpu_encoder [--model builtin:fer2013] [--clips 8] [--threads 2] [--rounds 20]

Times :meth:`cliper_batch.pipeline.scoring_model.ScoringModel.score` on batches of
``--clips`` clips x ``frames_per_segment`` (8) normalised crops, the call the job makes on
CPU (8 segments per batch by default), once with the encoder the job builds
(:func:`cliper_batch.model.backends.compile_encoder`: on CPU, BatchNorm folded and
channels-last where the tower allows) and once with the plain eager tower
(``model.encode_frames``), rounds interleaved (plain, folded, plain, ...) so load from
other users hits both alike. Reports the median milliseconds per batch of each, their
ratio (> 1: folded is faster), and the largest difference of the class probabilities
between the two on the same batches. Results: ``bench/results/cpu_encoder.json``.
"""
from __future__ import annotations

import argparse
import statistics
import time

from .common import machine, write_result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:fer2013")
    p.add_argument("--clips", type=int, default=8, help="clips per scoring call (the CPU default batch size)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args()

    import torch

    from cliper_batch.model.backends import _eager_fn
    from cliper_batch.pipeline.scoring_model import ScoringModel
    from cliper_batch.types import AnnotateConfig

    torch.set_num_threads(a.threads)
    scorer = ScoringModel(a.model, "cpu", "eager", a.threads)
    folded, reason = scorer.encoder.fn, scorer.encoder.reason
    plain = _eager_fn(scorer.model, scorer.device, torch.float32)
    t, s = AnnotateConfig().frames_per_segment, scorer.image_size
    batches = [torch.randn(a.clips, t, 3, s, s, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    times: dict[str, list[float]] = {"plain": [], "folded": []}
    probs: dict[str, list] = {"plain": [], "folded": []}
    with torch.inference_mode():
        for r in range(a.rounds + 1):
            for name, fn in (("plain", plain), ("folded", folded)):
                scorer.encoder.fn = fn
                x = batches[r % len(batches)]
                t0 = time.perf_counter()
                out, _, _ = scorer.score(x)
                if r:  # round 0 warms both up
                    times[name].append(time.perf_counter() - t0)
                if r <= len(batches):
                    probs[name].append(torch.from_numpy(out))
    scorer.encoder.fn = folded
    diff = max(float((x - y).abs().max()) for x, y in zip(probs["plain"], probs["folded"]))
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    result = {
        "host": machine(), "model": a.model, "model_id": scorer.model_id, "clips_per_batch": a.clips,
        "frames_per_clip": t, "threads": a.threads, "rounds": a.rounds, "encoder": reason,
        "plain_ms_per_batch": round(ms["plain"], 2), "folded_ms_per_batch": round(ms["folded"], 2),
        "plain_over_folded": round(ms["plain"] / ms["folded"], 3), "max_prob_difference": diff,
    }
    print(f"{a.model} ({scorer.model_id}), {a.clips} clips x {t} frames per call, {a.threads} threads, "
          f"median of {a.rounds}:")
    print(f"  plain eager   {ms['plain']:7.1f} ms/batch")
    print(f"  job's encoder {ms['folded']:7.1f} ms/batch   ({reason})")
    print(f"  plain / job's = {ms['plain'] / ms['folded']:.2f}x; largest probability difference {diff:.2e}")
    print("->", write_result("cpu_encoder", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
