"""Decode efficiency: the engine's PyAV path frames/s divided by `ffmpeg -benchmark -i FILE -f null -`.

    .venv/bin/python -m bench.decode            # needs the ffmpeg CLI (apt-get install ffmpeg)

Same file, same machine, one run. The PyAV path is ``PyAVDecoder.iter_frames``
asked for every frame's timestamp at native size (RGB conversion included), and
at the model's 224 px short side (the size the annotate job really asks for),
plus PyAV demux+decode alone (no RGB), which is the work `-f null` does.
Best of 5 each.
Also reports DALI-CPU on the VP9 version of the clip.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench.common import machine, write_result
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.crops import center_crop_plan
from cliper_batch.probe import probe
from cliper_batch.testvideos import VideoSpec, write_video


def all_timestamps(info):
    n = info.n_frames or int(round(info.duration_s * info.fps))
    return [(i + 0.5) / info.fps for i in range(n)]


def time_decoder(decoder, path, size=None, repeats=5):
    info = probe(path)
    ts = all_timestamps(info)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(1 for _ in decoder.iter_frames(path, info, ts, size=size))
        best = min(best, time.perf_counter() - t0)
    return n / best


def time_pyav_decode_only(path, repeats=5):
    """PyAV demux + decode, no conversion: the same work as `ffmpeg -f null`."""
    import av

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        with av.open(path) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            n = sum(1 for _ in c.decode(s))
        best = min(best, time.perf_counter() - t0)
    return n / best


def time_ffmpeg(path, n_frames, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run(["ffmpeg", "-hide_banner", "-benchmark", "-i", path, "-f", "null", "-"], capture_output=True, text=True, check=True)
        m = re.search(r"rtime=([0-9.]+)s", out.stderr)
        best = min(best, float(m.group(1)))
    return n_frames / best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", default="640x360")
    a = p.parse_args()
    if shutil.which("ffmpeg") is None:
        print("bench/decode.py needs the ffmpeg CLI as the reference: apt-get install -y ffmpeg", file=sys.stderr)
        return 2
    w, h = (int(v) for v in a.size.split("x"))
    tmp = tempfile.mkdtemp(prefix="cbdec")
    res = {"size": a.size, "duration_s": a.duration, **machine()}
    for codec in ("h264", "vp9"):
        path = write_video(os.path.join(tmp, f"clip.{'mp4' if codec == 'h264' else 'webm'}"), VideoSpec(codec=codec, duration_s=a.duration, width=w, height=h, fps=25))
        info = probe(path)
        n = len(all_timestamps(info))
        ff = time_ffmpeg(path, n)
        raw = time_pyav_decode_only(path)
        native = time_decoder(PyAVDecoder(), path)
        small, _ = center_crop_plan(info.width, info.height, 224)
        scaled = time_decoder(PyAVDecoder(), path, size=small)
        res[codec] = {
            "frames": n,
            "ffmpeg_null_fps": ff,
            "pyav_decode_only_fps": raw,
            "ratio_decode_only": raw / ff,
            "pyav_native_rgb_fps": native,
            "pyav_224_fps": scaled,
            "ratio_native": native / ff,
            "ratio_224": scaled / ff,
        }
        if codec == "vp9":
            try:
                from cliper_batch.decode.dali_backend import DaliDecoder

                res[codec]["dali_cpu_224_fps"] = time_decoder(DaliDecoder(device="cpu"), path, size=small)
            except Exception as exc:  # report, don't fail the benchmark
                res[codec]["dali_cpu_error"] = f"{type(exc).__name__}: {exc}"
        print(codec, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in res[codec].items()})
    print("->", write_result("decode", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
