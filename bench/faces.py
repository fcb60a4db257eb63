"""Faces on vs off: detection frames/s, crops/s, and the end-to-end cost of --faces detect.

    .venv/bin/python -m bench.faces [--videos 6] [--strides 1,2,4,8] [--layouts auto,staged] [--runs none,detect] [--repeat 3]
                                    [--per-video 0.6,0.7] [--per-video-only]

Same synthetic expression videos (one person each, cliper_batch.synthetic), same
tiny model, same machine, one run: the annotate job with --faces none, with
--faces detect at the default detection stride and with --detect-stride 1 (the
detector on every sampled frame), plus the detector alone on the sampled frames;
each of those once per worker layout (``--layouts``), so the sizing's effect is
measured side by side. CPU seconds (every process of the run) sit next to wall time.

Per video (:func:`sparse_per_video`, before the runs): on the same corpus, sampled as the job
samples it, the frames the detector runs on (scheduled / refined / verified) and the IoU of every
track box with the box the generator drew, for every sampled frame detected, for the gap rule
before the smooth-motion check (every frame of a gap whose ends disagree) and for the engine's
rule (a smoothly moving face verified at the gap's middle), side by side.

Stride sweep (what the default ``detect_stride`` is chosen from): the laptop
benchmark video (``bench.common.write_two_face_cut_video``: two faces, a cut,
one face, looped; 24 s) decoded as the job samples it, then tracked with
``faces.sparse.track_sparse`` at each stride: detector frames and seconds, tracks
(same as stride 1?), and IoU of every box (detected or interpolated) with the
drawn face box. Before it, the same sampled frames through the detector alone
in each layout: a CPU pool of 1 vs 2 frame threads, and fixed batches of 8
(the CUDA layout), wall and CPU seconds side by side.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import ray
import torch

from bench.common import PeakRSS, machine, two_face_cut_truth, write_result, write_two_face_cut_video
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.faces import framing as ff
from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector
from cliper_batch.faces.sparse import VERIFY_IOU, DetectionCounts, track_sparse
from cliper_batch.faces.track import iou
from cliper_batch.model.checkpoint import save_checkpoint
from cliper_batch.model.factory import load_model
from cliper_batch.pipeline import run as pipeline_run
from cliper_batch.pipeline.run import RunOptions
from cliper_batch.decode.probe import probe
from cliper_batch.decode.sampling import plan_for, plan_segments
from cliper_batch.synthetic import write_video_corpus
from cliper_batch.types import AnnotateConfig


def _cores_free(seconds_each: float = 2.0) -> float:
    """Cores this process gets for two threads of one large convolution each (GIL released): 2.0 on an idle host.

    The reference for the pool: a pool of 2 cannot beat what the host lends to any two threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    w, x = torch.randn(64, 64, 3, 3), torch.randn(1, 64, 128, 128)

    def spin(_: int) -> None:
        end = time.perf_counter() + seconds_each
        while time.perf_counter() < end:
            torch.nn.functional.conv2d(x, w)

    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(spin, range(2)))
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def detector_layouts(frames: np.ndarray, rounds: int = 3) -> dict:
    """Detection of all ``frames`` per detector layout: CPU pool size 1 vs 2 (B = 1), and B = 8 (CUDA's layout).

    Interleaved rounds, so host load hits every layout alike; the median round per layout. Wall and
    CPU seconds (process CPU: all threads). ``same_as_pool_1``: bit-identical detections.
    """
    layouts = {"pool_1": dict(workers=1), "pool_2": dict(workers=2), "batch_8": dict(batch=8)}
    dets = {name: FaceDetector(**kw) for name, kw in layouts.items()}
    dets["pool_1"].detect(frames[:2])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in layouts}
    found: dict = {}
    for _ in range(rounds):
        for name, det in dets.items():
            t0, c0 = time.perf_counter(), time.process_time()
            found[name] = det.detect(frames)
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    out: dict = {"frames": len(frames), "rounds": rounds, "load_avg_1m_before": os.getloadavg()[0],
                 "cores_free_for_2_threads": _cores_free()}
    for name in layouts:
        wall, cpu = sorted(times[name])[rounds // 2]
        boxes = [(d.box, d.score) for f in found[name] for d in f]
        ref = [(d.box, d.score) for f in found["pool_1"] for d in f]
        out[name] = r = {"wall_s": wall, "cpu_s": cpu, "faces": len(boxes), "same_as_pool_1": found[name] == found["pool_1"],
                         "max_box_diff_px": max((abs(a - b) for (x, _), (y, _) in zip(boxes, ref) for a, b in zip(x, y)), default=0.0)
                         if len(boxes) == len(ref) else None}
        print(f"detector {name}", {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
    print("cores the host lent two GIL-free threads:", round(out["cores_free_for_2_threads"], 2))
    return out


def stride_sweep(tmp: str, strides: list[int], seconds: float = 24.0) -> dict:
    """Detector calls and track quality per detection stride, on the two-face cut video."""
    path = os.path.join(tmp, "two_faces_cut.mp4")
    write_two_face_cut_video(path, seconds=seconds)
    info = probe(path)
    ts = [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps]
    frames = np.stack(list(PyAVDecoder().iter_frames(path, info, ts)))
    det = FaceDetector(min_face_size=AnnotateConfig().min_face)  # as the job's pass 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job's decode actor (Ray gives a 1-CPU actor OMP_NUM_THREADS=1)
    det.detect(frames[:2])
    out: dict = {"torch_threads": 1, "video": f"{seconds:.0f} s, 640x360, 25 fps, H.264, 2 faces / cut / 1 face every 4 s", "samples": len(ts)}
    out["detector_layouts"] = detector_layouts(frames)
    ref = None
    for stride in strides:
        calls: list[int] = []

        def detect(x, frame_indices):
            calls.extend(frame_indices)
            return det.detect(x, frame_indices=frame_indices)

        t0, c0 = time.perf_counter(), time.process_time()
        tracks = track_sparse((frames[i : i + 64] for i in range(0, len(frames), 64)), detect, stride)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ious = [max(iou(b, tb) for _, _, tb in two_face_cut_truth(ts[f])) for t in tracks for f, b in zip(t.frame_indices, t.boxes)]
        shape = [(t.track_id, t.frame_indices) for t in tracks]
        ref = shape if ref is None else ref
        out[f"stride_{stride}"] = r = {
            "detector_frames": len(calls),
            "detector_fraction": len(calls) / len(ts),
            "track_s": wall,
            "track_cpu_s": cpu,  # all threads of this process: robust to other load on a shared host
            "tracks": len(tracks),
            "same_tracks_as_first": shape == ref,
            "box_iou_mean": float(np.mean(ious)) if ious else 0.0,
            "box_iou_min": float(np.min(ious)) if ious else 0.0,
            "boxes": len(ious),
        }
        print(f"stride {stride}", {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
    torch.set_num_threads(threads)
    return out


def sampled_frame_index(t: float, fps: float) -> int:
    """The frame the decoder returns for sample time ``t`` (the one on screen then): where drawn truth is looked up."""
    return int(math.floor(t * fps + 1e-6))


def sample_for_detection(path: str, config: AnnotateConfig | None = None) -> tuple:
    """A video's sampled frames as ``--faces detect``'s pass 1 decodes them (PyAV, long side <= ``detect_side``).

    Returns (probe info, sample timestamps, frames ``[n, H, W, 3]`` uint8, (W, H)); ``config``'s
    segment length and frames per segment (default: the job's) decide the samples.
    """
    cfg = config or AnnotateConfig()
    info = probe(path)
    ts = [t for s in plan_for(info, cfg.segment_seconds, cfg.frames_per_segment) for t in s.timestamps]
    W, H = ff.detection_size(info.width, info.height, ff.FramingParams().detect_side)
    frames = np.stack(list(PyAVDecoder().iter_frames(path, info, ts, size=(W, H))))
    return info, ts, frames, (W, H)


def replay_tracks(frames: np.ndarray, every: list, **sparse) -> tuple[list, DetectionCounts]:
    """Pass 1 of ``--faces detect`` (``faces.framing.find_tracks``: its chunks and tracker settings) over ``frames``.

    The detector's answer for frame ``i`` is ``every[i]`` (the detector run once on every frame: it is
    deterministic per frame, so any stride can be replayed without running it again). ``sparse`` goes to
    ``track_sparse`` (``stride``, ``gap_rule``, ``verify_iou``). Returns the tracks and the frames the
    detector was asked for (each at most once).
    """
    from cliper_batch.faces.cuts import ShotCutDetector, subsample_for_cuts

    params = ff.FramingParams()
    asked: list[int] = []

    def detect(x, frame_indices):
        asked.extend(frame_indices)
        return [every[i] for i in frame_indices]

    counts = DetectionCounts()
    tracks = track_sparse(
        (frames[i : i + params.chunk_frames] for i in range(0, len(frames), params.chunk_frames)), detect,
        cut_detector=ShotCutDetector(), cut_input=subsample_for_cuts, counts=counts, max_gap=params.max_gap,
        min_track_length=params.min_track_length, max_faces=params.max_faces, **sparse,
    )
    assert len(set(asked)) == len(asked) == counts.detected, sparse  # each frame detected at most once
    return tracks, counts


def sparse_per_video(videos: str, stride: int = 4, verify_ious: tuple[float, ...] = (VERIFY_IOU,)) -> dict:
    """Per corpus video: frames the detector runs on, and how close the boxes are, per gap rule, same frames.

    Each video is sampled and sized as ``--faces detect`` does (8 frames per 2 s, long side <= 640) and
    tracked as ``faces.framing.find_tracks`` does (64-frame chunks, its tracker settings), three ways:

    * ``every_frame``: stride 1, the detector on every sampled frame (the reference);
    * ``ends``: ``stride``, the gap rule before the motion one (``gap_rule="ends"``): every frame of a
      gap whose ends disagree, or where the tracker's motion model does not predict the far end;
    * ``motion`` (one per ``verify_ious`` value): ``stride``, the engine's rule (``gap_rule="motion"``;
      ``VERIFY_IOU`` is its default): a gap is skipped where the far end is where the motion
      predicts it, else checked at its middle where the ends pair under smooth motion.

    The detector is deterministic per frame (``faces.detectors.mtcnn``), so it runs once per frame (timed) and every
    rule reads those detections, counting the frames it asked for: ``detected_share`` is what each rule costs
    in detector frames, ``detector_s`` = its frames x the measured seconds per frame. Box quality: IoU of
    every track box (detected or interpolated) with the box the generator drew there (``drawn``; MTCNN's box
    is tighter than the drawn face oval, so even detected boxes score ~0.6-0.7) and with the detector's own
    box on that frame (``vs_detector``: 1.0 where detected; what interpolation loses).
    """
    import pyarrow.parquet as pq

    drawn = pq.read_table(os.path.join(videos, "face_boxes.parquet")).to_pylist()
    det = FaceDetector(min_face_size=AnnotateConfig().min_face)  # as the job's pass 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job's decode actor (Ray gives a 1-CPU actor OMP_NUM_THREADS=1)
    rules: dict = {"every_frame": dict(stride=1), "ends": dict(stride=stride, gap_rule="ends")}
    rules |= {("motion" if v == VERIFY_IOU else f"motion_{v}"): dict(stride=stride, verify_iou=v) for v in verify_ious}
    out: dict = {"stride": stride, "torch_threads": 1, "videos": {}}
    totals = {name: [0, 0] for name in rules}
    for path in sorted(os.path.join(videos, f) for f in os.listdir(videos) if f.endswith((".mp4", ".webm"))):
        info, ts, frames, (W, H) = sample_for_detection(path)
        det.detect(frames[:1])
        c0 = time.process_time()
        every = det.detect(frames, frame_indices=list(range(len(frames))))
        per_frame_s = (time.process_time() - c0) / len(frames)
        name = os.path.basename(path)
        boxes = {r["frame_index"]: (r["x0"], r["y0"], r["x1"], r["y1"]) for r in drawn if r["video_uri"].endswith("/" + name)}
        sx, sy = W / info.width, H / info.height
        truth = [boxes.get(sampled_frame_index(t, info.fps)) for t in ts]
        truth = [None if b is None else (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in truth]
        per: dict = {"samples": len(ts), "detector_cpu_s_per_frame": per_frame_s}
        ref_shape = None
        for rule, kw in rules.items():
            tracks, counts = replay_tracks(frames, every, **kw)
            shape = [(t.track_id, t.frame_indices) for t in tracks]
            ref_shape = shape if ref_shape is None else ref_shape
            vs_drawn = [iou(b, truth[f]) for t in tracks for f, b in zip(t.frame_indices, t.boxes) if truth[f] is not None]
            vs_det = [max([iou(b, d.box) for d in every[f]], default=0.0) for t in tracks for f, b in zip(t.frame_indices, t.boxes)]
            per[rule] = r = {
                "detected": counts.detected, "scheduled": counts.scheduled, "refined": counts.refined,
                "verified": counts.verified, "detected_share": counts.detected / len(ts),
                "detector_s": counts.detected * per_frame_s, "tracks": len(tracks), "same_tracks_as_every_frame": shape == ref_shape,
                "boxes": len(vs_det), "drawn_iou_mean": float(np.mean(vs_drawn)) if vs_drawn else None,
                "drawn_iou_min": float(np.min(vs_drawn)) if vs_drawn else None,
                "vs_detector_iou_mean": float(np.mean(vs_det)) if vs_det else None,
                "vs_detector_iou_min": float(np.min(vs_det)) if vs_det else None,
            }
            totals[rule][0] += counts.detected
            totals[rule][1] += len(ts)
            print(f"{name} {rule}", {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
        out["videos"][name] = per
    out["detected_share_all"] = {rule: d / max(n, 1) for rule, (d, n) in totals.items()}
    print("detected share, all videos:", {k: round(v, 3) for k, v in out["detected_share_all"].items()})
    torch.set_num_threads(threads)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--size", default="480x360")
    p.add_argument("--strides", default="1,2,4,8", help="detection strides for the sweep ('' skips it)")
    p.add_argument("--sweep-only", action="store_true", help="only the stride sweep")
    p.add_argument("--layouts", default="auto,staged",
                   help="worker layouts, each run with every --runs entry, side by side (auto: the engine's sizing, "
                   "pipeline.sizing.size_workers; staged: the CPU default before it)")
    p.add_argument("--runs", default="none,detect,detect_every_frame", help="which of none,detect (the default stride),detect_every_frame,detect_stride_4")
    p.add_argument("--repeat", type=int, default=1, help="runs per layout and face mode (medians reported)")
    p.add_argument("--per-video", default=str(VERIFY_IOU),
                   help="verify_iou values for the per-video comparison of gap rules on the corpus ('' skips it)")
    p.add_argument("--per-video-only", action="store_true", help="only the per-video comparison")
    a = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    w, h = (int(v) for v in a.size.split("x"))
    tmp = tempfile.mkdtemp(prefix="cbfaces")
    videos = os.path.join(tmp, "videos")
    write_video_corpus(videos, a.videos, seed=0, size=(w, h))
    torch.manual_seed(0)
    ckpt = save_checkpoint(load_model("openclip:Tiny-ViT-T-16").model, os.path.join(tmp, "tiny.safetensors"))

    sweep = stride_sweep(tmp, [int(v) for v in a.strides.split(",")]) if a.strides else {}
    if a.sweep_only:
        print("->", write_result("faces_stride", {**sweep, **machine()}))
        return 0

    per_video = sparse_per_video(videos, verify_ious=tuple(float(v) for v in a.per_video.split(","))) if a.per_video else {}
    if a.per_video_only:
        print("->", write_result("faces_per_video", {**per_video, **machine()}))
        return 0

    # detector alone, on the frames the job samples (8 per 2 s)
    paths = sorted(os.path.join(videos, f) for f in os.listdir(videos) if f.endswith((".mp4", ".webm")))
    info = probe(paths[0])
    ts = [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps]
    frames = np.stack(list(PyAVDecoder().iter_frames(paths[0], info, ts, size=ff.detection_size(info.width, info.height, 640))))
    det = FaceDetector(min_face_size=AnnotateConfig().min_face)  # as the job's pass 1
    det.detect(frames[:4])
    t0 = time.perf_counter()
    found = det.detect(frames)
    det_fps = len(frames) / (time.perf_counter() - t0)
    recall = float(np.mean([len(f) >= 1 for f in found]))

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    res = {"videos": a.videos, "size": a.size, "detector_frames_per_s": det_fps, "detector_frame_recall": recall,
           "stride_sweep": sweep, "per_video": per_video, "load_average_1m_at_start": os.getloadavg()[0], **machine()}
    all_runs = {"none": dict(faces="none"), "detect": dict(faces="detect"), "detect_every_frame": dict(faces="detect", detect_stride=1),
                "detect_stride_4": dict(faces="detect", detect_stride=4)}
    runs = {k: all_runs[k] for k in a.runs.split(",")}
    layouts = a.layouts.split(",")
    samples: dict[tuple[str, str], list[dict]] = {(lo, f): [] for lo in layouts for f in runs}
    for rep in range(a.repeat):  # layouts interleaved, so load from other users hits each about equally
        for layout in layouts:
            for faces, kw in runs.items():
                cfg = AnnotateConfig(decoder="pyav", batch_size=8, **kw)
                out = os.path.join(tmp, f"out-{layout}-{faces}-{rep}")
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    s = pipeline_run.annotate(videos, out, ckpt, cfg, options=RunOptions(worker=layout))
                    wall = time.perf_counter() - t0
                with open(os.path.join(out, "runs", f"{s.run_id}.json")) as f:
                    record = json.load(f)
                one = {
                    "layout": f"{record['resources']['worker']} x{record['resources']['score_workers']}",
                    "wall_s": wall,
                    "cpu_s": mem.cpu_s,
                    "video_seconds": s.video_seconds,
                    "rows": s.segments,
                    "crops": s.crops,
                    "score_busy_s": record["scoring"]["busy_s"],
                    "score_busy_fraction": record["scoring"]["busy_fraction"],
                    "peak_rss_gib": mem.peak_gib,
                    "load_average_1m": os.getloadavg()[0],
                }
                samples[(layout, faces)].append(one)
                print(rep, layout, faces, {k: round(v, 3) if isinstance(v, float) else v for k, v in one.items()})
    for layout in layouts:
        res[layout] = by = {}
        for faces in runs:
            got = samples[(layout, faces)]
            wall, cpu = float(np.median([g["wall_s"] for g in got])), float(np.median([g["cpu_s"] for g in got]))
            by[faces] = {**got[-1], "wall_s": wall, "cpu_s": cpu, "video_s_per_s": got[-1]["video_seconds"] / wall,
                         "crops_per_s": got[-1]["crops"] / wall, "wall_s_all": [g["wall_s"] for g in got],
                         "cpu_s_all": [g["cpu_s"] for g in got], "peak_rss_gib": max(g["peak_rss_gib"] for g in got)}
        for faces in runs:
            if faces != "none" and "none" in runs:
                by[f"{faces}_over_none_wall"] = by[faces]["wall_s"] / by["none"]["wall_s"]
                by[f"{faces}_over_none_cpu"] = by[faces]["cpu_s"] / by["none"]["cpu_s"]
                print(f"[{layout}] {faces} over --faces none (medians of {a.repeat}): wall "
                      f"{by[f'{faces}_over_none_wall']:.2f}, CPU {by[f'{faces}_over_none_cpu']:.2f}")
    ray.shutdown()
    res["load_average_1m_at_end"] = os.getloadavg()[0]
    print(f"detector {det_fps:.1f} frames/s (frame recall {recall:.2f})")
    print("->", write_result("faces", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
