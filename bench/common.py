"""Helpers shared by the CPU benchmarks: peak memory of a process tree, result files, benchmark videos."""
from __future__ import annotations

import json
import os
import platform
import threading
import time

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
