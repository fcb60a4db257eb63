"""Build the report: read the output lazily, pick the detail videos, render charts and thumbnails, fill the page."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from markupsafe import Markup

from . import charts
from .data import (
    OutputTables,
    choose_videos,
    corpus_summary,
    load_runs,
    top_segments,
    video_details,
    video_table,
)
from .palette import colours_for
from .html import ReportPage, VideoView, file_name, render, track_view
from .thumbs import Thumbnails, video_thumbnails

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows; every list is bounded, so the page stays small for any corpus size."""

    videos: list[str] = field(default_factory=list)  # detail for these (ids or annotated paths/URLs)
    limit: int = 12  # detail videos when none are named: top videos of each label, round robin
    top: int = 5  # videos listed per label in the corpus view
    segments_per_label: int = 200  # most confident segments per label in the search list
    table_rows: int = 1000  # rows of the video table
    runs_shown: int = 20  # latest runs listed
    thumbnails: bool = True
    storage_options: dict | None = None

    def __post_init__(self) -> None:
        for name in ("limit", "top", "segments_per_label", "table_rows", "runs_shown"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def build_report(output: str, options: ReportOptions | None = None) -> str:
    """The report for annotation output ``output`` as one HTML string. Raises ``ReportInputError`` on bad input."""
    o = options or ReportOptions()
    runs = load_runs(output, o.storage_options)
    tables = OutputTables(output, o.storage_options)
    corpus = corpus_summary(tables, top=o.top)
    chosen = choose_videos(tables, corpus, o.videos, o.limit)
    log.info("report: %d videos, %d in detail", corpus.n_videos, len(chosen))
    views = []
    for d in video_details(tables, chosen):
        thumbs = video_thumbnails(d, o.storage_options) if o.thumbnails else Thumbnails({})
        if thumbs.problem:
            log.warning("%s", thumbs.problem)
        tracks = [
            track_view(t, thumbs, charts.to_svg(
                charts.image_face_chart(t.segments, corpus.classes) if d.is_image
                else charts.timeline_chart(t.segments, corpus.classes, d.duration_s)))
            for t in d.tracks
        ]
        views.append(VideoView(detail=d, name=file_name(d.video_uri), tracks=tracks, thumbnail_problem=thumbs.problem))
    shares_svg = (
        Markup(charts.to_svg(charts.shares_chart(corpus.shares, corpus.classes, "Expression shares, all videos")))
        if corpus.classes
        else None
    )
    table, total = video_table(tables, o.table_rows)
    page = ReportPage(
        output=output,
        runs=runs,
        runs_shown=o.runs_shown,
        corpus=corpus,
        shares_svg=shares_svg,
        videos=views,
        table=table,
        table_total=total,
        segments=top_segments(tables, o.segments_per_label),
        segments_per_label=o.segments_per_label,
        colours=colours_for(corpus.classes),
    )
    return render(page)
