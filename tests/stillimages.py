"""Still-image test inputs made with Pillow (nothing downloaded, nothing committed): awkward good ones and bad ones.

``write_image_zoo(folder)`` writes every kind and returns ``{file name: (status, error_type)}``
as the job must record it (``--faces none``: every ``ok`` image gives exactly one row).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


def face_photo() -> np.ndarray:
    """A real smiling face: scikit-image's public-domain astronaut portrait, 512x512 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def sixteen_bit_grey(h: int = 40, w: int = 60) -> np.ndarray:
    """A 16-bit ramp using the whole 0..65535 range (a clip at 255 would make it almost all white)."""
    return (np.linspace(0, 65535, h * w).reshape(h, w)).astype(np.uint16)


def png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def write_image_zoo(folder: str, photo: np.ndarray | None = None) -> dict[str, tuple[str, str | None]]:
    """Write the image zoo into ``folder``; return the expected ``{name: (status, error_type)}``."""
    os.makedirs(folder, exist_ok=True)
    photo = face_photo() if photo is None else photo
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    rgb = Image.fromarray(photo)
    rgb.save(p("photo.jpg"), quality=90)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    rgba.save(p("alpha.png"))
    rgb.convert("L").save(p("grey.jpg"))
    rgb.convert("CMYK").save(p("cmyk.jpg"))
    Image.fromarray(sixteen_bit_grey()).save(p("sixteen.png"))
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(p("tiny.png"))
    rgb.save(p("photo.webp"))
    rgb.save(p("photo.bmp"))
    with open(p("corrupt.jpg"), "wb") as f:  # JPEG magic, then noise
        f.write(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    whole = png_bytes(rgb)
    with open(p("truncated.png"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(p("text.png"), "w") as f:
        f.write("not an image\n")
    # 9500 x 9500 = 90.25 M pixels > PIL.Image.MAX_IMAGE_PIXELS (89.5 M): a decompression bomb (1 bit/pixel, small file)
    Image.new("1", (9500, 9500)).save(p("bomb.png"), optimize=False)
    ok = ("photo.jpg", "alpha.png", "grey.jpg", "cmyk.jpg", "sixteen.png", "tiny.png", "photo.webp", "photo.bmp")
    bad = ("corrupt.jpg", "truncated.png", "text.png", "bomb.png")
    return {**{n: ("ok", None) for n in ok}, **{n: ("failed", "ImageError") for n in bad}}
