"""Deterministic generated test-pattern videos for tests and benchmarks (nothing is downloaded).

Each frame carries its own frame index as a row of black/white blocks along the
top edge (``FRAME_CODE_BITS`` bits, most significant first), so a decoder's
output can be checked frame-exactly after lossy compression: see
:func:`read_frame_code`.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

FRAME_CODE_BITS = 12
CODECS = {"h264": ("libx264", ".mp4"), "vp9": ("libvpx-vp9", ".webm"), "mjpeg": ("mjpeg", ".avi"), "vp8": ("libvpx", ".webm")}
# FFmpeg muxer for each container extension (needed when writing to a file object rather than a path)
CONTAINER_FORMATS = {".mp4": "mp4", ".webm": "webm", ".avi": "avi"}


@dataclass(frozen=True)
class VideoSpec:
    codec: str = "h264"
    fps: float = 25.0
    duration_s: float = 4.0
    width: int = 192
    height: int = 128
    seed: int = 0

    @property
    def n_frames(self) -> int:
        return int(round(self.duration_s * self.fps))


def encode_frame_code(frame: np.ndarray, index: int) -> None:
    """Paint ``index`` as FRAME_CODE_BITS blocks across the top eighth of ``frame`` (in place)."""
    h, w, _ = frame.shape
    bh, bw = max(h // 8, 8), w // FRAME_CODE_BITS
    for b in range(FRAME_CODE_BITS):
        bit = (index >> (FRAME_CODE_BITS - 1 - b)) & 1
        frame[:bh, b * bw : (b + 1) * bw] = 255 if bit else 0


def read_frame_code(frame: np.ndarray) -> int:
    """Inverse of :func:`encode_frame_code` on a decoded (H, W, 3) uint8 frame."""
    h, w, _ = frame.shape
    bh, bw = max(h // 8, 8), w // FRAME_CODE_BITS
    value = 0
    for b in range(FRAME_CODE_BITS):
        block = frame[bh // 4 : 3 * bh // 4, b * bw + bw // 4 : (b + 1) * bw - bw // 4]
        value = (value << 1) | int(block.mean() > 127)
    return value


def render_frame(spec: VideoSpec, index: int) -> np.ndarray:
    """A moving gradient with a bright disc (a stand-in subject) and the frame code."""
    h, w = spec.height, spec.width
    t = index / spec.fps
    rng = np.random.default_rng(spec.seed)
    base = rng.integers(40, 200, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frame = np.empty((h, w, 3), np.float32)
    for c in range(3):
        frame[..., c] = base[c] + 40 * np.sin(xx / w * 6.28 + t * (c + 1)) + 30 * np.cos(yy / h * 6.28 - t)
    cx = w * (0.5 + 0.25 * np.sin(t * 1.3 + spec.seed))
    cy = h * (0.55 + 0.15 * np.cos(t * 0.9))
    r = min(h, w) * 0.18
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    frame[disc] = (230, 190, 160)
    out = np.clip(frame, 0, 255).astype(np.uint8)
    encode_frame_code(out, index)
    return out


def write_video(path, spec: VideoSpec):
    """Encode ``spec`` to ``path`` with PyAV (its bundled FFmpeg has x264 and libvpx).

    ``path`` may also be a writable, seekable binary file object (e.g. ``io.BytesIO``):
    the container is then the codec's usual one (.mp4 for H.264, .webm for VP8/VP9, .avi for MJPEG).
    """
    import av

    if spec.codec not in CODECS:
        raise ValueError(f"unknown codec {spec.codec!r}; choose from {sorted(CODECS)}")
    encoder, ext = CODECS[spec.codec]
    rate = Fraction(spec.fps).limit_denominator(1001)
    fmt = None if isinstance(path, (str, os.PathLike)) else CONTAINER_FORMATS[ext]
    with av.open(path, mode="w", format=fmt) as container:
        stream = container.add_stream(encoder, rate=rate)
        stream.width, stream.height = spec.width, spec.height
        stream.pix_fmt = "yuvj420p" if spec.codec == "mjpeg" else "yuv420p"
        if spec.codec == "h264":
            stream.options = {"crf": "18", "preset": "veryfast", "g": str(int(spec.fps * 2))}
        elif spec.codec in ("vp9", "vp8"):
            stream.options = {"crf": "20", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "g": str(int(spec.fps * 2))}
        elif spec.codec == "mjpeg":
            stream.options = {"q:v": "3"}
        for i in range(spec.n_frames):
            frame = av.VideoFrame.from_ndarray(render_frame(spec, i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_corpus(out_dir: str, n_videos: int = 4, seed: int = 0, codecs=("h264", "vp9"), **spec_kwargs) -> list[str]:
    """``n_videos`` generated videos in ``out_dir``, alternating ``codecs``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(n_videos):
        codec = codecs[i % len(codecs)]
        spec = VideoSpec(codec=codec, seed=seed + i, **spec_kwargs)
        paths.append(write_video(os.path.join(out_dir, f"clip_{i:04d}{CODECS[codec][1]}"), spec))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a small generated video corpus (H.264 + VP9) for demos and tests.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--size", default="256x192", help="WIDTHxHEIGHT")
    a = p.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    for path in make_corpus(a.out, a.videos, a.seed, duration_s=a.duration, fps=a.fps, width=w, height=h):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
