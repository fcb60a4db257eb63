"""Still images as one-frame items: their facts (a :class:`VideoInfo`) and their pixels (upright RGB uint8), with Pillow.

An image in the corpus (``uris.IMAGE_EXTENSIONS``: .jpg .jpeg .png .webp .bmp) goes
through the same per-item algorithm as a video (:mod:`cliper_batch.video_annotation`):
:func:`cliper_batch.decode.probe.probe` hands it to :func:`probe_image` (header only, no pixel
decode), :func:`cliper_batch.decode.sampling.plan_for` gives it one segment at time 0, and the
``pillow`` decoder (:mod:`cliper_batch.decode.image_backend`) delivers :func:`read_image`'s
frame for each sampled timestamp. Framing, face detection, crops and scoring are the
video path's own.

Conversion to RGB uint8 (:func:`to_rgb8`), one rule per Pillow mode:

* RGB: as is. 1 / L / P / CMYK / YCbCr / LAB / HSV / RGBX: Pillow's ``convert("RGB")``
  (CMYK by Pillow's conversion, grey replicated to three channels);
* 16-bit grey (``I;16*``, e.g. a 16-bit PNG) and 32-bit integer ``I``: scaled from
  0..65535 to 0..255 (``round(v * 255 / 65535)``; ``I`` is clipped to 0..65535 first),
  never clipped at 255. 16-bit RGB(A) PNGs Pillow itself reads as 8-bit (high byte);
* an alpha channel (RGBA, LA, PA, RGBa, La, or a palette/grey/RGB image with a
  ``transparency`` key) is composited over **white** (what a viewer shows on a white
  page; the colour under a fully transparent pixel is ignored), not dropped;
* float (``F``) and other modes: :class:`ImageError`.

The EXIF orientation is applied (mirroring included), so frames are upright like a
video's; ``VideoInfo.rotation`` records its rotation part and ``width``/``height`` the
upright size. An animated WebP is read as its first frame.

Every failure is an :class:`ImageError` naming the file (error class ``data``: not
retried until the file changes): not an image of an accepted format, corrupt or
truncated, more pixels than Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``, checked from the header before any pixel is
decoded), or an unsupported pixel mode. Missing and empty files fail earlier, in
:func:`cliper_batch.decode.probe.probe`, like videos.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..types import VideoInfo
from ..uris import IMAGE, filesystem_for

__all__ = ["ImageError", "FORMATS", "probe_image", "read_image", "to_rgb8", "orientation_rotation"]

# Pillow format names accepted (JPEG covers a phone's multi-picture MPO file: its first picture).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
_RGB_BY_PILLOW = {"1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
SUPPORTED_MODES = frozenset({"RGB", *_RGB_BY_PILLOW, *_ALPHA, *_SIXTEEN_BIT, "I"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the clockwise rotation it includes (2, 4, 5, 7 also mirror).
_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 270, 6: 90, 7: 90, 8: 270}


class ImageError(ValueError):
    """A still image that cannot be annotated: not an accepted image, corrupt, truncated, too large, odd mode."""


@contextlib.contextmanager
def _opened(uri: str, storage_options: dict[str, Any]) -> Iterator[Any]:
    """The Pillow image of ``uri`` (header read, pixels not yet), behind the format and decompression-bomb checks."""
    from PIL import Image, UnidentifiedImageError

    Image.init()  # registers every plugin once (WEBP is not among Pillow's pre-loaded ones)
    fs, path = filesystem_for(uri, **storage_options)
    with fs.open(path, "rb") as fh:
        try:
            with warnings.catch_warnings():
                # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse at the limit itself
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fh, formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"{uri}: refused as a possible decompression bomb: {exc} (limit: PIL.Image.MAX_IMAGE_PIXELS)"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{uri}: not a JPEG, PNG, WebP or BMP image (Pillow cannot identify it)") from exc
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a hostile header can make a parser raise anything (struct.error, ...)
            raise ImageError(f"{uri}: corrupt image header ({type(exc).__name__}: {exc})") from exc
        with im:
            if im.width < 1 or im.height < 1:
                raise ImageError(f"{uri}: image has no pixels ({im.width}x{im.height})")
            if im.mode not in SUPPORTED_MODES:
                raise ImageError(f"{uri}: unsupported pixel mode {im.mode!r} ({im.format})")
            yield im


def orientation_rotation(im) -> tuple[int, int]:
    """(EXIF orientation 1..8, its clockwise rotation); 1 and 0 when absent or unreadable."""
    try:
        o = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - broken EXIF: the pixels are still fine, shown as stored
        o = 1
    return (o, _ROTATION[o]) if o in _ROTATION else (1, 0)


def probe_image(uri: str, **storage_options: Any) -> VideoInfo:
    """The facts of the image at (normalised) ``uri`` from its header: a one-frame :class:`VideoInfo`.

    Raises :class:`ImageError`. Pixels are decoded by :func:`read_image` only.
    """
    with _opened(uri, storage_options) as im:
        _, rotation = orientation_rotation(im)
        w, h = (im.height, im.width) if rotation in (90, 270) else (im.width, im.height)
        return VideoInfo(
            duration_s=0.0, fps=0.0, width=int(w), height=int(h), codec=str(im.format).lower(), rotation=rotation,
            n_frames=1, kind=IMAGE,
        )


def read_image(uri: str, **storage_options: Any) -> np.ndarray:
    """The upright pixels of the image at ``uri`` as ``(H, W, 3)`` uint8 RGB (:func:`to_rgb8`). Raises :class:`ImageError`."""
    from PIL import ImageOps

    with _opened(uri, storage_options) as im:
        try:
            im.load()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. OSError "image file is truncated (N bytes not processed)"
            raise ImageError(f"{uri}: corrupt or truncated image ({type(exc).__name__}: {exc})") from exc
        orientation, _ = orientation_rotation(im)
        upright = ImageOps.exif_transpose(im) if orientation != 1 else im
        return to_rgb8(upright, uri)


def to_rgb8(im, uri: str = "<image>") -> np.ndarray:
    """``im`` (a loaded Pillow image) as C-contiguous ``(H, W, 3)`` uint8 RGB, by the rules in the module docstring."""
    mode = im.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        v = np.asarray(im).astype(np.int64)
        v = np.clip(v, 0, 65535)
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in _ALPHA or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA")).astype(np.uint32)
        a = rgba[:, :, 3:4]
        return np.ascontiguousarray(((rgba[:, :, :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8))
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im))
    if mode in _RGB_BY_PILLOW:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    raise ImageError(f"{uri}: unsupported pixel mode {mode!r}")
