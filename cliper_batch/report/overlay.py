"""Draw the annotation on the video: ``python -m cliper_batch.report.overlay OUTPUT VIDEO --out annotated.mp4``.

Every frame of the source is decoded (PyAV), turned upright, drawn on and
re-encoded with the source frame's own presentation time, so the result has the
same frame count and timing. Each face track gets its box, id, label and
confidence in the label's colour (the report's palette).

Where the box is at time ``t``: each timeline row holds the track's median box
over its segment. Inside a run of consecutive segments the box moves linearly
from one segment's midpoint to the next (so it follows the face instead of
jumping at segment borders), and is held at the first/last segment's box before
the first and after the last midpoint of the run. The label and confidence are
those of the segment that contains ``t``. Where a track has no segment (not
seen there, or after a cut) nothing is drawn for it.

The picture is written upright (a rotated source's display matrix is applied,
not copied); the audio is not copied.
"""
from __future__ import annotations

import argparse
import bisect
import os
import sys
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont

from ..decode.probe import ProbeError, open_container, probe, rotate_upright
from .data import OutputTables, ReportInputError
from .palette import colours_for
from ..output.schema import SchemaMismatch
from ..uris import InvalidURI, filesystem_for, normalize_uri

ENCODERS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


class OverlayError(ValueError):
    """The overlay cannot be drawn (video not annotated, failed, moved or changed); the message says why."""


@dataclass(frozen=True)
class Drawn:
    """One track's annotation at one instant, in pixels of the upright frame."""

    track_id: int
    box: tuple[float, float, float, float]
    label: str
    confidence: float


class TrackPath:
    """Box, label and confidence of one face track over time (see the module docstring for the rule)."""

    def __init__(self, track_id: int, rows: pl.DataFrame):
        rows = rows.sort("start_s")
        self.track_id = track_id
        self.start = rows["start_s"].to_numpy()
        self.end = rows["end_s"].to_numpy()
        self.label = rows["label"].to_list()
        self.conf = rows["confidence"].to_numpy()
        self.box = rows.select("face_x0", "face_y0", "face_x1", "face_y1").to_numpy().astype(np.float64)
        self.mid = (self.start + self.end) / 2
        # consecutive segments (no gap between them) form one run
        self.run = np.concatenate([[0], np.cumsum(self.start[1:] > self.end[:-1] + 1e-6)])

    def at(self, t: float, width: int, height: int) -> Drawn | None:
        i = bisect.bisect_right(self.start, t + 1e-9) - 1
        if i < 0 or t >= self.end[i] - 1e-9:  # segments are [start, end): a track ends where a cut begins
            return None
        if np.isnan(self.box[i]).any():
            return None
        j = i + 1 if t >= self.mid[i] else i - 1  # the neighbouring midpoint on t's side
        box = self.box[i]
        if 0 <= j < len(self.mid) and self.run[j] == self.run[i] and not np.isnan(self.box[j]).any():
            w = (t - self.mid[i]) / (self.mid[j] - self.mid[i])
            box = (1 - w) * self.box[i] + w * self.box[j]
        x0, y0, x1, y1 = box
        return Drawn(self.track_id, (x0 * width, y0 * height, x1 * width, y1 * height), self.label[i], float(self.conf[i]))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (FreeType builds)
    except (TypeError, OSError):
        return ImageFont.load_default()


class Painter:
    """Draws :class:`Drawn` items on RGB frames with Pillow."""

    def __init__(self, classes: list[str], height: int):
        self.colours = colours_for(classes)
        self.line = max(2, round(height / 180))
        self.font = _font(max(10, round(height / 28)))

    def draw(self, frame: np.ndarray, items: list[Drawn]) -> np.ndarray:
        if not items:
            return frame
        im = Image.fromarray(frame)
        d = ImageDraw.Draw(im)
        for it in items:
            colour = self.colours.get(it.label, "#ffffff")
            x0, y0, x1, y1 = it.box
            d.rectangle((x0, y0, x1, y1), outline=colour, width=self.line)
            text = f"#{it.track_id} {it.label} {it.confidence:.2f}"
            l, t, r, b = d.textbbox((0, 0), text, font=self.font)
            ty = y0 - (b - t) - 2 * self.line if y0 - (b - t) - 2 * self.line >= 0 else y1 + self.line
            d.rectangle((x0, ty, x0 + (r - l) + 2 * self.line, ty + (b - t) + 2 * self.line), fill=colour)
            d.text((x0 + self.line - l, ty + self.line - t), text, fill="#ffffff", font=self.font)
        return np.asarray(im)


def find_annotation(output: str, video: str, video_id: str | None = None) -> tuple[dict, list[TrackPath], list[str]]:
    """The latest manifest row of ``video`` in ``output``, its tracks and the model's classes.

    ``video_id`` picks the annotation explicitly (for a file that moved since it was annotated).
    """
    try:
        tables = OutputTables(output)
    except ReportInputError as exc:
        raise OverlayError(str(exc)) from exc
    try:
        vid = tables.resolve_video(video_id or video)
    except ReportInputError as exc:
        raise OverlayError(f"{exc}{'' if video_id else '; pass --video-id ID to draw that annotation on this file'}") from exc
    row = tables.manifest.filter(pl.col("video_id") == vid).collect().row(0, named=True)
    if row["status"] != "ok":
        raise OverlayError(
            f"{row['video_uri']}: its latest run ({row['run_id']}) failed with {row['error_type']}: {row['error']}; "
            "nothing to draw"
        )
    rows = (
        tables.timelines.filter((pl.col("video_id") == vid) & (pl.col("run_id") == row["run_id"])).collect()
        if tables.timelines is not None
        else pl.DataFrame()
    )
    tracks = [TrackPath(int(tid), g) for (tid,), g in rows.group_by("track_id", maintain_order=True)] if rows.height else []
    return row, tracks, tables.classes


def check_same_file(video: str, row: dict) -> None:
    """The file must be the one that was annotated: present, and the same size as then."""
    fs, path = filesystem_for(video)
    if not fs.exists(path):
        hint = "" if video != row["video_uri"] else " (moved or deleted since it was annotated?)"
        raise OverlayError(f"{video}: file not found{hint}")
    size, annotated = fs.size(path), row.get("size_bytes")
    if annotated is not None and size != annotated:
        raise OverlayError(
            f"{video}: {size} bytes now, {annotated} bytes when it was annotated (run {row['run_id']}); "
            "the boxes would not match - re-annotate it, or pass --force to draw anyway"
        )


def _even(n: int) -> int:
    return n + (n % 2)


def write_overlay(video: str, out: str, tracks: list[TrackPath], classes: list[str], crf: int = 18) -> int:
    """Re-encode ``video`` to ``out`` with the tracks drawn; returns the number of frames written.

    The file is written next to ``out`` and renamed into place at the end, so a
    failure never leaves a half-written video (nor replaces an existing one).
    """
    ext = os.path.splitext(out)[1].lower()
    if ext not in ENCODERS:
        raise OverlayError(f"{out}: unsupported output type {ext or '(none)'}; use one of {', '.join(sorted(ENCODERS))}")
    try:
        info = probe(video)
    except ProbeError as exc:
        raise OverlayError(str(exc)) from exc
    tmp = f"{out}.part-{os.getpid()}"
    try:
        n = _encode(video, tmp, MUXERS[ext], ENCODERS[ext], info, Painter(classes, info.height), tracks, crf)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return n


def _encode(video: str, out: str, muxer: str, encoder: str, info, painter: Painter, tracks: list[TrackPath], crf: int) -> int:
    n = 0
    with open_container(video) as src, av.open(out, mode="w", format=muxer) as dst:
        ins = src.streams.video[0]
        ins.thread_type = "AUTO"
        rate = ins.average_rate or ins.guessed_rate or Fraction(25)
        outs = dst.add_stream(encoder, rate=rate)
        outs.width, outs.height, outs.pix_fmt = _even(info.width), _even(info.height), "yuv420p"
        outs.time_base = ins.time_base
        outs.codec_context.time_base = ins.time_base
        outs.options = (
            {"crf": str(crf)} if encoder == "libx264"
            else {"crf": str(crf + 12), "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        )
        origin = None
        for frame in src.decode(ins):
            if frame.pts is None:
                continue
            origin = frame.pts if origin is None else origin
            t = float((frame.pts - origin) * ins.time_base)
            rgb = rotate_upright(frame.to_ndarray(format="rgb24"), info.rotation)
            h, w = rgb.shape[:2]
            items = [d for d in (tp.at(t, w, h) for tp in tracks) if d is not None]
            rgb = painter.draw(rgb, items)
            if rgb.shape[:2] != (outs.height, outs.width):
                rgb = np.pad(rgb, ((0, outs.height - h), (0, outs.width - w), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts, vf.time_base = frame.pts - origin, ins.time_base
            for pkt in outs.encode(vf):
                dst.mux(pkt)
            n += 1
        for pkt in outs.encode():
            dst.mux(pkt)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cliper_batch.report.overlay",
        description="Re-encode a video with each face track's box, id, label and confidence drawn on every frame.",
    )
    p.add_argument("output", help="the annotation output folder or URL")
    p.add_argument("video", help="the video file (as annotated, or its new path together with --video-id)")
    p.add_argument("--out", default="annotated.mp4", help="video to write: .mp4/.mov/.mkv (H.264) or .webm (VP9)")
    p.add_argument("--video-id", help="use this video id's annotation (e.g. for a file that moved since it was annotated)")
    p.add_argument("--crf", type=int, default=18, help="encoder quality, lower is better (default 18)")
    p.add_argument("--force", action="store_true", help="draw even if the file changed size since it was annotated")
    a = p.parse_args(argv)
    try:
        video = normalize_uri(a.video)
        row, tracks, classes = find_annotation(a.output, video, a.video_id)
        if not a.force:
            check_same_file(video, row)
        if normalize_uri(a.out) == video:
            raise OverlayError(f"--out {a.out} would overwrite the source video")
        n = write_overlay(video, a.out, tracks, classes, crf=a.crf)
    except (OverlayError, SchemaMismatch, InvalidURI) as exc:
        print(f"overlay: error: {exc}", file=sys.stderr)
        return 2
    except (av.FFmpegError, OSError) as exc:
        print(f"overlay: error: cannot re-encode {a.video} to {a.out}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"overlay: wrote {os.path.abspath(a.out)} ({n} frames, {len(tracks)} face track(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
