"""``python -m cliper_batch.synthetic``: write a synthetic video corpus (and optionally an image set)."""
from __future__ import annotations

import argparse
import os

from .images import write_image_dataset
from .person import SyntheticError
from .videos import write_video_corpus

# --------------------------------------------------------------------------- CLI


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> ``(width, height)`` for argparse (``type=parse_size``)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT (e.g. 256x256), got {text!r}") from exc
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cliper_batch.synthetic",
        description="Write a synthetic facial-expression video corpus with ground truth (and optionally a labelled image set).",
    )
    p.add_argument("--out", required=True, help="output folder (videos, ground_truth.parquet, face_boxes.parquet)")
    p.add_argument("--videos", type=int, default=4, help="number of videos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-class", type=int, default=0, help="also write N face crops per class under OUT/images")
    p.add_argument("--image-size", type=int, default=112, help="side of the face crops")
    p.add_argument("--size", type=parse_size, default=(256, 256), help="video frame WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--segment-seconds", type=float, default=2.0)
    p.add_argument("--min-spans", type=int, default=3)
    p.add_argument("--max-spans", type=int, default=5)
    a = p.parse_args(argv)
    try:
        if a.videos > 0:
            gt = write_video_corpus(a.out, a.videos, a.seed, segment_seconds=a.segment_seconds, size=a.size, fps=a.fps,
                                    min_spans=a.min_spans, max_spans=a.max_spans)
            print(gt)
        if a.images_per_class > 0:
            print(write_image_dataset(os.path.join(a.out, "images"), a.images_per_class, a.seed, size=a.image_size))
    except SyntheticError as exc:
        p.error(str(exc))
    return 0
