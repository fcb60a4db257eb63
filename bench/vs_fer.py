"""The default job vs the PyPI `fer` package, as whole processes, on the same video, in one run.

    bench/setup_fer.sh                       # once: fer in its own venv (bench/.fer-venv)
    .venv/bin/python -m bench.vs_fer [--seconds 60] [--repeats 2]

Video: ``bench.common.write_two_face_cut_video`` - 60 s, 640x360, 25 fps, H.264,
two synthetic faces for 4 s then a hard cut to one face for 4 s, looped (8 two-face
shots and 7 one-face shots: 23 face tracks).

* engine: ``python jobs/annotate.py --input DIR --output OUT --model models/cliper-demo.safetensors``
  (every default: --faces detect, embedded Ray, CPU), a fresh output folder each time,
  timed from process start to exit.
* fer: ``fer.classes.Video(path).analyze(FER(), frequency=N, ...)`` with saving and
  annotating off (fer's defaults write an annotated copy of the video), in a fresh
  process, once per ``--frequencies`` value: ``1`` is fer's default (every frame, what
  ``analyze()`` does when not told otherwise), ``6`` analyses every 6th frame, about the
  engine's 4 frames/s (8 per 2 s segment) - the stricter comparison.

Runs alternate (engine, fer, engine, fer, ...) so machine load hits both alike.
Reported: wall and CPU seconds (median), the fer/engine ratio per fer frequency, and what each reports: faces per
analysed frame (fer) vs face tracks and rows (engine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench.common import PeakRSS, machine, write_result, write_two_face_cut_video

FER_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import cv2
cv2.waitKey = lambda *a, **k: -1          # headless OpenCV has no GUI
cv2.destroyAllWindows = lambda *a, **k: None
from fer.fer import FER
from fer.classes import Video
path, frequency, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
video = Video(path, outdir=outdir)
raw = video.analyze(FER(), display=False, frequency=frequency, save_frames=False, save_video=False,
                    annotate_frames=False, zip_images=False)
faces = [len(r) if isinstance(r, list) else sum(1 for k in r if k.startswith("box")) for r in raw]
print(json.dumps({"frames": len(raw), "faces_per_frame": faces, "in_process_s": time.perf_counter() - t0}))
"""


def run_engine(video_dir: str, out: str, model: str, extra: tuple[str, ...] = ()) -> dict:
    with PeakRSS() as mon:
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, os.path.join(ROOT, "jobs", "annotate.py"), "--input", video_dir, "--output", out, "--model", model, *extra],
            capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"engine failed ({p.returncode}):\n{p.stderr[-3000:]}")
    from cliper_batch.output import query

    v = query.scan_videos(out).collect().row(0, named=True)
    tl = query.scan_timelines(out).collect()
    per_seg = tl.group_by("segment_index").len()["len"]
    return {
        "wall_s": wall,
        "cpu_s": mon.cpu_s,
        "peak_rss_gib": mon.peak_gib,
        "status": v["status"],
        "n_tracks": v["n_tracks"],
        "rows": tl.height,
        "faces_per_segment_max": int(per_seg.max()),
        "track_ids": sorted(tl["track_id"].unique().to_list()),
        "segments_with_two_faces": int((per_seg >= 2).sum()),
        "log_tail": p.stderr[-1500:],
    }


def run_fer(fer_python: str, path: str, frequency: int, outdir: str) -> dict:
    with PeakRSS() as mon:
        t0 = time.perf_counter()
        os.makedirs(outdir, exist_ok=True)  # fer writes data.csv into its working directory
        p = subprocess.run([fer_python, "-c", FER_SCRIPT, path, str(frequency), outdir], capture_output=True, text=True, cwd=outdir)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"fer failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    faces = r.pop("faces_per_frame")
    return {
        "wall_s": wall,
        "cpu_s": mon.cpu_s,
        "peak_rss_gib": mon.peak_gib,
        **r,
        "frames_with_two_faces": sum(f >= 2 for f in faces),
        "frames_with_a_face": sum(f >= 1 for f in faces),
        "faces_per_frame_max": max(faces) if faces else 0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--frequencies",
        default="1,6",
        help="fer analyses every Nth frame, one fer run per value (1 = fer's default, 6 ~ the engine's 4 frames/s)",
    )
    p.add_argument("--model", default=os.path.join(ROOT, "models", "cliper-demo.safetensors"))
    p.add_argument("--fer-python", default=os.path.join(ROOT, "bench", ".fer-venv", "bin", "python"))
    p.add_argument("--skip-fer", action="store_true", help="engine only (no fer venv)")
    p.add_argument("--every-frame", action="store_true", help="also run the engine with --detect-stride 1 (the old behaviour)")
    a = p.parse_args()
    if not a.skip_fer and not os.path.exists(a.fer_python):
        raise SystemExit(f"{a.fer_python} not found: run bench/setup_fer.sh first (or pass --skip-fer)")
    tmp = tempfile.mkdtemp(prefix="cbvsfer")
    video_dir = os.path.join(tmp, "videos")
    os.makedirs(video_dir)
    path = os.path.join(video_dir, "two_faces_cut.mp4")
    truth = write_two_face_cut_video(path, seconds=a.seconds)
    freqs = [int(x) for x in a.frequencies.split(",") if x.strip()]
    if not freqs or min(freqs) < 1:
        raise SystemExit(f"--frequencies must be positive integers, got {a.frequencies!r}")
    res: dict = {"video": truth, "fer_frequencies": freqs, "engine": [], "fer": {f: [] for f in freqs}, **machine()}
    for k in range(a.repeats):
        e = run_engine(video_dir, os.path.join(tmp, f"out{k}"), a.model)
        print("engine", {x: (round(y, 2) if isinstance(y, float) else y) for x, y in e.items() if x not in ("log_tail", "track_ids")})
        res["engine"].append(e)
        if a.every_frame:
            e1 = run_engine(video_dir, os.path.join(tmp, f"out{k}-stride1"), a.model, ("--detect-stride", "1"))
            print("engine --detect-stride 1", {x: (round(y, 2) if isinstance(y, float) else y) for x, y in e1.items() if x not in ("log_tail", "track_ids")})
            res.setdefault("engine_detect_every_frame", []).append(e1)
        for freq in [] if a.skip_fer else freqs:
            f = run_fer(a.fer_python, path, freq, os.path.join(tmp, f"fer{k}-every{freq}"))
            print(f"fer every {freq}", {x: (round(y, 2) if isinstance(y, float) else y) for x, y in f.items()})
            res["fer"][freq].append(f)
    eng = statistics.median(r["wall_s"] for r in res["engine"])
    eng_cpu = statistics.median(r["cpu_s"] for r in res["engine"])
    res["engine_wall_s"], res["engine_cpu_s"] = eng, eng_cpu
    res["engine_video_s_per_s"] = a.seconds / eng
    print(f"engine {eng:.1f} s, {eng_cpu:.1f} CPU s ({a.seconds / eng:.2f} video-s/s, whole process, {a.seconds:.0f} s video)")
    for freq, runs in res["fer"].items():
        if not runs:
            continue
        fer = statistics.median(r["wall_s"] for r in runs)
        fer_cpu = statistics.median(r["cpu_s"] for r in runs)
        res.setdefault("summary", {})[f"fer_every_{freq}"] = {
            "fer_wall_s": fer,
            "fer_cpu_s": fer_cpu,
            "fer_over_engine": fer / eng,
            "fer_over_engine_cpu": fer_cpu / eng_cpu,
        }
        print(
            f"fer every {freq} frame(s): {fer:.1f} s ({fer_cpu:.1f} CPU s): the engine is "
            f"{fer / eng:.2f}x faster in wall time, {fer_cpu / eng_cpu:.2f}x in CPU time"
        )
    print("->", write_result("vs_fer", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
