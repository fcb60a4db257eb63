"""The two-scene face video several tests annotate: two synthetic faces drifting apart for 2 s, a cut, one face for 2 s."""
from fractions import Fraction

import av
import numpy as np

from cliper_batch.synthetic import render_scene, sample_identity

W, H, FPS = 320, 240, 10
# identities the detector finds (measured; one synthetic identity in ~8 is missed, see docs/faces.md)
A, B, C = (sample_identity(np.random.default_rng(s)) for s in (3, 5, 6))


def truth(t: float):
    """Face boxes at time t: scene 1 (0-2 s) two faces drifting apart, scene 2 (2-4 s) one face."""
    if t < 2.0:
        dx = int(10 * t)
        return [("happy", A, (30 - dx, 60, 110 - dx, 160)), ("sad", B, (200 + dx, 50, 280 + dx, 150))]
    return [("neutral", C, (110, 50, 190, 150))]


def write_two_scene_video(path: str) -> None:
    with av.open(path, mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(FPS))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "16", "preset": "veryfast"}
        for i in range(4 * FPS):
            t = i / FPS
            faces = [(lab, p, 1.0, box) for lab, p, box in truth(t)]
            frame = render_scene(faces, W, H, np.random.default_rng(1 if t < 2 else 2))  # static background per scene
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
