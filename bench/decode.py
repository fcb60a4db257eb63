"""Decode efficiency: the engine's PyAV path frames/s divided by `ffmpeg -benchmark -i FILE -f null -`.

    .venv/bin/python -m bench.decode            # needs the ffmpeg CLI (apt-get install ffmpeg)

Same file, same machine, one run. The PyAV path is ``PyAVDecoder.iter_frames``
asked for every frame's timestamp at native size (RGB conversion included), and
at the model's 224 px short side (the size the annotate job really asks for),
plus PyAV demux+decode alone (no RGB), which is the work `-f null` does.
Best of 5 each.
Also reports DALI-CPU on the VP9 version of the clip.

Sparse sampling (``--sparse``, no ffmpeg CLI needed): the job's plan (8 frames per
2 s) over the laptop benchmark video (``bench.common.write_two_face_cut_video``,
60 s, 640x360, 25 fps) in H.264 and VP9, timed side by side with non-reference
frame skipping off/on and with keyframe seeks on every gap that has a keyframe in
it (``seek_min_skip_s=0``). Frames decoded and wall time, best of 3.
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

from bench.common import machine, write_result, write_two_face_cut_video
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.crops.reference import center_crop_plan
from cliper_batch.decode.probe import probe
from cliper_batch.decode.sampling import plan_segments
from cliper_batch.decode.testvideos import VideoSpec, write_video


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


SPARSE_VARIANTS = {
    "walk, decode every frame": dict(skip_nonref=False),
    "walk, skip non-ref frames": dict(skip_nonref=True),
    "seek to keyframes on every gap": dict(skip_nonref=False, seek_min_skip_s=0.0),
    "seek + skip non-ref": dict(skip_nonref=True, seek_min_skip_s=0.0),
}


def sparse(seconds: float, repeats: int = 3) -> dict:
    """The job's sampling plan, every decoder variant, same files, one run."""
    tmp = tempfile.mkdtemp(prefix="cbdecsparse")
    out: dict = {"video": f"{seconds:.0f} s two faces + cuts, 640x360, 25 fps", "plan": "8 frames per 2 s"}
    for codec in ("h264", "vp9"):
        path = os.path.join(tmp, f"v.{'mp4' if codec == 'h264' else 'webm'}")
        write_two_face_cut_video(path, seconds=seconds, codec=codec)
        info = probe(path)
        ts = [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps]
        rows = {}
        frames_ref = None
        for name, kw in SPARSE_VARIANTS.items():
            best, stats = float("inf"), {}
            for _ in range(repeats):
                dec = PyAVDecoder(**kw)
                t0 = time.perf_counter()
                frames = list(dec.iter_frames(path, info, ts))
                best = min(best, time.perf_counter() - t0)
                stats = dec.last_stats
            if frames_ref is None:
                frames_ref = frames
            same = all((a == b).all() for a, b in zip(frames, frames_ref))
            rows[name] = {"wall_s": best, "samples_per_s": len(ts) / best, "decoded": stats["decoded"], "seeks": stats["seeks"], "identical": same}
            print(codec, name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[name].items()})
        base = rows["walk, decode every frame"]["wall_s"]
        for r in rows.values():
            r["speedup"] = base / r["wall_s"]
        out[codec] = {"samples": len(ts), "frames": info.n_frames, **rows}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", default="640x360")
    p.add_argument("--sparse", action="store_true", help="only the sparse-sampling comparison (60 s video)")
    a = p.parse_args()
    if a.sparse:
        print("->", write_result("decode_sparse", {**sparse(60.0), **machine()}))
        return 0
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
