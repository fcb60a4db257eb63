"""Speed without losing accuracy: the job at detection strides 1, 2, 4 (the default) and 8, side by side (issue 26).

    python -m bench.stride_quality OUT_DIR [--strides 1,2,4,8] [--videos 20] [--seconds 20] [--seed 2600]
                                   [--fer-dir /work/data/fer2013] [--fer-videos 8] [--fer-seconds 40]

The face detector runs on every ``detect_stride``-th sampled frame (and wherever tracking is unsure,
``cliper_batch.faces.sparse``); boxes in between are interpolated. This bench asks what that costs in
accuracy, against videos whose every face box and expression is known, and picks the default from it:
the default may lose at most ``--tolerance`` (0.5) points of segment accuracy against stride 1.

Two sections, each annotated by the real job (``pipeline.run.annotate``, ``--faces detect``, embedded
Ray) once per stride, the output read back with Polars (``cliper_batch.output.query``):

* **synthetic** (``--videos`` 20): ``bench.common.write_moving_faces_video`` videos of seeds
  ``--seed``.. (2600..; no other bench or test uses them, and their people are drawn from other random
  streams than the demo model's training faces, so the model never saw them): shots with hard cuts,
  one or two synthetic people per shot, every face drifting, swaying, zooming, rolling and turning
  every frame, expressions changing within shots; truth ``bench.common.moving_faces_truth``. Scored
  with the shipped demo model (``--synthetic-model``, trained on such faces).
* **real faces** (``--fer-dir``; skipped without it): ``--fer-videos`` videos built from real
  FER2013 faces (the split ``--fer-split``, originals only, never the augmented ``*.jpgN.jpg``
  copies): one 48x48 grey face, upscaled to 120-200 px, on a smooth colour background, drifting on a
  smooth curve and changing size every frame; every run of 1-2 segments shows one image of one
  class (:class:`RealFaceScript`). Scored with ``--model`` (default ``builtin:fer2013``, the job's).

Measures, per section and stride:

* **segment accuracy**: over the true *face-segments* (one face through one segment, scored where it is
  on screen on more than half of the segment's sampled frames (5 of 8) and one expression holds on
  more than half of them: that expression is its true label; the others, a face seen only briefly
  across a cut, or an expression change in mid-segment with no majority, are left out and counted).
  Each output row (track, segment) belongs to the true face its median box overlaps most (IoU >=
  :data:`MATCH_IOU`, else it is *spurious*). A face-segment with **no row** counts as **wrong**; one
  with **two or more rows** (its track broke) is judged by the row seen in the most frames
  (``frames_with_face``, then the lower track id: ``training.demo``'s rule for one person), the
  others count as *duplicates*. ``accuracy`` = correct / all face-segments; ``accuracy_found`` =
  correct / face-segments with a row; **faces found** = face-segments with a row / all. Paired
  with stride 1 (same face-segments): how many the stride got right that stride 1 got wrong, and the
  reverse. One face-segment is 100 / N points of N: read the difference with N.
* **track IoU**: per sampled frame and true face on it, the IoU of the track box on that frame
  (detected or interpolated) paired with it one-to-one (0 where no track is there): median and share
  >= 0.5. The job writes one box per (track, segment), not per frame, so the tracks come from
  replaying pass 1 of the job (``bench.faces.replay_tracks``: same frames, same detector, same tracker
  settings, the detector run once per frame and its answers replayed per stride); the replay's
  per-segment boxes are checked against the job's rows (``replay_matches_job``).
  MTCNN's box is tighter than the drawn face oval or the pasted FER square, so even a detected box
  scores ~0.6-0.8: compare strides, not absolute values.
* **detector frames** (the replay's count, share of sampled frames) and the job's **wall seconds**
  (the ``annotate`` call, Ray already up; on a loaded host not a clean speed measure).

Results: a markdown table, the verdict (does the default lose <= tolerance in every section; the
largest stride that does), ``bench/results/stride_quality.json`` and ``OUT_DIR/stride_quality.json``.
"""
from __future__ import annotations

import argparse
import bisect
import functools
import json
import math
import os
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.common import encode_video, machine, moving_faces_shots, moving_faces_truth, write_moving_faces_corpus, write_result
from cliper_batch.types import DEFAULT_DETECT_STRIDE, DEFAULT_MIN_FACE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(ROOT, "models", "cliper-demo.safetensors")
HIDDEN_SEED = 2600  # first moving-faces seed of the synthetic section: no other bench or test uses 2600..
MATCH_IOU = 0.3  # an output row's median box belongs to the true face it overlaps most, from this IoU
TOLERANCE_POINTS = 0.5  # issue 26: the default stride may lose at most this much segment accuracy vs stride 1
SIZE, FPS = (640, 360), 25

Box = tuple[float, float, float, float]
FacesAt = Callable[[float], list[tuple[object, str, Box]]]  # time -> (face key, true label, box in pixels) per face


@dataclass(frozen=True)
class TruthVideo:
    """A benchmark video and its truth: ``faces_at(t)`` lists every face on the frame shown at ``t``."""

    path: str
    faces_at: FacesAt


# --------------------------------------------------------------------------- synthetic section


def _moving_faces_at(seed: int, seconds: float, t: float) -> list[tuple[object, str, Box]]:
    """``moving_faces_truth`` keyed by (shot, face): a face in the next shot is another face-segment, even the same person."""
    shots = moving_faces_shots(seed, seconds, SIZE)
    shot = max(0, bisect.bisect_right([s.start for s in shots], t) - 1)
    return [((shot, j), label, box) for j, (label, _, box, _, _) in enumerate(moving_faces_truth(t, seed, seconds, SIZE))]


def synthetic_videos(out_dir: str, n: int, seconds: float, seed: int = HIDDEN_SEED) -> list[TruthVideo]:
    """``n`` moving-faces videos (seeds ``seed``..), rendered unless all are already in ``out_dir``."""
    paths = [os.path.join(out_dir, f"moving_{seed + i:03d}.mp4") for i in range(n)]
    if not all(os.path.isfile(p) for p in paths):
        got = [p for p, _ in write_moving_faces_corpus(out_dir, n, seconds, SIZE, FPS, seed=seed)]
        assert got == paths, (got, paths)
    return [TruthVideo(p, functools.partial(_moving_faces_at, seed + i, seconds)) for i, p in enumerate(paths)]


# --------------------------------------------------------------------------- real-face section


@dataclass(frozen=True)
class RealFaceScript:
    """One real-face video: runs of ``(start_s, end_s, label, image path)`` and a smooth face path.

    The face (a square, the FER2013 crop upscaled) has side ``side0 + side_amp * sin(side_w t + side_ph)``
    (120-200 px) and centre ``(W/2 + ax sin(wx t + px), H/2 + ay sin(wy t + py))``, so it moves and
    changes size every frame and stays inside the frame; its box is the pasted square, whole pixels.
    """

    runs: tuple[tuple[float, float, str, str], ...]
    size: tuple[int, int]
    side0: float
    side_amp: float
    side_w: float
    side_ph: float
    ax: float
    wx: float
    px: float
    ay: float
    wy: float
    py: float

    def box(self, t: float) -> Box:
        w, h = self.size
        side = int(round(self.side0 + self.side_amp * math.sin(self.side_w * t + self.side_ph)))
        x0 = int(round(w / 2 + self.ax * math.sin(self.wx * t + self.px) - side / 2))
        y0 = int(round(h / 2 + self.ay * math.sin(self.wy * t + self.py) - side / 2))
        return (float(x0), float(y0), float(x0 + side), float(y0 + side))

    def run_at(self, t: float) -> int:
        return min(len(self.runs) - 1, bisect.bisect_right([r[0] for r in self.runs], t) - 1)

    def faces_at(self, t: float) -> list[tuple[object, str, Box]]:
        k = self.run_at(t)
        return [(k, self.runs[k][2], self.box(t))]  # each run is another image: another face


def real_face_images(fer_dir: str, split: str = "test") -> dict[str, list[str]]:
    """label -> original FER2013 images of ``split`` (``fer_dir`` is the dataset root or the split folder itself)."""
    from cliper_batch.training.datasets import load_dataset

    root = fer_dir if os.path.isdir(os.path.join(fer_dir, split)) else os.path.dirname(os.path.normpath(fer_dir))
    if root != fer_dir:
        split = os.path.basename(os.path.normpath(fer_dir))
    by: dict[str, list[str]] = {}
    for s in load_dataset(f"fer2013:{root}", split).samples:  # originals only (no *.jpgN.jpg copies)
        by.setdefault(s.label, []).append(s.path)
    return by


def real_face_script(images: dict[str, list[str]], seed: int, seconds: float, segment_seconds: float = 2.0,
                     size: tuple[int, int] = SIZE) -> RealFaceScript:
    """A seeded :class:`RealFaceScript`: runs of 1-2 segments, each a class other than the last, one random image each."""
    rng = np.random.default_rng([seed, 26, 2013])
    labels = sorted(images)
    runs, t, prev = [], 0.0, None
    n_seg = int(round(seconds / segment_seconds))
    while t < n_seg * segment_seconds - 1e-9:
        label = str(rng.choice([c for c in labels if c != prev]))
        end = min(n_seg * segment_seconds, t + int(rng.integers(1, 3)) * segment_seconds)
        runs.append((t, end, label, str(rng.choice(images[label]))))
        t, prev = end, label
    w, h = size
    side0, side_amp = 160.0, 40.0  # 120..200 px
    reach_x, reach_y = w / 2 - (side0 + side_amp) / 2 - 4, h / 2 - (side0 + side_amp) / 2 - 4
    two_pi = 2 * math.pi
    return RealFaceScript(
        runs=tuple(runs), size=(w, h), side0=side0, side_amp=side_amp,
        side_w=two_pi / float(rng.uniform(5.0, 10.0)), side_ph=float(rng.uniform(0, two_pi)),
        ax=float(rng.uniform(0.5, 1.0)) * reach_x, wx=two_pi / float(rng.uniform(8.0, 16.0)), px=float(rng.uniform(0, two_pi)),
        ay=float(rng.uniform(0.5, 1.0)) * reach_y, wy=two_pi / float(rng.uniform(6.0, 12.0)), py=float(rng.uniform(0, two_pi)),
    )


def write_real_face_video(path: str, script: RealFaceScript, seed: int, fps: int = FPS) -> int:
    """Renders ``script`` (H.264): the face pasted on a smooth random colour background; returns the frame count."""
    from PIL import Image

    w, h = script.size
    rng = np.random.default_rng([seed, 26, 2014])
    backdrop = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    faces = {r[3]: Image.open(r[3]).convert("L") for r in script.runs}
    seconds = script.runs[-1][1]

    def frames():
        for i in range(int(round(seconds * fps))):
            t = i / fps
            x0, y0, x1, _ = (int(v) for v in script.box(t))
            side = x1 - x0
            face = np.asarray(faces[script.runs[script.run_at(t)][3]].resize((side, side), Image.BICUBIC))
            frame = backdrop.copy()
            frame[y0 : y0 + side, x0 : x0 + side] = face[:, :, None]
            yield frame

    return encode_video(path, frames(), (w, h), fps, "h264")


def real_face_videos(out_dir: str, fer_dir: str, n: int, seconds: float, seed: int = HIDDEN_SEED,
                     split: str = "test") -> list[TruthVideo]:
    """``n`` real-face videos (:func:`real_face_script`, seeds ``seed``..) written to ``out_dir``."""
    images = real_face_images(fer_dir, split)
    os.makedirs(out_dir, exist_ok=True)
    out = []
    for i in range(n):
        script = real_face_script(images, seed + i, seconds)
        path = os.path.join(out_dir, f"real_{seed + i:03d}.mp4")
        if not os.path.isfile(path):
            write_real_face_video(path, script, seed + i)
        out.append(TruthVideo(path, script.faces_at))
    return out


# --------------------------------------------------------------------------- truth per sampled frame and segment


@dataclass
class VideoTruth:
    """A video as the job samples it: its segments and the true faces on every sampled frame."""

    video: TruthVideo
    uri: str
    width: int  # detection size: the job's boxes are normalised by it
    height: int
    segments: list
    faces: list[list[tuple[object, str, Box]]]  # per sampled frame (in detection-size pixels)
    face_segments: list[dict]  # scored: {"segment", "key", "label", "box"} (box: median, normalised)
    left_out: dict[str, int]  # face-segments not scored: on screen half the segment or less / no label on more than half


def video_truth(video: TruthVideo, config) -> tuple[VideoTruth, np.ndarray]:
    """The truth of ``video`` at the job's samples, and those sampled frames (for the replay)."""
    from bench.faces import sample_for_detection, sampled_frame_index
    from cliper_batch.decode.sampling import plan_for
    from cliper_batch.uris import normalize_uri

    info, ts, frames, (W, H) = sample_for_detection(video.path, config)
    sx, sy = W / info.width, H / info.height
    faces = [[(k, lab, (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy))
              for k, lab, b in video.faces_at(sampled_frame_index(t, info.fps) / info.fps)] for t in ts]
    segments = plan_for(info, config.segment_seconds, config.frames_per_segment)
    T = config.frames_per_segment
    eligible, left_out = [], {"partial": 0, "mixed_label": 0}
    for seg in segments:
        per = faces[seg.index * T : (seg.index + 1) * T]
        for key in sorted({k for f in per for k, _, _ in f}, key=str):
            mine = [(lab, b) for f in per for k, lab, b in f if k == key]
            label, held = Counter(lab for lab, _ in mine).most_common(1)[0]
            if 2 * len(mine) <= T:
                left_out["partial"] += 1  # on screen for half of the segment or less (a cut)
            elif 2 * held <= T:
                left_out["mixed_label"] += 1  # no expression holds on more than half of it
            else:
                med = np.median(np.array([b for _, b in mine]), axis=0) / [W, H, W, H]
                eligible.append({"segment": seg.index, "key": key, "label": label, "box": tuple(float(v) for v in med)})
    return VideoTruth(video, normalize_uri(video.path), W, H, segments, faces, eligible, left_out), frames


def _segment_faces(vt: VideoTruth, seg: int, T: int) -> dict[object, Box]:
    """Every true face seen in segment ``seg`` (eligible or not) -> its median box over the frames it is on, normalised."""
    boxes: dict[object, list[Box]] = {}
    for f in vt.faces[seg * T : (seg + 1) * T]:
        for k, _, b in f:
            boxes.setdefault(k, []).append(b)
    return {k: tuple(float(v) for v in np.median(np.array(bs), axis=0) / [vt.width, vt.height, vt.width, vt.height])
            for k, bs in boxes.items()}


# --------------------------------------------------------------------------- scoring


def score_output(output: str, truths: Sequence[VideoTruth], T: int) -> dict:
    """Segment accuracy of the job's output folder against the truth (the module docstring's rules)."""
    import polars as pl

    from cliper_batch.faces.track import iou
    from cliper_batch.output import query

    tl = (query.scan_timelines(output)
          .select("video_uri", "track_id", "segment_index", "label", "face_x0", "face_y0", "face_x1", "face_y1",
                  pl.col("frames_with_face").fill_null(0))
          .collect())
    rows_by: dict[tuple[str, int], list[dict]] = {}
    for r in tl.iter_rows(named=True):
        rows_by.setdefault((r["video_uri"], r["segment_index"]), []).append(r)
    n = found = correct = spurious = duplicates = 0
    confusions: dict[str, int] = {}
    outcomes: dict[tuple, bool] = {}  # (video, segment, face) -> correct
    for vt in truths:
        for seg in vt.segments:
            rows = rows_by.get((vt.uri, seg.index), [])
            truth_boxes = _segment_faces(vt, seg.index, T)
            owner: dict[object, list[dict]] = {}
            for r in rows:
                box = (r["face_x0"], r["face_y0"], r["face_x1"], r["face_y1"])
                best = max(truth_boxes, key=lambda k: iou(box, truth_boxes[k]), default=None)
                if best is None or iou(box, truth_boxes[best]) < MATCH_IOU:
                    spurious += 1
                else:
                    owner.setdefault(best, []).append(r)
            eligible = {fs["key"]: fs for fs in vt.face_segments if fs["segment"] == seg.index}
            for key, mine in owner.items():
                duplicates += len(mine) - 1
            for key, fs in eligible.items():
                n += 1
                mine = owner.get(key, [])
                outcomes[(vt.uri, seg.index, key)] = False
                if not mine:
                    continue  # no row: wrong
                found += 1
                pick = min(mine, key=lambda r: (-r["frames_with_face"], r["track_id"]))
                if pick["label"] == fs["label"]:
                    correct += 1
                    outcomes[(vt.uri, seg.index, key)] = True
                else:
                    confusions[f"{fs['label']}->{pick['label']}"] = confusions.get(f"{fs['label']}->{pick['label']}", 0) + 1
    return {
        "face_segments": n, "found": found, "correct": correct, "spurious_rows": spurious, "duplicate_rows": duplicates,
        "accuracy": correct / n if n else 0.0, "accuracy_found": correct / found if found else 0.0,
        "faces_found": found / n if n else 0.0, "rows": tl.height, "confusions": confusions, "outcomes": outcomes,
    }


def replay_video(vt: VideoTruth, frames: np.ndarray, detector, strides: Sequence[int], T: int, into: dict[int, dict]) -> None:
    """Adds one video to ``into[stride]``: detector frames, per-frame track IoU against the truth, the rows pass 2 plans.

    The detector runs once on every sampled frame; each stride replays pass 1 on its answers (``bench.faces.replay_tracks``).
    """
    from bench.faces import replay_tracks
    from cliper_batch.faces import framing as ff
    from cliper_batch.faces.track import assign, iou

    every = detector.detect(frames, frame_indices=list(range(len(frames))))
    for s in strides:
        tracks, counts = replay_tracks(frames, every, stride=s)
        o = into.setdefault(s, {"detected": 0, "samples": 0, "ious": [], "rows": {}})
        o["detected"] += counts.detected
        o["samples"] += len(frames)
        for f, true in enumerate(vt.faces):
            boxes = [b for t in tracks if (b := t.box_at(f)) is not None]
            got = [0.0] * len(true)
            if true and boxes:
                m = np.array([[iou(tb, b) for b in boxes] for _, _, tb in true])
                for i, j in assign(-m):
                    got[i] = float(m[i, j])
            o["ious"].extend(got)
        for seg, items in ff.plan_track_segments(tracks, vt.segments, T).items():
            cols = ff.face_columns(items, vt.width, vt.height)
            for j, it in enumerate(items):
                o["rows"][(vt.uri, seg, it.track.track_id)] = tuple(float(cols[c][j]) for c in ("face_x0", "face_y0", "face_x1", "face_y1"))


def job_rows(output: str) -> dict[tuple[str, int, int], Box]:
    """(video uri, segment, track) -> the face box of the job's row."""
    from cliper_batch.output import query

    tl = query.scan_timelines(output).select("video_uri", "segment_index", "track_id", "face_x0", "face_y0", "face_x1", "face_y1").collect()
    return {(r[0], r[1], r[2]): tuple(float(v) for v in r[3:]) for r in tl.iter_rows()}


def rows_agree(replayed: dict, job: dict, tol: float = 1e-4) -> float:
    """Share of the rows (either side) that both have, with boxes equal within ``tol``: 1.0 = the replay is the job."""
    keys = set(replayed) | set(job)
    same = sum(1 for k in keys if k in replayed and k in job and max(abs(a - b) for a, b in zip(replayed[k], job[k])) <= tol)
    return same / len(keys) if keys else 1.0


# --------------------------------------------------------------------------- one section, every stride


def run_section(name: str, videos: Sequence[TruthVideo], input_dir: str, out_root: str, model: str,
                strides: Sequence[int], batch_size: int = 64, min_faces: Sequence[int] = (DEFAULT_MIN_FACE,)) -> dict:
    """The job once per (minimum face size, stride) on ``input_dir`` (Ray must be up), scored; plus the replay.

    Rows: one per setting. The reference of every row is stride 1 at the smallest of ``min_faces``
    (the most the detector can do: every frame, every face size listed)."""
    import torch

    from cliper_batch.faces.detectors import make_detector
    from cliper_batch.pipeline.run import annotate
    from cliper_batch.types import AnnotateConfig, RunOptions

    base = AnnotateConfig(faces="detect", batch_size=batch_size)
    T = base.frames_per_segment
    detectors = {mf: make_detector(base.face_detector, device=torch.device("cpu"), workers=torch.get_num_threads(),
                                   min_face_size=mf) for mf in min_faces}
    truths, replay = [], {mf: {} for mf in min_faces}
    for v in videos:  # one video's frames in memory at a time
        vt, frames = video_truth(v, base)
        truths.append(vt)
        for mf in min_faces:
            replay_video(vt, frames, detectors[mf], strides, T, replay[mf])
    rows = []
    for mf in min_faces:
        for s in strides:
            out = os.path.join(out_root, f"{name}-stride{s}" + (f"-minface{mf}" if mf != DEFAULT_MIN_FACE else ""))
            shutil.rmtree(out, ignore_errors=True)
            cfg = AnnotateConfig(faces="detect", detect_stride=s, batch_size=batch_size, min_face=mf)
            t0 = time.perf_counter()
            summary = annotate(input_dir, out, model, cfg, options=RunOptions(force=True))
            wall = time.perf_counter() - t0
            if summary.videos_failed or summary.videos_ok != len(videos):
                raise RuntimeError(f"{name} stride {s}: {summary.videos_ok} of {len(videos)} videos annotated ({summary})")
            score = score_output(out, truths, T)
            r = replay[mf][s]
            ious = r["ious"]
            rows.append({
                "section": name, "stride": s, "min_face": mf, "videos": len(videos), "video_seconds": summary.video_seconds,
                **score,
                "detector_frames": r["detected"], "sampled_frames": r["samples"], "detector_share": r["detected"] / max(1, r["samples"]),
                "track_iou_median": float(statistics.median(ious)) if ious else 0.0,
                "track_iou_share_05": float(np.mean([v >= 0.5 for v in ious])) if ious else 0.0,
                "face_frames": len(ious), "replay_matches_job": rows_agree(r["rows"], job_rows(out)),
                "wall_s": wall, "load_average_1m": os.getloadavg()[0],
            })
            print(name, f"min face {mf}, stride {s}:", {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()
                                                        if k not in ("confusions", "outcomes")}, flush=True)
    ref_face = min(min_faces)
    ref = next((r for r in rows if r["stride"] == 1 and r["min_face"] == ref_face), rows[0])
    for r in rows:
        r["accuracy_minus_stride1_points"] = 100.0 * (r["accuracy"] - ref["accuracy"])
    for r in rows:  # paired: which face-segments the setting turned right or wrong
        r["gained_vs_stride1"] = sum(ok and not ref["outcomes"][k] for k, ok in r["outcomes"].items())
        r["lost_vs_stride1"] = sum(ref["outcomes"][k] and not ok for k, ok in r["outcomes"].items())
    for r in rows:
        del r["outcomes"]
    left_out = {k: sum(vt.left_out[k] for vt in truths) for k in ("partial", "mixed_label")}
    return {"rows": rows, "left_out_face_segments": left_out, "model": model}


# --------------------------------------------------------------------------- verdict and table


def verdict(sections: dict[str, dict], default: int = DEFAULT_DETECT_STRIDE, tolerance: float = TOLERANCE_POINTS) -> dict:
    """Does ``default`` lose at most ``tolerance`` points against stride 1 in every section; the largest stride that does."""
    strides = sorted({r["stride"] for s in sections.values() for r in s["rows"]})

    def loss(stride: int, min_face: int = DEFAULT_MIN_FACE) -> float:
        return max((-r["accuracy_minus_stride1_points"] for s in sections.values() for r in s["rows"]
                    if r["stride"] == stride and r.get("min_face", DEFAULT_MIN_FACE) == min_face), default=float("nan"))

    ok = [s for s in strides if loss(s) <= tolerance + 1e-9]
    largest = max(ok) if ok else None
    # the largest stride below which every stride holds too (accuracy need not fall monotonically with the stride)
    holds_up_to = max((s for s in strides if all(t in ok for t in strides if t <= s)), default=None)
    out = {"default_stride": default, "tolerance_points": tolerance, "loss_points": {s: loss(s) for s in strides},
           "largest_ok_stride": largest, "largest_stride_all_below_ok": holds_up_to}
    faces = sorted({r.get("min_face", DEFAULT_MIN_FACE) for s in sections.values() for r in s["rows"]})
    out["min_face_loss_points"] = {f"min_face {mf}, stride {st}": loss(st, mf) for mf in faces for st in strides}
    if default in strides:
        out["default_ok"] = loss(default) <= tolerance + 1e-9
        out["text"] = (f"default stride {default} (min face {DEFAULT_MIN_FACE}) loses {loss(default):.2f} points at most "
                       f"(tolerance {tolerance}): "
                       + ("kept" if out["default_ok"] else f"too much; the largest stride within tolerance is {largest}"))
    else:
        out["default_ok"] = None
        out["text"] = f"default stride {default} not measured; largest stride within {tolerance} points: {largest}"
    return out


def markdown_table(sections: dict[str, dict]) -> str:
    head = ("| section | min face | stride | detector frames | track IoU median | IoU >= 0.5 | faces found | segment acc. "
            "| vs stride 1 (points) | right / wrong vs stride 1 | acc. of found | wall s |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, sec in sections.items():
        for r in sec["rows"]:
            lines.append(
                f"| {name} | {r.get('min_face', DEFAULT_MIN_FACE)} | {r['stride']} | {r['detector_frames']} ({100 * r['detector_share']:.0f}%) | {r['track_iou_median']:.3f} "
                f"| {100 * r['track_iou_share_05']:.1f}% | {r['found']}/{r['face_segments']} | {r['correct']}/{r['face_segments']} = "
                f"{100 * r['accuracy']:.1f}% | {r['accuracy_minus_stride1_points']:+.1f} | +{r['gained_vs_stride1']} / -{r['lost_vs_stride1']} | {100 * r['accuracy_found']:.1f}% | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="videos and annotation outputs go here (videos are reused when present)")
    p.add_argument("--strides", default="1,2,4,8")
    p.add_argument("--videos", type=int, default=20, help="synthetic moving-faces videos (0: none)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each synthetic video")
    p.add_argument("--seed", type=int, default=HIDDEN_SEED, help="first seed of both sections' videos")
    p.add_argument("--synthetic-model", default=DEMO_MODEL, help="model for the synthetic faces (the shipped demo model)")
    p.add_argument("--fer-dir", default=None, help="FER2013 root (<dir>/<split>/<class>/*.jpg) or split folder; none: no real-face section")
    p.add_argument("--fer-split", default="test")
    p.add_argument("--fer-videos", type=int, default=8)
    p.add_argument("--fer-seconds", type=float, default=40.0)
    p.add_argument("--model", default="builtin:fer2013", help="model for the real faces (the job's default)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE_POINTS, help="points of segment accuracy the default may lose")
    p.add_argument("--min-faces", default=f"20,{DEFAULT_MIN_FACE}",
                   help=f"--min-face values to run each stride at (default 20,{DEFAULT_MIN_FACE}: the smallest the detector "
                        f"can do and the job's default); the reference is stride 1 at the smallest")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    strides = [int(v) for v in a.strides.split(",")]
    if 1 not in strides:
        strides = [1, *strides]  # the reference
    os.makedirs(a.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    plan = []
    if a.videos:
        vdir = os.path.join(a.out_dir, f"synthetic-{a.seconds:g}s")
        plan.append(("synthetic", synthetic_videos(vdir, a.videos, a.seconds, a.seed), vdir, a.synthetic_model))
    if a.fer_dir:
        vdir = os.path.join(a.out_dir, f"real-{a.fer_seconds:g}s")
        plan.append(("real_faces", real_face_videos(vdir, a.fer_dir, a.fer_videos, a.fer_seconds, a.seed, a.fer_split), vdir, a.model))
    render_s = time.perf_counter() - t0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        min_faces = [int(v) for v in a.min_faces.split(",")]
        sections = {name: run_section(name, videos, vdir, os.path.join(a.out_dir, "out"), model, strides, min_faces=min_faces)
                    for name, videos, vdir, model in plan}
    finally:
        ray.shutdown()
    v = verdict(sections, tolerance=a.tolerance)
    table = markdown_table(sections)
    print(table)
    print(v["text"])
    res = {"sections": sections, "verdict": v, "table": table, "strides": strides, "render_s": render_s,
           "args": vars(a), **machine()}
    with open(os.path.join(a.out_dir, "stride_quality.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=True, default=str)
    print("->", write_result("stride_quality", json.loads(json.dumps(res, default=str))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
