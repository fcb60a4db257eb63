"""Assemble the report page: one self-contained HTML file (styles, scripts, charts and images inline).

The page is a Jinja2 template (``templates/report.html.j2``) rendered with
autoescaping, so file names and error messages can never inject markup; the
chart SVGs (made by vl-convert) and the segment list (JSON, with ``<`` escaped)
are the only pieces inserted as-is.
"""
from __future__ import annotations

import datetime as _dt
import json
import posixpath
from dataclasses import dataclass

import jinja2
import polars as pl
from markupsafe import Markup

from .data import CorpusSummary, RunInfo, VideoDetail
from .thumbs import Thumbnails


@dataclass(frozen=True)
class TrackView:
    track_id: int
    first_s: float
    last_s: float
    n_segments: int
    shares: dict[str, float]
    dominant: str | None
    thumbnail: str | None  # data URI
    chart_svg: Markup


@dataclass(frozen=True)
class VideoView:
    detail: VideoDetail
    name: str
    tracks: list[TrackView]
    thumbnail_problem: str | None


@dataclass(frozen=True)
class ReportPage:
    """Everything the template needs."""

    output: str
    runs: list[RunInfo]
    runs_shown: int
    corpus: CorpusSummary
    shares_svg: Markup | None
    videos: list[VideoView]
    table: pl.DataFrame
    table_total: int
    segments: pl.DataFrame
    segments_per_label: int
    colours: dict[str, str]


def file_name(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/")) or uri


def clock(seconds: float | None) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` past an hour): how a player shows a position."""
    if seconds is None:
        return "-"
    s = max(float(seconds), 0.0)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h)}:{int(m):02d}:{sec:04.1f}" if h >= 1 else f"{int(m)}:{sec:04.1f}"


def track_view(track, thumbs: Thumbnails, chart_svg: str) -> TrackView:
    dominant = max(track.shares, key=track.shares.get) if track.shares else None
    return TrackView(
        track_id=track.track_id,
        first_s=track.first_s,
        last_s=track.last_s,
        n_segments=track.segments.height,
        shares=track.shares,
        dominant=dominant,
        thumbnail=thumbs.by_track.get(track.track_id),
        chart_svg=Markup(chart_svg),
    )


def _segments_json(segments: pl.DataFrame) -> Markup:
    rows = [
        [file_name(r["video_uri"]), r["video_id"], int(r["track_id"]), round(float(r["start_s"]), 3),
         round(float(r["end_s"]), 3), r["label"], round(float(r["confidence"]), 4)]
        for r in segments.iter_rows(named=True)
    ]
    # inside <script type="application/json">: only "</script" could end it early; escape every "<"
    return Markup(json.dumps(rows, separators=(",", ":")).replace("<", "\\u003c"))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cliper_batch.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    env.filters["name"] = file_name
    env.filters["pct"] = lambda v: "-" if v is None else f"{100 * float(v):.0f}%"
    env.filters["num"] = lambda v, d=1: "-" if v is None else f"{float(v):,.{d}f}"
    return env


def render(page: ReportPage) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(
        page=page,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        segments_json=_segments_json(page.segments),
        detail_ids={v.detail.video_id for v in page.videos},
    )
