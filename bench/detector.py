"""The MTCNN face detector alone: speed (frames per CPU-second and per wall-second) and what it finds.

    .venv/bin/python -m bench.detector [--seconds 60] [--videos 6] [--rounds 3]
        [--save FILE.npz] [--compare FILE.npz] [--baseline-from /work/main]

Frames: the sampled frames (8 per 2 s segment, as the job samples them) of

* ``laptop``: the laptop benchmark video (``bench.common.write_two_face_cut_video``:
  640x360, 25 fps, H.264, two faces, a cut, one face, looped to ``--seconds``);
* ``synthetic``: the synthetic expression corpus ``bench.faces`` uses
  (``write_video_corpus(n, seed=0, size=480x360)``), decoded at the detection size
  as the job decodes them.

Every frame goes through ``FaceDetector.detect`` on one torch thread, one frame per
call path as in the job (B = 1, pool of 1; ``--batch 16`` runs the CUDA layout's batched cascade on the CPU): frames per CPU-second is the detector's
cost whatever the host's load; frames per wall-second is shown next to it.

``--save FILE`` writes every detection (frame set, frame, box, score, landmarks) to an
``.npz``; ``--compare FILE`` compares this run's detections with a saved file: faces per
frame identical on what fraction of frames, and the IoU of matched boxes (min / median),
the largest box-corner and score differences.

``--baseline-from CHECKOUT`` (bench only): also imports the MTCNN detector of another
checkout of this repository (e.g. ``/work/main``: its ``cliper_batch/faces/detectors/mtcnn/``
package, or ``cliper_batch/faces/detect.py`` in checkouts before that split) and times it side
by side with this checkout's detector in the same process, rounds interleaved (so load
from other users hits both alike), and compares their detections frame by frame. The
baseline is loaded under another module name inside this checkout's package (its
imports from outside the detector - the pinned weights file, the detection types - resolve
to this checkout's); the product never does this.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from types import ModuleType

import numpy as np
import torch

from bench.common import machine, write_result, write_two_face_cut_video
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.faces.detectors.mtcnn import detector as current_detect
from cliper_batch.faces import framing as ff
from cliper_batch.faces.track import iou
from cliper_batch.decode.probe import probe
from cliper_batch.decode.sampling import plan_segments
from cliper_batch.synthetic import write_video_corpus

FrameSets = dict[str, np.ndarray]  # name -> [F, H, W, 3] uint8
Found = dict[str, list[list]]  # name -> per frame, list of Detection


def sampled_frames(path: str, side: int = 640) -> np.ndarray:
    """The job's sampled frames of one video (8 per 2 s segment), decoded at the detection size."""
    info = probe(path)
    ts = [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps]
    return np.stack(list(PyAVDecoder().iter_frames(path, info, ts, size=ff.detection_size(info.width, info.height, side))))


def frame_sets(tmp: str, seconds: float, videos: int) -> FrameSets:
    laptop = os.path.join(tmp, "two_faces_cut.mp4")
    write_two_face_cut_video(laptop, seconds=seconds)
    corpus = os.path.join(tmp, "corpus")
    write_video_corpus(corpus, videos, seed=0, size=(480, 360))
    paths = sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith((".mp4", ".webm")))
    return {"laptop": sampled_frames(laptop), "synthetic": np.concatenate([sampled_frames(p) for p in paths])}


def load_baseline(checkout: str) -> ModuleType:
    """The MTCNN detector module of another checkout, inside this checkout's package (bench only)."""
    package = os.path.join(os.path.abspath(checkout), "cliper_batch", "faces", "detectors", "mtcnn")
    if os.path.isfile(os.path.join(package, "detector.py")):  # the split detector: load its package, then the module
        _load("cliper_batch.faces.detectors._baseline_mtcnn", os.path.join(package, "__init__.py"), package)
        return importlib.import_module("cliper_batch.faces.detectors._baseline_mtcnn.detector")
    path = os.path.join(os.path.abspath(checkout), "cliper_batch", "faces", "detect.py")
    if not os.path.isfile(path):
        raise SystemExit(f"--baseline-from: neither {package}/detector.py nor {path} exists")
    return _load("cliper_batch.faces._baseline_detect", path)


def _load(name: str, path: str, package: str | None = None) -> ModuleType:
    locations = [package] if package else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def to_arrays(found: Found) -> dict[str, np.ndarray]:
    """Detections as flat arrays: per set, ``counts`` per frame and one row per face (boxes, scores, landmarks)."""
    out: dict[str, np.ndarray] = {}
    for name, frames in found.items():
        dets = [d for f in frames for d in f]
        out[f"{name}/counts"] = np.array([len(f) for f in frames], dtype=np.int32)
        out[f"{name}/boxes"] = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
        out[f"{name}/scores"] = np.array([d.score for d in dets], dtype=np.float64)
        out[f"{name}/landmarks"] = np.array([d.landmarks for d in dets], dtype=np.float64).reshape(-1, 5, 2)
    return out


def per_frame(arrays: dict[str, np.ndarray], name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, scores) of each frame of set ``name``."""
    counts = arrays[f"{name}/counts"]
    ends = np.cumsum(counts)
    return [(arrays[f"{name}/boxes"][e - c : e], arrays[f"{name}/scores"][e - c : e]) for c, e in zip(counts, ends)]


def compare(new: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """Faces per frame identical (fraction of frames), and matched boxes' IoU / corner / score differences, per set."""
    out: dict = {}
    for name in sorted({k.split("/")[0] for k in ref}):
        if f"{name}/counts" not in new:
            out[name] = {"missing_in_this_run": True}
            continue
        a, b = per_frame(new, name), per_frame(ref, name)
        if len(a) != len(b):
            out[name] = {"frames": len(a), "frames_in_reference": len(b), "comparable": False}
            continue
        same = [len(x[0]) == len(y[0]) for x, y in zip(a, b)]
        ious, corner, dscore = [], [], []
        for (ba, sa), (bb, sb) in zip(a, b):
            used: set[int] = set()
            for i, box in enumerate(bb):  # each reference face: the best-overlapping unused face of this run
                cand = [(iou(tuple(box), tuple(x)), j) for j, x in enumerate(ba) if j not in used]
                if not cand:
                    continue
                v, j = max(cand)
                if v <= 0:
                    continue
                used.add(j)
                ious.append(v)
                corner.append(float(np.abs(ba[j] - box).max()))
                dscore.append(abs(float(sa[j]) - float(sb[i])))
        out[name] = {
            "frames": len(a),
            "same_face_count_fraction": float(np.mean(same)) if same else 1.0,
            "frames_with_other_count": [i for i, s in enumerate(same) if not s],
            "faces": int(sum(len(x[0]) for x in a)),
            "faces_in_reference": int(sum(len(y[0]) for y in b)),
            "matched": len(ious),
            "iou_min": float(np.min(ious)) if ious else None,
            "iou_median": float(np.median(ious)) if ious else None,
            "max_corner_diff_px": float(np.max(corner)) if corner else None,
            "max_score_diff": float(np.max(dscore)) if dscore else None,
            "bit_identical": all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b)),
        }
    return out


def time_detectors(detectors: dict[str, object], sets: FrameSets, rounds: int) -> tuple[dict, dict[str, Found]]:
    """Median over ``rounds`` interleaved rounds of each detector over every set: wall and process CPU seconds."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in detectors}
    found: dict[str, Found] = {}
    for det in detectors.values():  # warm-up: first-call allocations and kernel choices are not timed
        det.detect(sets["laptop"][:2])
    for _ in range(rounds):
        for key, det in detectors.items():
            t0, c0 = time.perf_counter(), time.process_time()
            found[key] = {name: det.detect(frames) for name, frames in sets.items()}
            times[key].append((time.perf_counter() - t0, time.process_time() - c0))
    n = sum(len(f) for f in sets.values())
    out: dict = {}
    for key, ts in times.items():
        wall = float(np.median([t[0] for t in ts]))
        cpu = float(np.median([t[1] for t in ts]))
        out[key] = {"frames": n, "wall_s": wall, "cpu_s": cpu, "frames_per_wall_s": n / wall, "frames_per_cpu_s": n / cpu,
                    "wall_s_all": [t[0] for t in ts], "cpu_s_all": [t[1] for t in ts]}
    return out, found


def _show(label: str, d: dict) -> None:
    print(label, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the laptop video")
    p.add_argument("--videos", type=int, default=6, help="videos of the synthetic corpus (bench.faces' default)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per detector (medians reported)")
    p.add_argument("--batch", type=int, default=None,
                   help="frames per cascade call (default: the device's, 1 on CPU; 16 runs the CUDA layout on the CPU)")
    p.add_argument("--save", metavar="FILE", help="write this checkout's detections to FILE (.npz)")
    p.add_argument("--compare", metavar="FILE", help="compare this checkout's detections with FILE (from --save)")
    p.add_argument("--baseline-from", metavar="CHECKOUT", help="also time and compare the detector of another checkout")
    a = p.parse_args()
    torch.set_num_threads(1)  # as the job's actors run it (FaceDetector.threads = 1 too)
    tmp = tempfile.mkdtemp(prefix="cbdetector")
    sets = frame_sets(tmp, a.seconds, a.videos)
    res: dict = {"frames": {k: list(v.shape) for k, v in sets.items()}, "torch_threads": 1, "rounds": a.rounds,
                 "load_avg_1m_before": os.getloadavg()[0], **machine()}
    detectors = {"this_checkout": current_detect.FaceDetector(batch=a.batch)}
    if a.baseline_from:
        detectors = {"baseline": load_baseline(a.baseline_from).FaceDetector(batch=a.batch), **detectors}
        res["baseline_from"] = os.path.abspath(a.baseline_from)
    timing, found = time_detectors(detectors, sets, a.rounds)
    res["timing"] = timing
    res["load_avg_1m_after"] = os.getloadavg()[0]
    for key, t in timing.items():
        _show(f"{key}:", {k: v for k, v in t.items() if not k.endswith("_all")})
    mine = to_arrays(found["this_checkout"])
    if a.baseline_from:
        res["speedup_cpu"] = timing["baseline"]["cpu_s"] / timing["this_checkout"]["cpu_s"]
        res["speedup_wall"] = timing["baseline"]["wall_s"] / timing["this_checkout"]["wall_s"]
        print(f"this checkout vs baseline: {res['speedup_cpu']:.2f}x frames per CPU-second, {res['speedup_wall']:.2f}x per wall-second")
        res["vs_baseline"] = compare(mine, to_arrays(found["baseline"]))
        for name, c in res["vs_baseline"].items():
            _show(f"vs baseline, {name}:", c)
    if a.save:
        np.savez_compressed(a.save, **mine)
        print("detections ->", a.save)
    if a.compare:
        with np.load(a.compare) as z:
            ref = {k: z[k] for k in z.files}
        res["vs_saved"] = compare(mine, ref)
        for name, c in res["vs_saved"].items():
            _show(f"vs {a.compare}, {name}:", c)
    print("->", write_result("detector", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
