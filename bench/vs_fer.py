"""The default job vs two PyPI peers, `fer` and `PyEmotion`, as whole processes, at the same sampling rate, in one run.

    bench/setup_fer.sh                       # once: fer in its own venv (bench/.fer-venv)
    bench/setup_pyemotion.sh                 # once: PyEmotion in its own venv (bench/.pyemotion-venv)
    .venv/bin/python -m bench.vs_fer [--seconds 60] [--videos 8] [--repeats 2] [--frequencies matched,1]
                                     [--pyemotion-frequencies matched] [--skip-fer] [--skip-pyemotion] [--old-video]

Workloads (both in every run):

* **one video**: ``--seconds`` (60) s, 640x360, 25 fps, H.264;
* **a corpus** of ``--videos`` (8) such videos, all different (``--videos 0``: none).

The videos (``bench.common.write_moving_faces_video``, seeds ``--seed``.. ; the one
video is the corpus' first) look like footage, not stills: shots of 2.5-6 s with hard
cuts, one or two synthetic people per shot (a cast of 4 per video, who come back after
cuts), every face drifting, swaying, zooming in or out, rolling and turning a little,
so its box moves and changes size every frame. Their ground truth is
``bench.common.moving_faces_truth`` (every face box at any time). ``--old-video`` uses
the video of every earlier result instead (``bench.common.write_two_face_cut_video``:
two still-sized faces drifting slowly for 4 s, a cut to one face for 4 s, looped; the
corpus is then copies of it): ``--old-video --videos 0 --skip-pyemotion --model
models/cliper-demo.safetensors`` reproduces the older numbers' setup.

Tools, each a fresh process timed from start to exit (wall, CPU seconds of the process
tree, peak RSS of the tree: ``bench.common.PeakRSS``):

* **engine**: ``python jobs/annotate.py --input DIR --output OUT --model MODEL`` (every
  other default: --faces detect, embedded Ray, CPU; ``--model`` default the shipped
  real-face model), one process for the corpus (how it runs), one for the one video.
  It samples ``frames_per_segment`` frames per ``segment_seconds`` segment: 8 per 2 s,
  4 frames/s.
* **fer** (``fer.classes.Video(path).analyze(FER(), frequency=N)``, saving and annotating
  off): one process for all videos of a workload (one ``FER()``, its start-up paid once),
  once per ``--frequencies`` value.
* **PyEmotion** 1.0.0 (``bench/peers/pyemotion_video.py``: OpenCV reads the frames, every
  Nth goes to PyEmotion's ``DetectFace(device="cpu").predict_emotion(frame)``, i.e.
  facenet-pytorch MTCNN + its classifier): one process for all videos of a workload, once
  per ``--pyemotion-frequencies`` value. PyEmotion detects and classifies every face, but
  returns one label per frame (the last face's); see that script.

**Matched rate first.** At its default, fer analyses every frame (``frequency=1``): 6x the
frames the engine samples at 25 fps, so "fer is N times slower" would mostly measure
the sampling rate. The comparison that says something about the engine is at the
same rate: 1 frame in 6 (``round(fps * segment_seconds / frames_per_segment)``, 4.17
frames/s at 25 fps vs the engine's 4), so the table and ``comparisons`` in the JSON
list, per workload, engine vs fer and engine vs PyEmotion at the matched rate first,
then the peers at their other rates (fer's default: every frame). Matched is the rate
of frames looked at, not the same work per frame: the peers run their detector on every
frame they analyse and classify single frames; the engine runs its detector (MTCNN, like
PyEmotion's) on 1 sampled frame in 4 plus every cut, tracks faces in between, and scores
8-frame clips per face and 2 s segment (``--every-frame`` adds an engine run with
``--detect-stride 1``, the detector on every sampled frame; ``--engine-min-face N`` one with
``--min-face N``; ``--faces-none`` one with ``--faces none``, reported as detect / none: what
face detection costs the whole process).

Runs alternate per repeat (engine, fer, PyEmotion, engine, ...; one video, then the
corpus) so machine load hits all tools alike. Reported per tool and workload: median
wall and CPU seconds, peak RSS, peer/engine ratios of wall and CPU time (> 1: the
engine is faster), and what each reports against the truth: face tracks and timeline
rows (engine), faces per analysed frame and frames with two faces (peers). Read the
times with those counts: the faces are drawn, and every detector misses some of them
(which ones depends on the tool and on the person drawn), and a tool that
finds fewer faces does less per-face work. fer at ``frequency`` > 1 seeks
(``CAP_PROP_POS_FRAMES``) to each frame it analyses: that is its own method, timed as is.
Results: ``bench/results/vs_fer.json`` (``comparisons`` in the table's order, every run
under ``runs``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from bench.common import (  # noqa: E402
    PeakRSS,
    machine,
    moving_faces_truth,
    two_face_cut_truth,
    write_moving_faces_corpus,
    write_moving_faces_video,
    write_result,
    write_two_face_cut_video,
)

FPS = 25
SIZE = (640, 360)
PYEMOTION_SCRIPT = os.path.join(ROOT, "bench", "peers", "pyemotion_video.py")
FER_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import cv2
cv2.waitKey = lambda *a, **k: -1          # headless OpenCV has no GUI
cv2.destroyAllWindows = lambda *a, **k: None
from fer.fer import FER
from fer.classes import Video
frequency, outdir, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
detector = FER()
seen = []                                  # faces fer found in each frame it analysed (its result omits empty frames)
detect = detector.detect_emotions
def counting(*args, **kwargs):
    faces = detect(*args, **kwargs)
    seen.append(len(faces))
    return faces
detector.detect_emotions = counting
videos = []
for path in paths:
    seen.clear()
    Video(path, outdir=outdir).analyze(detector, display=False, frequency=frequency, save_frames=False, save_video=False,
                                       annotate_frames=False, zip_images=False)
    videos.append({"path": path, "faces_per_frame": list(seen)})
print(json.dumps({"videos": videos, "in_process_s": time.perf_counter() - t0}))
"""


def matched_frequency(fps: float = FPS) -> int:
    """Every how many frames a peer analyses one to sample as often as the engine's default (6 at 25 fps)."""
    from cliper_batch.types import AnnotateConfig

    cfg = AnnotateConfig()
    return max(1, round(fps * cfg.segment_seconds / cfg.frames_per_segment))


def timed_process(name: str, cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs ``cmd`` to its exit; its wall seconds, CPU seconds and peak RSS (whole process tree)."""
    with PeakRSS() as mon:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, **kw)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p, {"wall_s": wall, "cpu_s": mon.cpu_s, "peak_rss_gib": mon.peak_gib}


def run_engine(video_dir: str, out: str, model: str, extra: tuple[str, ...] = ()) -> dict:
    _, t = timed_process(
        "engine",
        [sys.executable, os.path.join(ROOT, "jobs", "annotate.py"), "--input", video_dir, "--output", out, "--model", model, *extra],
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    from cliper_batch.output import query

    v = query.scan_videos(out).collect()
    tl = query.scan_timelines(out).collect()
    per_seg = tl.group_by("video_id", "segment_index").len()["len"]
    return {
        **t,
        "videos": v.height,
        "videos_ok": int((v["status"] == "ok").sum()),
        "n_tracks": int(v["n_tracks"].sum()),
        "rows": tl.height,
        "segments_with_a_face": per_seg.len(),
        "segments_with_two_faces": int((per_seg >= 2).sum()),
        "faces_per_segment_max": int(per_seg.max() or 0),
    }


def peer_counts(videos: list[dict], every: int, faces_at: dict[str, Callable[[float], int]]) -> dict:
    """What a peer reported over a workload (frame ``j`` it analysed is frame ``j * every``), next to the truth there."""
    found = [f for v in videos for f in v["faces_per_frame"]]
    true = [faces_at[v["path"]](j * every / FPS) for v in videos for j in range(len(v["faces_per_frame"]))]
    return {
        "frames": len(found),
        "faces": sum(found),
        "true_faces": sum(true),
        "frames_with_a_face": sum(f >= 1 for f in found),
        "frames_with_two_faces": sum(f >= 2 for f in found),
        "true_frames_with_two_faces": sum(t >= 2 for t in true),
        "faces_per_frame_max": max(found, default=0),
    }


def run_fer(fer_python: str, paths: list[str], every: int, outdir: str, faces_at: dict) -> dict:
    os.makedirs(outdir, exist_ok=True)  # fer writes data.csv into its working directory
    p, t = timed_process("fer", [fer_python, "-c", FER_SCRIPT, str(every), outdir, *paths], cwd=outdir)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {**t, "in_process_s": r["in_process_s"], **peer_counts(r["videos"], every, faces_at)}


def run_pyemotion(pyemotion_python: str, paths: list[str], every: int, faces_at: dict) -> dict:
    p, t = timed_process("PyEmotion", [pyemotion_python, PYEMOTION_SCRIPT, "--every", str(every), *paths])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    labels: dict[str, int] = {}
    for v in r["videos"]:
        for k, n in v["labels"].items():
            labels[k] = labels.get(k, 0) + n
    return {
        **t, "in_process_s": r["in_process_s"], "torch_threads": r["torch_threads"], **peer_counts(r["videos"], every, faces_at),
        "labels_returned": labels,  # one per analysed frame, whatever the number of faces (see pyemotion_video.py)
        "errors": sum(v["n_errors"] for v in r["videos"]), "error_samples": [e for v in r["videos"] for e in v["errors"]][:5],
    }


def true_faces(truth: dict) -> Callable[[float], int]:
    """How many faces the video of ``truth`` (a writer's return) shows at time t."""
    if truth["kind"] == "two_face_cut":
        return lambda t: len(two_face_cut_truth(t, SIZE))
    return lambda t: len(moving_faces_truth(t, truth["seed"], truth["seconds"], SIZE))


def make_videos(tmp: str, a: argparse.Namespace) -> tuple[dict[str, dict], dict[str, Callable[[float], int]]]:
    """Workloads {"video"|"corpus": {"dir", "paths", "truth", ...}} and the true face count at time t of each path."""
    rendered = os.path.join(tmp, "rendered")
    os.makedirs(rendered)
    if a.old_video:
        src = os.path.join(rendered, "two_faces_cut.mp4")
        truth = write_two_face_cut_video(src, seconds=a.seconds, size=SIZE, fps=FPS)
        shots = -(-int(round(a.seconds * FPS)) // (4 * FPS))  # 4 s shots of 2, then 1 face
        first = (src, {"kind": "two_face_cut", **truth, "face_tracks": sum(2 - k % 2 for k in range(shots))})
        corpus = [first] * a.videos  # copies of the one video
    elif a.videos:
        corpus = write_moving_faces_corpus(rendered, a.videos, a.seconds, SIZE, FPS, seed=a.seed, jobs=a.gen_jobs)
        first = corpus[0]
    else:
        src = os.path.join(rendered, f"moving_{a.seed:03d}.mp4")
        first, corpus = (src, write_moving_faces_video(src, a.seed, a.seconds, SIZE, FPS)), []
    workloads: dict[str, dict] = {}
    faces_at: dict[str, Callable[[float], int]] = {}
    for name, items in (("video", [first]), ("corpus", corpus)):
        if not items:
            continue
        folder = os.path.join(tmp, name)
        os.makedirs(folder)
        paths = []
        for i, (src, truth) in enumerate(items):
            stem, ext = os.path.splitext(os.path.basename(src))
            dst = os.path.join(folder, f"{stem}{ext}" if len({s for s, _ in items}) == len(items) else f"{stem}_{i:03d}{ext}")
            try:
                os.link(src, dst)  # each workload its own input folder, the same bytes (the one video is the corpus' first)
            except OSError:
                shutil.copyfile(src, dst)
            faces_at[dst] = true_faces(truth)
            paths.append(dst)
        seconds = sum(truth["seconds"] for _, truth in items)
        workloads[name] = {
            "dir": folder, "paths": paths, "truth": [truth for _, truth in items], "video_s": seconds,
            "face_tracks": sum(truth["face_tracks"] for _, truth in items),
            "label": f"{len(items)} video{'s' * (len(items) > 1)}, {seconds:.0f} s",
        }
    return workloads, faces_at


def _frequencies(text: str, matched: int, flag: str) -> list[int]:
    out = []
    for x in text.split(","):
        x = x.strip()
        if x:
            out.append(matched if x == "matched" else int(x))
    if min(out, default=0) < 1:
        raise SystemExit(f"{flag} must be positive integers or 'matched', got {text!r}")
    return sorted(set(out), key=lambda f: (f != matched, out.index(f)))  # the matched rate first, then as given


PEERS = {"fer": "fer", "pyemotion": "PyEmotion"}


def _every(n: int) -> str:
    return "every frame" if n == 1 else f"1 frame in {n}"


def _short(r: dict) -> dict:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k not in ("error_samples",)}


def _med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _reports(tool: str, runs: list[dict], wl: dict) -> str:
    r = runs[-1]
    if tool.startswith("engine"):
        return (f"{r['n_tracks']} tracks (truth {wl['face_tracks']}), {r['rows']} rows, "
                f"{r['segments_with_two_faces']}/{r['segments_with_a_face']} segments with 2 faces, {r['videos_ok']}/{r['videos']} ok")
    out = (f"{r['frames']} frames, {r['faces']} faces (truth {r['true_faces']}), "
           f"{r['frames_with_two_faces']} frames with 2 (truth {r['true_frames_with_two_faces']})")
    if tool.startswith("pyemotion"):
        out += f", 1 label/frame, {r['errors']} errors"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of each video (default 60)")
    p.add_argument("--videos", type=int, default=8, help="videos in the corpus workload (default 8; 0: the one video only)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the first video (the corpus: seed..seed+videos-1)")
    p.add_argument("--frequencies", default="matched,1",
                   help="fer analyses every Nth frame, one fer run per value (default matched,1: the engine's rate (6 at 25 fps), "
                        "then fer's default, every frame)")
    p.add_argument("--pyemotion-frequencies", default="matched",
                   help="the same for PyEmotion (default: the matched rate only; add 1 for every frame, ~6x its time)")
    p.add_argument("--model", default=None, help="engine model spec (default: the job's default, the shipped real-face model)")
    p.add_argument("--fer-python", default=os.path.join(ROOT, "bench", ".fer-venv", "bin", "python"))
    p.add_argument("--pyemotion-python", default=os.path.join(ROOT, "bench", ".pyemotion-venv", "bin", "python"))
    p.add_argument("--skip-fer", action="store_true", help="no fer runs (no fer venv)")
    p.add_argument("--skip-pyemotion", action="store_true", help="no PyEmotion runs (no PyEmotion venv)")
    p.add_argument("--old-video", action="store_true", help="the video of the earlier results (write_two_face_cut_video) instead")
    p.add_argument("--every-frame", action="store_true", help="also run the engine with --detect-stride 1 (the old behaviour)")
    p.add_argument("--faces-none", action="store_true",
                   help="also run the engine with --faces none (centre crops, no detector): the whole-process cost of "
                        "--faces detect as detect / none")
    p.add_argument("--engine-min-face", type=int, default=None,
                   help="also run the engine with --min-face N (e.g. 50: fer's own default min_face_size), compared with "
                        "the peers at the matched rate next to the default job")
    p.add_argument("--gen-jobs", type=int, default=None, help="processes rendering the corpus (default: one per CPU)")
    p.add_argument("--keep", action="store_true", help="keep the videos and outputs (printed folder) instead of deleting them")
    a = p.parse_args()
    if a.videos < 0 or a.repeats < 1 or not a.seconds > 0:
        raise SystemExit("--videos must be >= 0, --repeats >= 1, --seconds > 0")
    for skip, exe, setup, flag in ((a.skip_fer, a.fer_python, "setup_fer.sh", "--skip-fer"),
                                   (a.skip_pyemotion, a.pyemotion_python, "setup_pyemotion.sh", "--skip-pyemotion")):
        if not skip and not os.path.exists(exe):
            raise SystemExit(f"{exe} not found: run bench/{setup} first (or pass {flag})")
    from cliper_batch.model.spec import DEFAULT_MODEL

    model = a.model or DEFAULT_MODEL
    matched = matched_frequency(FPS)
    fer_freqs = [] if a.skip_fer else _frequencies(a.frequencies, matched, "--frequencies")
    pye_freqs = [] if a.skip_pyemotion else _frequencies(a.pyemotion_frequencies, matched, "--pyemotion-frequencies")

    tmp = tempfile.mkdtemp(prefix="cbvsfer")
    t0 = time.perf_counter()
    workloads, faces_at = make_videos(tmp, a)
    print(f"videos written in {time.perf_counter() - t0:.0f} s under {tmp}")
    # per repeat: the engine, then at each rate (matched first) fer and PyEmotion, so load hits all tools alike
    tools = [("engine", 0)] + [("engine_detect_stride_1", 0)] * a.every_frame
    tools += [("engine_min_face", 0)] * (a.engine_min_face is not None)
    tools += [("engine_faces_none", 0)] * a.faces_none
    for f in sorted(set(fer_freqs) | set(pye_freqs), key=lambda f: (f != matched, f)):
        tools += [(f"fer_every_{f}", f)] * (f in fer_freqs) + [(f"pyemotion_every_{f}", f)] * (f in pye_freqs)
    runs: dict[str, dict[str, list]] = {wl: {name: [] for name, _ in tools} for wl in workloads}
    for k in range(a.repeats):
        for wl, w in workloads.items():
            for name, every in tools:
                if name == "engine":
                    r = run_engine(w["dir"], os.path.join(tmp, f"out-{wl}-{k}"), model)
                elif name == "engine_detect_stride_1":
                    r = run_engine(w["dir"], os.path.join(tmp, f"out-{wl}-{k}-stride1"), model, ("--detect-stride", "1"))
                elif name == "engine_faces_none":
                    r = run_engine(w["dir"], os.path.join(tmp, f"out-{wl}-{k}-none"), model, ("--faces", "none"))
                elif name == "engine_min_face":
                    r = run_engine(w["dir"], os.path.join(tmp, f"out-{wl}-{k}-minface"), model,
                                   ("--min-face", str(a.engine_min_face)))
                elif name.startswith("fer"):
                    r = run_fer(a.fer_python, w["paths"], every, os.path.join(tmp, f"fer-{wl}-{k}-every{every}"), faces_at)
                else:
                    r = run_pyemotion(a.pyemotion_python, w["paths"], every, faces_at)
                runs[wl][name].append(r)
                print(f"[{k + 1}/{a.repeats}] {w['label']}: {name}", _short(r), flush=True)

    comparisons = []
    engines = ["engine"] + ["engine_min_face"] * (a.engine_min_face is not None)
    for every in [matched] + sorted({f for _, f in tools if f and f != matched}):
        for wl, w in workloads.items():
            for engine, name in ((en, n) for en in engines for n, f in tools if f == every):
                if engine != "engine" and every != matched:
                    continue  # a variant of the engine is compared at the matched rate only
                e, pr = runs[wl][engine], runs[wl][name]
                comparisons.append({
                    "rate": "matched" if every == matched else _every(every),
                    "engine": engine if engine == "engine" else f"engine --min-face {a.engine_min_face}",
                    "workload": wl, "peer": name.split("_every_")[0], "every": every, "peer_frames_per_s": FPS / every,
                    "engine_frames_per_s": FPS / matched, "video_s": w["video_s"],
                    "engine_wall_s": _med(e, "wall_s"), "engine_cpu_s": _med(e, "cpu_s"),
                    "peer_wall_s": _med(pr, "wall_s"), "peer_cpu_s": _med(pr, "cpu_s"),
                    "peer_over_engine_wall": _med(pr, "wall_s") / _med(e, "wall_s"),
                    "peer_over_engine_cpu": _med(pr, "cpu_s") / _med(e, "cpu_s"),
                    "engine_peak_rss_gib": max(r["peak_rss_gib"] for r in e), "peer_peak_rss_gib": max(r["peak_rss_gib"] for r in pr),
                })
    print_table(comparisons, runs, workloads, tools, matched, a.repeats)
    detect_over_none = {}
    if a.faces_none:  # what face detection costs the whole process: --faces detect (the default) / --faces none
        for wl, w in workloads.items():
            d, n = runs[wl]["engine"], runs[wl]["engine_faces_none"]
            detect_over_none[wl] = {"wall": _med(d, "wall_s") / _med(n, "wall_s"), "cpu": _med(d, "cpu_s") / _med(n, "cpu_s"),
                                    "none_wall_s": _med(n, "wall_s"), "none_cpu_s": _med(n, "cpu_s")}
            print(f"{w['label']}: --faces none {_med(n, 'wall_s'):.1f} s wall, {_med(n, 'cpu_s'):.1f} CPU s; "
                  f"detect / none = {detect_over_none[wl]['wall']:.2f}x wall, {detect_over_none[wl]['cpu']:.2f}x CPU")
    res = {
        "comparisons": comparisons, "runs": runs, "matched_frequency": matched, "fps": FPS, "model": model,
        "fer_frequencies": fer_freqs, "pyemotion_frequencies": pye_freqs, "repeats": a.repeats,
        "order": [n for n, _ in tools], "engine_min_face": a.engine_min_face, "detect_over_none": detect_over_none, "video_kind": "two_face_cut" if a.old_video else "moving_faces",
        "workloads": {wl: {k: v for k, v in w.items() if k not in ("dir", "paths")} for wl, w in workloads.items()},
        **machine(),
    }
    print("->", write_result("vs_fer", res))
    if a.keep:
        print("kept", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_table(comparisons: list[dict], runs: dict, workloads: dict, tools: list, matched: int, repeats: int) -> None:
    """Matched rate first: per workload the engine, then each peer at that rate with its ratios to the engine."""
    head = f"{'rate':<14} {'workload':<17} {'tool':<26} {'wall s':>8} {'CPU s':>8} {'GiB':>5} {'wall x':>7} {'CPU x':>6}  reports"
    print(f"\nmedians of {repeats} run(s); x = peer / engine (> 1: the engine is faster); engine = 4 frames/s, "
          f"matched = 1 frame in {matched} ({FPS / matched:.2f} frames/s at {FPS} fps)")
    print(head)
    print("-" * len(head))

    def row(rate: str, wl: str, tool: str, name: str, ratio: str = "") -> None:
        rs = runs[wl][name]
        print(f"{rate:<14} {workloads[wl]['label']:<17} {tool:<26} {_med(rs, 'wall_s'):>8.1f} {_med(rs, 'cpu_s'):>8.1f} "
              f"{max(r['peak_rss_gib'] for r in rs):>5.2f} {ratio:<14}  {_reports(name, rs, workloads[wl])}")

    shown = set()
    for c in comparisons:
        if (c["rate"], c["workload"], c["engine"]) not in shown:
            default = c["engine"] == "engine"
            row(c["rate"], c["workload"], "engine (default job)" if default else c["engine"],
                "engine" if default else "engine_min_face")
            shown.add((c["rate"], c["workload"], c["engine"]))
        row(c["rate"], c["workload"], f"{PEERS[c['peer']]} {_every(c['every'])}", f"{c['peer']}_every_{c['every']}",
            f"{c['peer_over_engine_wall']:>7.2f} {c['peer_over_engine_cpu']:>6.2f}")
    for wl in workloads:
        if "engine_detect_stride_1" in runs[wl]:
            row("(extra)", wl, "engine --detect-stride 1", "engine_detect_stride_1")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
