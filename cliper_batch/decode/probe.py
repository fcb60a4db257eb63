"""Probe a video before decoding: duration, frame rate, display size, codec, rotation.

The probe opens the file through fsspec (local paths and remote URLs alike),
lets PyAV (FFmpeg) parse the container, and decodes the first frame: that
proves the stream is decodable and is the only place PyAV 18 exposes the
display matrix (rotation) - FFmpeg attaches the container's display matrix to
each decoded frame as side data.

Rotation convention (same as ``VideoInfo.rotation`` and FFmpeg's old ``rotate``
tag): degrees *clockwise* to turn the stored frame upright. FFmpeg's
``av_display_rotation_get`` (PyAV's ``VideoFrame.rotation``) returns the
counter-clockwise angle of the display matrix, so ``rotation = -frame.rotation
mod 360``. A typical portrait phone clip has ``frame.rotation == -90`` and
``rotation == 90``; ``width``/``height`` are then swapped to the upright size.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from fractions import Fraction
from typing import IO, Any

import numpy as np

from .images import probe_image
from ..types import VideoInfo
from ..uris import IMAGE, filesystem_for, media_kind, normalize_uri

__all__ = [
    "ProbeError",
    "probe",
    "open_binary",
    "open_container",
    "clockwise_rotation",
    "rotate_upright",
    "canonical_codec_name",
]


class ProbeError(ValueError):
    """The file is not a readable video (missing, empty, truncated header, no video stream, undecodable)."""


@contextlib.contextmanager
def open_binary(uri: str, **storage_options: Any) -> Iterator[IO[bytes]]:
    """Open ``uri`` (local path or fsspec URL) for binary reading through fsspec."""
    fs, path = filesystem_for(uri, **storage_options)
    with fs.open(path, "rb") as fh:
        yield fh


@contextlib.contextmanager
def open_container(uri: str, **storage_options: Any):
    """An ``av`` input container reading ``uri`` through an fsspec file object.

    Errors from fsspec/FFmpeg propagate unchanged; callers translate them into
    their own exception class (``ProbeError`` / ``DecodeError``).
    """
    import av

    with open_binary(uri, **storage_options) as fh:
        container = av.open(fh, mode="r")
        try:
            yield container
        finally:
            container.close()


def clockwise_rotation(frame_rotation: float | int | None) -> int:
    """Map PyAV's ``VideoFrame.rotation`` (counter-clockwise, -180..180) to clockwise 0/90/180/270.

    Angles that are not a multiple of 90 degrees are snapped to the nearest one
    (players do the same; arbitrary angles do not occur in practice).
    """
    if frame_rotation is None or (isinstance(frame_rotation, float) and math.isnan(frame_rotation)):
        return 0
    return int(round(-float(frame_rotation) / 90.0)) % 4 * 90


def rotate_upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate an (H, W, C) image ``rotation`` degrees clockwise (0/90/180/270) so it displays upright.

    Returns a C-contiguous array (a view is never returned for non-zero rotation,
    so callers may keep it after the source buffer is reused).
    """
    if rotation % 360 == 0:
        return image
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    # np.rot90 with k > 0 turns counter-clockwise; clockwise by r is k = -r/90.
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90) % 4, axes=(0, 1)))


def canonical_codec_name(codec_context) -> str:
    """FFmpeg's codec descriptor name ('av1', 'vp9', ...) rather than the decoder's ('libdav1d', ...)."""
    codec = codec_context.codec
    name = getattr(codec, "canonical_name", None) or codec.name or codec_context.name
    return str(name)


def _positive(value: Fraction | float | int | None) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if v > 0 and math.isfinite(v) else None


def probe(uri: str, **storage_options: Any) -> VideoInfo:
    """Read stream metadata of ``uri`` and decode its first frame.

    Returns a :class:`VideoInfo` whose ``width``/``height`` are the upright
    display size (swapped for 90/270 rotation). ``fps`` is the stream's average
    frame rate (total frames / duration, which is the meaningful rate for
    variable-frame-rate files). ``duration_s`` comes from the video stream,
    else the container, else ``n_frames / fps``.

    Raises :class:`ProbeError` naming the file and the problem for missing,
    empty, truncated or non-video input.

    A URI with an image extension (``uris.media_kind``) is a still image: after the
    same missing/empty checks, :func:`cliper_batch.decode.images.probe_image` reads its
    header into a one-frame ``VideoInfo`` (``kind="image"``) or raises
    :class:`~cliper_batch.decode.images.ImageError`.
    """
    import av

    try:
        uri = normalize_uri(uri)
    except ValueError as exc:  # InvalidURI
        raise ProbeError(f"{uri!r}: {exc}") from exc
    try:
        fs, path = filesystem_for(uri, **storage_options)
        size = fs.size(path)
    except FileNotFoundError as exc:
        raise ProbeError(f"{uri}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{uri}: cannot access file ({type(exc).__name__}: {exc})") from exc
    if size == 0:
        raise ProbeError(f"{uri}: file is empty (0 bytes)")
    if media_kind(uri) == IMAGE:  # a still image: a one-frame item, read with Pillow (raises ImageError)
        return probe_image(uri, **storage_options)

    try:
        with open_container(uri, **storage_options) as container:
            return _probe_container(uri, container)
    except ProbeError:
        raise
    except av.FFmpegError as exc:
        raise ProbeError(f"{uri}: not a readable video ({type(exc).__name__}: {exc})") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise ProbeError(f"{uri}: cannot read video ({type(exc).__name__}: {exc})") from exc


def _probe_container(uri: str, container) -> VideoInfo:
    import av

    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise ProbeError(f"{uri}: no video stream (container {container.format.name!r} has streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx.codec is None:
        raise ProbeError(f"{uri}: video stream has no decoder in this FFmpeg build")
    codec = canonical_codec_name(ctx)
    width, height = int(ctx.width or 0), int(ctx.height or 0)

    n_frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = _positive(stream.duration * stream.time_base)
    if duration is None and container.duration is not None:
        duration = _positive(Fraction(container.duration, av.time_base))
    fps = _positive(stream.average_rate)
    if fps is None and n_frames and duration:
        fps = n_frames / duration
    if fps is None:
        fps = _positive(stream.guessed_rate) or _positive(stream.base_rate)
    if fps is None:
        raise ProbeError(f"{uri}: cannot determine the frame rate of the video stream")
    if duration is None and n_frames:
        duration = n_frames / fps
    if duration is None:
        raise ProbeError(f"{uri}: cannot determine the duration (no stream/container duration, frame count unknown)")

    # Decode the first frame: proves decodability, gives the display matrix and
    # the true frame size when the header left it unset.
    first = _first_frame(uri, container, stream)
    rotation = clockwise_rotation(first.rotation)
    width, height = width or first.width, height or first.height
    if width <= 0 or height <= 0:
        raise ProbeError(f"{uri}: video stream has no frame size")
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        duration_s=float(duration),
        fps=float(fps),
        width=int(width),
        height=int(height),
        codec=codec,
        rotation=rotation,
        n_frames=n_frames,
    )


def _first_frame(uri: str, container, stream, max_packets: int = 512):
    """Decode until the first frame comes out, skipping packets FFmpeg rejects."""
    import av

    errors: list[str] = []
    n = 0
    try:
        for packet in container.demux(stream):
            n += 1
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                errors.append(str(exc))
                frames = []
            if frames:
                return frames[0]
            if n >= max_packets:
                break
    except av.FFmpegError as exc:
        errors.append(str(exc))
    detail = f" (last error: {errors[-1]})" if errors else ""
    raise ProbeError(f"{uri}: no decodable video frame in the first {n} packets{detail}")
