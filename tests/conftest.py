"""Shared fixtures: small generated videos (session-scoped, made once per test run, a few seconds in all).

Every frame of a generated clip carries its own index (``cliper_batch.decode.testvideos
.read_frame_code``), so decoders can be checked frame-exactly. Video fixtures
return ``(path, VideoSpec)``; the spec says codec, fps, duration, size.

Good videos:   h264_video (.mp4), vp9_video (.webm), vp8_video (.webm), mjpeg_video (.avi),
               long_h264_video / long_vp9_video (30 s, for seeking), rotated_h264_video /
               rotated_vp9_video (display matrix: shown turned 90 degrees counter-clockwise,
               i.e. ``VideoInfo.rotation == 270``), vfr_video (VP9, irregular timestamps).
Bad inputs:    corrupt_video (first 30% of an H.264 .mp4: the header/index is missing, probe fails),
               damaged_video (H.264 .mp4 with garbage written over 600 bytes mid-file: probes
               fine, a few frames are damaged), truncated_vp9_video (first 60% of a .webm:
               probes fine, frames after ~40% of the duration are missing), empty_video
               (0 bytes), random_bytes_video, text_video (text with a .mp4 name), audio_only_video.
               corrupt/damaged/truncated fixtures return (path, spec of the source clip); empty,
               random_bytes, text and audio_only return just the path.
The zoo:       bad_input_zoo, one folder holding every kind of bad input above plus the awkward
               good ones (UHD, 16x16, rotated, VFR, damaged-but-readable, a non-ASCII path, a
               dangling symlink, a directory symlink loop, an unreadable file): ``(folder,
               expected)``, expected = {path relative to the folder: (status, error_type)}.
"""
from __future__ import annotations

import os
import shutil
from fractions import Fraction

import numpy as np
import pytest

from cliper_batch.decode.testvideos import CODECS, VideoSpec, render_frame, write_video

# The test process's own Ray (the `ray_runtime` fixture) is private and loopback-only: no token auth, whatever
# ~/.ray/auth_token holds. Set before anything imports ray (Ray reads it at import), so a test that runs the CLI
# in-process first (the CLI asks for Ray's default, token mode) cannot switch it on for the rest of the session.
# Heads started by tests/raycluster.py run with token auth on, as users start them.
os.environ["RAY_AUTH_MODE"] = "disabled"

# the `ray` marker and its watch (tests/ray_marker.py); pytester runs the watch's own test
pytest_plugins = ["pytester", "ray_marker"]

SMALL = dict(width=192, height=128, fps=25.0, duration_s=4.0)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> str:
    """Session-wide folder holding all generated test videos."""
    return str(tmp_path_factory.mktemp("videos"))


def _make(video_dir: str, name: str, spec: VideoSpec) -> tuple[str, VideoSpec]:
    path = os.path.join(video_dir, name + CODECS[spec.codec][1])
    if not os.path.exists(path):
        write_video(path, spec)
    return path, spec


def write_rotated_video(path: str, spec: VideoSpec, ccw_degrees: int) -> str:
    """Like ``write_video`` but with a display matrix rotating the picture ``ccw_degrees`` counter-clockwise."""
    import av

    encoder, _ = CODECS[spec.codec]
    with av.open(path, mode="w") as container:
        stream = container.add_stream(encoder, rate=Fraction(spec.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        if spec.codec in ("vp9", "vp8"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "b:v": "0", "crf": "20"}
        stream.set_display_rotation(ccw_degrees)
        for i in range(spec.n_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(render_frame(spec, i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_vfr_video(path: str, encoder: str, pts_ms: list[int], spec: VideoSpec) -> str:
    """Frames ``0..len(pts_ms)-1`` of ``spec`` with the given presentation times (milliseconds)."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        if encoder in ("libvpx-vp9", "libvpx"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "b:v": "0", "crf": "20"}
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(render_frame(spec, i), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def h264_video(video_dir):
    return _make(video_dir, "h264", VideoSpec(codec="h264", **SMALL))


@pytest.fixture(scope="session")
def vp9_video(video_dir):
    return _make(video_dir, "vp9", VideoSpec(codec="vp9", seed=1, **SMALL))


@pytest.fixture(scope="session")
def vp8_video(video_dir):
    return _make(video_dir, "vp8", VideoSpec(codec="vp8", seed=2, **SMALL))


@pytest.fixture(scope="session")
def mjpeg_video(video_dir):
    return _make(video_dir, "mjpeg", VideoSpec(codec="mjpeg", seed=3, **SMALL))


@pytest.fixture(scope="session")
def long_h264_video(video_dir):
    """30 s, 750 frames, keyframe every 2 s: long enough that sparse sampling seeks."""
    return _make(video_dir, "long_h264", VideoSpec(codec="h264", duration_s=30.0, width=128, height=96, seed=4))


@pytest.fixture(scope="session")
def long_vp9_video(video_dir):
    return _make(video_dir, "long_vp9", VideoSpec(codec="vp9", duration_s=30.0, width=128, height=96, seed=5))


@pytest.fixture(scope="session")
def rotated_h264_video(video_dir):
    spec = VideoSpec(codec="h264", duration_s=1.0, seed=6)
    path = os.path.join(video_dir, "rotated_h264.mp4")
    if not os.path.exists(path):
        write_rotated_video(path, spec, ccw_degrees=90)
    return path, spec


@pytest.fixture(scope="session")
def rotated_vp9_video(video_dir):
    spec = VideoSpec(codec="vp9", duration_s=1.0, seed=7)
    path = os.path.join(video_dir, "rotated_vp9.webm")
    if not os.path.exists(path):
        write_rotated_video(path, spec, ccw_degrees=90)
    return path, spec


@pytest.fixture(scope="session")
def vfr_video(video_dir):
    """VP9 .webm whose 60 frames last 20/40/100/250 ms each; returns (path, spec, frame start times in s)."""
    rng = np.random.default_rng(0)
    pts, t = [], 0
    for _ in range(60):
        pts.append(t)
        t += int(rng.choice([20, 40, 100, 250]))
    spec = VideoSpec(codec="vp9", fps=25.0, duration_s=t / 1000, seed=8)
    path = os.path.join(video_dir, "vfr_vp9.webm")
    if not os.path.exists(path):
        write_vfr_video(path, "libvpx-vp9", pts, spec)
    return path, spec, [p / 1000 for p in pts]


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _derived(video_dir: str, name: str, make) -> str:
    path = os.path.join(video_dir, name)
    if not os.path.exists(path):
        with open(path, "wb") as fh:
            fh.write(make())
    return path


@pytest.fixture(scope="session")
def corrupt_video(video_dir, h264_video):
    """First 30% of an H.264 .mp4 whose index (moov) sits at the end: not openable (ProbeError)."""
    src, spec = h264_video
    data = _read_bytes(src)
    return _derived(video_dir, "corrupt_truncated.mp4", lambda: data[: int(len(data) * 0.3)]), spec


@pytest.fixture(scope="session")
def damaged_video(video_dir, h264_video):
    """H.264 .mp4 with 600 random bytes written at 45% of the file: probes, a few frames damaged."""
    src, spec = h264_video

    def make() -> bytes:
        data = bytearray(_read_bytes(src))
        at = int(len(data) * 0.45)
        data[at : at + 600] = np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes()
        return bytes(data)

    return _derived(video_dir, "damaged.mp4", make), spec


@pytest.fixture(scope="session")
def truncated_vp9_video(video_dir, vp9_video):
    """First 60% of a .webm: the header is intact, the tail of the stream is gone."""
    src, spec = vp9_video
    data = _read_bytes(src)
    return _derived(video_dir, "truncated.webm", lambda: data[: int(len(data) * 0.6)]), spec


@pytest.fixture(scope="session")
def empty_video(video_dir):
    return _derived(video_dir, "empty.mp4", lambda: b"")


@pytest.fixture(scope="session")
def random_bytes_video(video_dir):
    return _derived(video_dir, "random.mp4", lambda: np.random.default_rng(2).integers(0, 256, 40_000, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def text_video(video_dir):
    return _derived(video_dir, "notes.mp4", lambda: b"this is a text file, not a video\n" * 20)


@pytest.fixture(scope="session")
def audio_only_video(video_dir):
    """An .mp4 holding one second of AAC audio and no video stream."""
    import av

    path = os.path.join(video_dir, "audio_only.mp4")
    if not os.path.exists(path):
        with av.open(path, mode="w") as container:
            stream = container.add_stream("aac", rate=16000)
            stream.layout = "mono"
            samples = (np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440) * 0.3).astype(np.float32)[None, :]
            for start in range(0, 16000, 1024):
                frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate = 16000
                frame.pts = start
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


@pytest.fixture(scope="session")
def bad_input_zoo(tmp_path_factory, corrupt_video, damaged_video, truncated_vp9_video, empty_video, random_bytes_video,
                  text_video, audio_only_video, vfr_video, h264_video):
    zoo = tmp_path_factory.mktemp("zoo")
    for src in (empty_video, corrupt_video[0], random_bytes_video, text_video, audio_only_video, damaged_video[0],
                truncated_vp9_video[0], vfr_video[0]):
        shutil.copy(src, zoo / os.path.basename(src))
    write_video(str(zoo / "uhd.mp4"), VideoSpec(codec="h264", width=3840, height=2160, fps=5, duration_s=1.0))
    write_video(str(zoo / "tiny.mp4"), VideoSpec(codec="h264", width=16, height=16, fps=25, duration_s=1.0))
    write_rotated_video(str(zoo / "rotated.mp4"), VideoSpec(codec="h264", width=96, height=64, duration_s=1.0), 90)
    (zoo / "sp ace ñandú").mkdir()
    shutil.copy(h264_video[0], zoo / "sp ace ñandú" / "é clip.mp4")
    os.symlink("/nonexistent/target.mp4", zoo / "dangling.mp4")
    os.symlink(str(zoo), zoo / "loop")  # a directory symlink loop must not hang the listing
    expected = {
        "empty.mp4": ("failed", "ProbeError"),
        "corrupt_truncated.mp4": ("failed", "ProbeError"),
        "random.mp4": ("failed", "ProbeError"),
        "notes.mp4": ("failed", "ProbeError"),
        "audio_only.mp4": ("failed", "ProbeError"),
        "dangling.mp4": ("failed", "ProbeError"),
        "truncated.webm": ("failed", "DecodeError"),
        "damaged.mp4": ("ok", None),
        "vfr_vp9.webm": ("ok", None),
        "uhd.mp4": ("ok", None),
        "tiny.mp4": ("ok", None),
        "rotated.mp4": ("ok", None),
        "sp ace ñandú/é clip.mp4": ("ok", None),
    }
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        shutil.copy(h264_video[0], zoo / "locked.mp4")
        os.chmod(zoo / "locked.mp4", 0)
        expected["locked.mp4"] = ("failed", "ProbeError")
    return zoo, expected


@pytest.fixture(scope="session")
def ray_runtime():
    """One embedded local Ray for the whole session: 2 CPUs, its own short temp dir, no dashboard."""
    import ray

    tmp = os.path.join("/tmp", f"rt{os.getpid()}")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private loopback runtime; ignore any ~/.ray/auth_token
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, object_store_memory=400_000_000, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight Tiny-ViT-T-16 CLIPER checkpoint written by the tests (no download)."""
    import torch

    from cliper_batch.model.checkpoint import save_checkpoint
    from cliper_batch.model.factory import load_model

    torch.manual_seed(0)
    model = load_model("openclip:Tiny-ViT-T-16").model
    return save_checkpoint(model, str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))
