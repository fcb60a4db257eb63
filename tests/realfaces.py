"""Real-face test media made from public-domain photos that ship in a package (no download, nothing committed).

``skimage.data.astronaut()`` is NASA's portrait of Eileen Collins (public domain), smiling: the one
real face with a clear expression the test machines have offline (scikit-image is a dev dependency).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def astronaut() -> np.ndarray:
    """The 512x512 RGB portrait (uint8)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def astronaut_frames(n: int, width: int = 640, height: int = 360, drift_px: int = 2) -> list[np.ndarray]:
    """``n`` frames: the portrait at frame height on a grey background, drifting sideways ``drift_px`` per frame."""
    from PIL import Image

    side = height
    face = np.asarray(Image.fromarray(astronaut()).resize((side, side), Image.Resampling.BILINEAR))
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 96, dtype=np.uint8)
        x = (width - side) // 2 + ((i * drift_px) % 80) - 40
        canvas[:, x:x + side] = face
        frames.append(canvas)
    return frames


def write_astronaut_video(path: str, seconds: float = 4.0, fps: int = 10, codec: str = "libx264") -> str:
    """A short real-face video (H.264 by default; ``libvpx-vp9`` for VP9) of the drifting portrait."""
    import av

    n = int(round(seconds * fps))
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for frame in astronaut_frames(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
