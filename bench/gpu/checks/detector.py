"""The ``detector`` phase: MTCNN frames/s, ms per call, host syncs per call, faces vs the CPU detector."""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator

import numpy as np
import torch

from bench.gpu.harness import Bench, SkipSection, time_call
from bench.gpu.checks.common import CheckConfig, make_face_videos


def decoded_face_frames(path: str, n: int) -> np.ndarray:
    import av

    frames = []
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return np.stack(frames)


@contextlib.contextmanager
def counted_syncs(device: torch.device) -> Iterator[list]:
    """Host syncs of CUDA ops inside the block (``torch.cuda.set_sync_debug_mode('warn')`` warnings)."""
    import warnings

    if device.type != "cuda":
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def detector_phase(cfg: CheckConfig, device: torch.device, bench: Bench, budget: float) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"PyAV not installed ({e}): carry the av wheel") from None
    from cliper_batch.faces.detectors.mtcnn.detector import CUDA_BATCH, FaceDetector

    with tempfile.TemporaryDirectory(prefix="cliper_detector_") as tmp:
        small = dataclasses.replace(cfg, parity_size=(640, 360) if not cfg.smoke else cfg.parity_size,
                                    parity_seconds=max(cfg.detector_frames / cfg.fps, 1.0))
        frames = decoded_face_frames(make_face_videos(tmp, small)[0], cfg.detector_frames)
    cpu = FaceDetector(device="cpu")
    if device.type == "cuda":
        dev = FaceDetector(device=device)
        label = f"MTCNN on {device}, batch {dev.batch}"
    else:  # smoke: the batched cascade (padding, several frames per call) vs frame by frame
        dev = FaceDetector(device="cpu", batch=4)
        label = "MTCNN on cpu, batch 4 (vs the CPU reference, batch 1)"
    out: dict = {"detector": label, "frames": list(frames.shape), "cuda_batch": CUDA_BATCH}
    want = cpu.detect(frames)
    got = dev.detect(frames)
    drift, count_diff = 0.0, 0
    h, w = frames.shape[1:3]
    for a, b in zip(want, got):
        if len(a) != len(b):
            count_diff += 1
            continue
        for da, db in zip(a, b):
            d = np.abs(np.array(da.box) - np.array(db.box)) / np.array([w, h, w, h])
            drift = max(drift, float(d.max()))
    out.update({"faces_cpu": sum(map(len, want)), "faces_device": sum(map(len, got)),
                "frames_with_different_face_count": count_diff, "max_box_drift_normalised": drift})
    bench.record_point({"what": "faces vs cpu", **{k: out[k] for k in ("faces_cpu", "faces_device", "max_box_drift_normalised")}})
    per = max(budget / 8, 0.05)
    for n in (1, 4, 16):
        x = frames[np.arange(n) % len(frames)]
        timing = time_call(lambda: dev.detect(x), device, 1, min(cfg.seconds_per_point, per), 30, min_iters=2)
        with counted_syncs(device) as caught:
            dev.detect(x)
        point = {"frames_per_call": n, "ms_per_call": round(timing["s_per_call"] * 1e3, 3),
                 "frames_per_s": round(n / timing["s_per_call"], 1), "iters": timing["iters"],
                 "host_syncs_per_call": len(caught) if device.type == "cuda" else None}
        bench.record_point(point)
    return {**out, "points": list(bench._live.get("points", []))}
