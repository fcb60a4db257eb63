"""Synthetic videos: one person whose expression changes only at segment boundaries, with ground truth.

:func:`write_expression_video` renders one scripted video (H.264 or VP9);
:func:`write_video_corpus` writes a seeded corpus plus ``ground_truth.parquet``
and ``face_boxes.parquet``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Sequence

import numpy as np

from ..labels import CANONICAL_CLASSES
from ..decode.testvideos import CODECS
from ..uris import normalize_uri, video_id_for
from .person import Pose, SyntheticError, expression_units, sample_identity, sample_pose_lighting
from .render import SUPERSAMPLE, background, draw_faces, finish_frame, light_fields

# --------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class ScriptedVideo:
    """A written synthetic video and its scripted truth.

    ``timeline`` lists (start_s, end_s, label) spans covering [0, duration_s);
    ``face_boxes`` holds the drawn face box (x0, y0, x1, y1, pixels) of every frame.
    """

    uri: str
    codec: str
    fps: float
    duration_s: float
    timeline: tuple[tuple[float, float, str], ...]
    width: int = 0
    height: int = 0
    n_frames: int = 0
    face_boxes: tuple[tuple[float, float, float, float], ...] = ()


_VIDEO_EXTENSIONS = {"h264": (".mp4", ".mkv", ".mov"), "vp9": (".webm", ".mkv")}


def _check_timeline(path: str, timeline: Sequence[tuple[float, float, str]]) -> tuple[tuple[float, float, str], ...]:
    if not timeline:
        raise SyntheticError(f"{path}: empty timeline")
    out = []
    prev_end = 0.0
    for i, item in enumerate(timeline):
        try:
            start, end, label = float(item[0]), float(item[1]), str(item[2])
        except (TypeError, ValueError, IndexError) as exc:
            raise SyntheticError(f"{path}: timeline entry {i} is not (start_s, end_s, label): {item!r}") from exc
        if label not in CANONICAL_CLASSES:
            raise SyntheticError(f"{path}: timeline entry {i} has unknown label {label!r}; expected one of {list(CANONICAL_CLASSES)}")
        if abs(start - prev_end) > 1e-6:
            raise SyntheticError(f"{path}: timeline entry {i} starts at {start}s, expected {prev_end}s (spans must be contiguous from 0)")
        if not end > start:
            raise SyntheticError(f"{path}: timeline entry {i} ends at {end}s, not after its start {start}s")
        out.append((start, end, label))
        prev_end = end
    return tuple(out)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def write_expression_video(
    path: str,
    timeline: Sequence[tuple[float, float, str]],
    codec: str = "h264",
    fps: float = 25.0,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    face_scale: float = 0.5,
    move: bool = True,
    transition_s: float = 0.2,
) -> ScriptedVideo:
    """Encode one synthetic person whose expression follows ``timeline``.

    Each span gets its own style and an intensity of 0.8..1; the face morphs
    from the previous span's expression over the first ``transition_s`` of a
    span (so labels hold from each span's start, a few frames blended).
    ``face_scale`` is the face-oval height as a fraction of the frame height;
    ``move`` adds slow head motion (translation, roll, yaw, scale). Blinks
    happen every few seconds. The background is static clutter, lighting is
    fixed per video, and every frame gets light sensor noise.
    """
    import av

    if codec not in _VIDEO_EXTENSIONS:
        raise SyntheticError(f"{path}: codec must be 'h264' or 'vp9', got {codec!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _VIDEO_EXTENSIONS[codec]:
        raise SyntheticError(f"{path}: a {codec} video needs one of the extensions {list(_VIDEO_EXTENSIONS[codec])}, got {ext!r}")
    W, H = int(size[0]), int(size[1])
    if W < 32 or H < 32 or W % 2 or H % 2:
        raise SyntheticError(f"{path}: frame size must be even and >= 32, got {W}x{H}")
    if not (0.1 <= face_scale <= 0.9):
        raise SyntheticError(f"{path}: face_scale must be in [0.1, 0.9], got {face_scale}")
    if not fps > 0:
        raise SyntheticError(f"{path}: fps must be > 0, got {fps}")
    spans = _check_timeline(path, timeline)
    duration = spans[-1][1]
    n_frames = int(round(duration * fps))
    if n_frames < 1:
        raise SyntheticError(f"{path}: timeline of {duration}s holds no frame at {fps} fps")

    rng = np.random.default_rng([seed, 23])
    person = sample_identity(rng)
    span_units = [expression_units(lbl, float(rng.uniform(0.8, 1.0)), rng) for _, _, lbl in spans]
    backdrop = background(rng, W * SUPERSAMPLE, H * SUPERSAMPLE)
    _, light = sample_pose_lighting(rng)
    lighting = light_fields(replace(light, strength=light.strength * 0.6), H, W)
    phases = rng.uniform(0, 2 * math.pi, 6)
    periods = rng.uniform(3.0, 7.0, 6)
    blinks, t = [], float(rng.uniform(0.5, 3.0))
    while t < duration:
        blinks.append(t)
        t += float(rng.uniform(2.0, 5.0))
    blinks_arr = np.array(blinks) if blinks else np.zeros(0)
    noise_rng = np.random.default_rng([seed, 29])
    # a small bank of sensor-noise fields (std 2), picked per frame: fresh noise per frame costs more than drawing the face
    noise_bank = (noise_rng.random((6, H, W, 3), dtype=np.float32) - 0.5) * (2.0 * math.sqrt(12.0))

    boxes: list[tuple[float, float, float, float]] = []
    encoder, _ = CODECS[codec]
    with av.open(path, mode="w") as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        if codec == "h264":
            stream.options = {"crf": "20", "preset": "veryfast", "g": str(max(1, int(fps * 2)))}
        else:
            stream.options = {"crf": "24", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "g": str(max(1, int(fps * 2)))}
        j = 0
        for i in range(n_frames):
            t = i / fps
            while j + 1 < len(spans) and t >= spans[j][1] - 1e-9:
                j += 1
            au = span_units[j]
            if j > 0 and transition_s > 0 and t - spans[j][0] < transition_s:
                au = span_units[j - 1].blend(au, _smoothstep((t - spans[j][0]) / transition_s))
            au = au.scaled(0.92 + 0.08 * math.sin(2 * math.pi * t / 2.3 + phases[0]))
            au = replace(au, lip_side=span_units[j].lip_side)
            if blinks_arr.size:
                dt = np.abs(blinks_arr - t).min()
                au = replace(au, blink=float(max(0.0, 1.0 - dt / 0.09)))
            wob = [math.sin(2 * math.pi * t / periods[k] + phases[k]) if move else 0.0 for k in range(6)]
            bh = face_scale * H * (1 + 0.06 * wob[0])
            bw = bh / person.face_aspect
            cx = min(max(W * (0.5 + 0.12 * wob[1]), bw / 2), W - bw / 2)
            cy = min(max(H * (0.47 + 0.06 * wob[2]), bh / 2 + 0.06 * H), H - bh / 2)
            box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            params = replace(person, pose=Pose(roll_deg=6.0 * wob[3], yaw=0.25 * wob[4]))
            im = backdrop.copy()
            draw_faces(im, [(au, params, 1.0, box)], None)
            frame = finish_frame(im, lighting, noise_rng, blur=0.0, noise=noise_bank[int(noise_rng.integers(len(noise_bank)))])
            boxes.append(tuple(round(v, 2) for v in box))  # type: ignore[arg-type]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return ScriptedVideo(
        uri=normalize_uri(path), codec=codec, fps=float(fps), duration_s=n_frames / fps, timeline=spans,
        width=W, height=H, n_frames=n_frames, face_boxes=tuple(boxes),
    )


def _random_timeline(rng: np.random.Generator, segment_seconds: float, min_spans: int, max_spans: int) -> list[tuple[float, float, str]]:
    n = int(rng.integers(min_spans, max_spans + 1))
    out, t, prev = [], 0.0, None
    for _ in range(n):
        choices = [c for c in CANONICAL_CLASSES if c != prev]
        label = str(rng.choice(choices))
        length = int(rng.integers(1, 3)) * segment_seconds  # 1-2 segments (2-4 s by default)
        out.append((round(t, 6), round(t + length, 6), label))
        t += length
        prev = label
    return out


def write_video_corpus(
    out_dir: str,
    n_videos: int,
    seed: int,
    segment_seconds: float = 2.0,
    codecs: Sequence[str] = ("h264", "vp9"),
    size: tuple[int, int] = (256, 256),
    fps: float = 25.0,
    min_spans: int = 3,
    max_spans: int = 5,
) -> str:
    """``n_videos`` scripted videos in ``out_dir`` plus ``ground_truth.parquet``; returns its path.

    Each video is ``min_spans..max_spans`` spans of 1-2 segments, each span a
    random label different from the one before, so the expression changes
    only at multiples of ``segment_seconds``. Ground truth has one row per
    segment (``video_id``, ``video_uri``, ``segment_index``, ``start_s``,
    ``end_s``, ``label``) with ``video_id``/``video_uri`` as the engine's
    listing computes them. ``face_boxes.parquet`` (``video_uri``,
    ``frame_index``, ``t_s``, ``x0``..``y1`` pixels) is written alongside.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_videos < 1:
        raise SyntheticError(f"n_videos must be >= 1, got {n_videos}")
    if not segment_seconds > 0:
        raise SyntheticError(f"segment_seconds must be > 0, got {segment_seconds}")
    if not codecs or any(c not in ("h264", "vp9") for c in codecs):
        raise SyntheticError(f"codecs must be a non-empty list of 'h264'/'vp9', got {codecs!r}")
    if not (1 <= min_spans <= max_spans):
        raise SyntheticError(f"need 1 <= min_spans <= max_spans, got {min_spans}, {max_spans}")
    if abs(segment_seconds * fps - round(segment_seconds * fps)) > 1e-6:
        raise SyntheticError(f"segment_seconds * fps must be a whole number of frames, got {segment_seconds} * {fps}")
    os.makedirs(out_dir, exist_ok=True)
    gt: dict[str, list] = {"video_id": [], "video_uri": [], "segment_index": [], "start_s": [], "end_s": [], "label": []}
    fb: dict[str, list] = {"video_uri": [], "frame_index": [], "t_s": [], "x0": [], "y0": [], "x1": [], "y1": []}
    for i in range(n_videos):
        codec = codecs[i % len(codecs)]
        rng = np.random.default_rng([seed, 31, i])
        timeline = _random_timeline(rng, segment_seconds, min_spans, max_spans)
        path = os.path.join(out_dir, f"synth_{i:04d}{CODECS[codec][1]}")
        video = write_expression_video(path, timeline, codec=codec, fps=fps, size=size, seed=int(rng.integers(0, 2**31 - 1)),
                                       face_scale=float(rng.uniform(0.4, 0.6)), move=True)
        vid = video_id_for(video.uri)
        for start, end, label in video.timeline:
            k0, k1 = int(round(start / segment_seconds)), int(round(end / segment_seconds))
            for k in range(k0, k1):
                gt["video_id"].append(vid)
                gt["video_uri"].append(video.uri)
                gt["segment_index"].append(k)
                gt["start_s"].append(k * segment_seconds)
                gt["end_s"].append((k + 1) * segment_seconds)
                gt["label"].append(label)
        for f, box in enumerate(video.face_boxes):
            fb["video_uri"].append(video.uri)
            fb["frame_index"].append(f)
            fb["t_s"].append(f / fps)
            for key, v in zip(("x0", "y0", "x1", "y1"), box):
                fb[key].append(v)
    gt_table = pa.table(
        {
            "video_id": pa.array(gt["video_id"], pa.string()),
            "video_uri": pa.array(gt["video_uri"], pa.string()),
            "segment_index": pa.array(gt["segment_index"], pa.int32()),
            "start_s": pa.array(gt["start_s"], pa.float64()),
            "end_s": pa.array(gt["end_s"], pa.float64()),
            "label": pa.array(gt["label"], pa.string()),
        }
    )
    fb_table = pa.table(
        {
            "video_uri": pa.array(fb["video_uri"], pa.string()),
            "frame_index": pa.array(fb["frame_index"], pa.int32()),
            "t_s": pa.array(fb["t_s"], pa.float64()),
            **{k: pa.array(fb[k], pa.float32()) for k in ("x0", "y0", "x1", "y1")},
        }
    )
    pq.write_table(fb_table, os.path.join(out_dir, "face_boxes.parquet"))
    out = os.path.join(out_dir, "ground_truth.parquet")
    pq.write_table(gt_table, out)
    return out
