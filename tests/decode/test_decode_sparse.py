"""Sparse sampling in the PyAV decoder: non-reference frames between wanted ones are left undecoded,
and every returned frame is still exactly the one asked for (frame codes + bit-identical to a full decode)."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.decode.probe import probe
from cliper_batch.decode.sampling import frame_indices, plan_segments
from cliper_batch.decode.testvideos import VideoSpec, read_frame_code, render_frame
from conftest import write_vfr_video

SPEC = VideoSpec(codec="h264", width=192, height=128, fps=25.0, duration_s=6.0, seed=11)


def _write_h264(path: str, spec: VideoSpec, x264_params: str) -> str:
    with av.open(path, mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(spec.fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = spec.width, spec.height, "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast", "x264-params": x264_params}
        for i in range(spec.n_frames):
            for p in s.encode(av.VideoFrame.from_ndarray(render_frame(spec, i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def bframe_videos(video_dir):
    """H.264 with B-frames: the engine's usual encode, a deep B-pyramid, and open GOPs with no pyramid."""
    out = {}
    for name, params in {
        "default": "keyint=50",
        "pyramid8": "keyint=50:bframes=8:b-pyramid=normal:b-adapt=0",
        "open_gop": "keyint=30:bframes=3:b-pyramid=none:open-gop=1",
    }.items():
        path = os.path.join(video_dir, f"sparse_{name}.mp4")
        if not os.path.exists(path):
            _write_h264(path, SPEC, params)
        out[name] = path
    return out


def _has_bframes(path: str) -> bool:
    with av.open(path) as c:
        pk = [p for p in c.demux(c.streams.video[0]) if p.pts is not None]
    return any(p.pts != p.dts for p in pk)


def _timestamps(fps: float, duration: float, rate: float, offset: float = 0.0) -> list[float]:
    n = int((duration - offset) * rate)
    return [offset + k / rate for k in range(n)]


@pytest.mark.parametrize("name", ["default", "pyramid8", "open_gop"])
@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_sampling_skips_frames_and_returns_exactly_the_asked_ones(bframe_videos, name, threads):
    path = bframe_videos[name]
    assert _has_bframes(path)
    info = probe(path)
    cases = {
        "plan 8 per 2 s": [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps],
        "every 3rd frame, on boundaries": _timestamps(info.fps, info.duration_s, info.fps / 3),
        "just before boundaries": [t - 1e-7 for t in _timestamps(info.fps, info.duration_s, 2.0, 1.0)],
        "irregular": sorted(np.random.default_rng(0).uniform(0, info.duration_s - 1e-3, 40).tolist()),
        "every frame": _timestamps(info.fps, info.duration_s, info.fps),
    }
    for label, ts in cases.items():
        full = PyAVDecoder(threads=threads, skip_nonref=False)
        sparse = PyAVDecoder(threads=threads)
        ref = list(full.iter_frames(path, info, ts))
        got = list(sparse.iter_frames(path, info, ts))
        assert [read_frame_code(f) for f in got] == frame_indices(ts, info.fps, SPEC.n_frames), label
        assert all(np.array_equal(a, b) for a, b in zip(got, ref)), label  # bit-identical to a full decode
        if label == "plan 8 per 2 s":  # 4 samples/s of 25 fps: most B-frames are never needed
            assert sparse.last_stats["nonref_skippable"] > 0
            assert sparse.last_stats["decoded"] < full.last_stats["decoded"], (sparse.last_stats, full.last_stats)
        if label == "every frame":
            assert sparse.last_stats["nonref_skippable"] == 0


def test_sparse_sampling_with_size_and_backwards_requests(bframe_videos):
    path = bframe_videos["pyramid8"]
    info = probe(path)
    ts = [0.5, 1.3, 2.9, 0.7, 4.1, 4.1, 5.9]  # a repeat and a step backwards (a seek)
    got = list(PyAVDecoder(threads=2).iter_frames(path, info, ts, size=(96, 64)))
    ref = list(PyAVDecoder(threads=2, skip_nonref=False).iter_frames(path, info, ts, size=(96, 64)))
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    assert [read_frame_code(f) for f in PyAVDecoder().iter_frames(path, info, ts)] == frame_indices(ts, info.fps, SPEC.n_frames)


def test_variable_frame_rate_h264_with_bframes(video_dir):
    """Frames last 20-250 ms: the frame shown at t is the last one starting at or before t, skipping or not."""
    rng = np.random.default_rng(1)
    pts, t = [], 0
    for _ in range(80):
        pts.append(t)
        t += int(rng.choice([20, 40, 100, 250]))
    spec = VideoSpec(codec="h264", fps=25.0, duration_s=t / 1000, width=192, height=128, seed=12)
    path = os.path.join(video_dir, "vfr_h264_sparse.mp4")
    if not os.path.exists(path):
        write_vfr_video(path, "libx264", pts, spec)
    assert _has_bframes(path)
    info = probe(path)
    starts = np.array(pts) / 1000
    ts = sorted(set(np.round(np.arange(0.0, starts[-1], 0.45), 6).tolist() + starts[5::9].tolist()))
    expected = [int(np.searchsorted(starts, t + 1e-9, side="right") - 1) for t in ts]
    sparse = PyAVDecoder(threads=2)
    got = list(sparse.iter_frames(path, info, ts))
    assert [read_frame_code(f) for f in got] == expected
    ref = list(PyAVDecoder(threads=2, skip_nonref=False).iter_frames(path, info, ts))
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    assert sparse.last_stats["nonref_skippable"] > 0


def test_vp9_is_unchanged(long_vp9_video):
    path, spec = long_vp9_video
    info = probe(path)
    ts = [t for s in plan_segments(info.duration_s, 2.0, 8) for t in s.timestamps]
    got = list(PyAVDecoder().iter_frames(path, info, ts))
    assert [read_frame_code(f) for f in got] == frame_indices(ts, info.fps, spec.n_frames)


def test_timestamps_convert_to_the_same_seconds_as_through_fractions():
    """The reader's int arithmetic gives float(ts * time_base) bit for bit (frame choice compares these floats)."""
    from cliper_batch.decode.pyav_backend import timestamp_seconds

    rng = np.random.default_rng(5)
    bases = [Fraction(1, 90000), Fraction(1, 12800), Fraction(1, 1000), Fraction(1001, 30000), Fraction(1, 25),
             Fraction(1, 15360), Fraction(1, 48000), Fraction(3, 7), Fraction(1, 2**31 - 1)]
    stamps = [0, 1, -1, -1001, 2**31, 2**53 + 1, 10**15 + 7, *rng.integers(-10**6, 10**12, 2000).tolist()]
    for tb in bases:
        for ts in stamps:
            assert timestamp_seconds(ts, tb.numerator, tb.denominator) == float(ts * tb), (ts, tb)
