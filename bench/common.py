"""Helpers shared by the CPU benchmarks: peak memory of a process tree, result files, benchmark videos."""
from __future__ import annotations

import bisect
import functools
import json
import math
import os
import platform
import threading
import time
from dataclasses import dataclass

import psutil


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants (Ray workers included).

    Also accumulates their CPU seconds (user + system, every process seen, counted
    up to its last sample; ``cpu_s``): on a shared host, CPU seconds compare
    two runs more fairly than wall time, which other users' load inflates.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU s at the last sample
        # CPU already used by this process and by children alive now (e.g. Ray started before) is not counted
        self._base = sum(psutil.Process().cpu_times()[:2])
        self._child_base: dict[tuple[int, float], float] = {}
        for p in psutil.Process().children(recursive=True):
            try:
                t = p.cpu_times()
                self._child_base[(p.pid, p.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                with p.oneshot():
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self._cpu[(p.pid, p.create_time())] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    @property
    def cpu_s(self) -> float:
        """CPU seconds used by this process and every descendant seen, since this object was made."""
        return sum(self._cpu.values()) - self._base - sum(self._child_base.get(k, 0.0) for k in self._cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30


def machine() -> dict:
    return {
        "host_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_result(name: str, result: dict) -> str:
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return path


def two_face_cut_truth(t: float, size=(640, 360)) -> list[tuple[str, int, tuple[float, float, float, float]]]:
    """(expression, identity seed, face box) drawn at time ``t`` of the laptop benchmark video.

    An 8 s loop: two faces drifting apart for 4 s, a hard cut, one face for 4 s.
    """
    from cliper_batch.synthetic import sample_identity
    import numpy as np

    w, h = size
    side = h * 0.42
    t = t % 8.0

    def box(seed: int, x: float, y: float):
        aspect = sample_identity(np.random.default_rng(seed)).face_aspect
        return (x, y, x + side / aspect, y + side)

    if t < 4.0:
        dx = 8 * t
        return [("happy" if t < 2 else "sad", 3, box(3, w * 0.12 - dx, h * 0.2)),
                ("surprise" if t < 3 else "neutral", 5, box(5, w * 0.62 + dx, h * 0.25))]
    return [("anger" if t < 6 else "happy", 6, box(6, w * 0.38, h * 0.18))]


def write_two_face_cut_video(path: str, seconds: float = 60.0, size=(640, 360), fps: int = 25, codec: str = "h264") -> dict:
    """The laptop benchmark video (:func:`two_face_cut_truth`), 8 s rendered once and looped to ``seconds``.

    Synthetic people (``cliper_batch.synthetic.render_scene``), drifting slowly and
    changing expression. ``codec``: h264 (libx264 veryfast, B-frames, keyframe every
    2 s, .mp4) or vp9 (libvpx realtime, .webm).
    """
    import numpy as np

    from cliper_batch.synthetic import render_scene, sample_identity

    w, h = size
    people = {s: sample_identity(np.random.default_rng(s)) for s in (3, 5, 6)}
    unit = []
    for i in range(8 * fps):
        faces = [(label, people[seed], 1.0, box) for label, seed, box in two_face_cut_truth(i / fps, size)]
        unit.append(render_scene(faces, w, h, np.random.default_rng(1 if i < 4 * fps else 2)))  # static background per shot
    encode_video(path, (unit[i % len(unit)] for i in range(int(round(seconds * fps)))), size, fps, codec)
    return {"seconds": seconds, "size": f"{w}x{h}", "fps": fps, "codec": codec, "faces_per_shot": [2, 1], "shot_s": 4.0}


@dataclass(frozen=True)
class _FaceTrack:
    """One face through one shot of :func:`moving_faces_truth` (pixels, seconds from the shot's start)."""

    identity: int  # seed of cliper_batch.synthetic.sample_identity
    aspect: float  # the identity's face_aspect: box width = height / aspect
    labels: tuple[tuple[float, str], ...]  # (from s, expression)
    c0: tuple[float, float]  # box centre at the shot's start
    c1: tuple[float, float]  # ... and at its end: a straight drift between them
    sway: tuple[float, float, float]  # amplitude (px), angular speed, phase: a sideways sway across the drift
    h0: float  # box height at the shot's start
    h1: float  # ... and at its end: a steady zoom in or out
    breathe: tuple[float, float, float]  # amplitude (px), angular speed, phase of a small size wobble
    roll: tuple[float, float, float, float]  # offset (deg), amplitude (deg), angular speed, phase
    yaw: tuple[float, float, float]  # amplitude (-1..1), angular speed, phase


@dataclass(frozen=True)
class _Shot:
    start: float
    end: float
    scene_seed: int  # background, lighting, blur and noise of the shot (cliper_batch.synthetic.render_scene)
    faces: tuple[_FaceTrack, ...]


def _drift_pair(rng, lo: tuple[float, float], hi: tuple[float, float], least: float, most: float) -> tuple[tuple[float, float], ...]:
    """Two points in the box lo..hi, ``least``..``most`` apart (the farthest of 200 draws when none fits)."""
    import numpy as np

    def pt(v) -> tuple[float, ...]:
        return tuple(float(x) for x in v)

    a = rng.uniform(lo, hi)
    best, best_d = a, -1.0
    for _ in range(200):
        b = rng.uniform(lo, hi)
        d = float(np.linalg.norm(b - a))
        if least <= d <= most:
            return pt(a), pt(b)
        if d > best_d and d <= most:
            best, best_d = b, d
    return pt(a), pt(best)


def _face_track(rng, identity: int, dur: float, x_span: tuple[float, float], height_span: tuple[float, float], size) -> _FaceTrack:
    from cliper_batch.labels import CANONICAL_CLASSES
    from cliper_batch.synthetic import sample_identity
    import numpy as np

    w, h = size
    aspect = sample_identity(np.random.default_rng(identity)).face_aspect
    lo, hi = height_span[0] * h, height_span[1] * h
    (h0,), (h1,) = _drift_pair(rng, (lo,), (hi,), min(0.06 * dur * (lo + hi) / 2, 0.6 * (hi - lo)), hi - lo)  # zoom in or out
    w_breathe = 2 * math.pi / float(rng.uniform(1.5, 3.0))
    # the wobble never outruns the zoom, so the size changes every frame in the zoom's direction
    breathe = (min(0.03 * h0, 0.5 * abs(h1 - h0) / dur / w_breathe), w_breathe, float(rng.uniform(0, 2 * math.pi)))
    sway = (float(rng.uniform(2.0, 8.0)), 2 * math.pi / float(rng.uniform(1.5, 4.0)), float(rng.uniform(0, 2 * math.pi)))
    top = max(h0, h1) + breathe[0]
    half_w, half_h = top / aspect / 2 + sway[0] + 4, top / 2 + sway[0] + 4  # the box stays 4 px inside the frame
    c0, c1 = _drift_pair(rng, (x_span[0] + half_w, half_h), (x_span[1] - half_w, h - half_h), 8.0 * dur, 45.0 * dur)
    first = str(rng.choice(CANONICAL_CLASSES))
    labels: tuple[tuple[float, str], ...] = ((0.0, first),)
    if rng.random() < 0.6:
        labels += ((float(rng.uniform(0.3, 0.7)) * dur, str(rng.choice([c for c in CANONICAL_CLASSES if c != first]))),)
    return _FaceTrack(
        identity=identity, aspect=aspect, labels=labels, c0=c0, c1=c1, sway=sway, h0=h0, h1=h1, breathe=breathe,
        roll=(float(rng.uniform(-4, 4)), float(rng.uniform(3, 11)), 2 * math.pi / float(rng.uniform(2.0, 5.0)), float(rng.uniform(0, 2 * math.pi))),
        yaw=(float(rng.uniform(0.1, 0.35)), 2 * math.pi / float(rng.uniform(2.5, 6.0)), float(rng.uniform(0, 2 * math.pi))),
    )


@functools.lru_cache(maxsize=64)
def moving_faces_shots(seed: int, seconds: float = 60.0, size=(640, 360)) -> tuple[_Shot, ...]:
    """The shots of :func:`moving_faces_truth`'s video ``seed``: 2.5-6 s each, hard cuts between them.

    The first shot has two faces (left and right half of the frame), every later one two
    with probability 1/2, else one; the faces are drawn from a cast of 4 people per video,
    so people come back after a cut, as in real footage.
    """
    import numpy as np

    rng = np.random.default_rng([seed, 26])
    w, _ = size
    cast = [int(x) for x in rng.integers(1, 2**31 - 1, 4)]
    bounds = [0.0]
    while bounds[-1] < seconds:
        bounds.append(bounds[-1] + float(rng.uniform(2.5, 6.0)))
    bounds[-1] = seconds
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 1.5:  # no stub of a shot at the end
        del bounds[-2]
    shots = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        two = k == 0 or rng.random() < 0.5
        people = [int(x) for x in rng.choice(cast, 2 if two else 1, replace=False)]
        spans = [(0.0, w / 2), (w / 2, float(w))] if two else [(0.0, float(w))]
        heights = (0.22, 0.45) if two else (0.28, 0.62)
        faces = tuple(_face_track(rng, p, b - a, x, heights, size) for p, x in zip(people, spans))
        shots.append(_Shot(a, b, int(rng.integers(0, 2**31 - 1)), faces))
    return tuple(shots)


def moving_faces_truth(t: float, seed: int, seconds: float = 60.0, size=(640, 360)) -> list[tuple[str, int, tuple[float, float, float, float], float, float]]:
    """(expression, identity seed, face box, roll degrees, yaw) of each face at time ``t`` of video ``seed``.

    Like real footage, not a still: in every shot (:func:`moving_faces_shots`) each face
    drifts in a straight line with a sideways sway, zooms steadily in or out with a small
    wobble, rolls (in-plane rotation, up to +-15 degrees) and turns slightly (yaw),
    so its box centre and size change every frame, inside the frame. The box is the face
    oval's (forehead to chin, cheek to cheek), as ``render_scene`` fits it.
    """
    shots = moving_faces_shots(seed, seconds, tuple(size))
    shot = shots[max(0, bisect.bisect_right([s.start for s in shots], t) - 1)]
    dt = t - shot.start
    u = dt / (shot.end - shot.start)
    out = []
    for f in shot.faces:
        dx, dy = f.c1[0] - f.c0[0], f.c1[1] - f.c0[1]
        norm = math.hypot(dx, dy) or 1.0
        side = f.sway[0] * math.sin(f.sway[1] * dt + f.sway[2])  # across the drift, so the drift is never undone
        cx, cy = f.c0[0] + dx * u - dy / norm * side, f.c0[1] + dy * u + dx / norm * side
        bh = f.h0 + (f.h1 - f.h0) * u + f.breathe[0] * math.sin(f.breathe[1] * dt + f.breathe[2])
        bw = bh / f.aspect
        label = [lab for start, lab in f.labels if dt >= start][-1]
        roll = f.roll[0] + f.roll[1] * math.sin(f.roll[2] * dt + f.roll[3])
        yaw = f.yaw[0] * math.sin(f.yaw[1] * dt + f.yaw[2])
        out.append((label, f.identity, (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), roll, yaw))
    return out


def write_moving_faces_video(path: str, seed: int, seconds: float = 60.0, size=(640, 360), fps: int = 25, codec: str = "h264") -> dict:
    """Video ``seed`` of :func:`moving_faces_truth`, every frame rendered (``cliper_batch.synthetic.render_scene``).

    Returns its ground truth in brief (shots, faces per shot, face tracks); the box of
    every face at any time is ``moving_faces_truth(t, seed, seconds, size)``.
    """
    from dataclasses import replace

    import numpy as np

    from cliper_batch.synthetic import Pose, render_scene, sample_identity

    w, h = size
    shots = moving_faces_shots(seed, seconds, tuple(size))
    people = {f.identity: sample_identity(np.random.default_rng(f.identity)) for s in shots for f in s.faces}
    starts = [s.start for s in shots]

    def frames():
        for i in range(int(round(seconds * fps))):
            t = i / fps
            shot = shots[max(0, bisect.bisect_right(starts, t) - 1)]
            faces = [(label, replace(people[who], pose=Pose(roll_deg=roll, yaw=yaw)), 1.0, box)
                     for label, who, box, roll, yaw in moving_faces_truth(t, seed, seconds, size)]
            yield render_scene(faces, w, h, np.random.default_rng(shot.scene_seed))  # background fixed per shot

    n = encode_video(path, frames(), size, fps, codec)
    per_shot = [len(s.faces) for s in shots]
    return {
        "kind": "moving_faces", "seed": seed, "seconds": seconds, "size": f"{w}x{h}", "fps": fps, "codec": codec, "frames": n,
        "shots": len(shots), "shot_s": [round(s.end - s.start, 2) for s in shots], "faces_per_shot": per_shot,
        "face_tracks": sum(per_shot), "two_face_s": round(sum(s.end - s.start for s in shots if len(s.faces) == 2), 2),
        "truth": f"bench.common.moving_faces_truth(t, seed={seed}, seconds={seconds}, size=({w}, {h}))",
    }


def _write_moving(job: tuple) -> dict:
    return write_moving_faces_video(*job)


def write_moving_faces_corpus(out_dir: str, n: int = 8, seconds: float = 60.0, size=(640, 360), fps: int = 25,
                              codec: str = "h264", seed: int = 0, jobs: int | None = None) -> list[tuple[str, dict]]:
    """``n`` distinct :func:`write_moving_faces_video` videos (seeds ``seed``..``seed + n - 1``) in ``out_dir``.

    Rendered in ``jobs`` processes (default: one per CPU, at most ``n``); returns
    (path, ground truth) per video, in seed order.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    os.makedirs(out_dir, exist_ok=True)
    work = [(os.path.join(out_dir, f"moving_{seed + i:03d}.mp4"), seed + i, seconds, tuple(size), fps, codec) for i in range(n)]
    jobs = max(1, min(n, jobs or os.cpu_count() or 1))
    if jobs == 1:
        truths = [_write_moving(j) for j in work]
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            truths = list(pool.map(_write_moving, work))
    return [(j[0], t) for j, t in zip(work, truths)]


def encode_video(path: str, frames, size=(640, 360), fps: int = 25, codec: str = "h264") -> int:
    """Encodes ``frames`` ((h, w, 3) uint8 RGB arrays, any iterable) to ``path``; returns how many.

    ``codec``: h264 (libx264 veryfast, CRF 20, B-frames, keyframe every 2 s, .mp4) or
    vp9 (libvpx realtime, .webm). Every benchmark video is written here.
    """
    from fractions import Fraction

    import av

    w, h = size
    enc, opts = (
        ("libx264", {"crf": "20", "preset": "veryfast", "g": str(2 * fps)})
        if codec == "h264"
        else ("libvpx-vp9", {"crf": "24", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "g": str(2 * fps)})
    )
    n = 0
    with av.open(path, mode="w") as out:
        s = out.add_stream(enc, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = opts
        for frame in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(pkt)
            n += 1
        for pkt in s.encode():
            out.mux(pkt)
    return n
