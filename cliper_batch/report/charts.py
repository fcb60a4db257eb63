"""Report charts: Altair (Vega-Lite) specs rendered to inline SVG by vl-convert's bundled engine.

No browser and no network take part: ``vl_convert`` runs Vega in its own
embedded runtime, and ``allowed_base_urls=[]`` forbids any data request, so
every chart is a self-contained ``<svg>`` the report inlines.
"""
from __future__ import annotations

import functools

import altair as alt
import polars as pl
import vl_convert as vlc

from .palette import colours_for

TIMELINE_WIDTH = 640


def class_scale(classes: list[str]) -> alt.Scale:
    colours = colours_for(classes)
    return alt.Scale(domain=list(classes), range=[colours[c] for c in classes])


@functools.lru_cache(maxsize=1)
def _vl_version() -> str | None:
    """The Vega-Lite version Altair writes, if vl-convert bundles it (else vl-convert's latest)."""
    want = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    have = {v.lstrip("v") for v in vlc.get_vegalite_versions()}
    return want if want in have else None


def to_svg(chart: alt.TopLevelMixin) -> str:
    """Render a chart to an SVG string (offline; external data requests are refused)."""
    spec = chart.to_dict()
    svg = vlc.vegalite_to_svg(spec, vl_version=_vl_version(), allowed_base_urls=[])
    return svg


def step_points(segments: pl.DataFrame, classes: list[str]) -> pl.DataFrame:
    """Long table for step lines: each segment gives points at its start and end per class.

    ``seq`` orders the points along each line (a segment's end and the next
    one's start share a time, so x alone cannot); ``run`` numbers maximal runs
    of consecutive segments, so a line breaks where the track was not seen
    instead of drawing across the gap.
    """
    seg = segments.sort("start_s").with_columns(
        (pl.col("start_s") > pl.col("end_s").shift(1) + 1e-6).fill_null(False).cum_sum().alias("run"),
        (2 * pl.int_range(pl.len())).alias("seq"),
    )
    p_cols = [f"p_{c}" for c in classes]
    long = seg.select("run", "seq", "start_s", "end_s", *p_cols).unpivot(
        index=["run", "seq", "start_s", "end_s"], on=p_cols, variable_name="class", value_name="p"
    )
    long = long.with_columns(pl.col("class").str.slice(2))
    return pl.concat(
        [long.select("run", "seq", "class", "p", pl.col("start_s").alias("t")),
         long.select("run", (pl.col("seq") + 1).alias("seq"), "class", "p", pl.col("end_s").alias("t"))]
    ).sort(["class", "seq"])


def image_face_chart(segments: pl.DataFrame, classes: list[str]) -> alt.Chart:
    """A still image's face (one row): its class probabilities as bars, where a video track has a timeline."""
    row = segments.row(0, named=True)
    return shares_chart({c: float(row[f"p_{c}"]) for c in classes}, classes, "", axis_title="probability")


def timeline_chart(segments: pl.DataFrame, classes: list[str], duration_s: float | None) -> alt.VConcatChart:
    """Class probabilities over time (step lines) above the winning label as a coloured band."""
    end = float(duration_s) if duration_s else float(segments["end_s"].max())
    x = alt.Scale(domain=[0, end], nice=False)
    colour = alt.Color("class:N", scale=class_scale(classes), title="class")
    lines = (
        alt.Chart(step_points(segments, classes))
        .mark_line(strokeWidth=1.6, interpolate="linear")
        .encode(
            x=alt.X("t:Q", scale=x, axis=alt.Axis(title=None, labels=False, ticks=False)),
            y=alt.Y("p:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
            color=colour,
            detail="run:N",
            order="seq:Q",
        )
        .properties(width=TIMELINE_WIDTH, height=120)
    )
    band = (
        alt.Chart(segments.select("start_s", "end_s", pl.col("label").alias("class"), "confidence"))
        .mark_rect()
        .encode(
            x=alt.X("start_s:Q", scale=x, title="time (s)"),
            x2="end_s:Q",
            color=alt.Color("class:N", scale=class_scale(classes)),  # shared with the lines: one legend
            opacity=alt.Opacity("confidence:Q", scale=alt.Scale(domain=[0, 1], range=[0.35, 1]), legend=None),
        )
        .properties(width=TIMELINE_WIDTH, height=18)
    )
    return alt.vconcat(lines, band, spacing=4).resolve_scale(color="shared")


def shares_chart(shares: dict[str, float], classes: list[str], title: str, axis_title: str = "share of face-time") -> alt.Chart:
    """Horizontal bars: share of face-time each class wins (or, with another ``axis_title``, any 0..1 value per class)."""
    data = pl.DataFrame({"class": list(classes), "share": [float(shares.get(c, 0.0)) for c in classes]})
    return (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("class:N", sort=list(classes), title=None),
            x=alt.X("share:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title=axis_title),
            color=alt.Color("class:N", scale=class_scale(classes), legend=None),
        )
        .properties(width=360, height=max(60, 18 * len(classes)))
    )
