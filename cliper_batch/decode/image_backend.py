"""The ``pillow`` decoder: a still image's one frame for every sampled timestamp (:class:`FrameDecoder`).

A still image is a one-frame item (:mod:`cliper_batch.decode.images`): its segment plan asks for
``frames_per_segment`` frames at time 0, and this decoder answers each with the same
upright RGB frame, scaled to the requested size. :func:`cliper_batch.decode.select.choose_decoder`
picks it for every image, whatever ``--decoder`` says (PyAV and DALI decode videos).

Scaling: area averaging (Pillow's ``BOX``) when both sides shrink, as the PyAV decoder
scales video frames (swscale ``AREA``); bilinear when a side grows (a tiny image).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .images import read_image
from ..types import VideoInfo
from .base import output_size, validate_request

__all__ = ["ImageDecoder", "resize_rgb"]


def resize_rgb(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 at ``size=(width, height)``: BOX when shrinking both sides, else BILINEAR."""
    from PIL import Image

    w, h = int(size[0]), int(size[1])
    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    shrink = w <= frame.shape[1] and h <= frame.shape[0]
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.ascontiguousarray(np.asarray(Image.fromarray(frame).resize((w, h), method)))


class ImageDecoder:
    """:class:`~cliper_batch.decode.base.FrameDecoder` for still images; stateless, shareable by threads."""

    name = "pillow"

    def __init__(self, storage_options: dict | None = None):
        self.storage_options = dict(storage_options or {})

    def __repr__(self) -> str:
        return "ImageDecoder()"

    def iter_frames(
        self,
        uri: str,
        info: VideoInfo,
        timestamps: Sequence[float],
        size: tuple[int, int] | None = None,
    ) -> Iterator[np.ndarray]:
        """The image, upright, at ``size``, once per timestamp (one decode). Raises ``images.ImageError``."""
        ts = validate_request(uri, timestamps, size)
        if not ts:
            return
        frame = resize_rgb(read_image(uri, **self.storage_options), output_size(info, size))
        for _ in ts:
            yield frame
