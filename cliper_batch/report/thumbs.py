"""Face thumbnails for the report: one frame per track, decoded with the engine's PyAV decoder, cut at the median box.

Frames come from :class:`cliper_batch.decode.pyav_backend.PyAVDecoder` (a still image's from
the ``pillow`` decoder, :mod:`cliper_batch.decode.image_backend`), so they are upright (rotation applied) in the same coordinates the face boxes
were recorded in. Thumbnails are JPEG, inlined as ``data:`` URIs.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..decode import DecodeError, select_decoder
from ..decode.images import ImageError
from ..decode.probe import ProbeError, probe
from .data import VideoDetail

THUMB_HEIGHT = 96
MARGIN = 0.25  # of the box size, on each side


@dataclass(frozen=True)
class Thumbnails:
    """``by_track``: track id -> data URI; ``problem``: why there are none (video unreadable), else None."""

    by_track: dict[int, str]
    problem: str | None = None


def crop_box(frame: np.ndarray, box: tuple[float, float, float, float], margin: float = MARGIN) -> np.ndarray:
    """The normalised ``box`` grown by ``margin`` on each side, clipped to the frame."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    c0, r0 = max(0, int((x0 - mx) * w)), max(0, int((y0 - my) * h))
    c1, r1 = min(w, int(np.ceil((x1 + mx) * w))), min(h, int(np.ceil((y1 + my) * h)))
    if c1 <= c0 or r1 <= r0:
        return frame
    return frame[r0:r1, c0:c1]


def jpeg_data_uri(image: np.ndarray, height: int = THUMB_HEIGHT, quality: int = 85) -> str:
    im = Image.fromarray(image)
    if im.height != height:
        im = im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def video_thumbnails(video: VideoDetail, storage_options: dict | None = None) -> Thumbnails:
    """One thumbnail per track of ``video`` (whole frame when the track has no box, e.g. ``--faces none``)."""
    if not video.tracks:
        return Thumbnails({})
    try:
        info = probe(video.video_uri, **(storage_options or {}))
    except (ProbeError, ImageError) as exc:
        return Thumbnails({}, f"no thumbnails: {exc} (moved or changed since it was annotated?)")
    times = sorted({min(t.thumb_time_s, max(info.duration_s - 1e-3, 0.0)) for t in video.tracks})
    try:
        # PyAV for a video, Pillow for a still image (decode.select picks by info.kind)
        decoder = select_decoder("pyav", info, "cpu", threads=1, storage_options=storage_options)
        frames = dict(zip(times, decoder.iter_frames(video.video_uri, info, times)))
    except (DecodeError, ImageError) as exc:
        return Thumbnails({}, f"no thumbnails: {exc}")
    out = {}
    for t in video.tracks:
        frame = frames[min(t.thumb_time_s, max(info.duration_s - 1e-3, 0.0))]
        out[t.track_id] = jpeg_data_uri(crop_box(frame, t.box) if t.box else frame)
    return Thumbnails(out)
