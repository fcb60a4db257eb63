"""Report cost at corpus scale: time and peak memory of ``python -m cliper_batch.report`` on synthetic outputs.

    .venv/bin/python -m bench.report                      # 1,000 and 10,000 videos
    .venv/bin/python -m bench.report --videos 1000 10000 100000

Each output is written directly in the engine's format (``cliper_batch.output.schema``
tables and a run record; no decoding): 60-second videos, 2-second segments,
1-3 face tracks each, 2 % failed with a mix of error types. Fourteen "hero"
videos - each wins one label for all of its time, so the report picks them for
its detail section - point at real small H.264 files, so the report decodes
their face thumbnails as it would for a real corpus. Each report runs in its
own process (peak RSS = that process's ``ru_maxrss``), side by side with
``python -m cliper_batch.output.query summary`` on the same output as the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import machine, write_result
from cliper_batch.output import schema
from cliper_batch.failures import classify
from cliper_batch.decode.testvideos import VideoSpec, write_video
from cliper_batch.uris import video_id_for

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
RUN_ID = "20260101T000000Z-bench0"
SEGMENT_S = 2.0
VIDEOS_PER_PART = 2_000
ERRORS = [("ProbeError", "file is empty (0 bytes)"), ("DecodeError", "decoding failed near t=12.000s"),
          ("IncompleteVideo", "frames after 31.2 s are missing")]


def hero_videos(folder: str, n: int) -> list[str]:
    """``n`` real 4-second H.264 clips (any picture will do for a thumbnail)."""
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"hero_{i:02d}.mp4")
        write_video(p, VideoSpec(codec="h264", width=160, height=120, fps=10.0, duration_s=4.0, seed=i))
        paths.append(p)
    return paths


def _timeline_part(uris: list[str], durations: np.ndarray, tracks: np.ndarray, labels_fixed: list[int | None],
                   rng: np.random.Generator) -> pa.Table:
    rows_v, rows_t, rows_s, starts = [], [], [], []
    for i, (d, nt) in enumerate(zip(durations, tracks)):
        nseg = max(1, int(d // SEGMENT_S))
        for t in range(1, nt + 1):
            rows_v.append(np.full(nseg, i))
            rows_t.append(np.full(nseg, t))
            rows_s.append(np.arange(nseg))
            starts.append(np.arange(nseg) * SEGMENT_S)
    v, tr, seg, start = (np.concatenate(x) for x in (rows_v, rows_t, rows_s, starts))
    n = len(v)
    logits = rng.normal(size=(n, len(CLASSES))).astype(np.float32) * 2
    for i, lab in enumerate(labels_fixed):
        if lab is not None:
            logits[v == i, lab] += 20
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lab = p.argmax(1)
    x0 = rng.uniform(0.1, 0.6, n).astype(np.float32)
    y0 = rng.uniform(0.1, 0.5, n).astype(np.float32)
    uris_a = np.array(uris, dtype=object)
    cols = {
        "video_id": [video_id_for(u) for u in uris_a[v]],
        "video_uri": uris_a[v].tolist(),
        "kind": ["video"] * n,
        "track_id": tr.astype(np.int32),
        "segment_index": seg.astype(np.int32),
        "start_s": start,
        "end_s": np.minimum(start + SEGMENT_S, durations[v]),
        "label": np.array(CLASSES, dtype=object)[lab].tolist(),
        "confidence": p.max(1),
        **{schema.class_column(c): p[:, k] for k, c in enumerate(CLASSES)},
        "descriptor": np.zeros(n, np.int16),
        "face_x0": x0, "face_y0": y0, "face_x1": x0 + 0.3, "face_y1": y0 + 0.4,
        "face_score": np.full(n, 0.99, np.float32),
        "frames_with_face": np.full(n, 8, np.int16),
        "model_id": ["bench-model"] * n,
        "config_hash": ["bench-config"] * n,
        "run_id": [RUN_ID] * n,
    }
    return pa.Table.from_pydict(cols, schema=schema.timeline_schema(CLASSES))


def write_synthetic_output(out: str, n_videos: int, heroes: list[str], seed: int = 0) -> dict:
    """An annotation output of ``n_videos`` videos (the first ``len(heroes)`` are the real hero files)."""
    rng = np.random.default_rng(seed)
    for sub in ("timelines", "videos"):
        os.makedirs(os.path.join(out, sub, RUN_ID), exist_ok=True)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    uris = heroes + [f"/corpus/shard{i // 1000:03d}/clip_{i:06d}.mp4" for i in range(len(heroes), n_videos)]
    failed = rng.random(n_videos) < 0.02
    failed[: len(heroes)] = False
    durations = np.where(np.arange(n_videos) < len(heroes), 4.0, 60.0)
    tracks = rng.integers(1, 4, n_videos)
    tracks[: len(heroes)] = 2
    fixed = [k % len(CLASSES) for k in range(len(heroes))] + [None] * (n_videos - len(heroes))
    segments = 0
    for part, lo in enumerate(range(0, n_videos, VIDEOS_PER_PART)):
        hi = min(n_videos, lo + VIDEOS_PER_PART)
        ok = [i for i in range(lo, hi) if not failed[i]]
        tl = _timeline_part([uris[i] for i in ok], durations[ok], tracks[ok], [fixed[i] for i in ok], rng)
        segments += tl.num_rows
        pq.write_table(tl, os.path.join(out, "timelines", RUN_ID, f"part-{part:05d}.parquet"))
        idx = np.arange(lo, hi)
        err = [ERRORS[i % len(ERRORS)] if failed[i] else (None, None) for i in idx]
        n_seg = (durations[idx] // SEGMENT_S).astype(np.int32)
        videos = {
            "video_id": [video_id_for(uris[i]) for i in idx],
            "video_uri": [uris[i] for i in idx],
            "kind": ["video"] * len(idx),
            "size_bytes": [os.path.getsize(uris[i]) if i < len(heroes) else 5_000_000 for i in idx],
            "fingerprint": [None] * len(idx),
            "status": ["failed" if failed[i] else "ok" for i in idx],
            "error_type": [e[0] for e in err],
            "error": [None if e[1] is None else f"{uris[i]}: {e[1]}" for i, e in zip(idx, err)],
            "error_class": [None if e[0] is None else classify(e[0]) for e in err],
            "attempt": np.ones(len(idx), np.int32),
            "duration_s": durations[idx],
            "fps": np.full(len(idx), 25.0),
            "width": np.full(len(idx), 640, np.int32),
            "height": np.full(len(idx), 360, np.int32),
            "codec": ["h264"] * len(idx),
            "rotation": np.zeros(len(idx), np.int16),
            "n_segments": np.where(failed[idx], 0, n_seg * tracks[idx]).astype(np.int32),
            "n_tracks": np.where(failed[idx], 0, tracks[idx]).astype(np.int32),
            "decoder": ["pyav"] * len(idx),
            "model_id": ["bench-model"] * len(idx),
            "config_hash": ["bench-config"] * len(idx),
            "run_id": [RUN_ID] * len(idx),
        }
        pq.write_table(pa.Table.from_pydict(videos, schema=schema.video_schema()),
                       os.path.join(out, "videos", RUN_ID, f"part-{part:05d}.parquet"))
    n_failed = int(failed.sum())
    video_s = float(durations[~failed].sum())
    record = {
        "run_id": RUN_ID, "status": "finished", "started_at": "2026-01-01T00:00:00+00:00", "input": "/corpus",
        "output": out, "model_spec": "bench", "model_id": "bench-model", "resources": {"worker": "staged"},
        "summary": {"run_id": RUN_ID, "videos_total": n_videos, "videos_ok": n_videos - n_failed,
                    "videos_failed": n_failed, "videos_skipped": 0, "segments": segments, "video_seconds": video_s,
                    "wall_s": video_s / 50, "score_backend": "eager@cpu"},
        "video_seconds_per_s": 50.0, "crops_per_s": 200.0, "scoring": {"backends": ["eager@cpu"]},
    }
    with open(os.path.join(out, "runs", f"{RUN_ID}.json"), "w") as fh:
        json.dump(record, fh)
    return {"videos": n_videos, "failed": n_failed, "segments": segments}


CHILD = """
import resource, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "report":
    from cliper_batch.report.__main__ import main
    rc = main([sys.argv[2], "--out", sys.argv[3]])
else:
    import polars as pl
    from cliper_batch.output.query import summary
    rc = 0 if summary(sys.argv[2]).height else 1
print("RESULT", rc, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def measure(kind: str, output: str, html: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, output, html], capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode or not line:
        raise RuntimeError(f"{kind} failed: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    _, rc, wall, rss = line[0].split()
    assert rc == "0", proc.stderr
    out = {"wall_s": round(float(wall), 2), "peak_rss_mib": round(int(rss) / 2**20, 1)}
    if kind == "report":
        out["html_mib"] = round(os.path.getsize(html) / 2**20, 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, nargs="+", default=[1_000, 10_000])
    a = p.parse_args()
    result = {"machine": machine(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        os.makedirs(os.path.join(tmp, "heroes"))
        heroes = hero_videos(os.path.join(tmp, "heroes"), 14)
        for n in a.videos:
            out = os.path.join(tmp, f"out_{n}")
            t0 = time.perf_counter()
            made = write_synthetic_output(out, n, heroes)
            made["write_s"] = round(time.perf_counter() - t0, 2)
            made["report"] = measure("report", out, os.path.join(tmp, f"report_{n}.html"))
            made["query_summary"] = measure("summary", out, "")
            result["sizes"][str(n)] = made
            print(f"{n:>7} videos, {made['segments']:>9} segments: report {made['report']['wall_s']:.1f} s, "
                  f"{made['report']['peak_rss_mib']:.0f} MiB peak, {made['report']['html_mib']:.2f} MiB HTML | "
                  f"query summary {made['query_summary']['wall_s']:.1f} s, {made['query_summary']['peak_rss_mib']:.0f} MiB")
    sizes = sorted(result["sizes"], key=int)
    if len(sizes) > 1:
        lo, hi = result["sizes"][sizes[0]], result["sizes"][sizes[-1]]
        result["ratio_time"] = round(hi["report"]["wall_s"] / lo["report"]["wall_s"], 2)
        result["ratio_rss"] = round(hi["report"]["peak_rss_mib"] / lo["report"]["peak_rss_mib"], 2)
        print(f"{sizes[-1]} vs {sizes[0]} videos: report time x{result['ratio_time']}, peak RSS x{result['ratio_rss']}")
    print(write_result("report", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
