"""The ``decode`` section: CPU decode + RGB conversion frames/s (PyAV, else OpenCV), one process and one per core."""
from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time

import numpy as np
import torch

from bench.gpu.harness import BenchConfig, SkipSection


def _synthetic_frames(w: int, h: int, n: int) -> list[np.ndarray]:
    """Textured, moving RGB frames (noise + gradient, rolled per frame) so the codec has real work."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], -1)
    tile = rng.integers(0, 48, size=(64, 64, 3))
    tex = np.tile(tile, (h // 64 + 1, w // 64 + 1, 1))[:h, :w]
    img = np.clip(base + tex, 0, 255).astype(np.uint8)
    return [np.roll(img, shift=(3 * i, 5 * i), axis=(0, 1)) for i in range(n)]


def _make_video_pyav(path: str, frames: list[np.ndarray], fps: int) -> str:
    import av

    h, w, _ = frames[0].shape
    with av.open(path, "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "23"}
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return "h264"


def _make_video_cv2(tmpdir: str, frames: list[np.ndarray], fps: int) -> tuple[str, str]:
    import cv2

    h, w, _ = frames[0].shape
    for fourcc, ext in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        path = os.path.join(tmpdir, f"bench_{fourcc}{ext}")
        wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
        if not wr.isOpened():
            continue
        for f in frames:
            wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        wr.release()
        cap = cv2.VideoCapture(path)
        ok, _ = cap.read()
        cap.release()
        if ok:
            return path, fourcc
    raise SkipSection("cv2.VideoWriter could not write mp4v or MJPG video here")


def _decode_pass(backend: str, path: str, deadline: float, threads: int) -> int:
    """Decode ``path`` once to RGB arrays (stopping at ``deadline``); returns frames decoded."""
    n = 0
    if backend == "pyav":
        import av

        with av.open(path) as c:
            st = c.streams.video[0]
            if threads == 1:
                st.thread_count = 1
            else:
                st.thread_type = "AUTO"
            for frame in c.decode(st):
                frame.to_ndarray(format="rgb24")
                n += 1
                if time.time() >= deadline:
                    break
    else:
        import cv2

        if threads == 1:
            cv2.setNumThreads(1)
        cap = cv2.VideoCapture(path)
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                n += 1
                if time.time() >= deadline:
                    break
        finally:
            cap.release()
    return n


def _decode_worker(args: tuple) -> int:
    """Decode repeatedly between wall-clock ``t_start`` and ``t_end``; frames decoded (a pool task)."""
    backend, path, t_start, t_end, threads = args
    while time.time() < t_start:
        time.sleep(0.002)
    n = 0
    while time.time() < t_end:
        k = _decode_pass(backend, path, t_end, threads)
        if k == 0:
            raise RuntimeError(f"decoded no frames from {path}")
        n += k
    return n


def decode_section(cfg: BenchConfig, backend_pref: str, budget: float) -> dict:
    backend = None
    reasons = []
    for cand in (["pyav", "cv2"] if backend_pref == "auto" else [backend_pref]):
        try:
            __import__("av" if cand == "pyav" else "cv2")
            backend = cand
            break
        except Exception as e:  # noqa: BLE001
            reasons.append(f"{cand}: {type(e).__name__}: {e}")
    if backend is None:
        raise SkipSection("no decoder importable (" + "; ".join(reasons) + ")")
    t0 = time.perf_counter()
    fps = 30
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="cliper_decode_bench_") as tmp:
        frames = _synthetic_frames(cfg.decode_width, cfg.decode_height, cfg.decode_frames)
        if backend == "pyav":
            path = os.path.join(tmp, "bench.mp4")
            codec = _make_video_pyav(path, frames, fps)
        else:
            path, codec = _make_video_cv2(tmp, frames, fps)
        del frames
        size = os.path.getsize(path)
        gen_s = time.perf_counter() - t0
        dur = min(cfg.decode_seconds, max((budget - gen_s) / 3, 0.2))
        out = {"backend": backend, "codec": codec, "width": cfg.decode_width, "height": cfg.decode_height,
               "frames_in_file": cfg.decode_frames, "bitrate_mbps": round(size * 8 / (cfg.decode_frames / fps) / 1e6, 2),
               "generate_s": round(gen_s, 2), "cores": cores, "includes": "decode + conversion to RGB uint8 arrays"}
        t1 = time.time()
        n1 = _decode_worker((backend, path, t1, t1 + dur, 0))
        out["one_process_codec_threads_fps"] = round(n1 / (time.time() - t1), 1)
        procs = max(1, cores)
        method = "fork" if ("fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized()) else "spawn"
        ctx = mp.get_context(method)
        with ctx.Pool(procs) as pool:
            t_start = time.time() + (1.0 if method == "fork" else 8.0)  # let the workers come up first
            counts = pool.map(_decode_worker, [(backend, path, t_start, t_start + dur, 1)] * procs)
        agg = sum(counts) / dur
        out.update({"processes": procs, "start_method": method, "all_cores_fps": round(agg, 1),
                    "per_process_single_thread_fps": round(agg / procs, 1), "seconds_per_measure": round(dur, 2)})
    return out
