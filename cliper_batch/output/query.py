"""Query annotation output with Polars: lazy loaders, per-video expression shares, segment search, a summary CLI.

    python -m cliper_batch.output.query summary ./annotations
    python -m cliper_batch.output.query find ./annotations --label happy --min-confidence 0.6

``scan_timelines`` returns only the *current* rows: for every (video, model,
config) the rows of the latest run that annotated that video successfully, so
re-annotated videos never count twice. After a finished run these are exactly the
files under ``timelines/`` (superseded rows live under ``history/``, see
:mod:`cliper_batch.output.current`), so a plain ``pl.scan_parquet`` agrees.
"""
from __future__ import annotations

import argparse
import posixpath
import sys
from collections.abc import Iterable

import polars as pl
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from . import schema
from .layout import HISTORY
from ..uris import filesystem_for, is_local, join

KEY = ("video_id", "model_id", "config_hash")


class NoAnnotations(FileNotFoundError):
    """The folder holds no cliper-batch output (yet)."""


def _files(output: str, table: str, storage_options: dict, history: bool) -> tuple[object, list[str]]:
    fs, root = filesystem_for(output, **storage_options)
    bases = [join(root, table), *([join(root, HISTORY, table)] if history else [])]
    files = sorted(p for b in bases for p in fs.glob(join(b, "**", "*.parquet")) if "/_staging/" not in p)
    return fs, files


def _check_versions(fs, files: list[str]) -> None:
    """Check the schema version of one file per run folder (footers only)."""
    seen: set[str] = set()
    for f in files:
        parent = posixpath.dirname(f)
        if parent in seen:
            continue
        seen.add(parent)
        with fs.open(f, "rb") as fh:
            schema.check_metadata(pq.read_schema(fh).metadata, f)


def _scan(output: str, table: str, check_schema: bool, storage_options: dict | None, history: bool) -> pl.LazyFrame:
    storage_options = storage_options or {}
    fs, files = _files(output, table, storage_options, history)
    if not files:
        raise NoAnnotations(f"no {table} Parquet files under {output!r} (has an annotate run finished there?)")
    if check_schema:
        _check_versions(fs, files)
    # columns added to schema v1 later (videos: kind, error_class, attempt; timelines: kind) read as null from
    # older files. A timelines schema depends on the model's classes: the first file's metadata names them.
    pa_schema = schema.video_schema() if table == schema.VIDEOS else _timeline_schema_of(fs, files[0])
    if is_local(output):
        if pa_schema is None:
            return pl.scan_parquet(files)
        return pl.scan_parquet(files, schema=pl.from_arrow(pa_schema.empty_table()).schema, missing_columns="insert")
    return pl.scan_pyarrow_dataset(pads.dataset(files, schema=pa_schema, filesystem=fs, format="parquet"))


def _timeline_schema_of(fs, path: str):
    """The timelines schema for the classes ``path``'s metadata names (None when it names none: scan as found)."""
    with fs.open(path, "rb") as fh:
        classes = schema.classes_of(pq.read_schema(fh).metadata)
    return None if classes is None else schema.timeline_schema(classes)


def manifest_files(output: str, *, check_schema: bool = True, storage_options: dict | None = None) -> tuple[object, list[str]]:
    """The filesystem and every manifest file of every run (``history/`` included), for readers that go file by file."""
    fs, files = _files(output, schema.VIDEOS, storage_options or {}, history=True)
    if not files:
        raise NoAnnotations(f"no {schema.VIDEOS} Parquet files under {output!r} (has an annotate run finished there?)")
    if check_schema:
        _check_versions(fs, files)
    return fs, files


def scan_videos(
    output: str, *, current_only: bool = False, check_schema: bool = True, storage_options: dict | None = None
) -> pl.LazyFrame:
    """Manifest rows: every row of every run (one per video per run), or ``current_only``: the latest per
    (video, model, config), i.e. the files under ``videos/`` without ``history/``."""
    return _scan(output, schema.VIDEOS, check_schema, storage_options, history=not current_only)


def scan_timelines(
    output: str, *, current_only: bool = True, check_schema: bool = True, storage_options: dict | None = None
) -> pl.LazyFrame:
    """Timeline rows, lazily. ``current_only``: keep the latest successful run per (video, model, config);
    else every row ever written, superseded ones (under ``history/``) included."""
    timelines = _scan(output, schema.TIMELINES, check_schema, storage_options, history=not current_only)
    if not current_only:
        return timelines
    # The files under timelines/ are current after every finished run; the join also keeps a
    # reader right while a run is still committing (or was killed before it retired old rows).
    current = (
        scan_videos(output, check_schema=False, storage_options=storage_options)
        .filter(pl.col("status") == "ok")
        .group_by(list(KEY))
        .agg(pl.col("run_id").max())
    )
    return timelines.join(current, on=[*KEY, "run_id"], how="semi")


def class_columns(lf: pl.LazyFrame) -> list[str]:
    return [c for c in lf.collect_schema().names() if c.startswith("p_")]


def expression_shares(lf: pl.LazyFrame, by: Iterable[str] = ("video_id", "track_id")) -> pl.LazyFrame:
    """Share of time (duration-weighted) each label wins, per group; one column ``share_<label>`` per class.

    A group without duration (a still image's rows: ``start_s == end_s == 0``) shares by rows
    instead: an image track's share of its label is 1, an image's (``by=["video_id"]``) is the
    fraction of its faces with that label. ``seconds`` stays 0 for it.
    """
    by = list(by)
    classes = [c[2:] for c in class_columns(lf)]
    dur = pl.col("end_s") - pl.col("start_s")
    aggs = [(dur * (pl.col("label") == c)).sum().alias(f"share_{c}") for c in classes]
    rows = [(pl.col("label") == c).sum().alias(f"_rows_{c}") for c in classes]
    out = lf.group_by(by).agg(dur.sum().alias("seconds"), pl.len().alias("_rows"), *aggs, *rows)
    timed = pl.col("seconds") > 0
    return out.with_columns([
        pl.when(timed).then(pl.col(f"share_{c}") / pl.col("seconds")).otherwise(pl.col(f"_rows_{c}") / pl.col("_rows"))
        .alias(f"share_{c}") for c in classes
    ]).drop("_rows", *[f"_rows_{c}" for c in classes]).sort(by)


def find_segments(
    lf: pl.LazyFrame,
    *,
    label: str | None = None,
    min_confidence: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    video_id: str | None = None,
) -> pl.LazyFrame:
    """Segments matching every given condition; time bounds select segments overlapping [start_s, end_s]."""
    cond = pl.lit(True)
    if label is not None:
        cond &= pl.col("label") == label
    if min_confidence is not None:
        cond &= pl.col("confidence") >= min_confidence
    if start_s is not None:
        cond &= pl.col("end_s") > start_s
    if end_s is not None:
        cond &= pl.col("start_s") < end_s
    if video_id is not None:
        cond &= pl.col("video_id") == video_id
    return lf.filter(cond).sort(["video_id", "track_id", "start_s"])


def summary(output: str, storage_options: dict | None = None) -> pl.DataFrame:
    """One row per video of the latest run of each: status, duration, segments, dominant label and its share."""
    videos = (
        scan_videos(output, storage_options=storage_options)
        .sort("run_id")
        .group_by("video_id")
        .last()
        .select("video_id", "video_uri", "status", "duration_s", "n_segments", "error_type")
    )
    try:
        lf = scan_timelines(output, storage_options=storage_options)
    except NoAnnotations:
        return videos.sort("video_uri").collect()
    shares = expression_shares(lf, by=["video_id"]).collect()
    share_cols = [c for c in shares.columns if c.startswith("share_")]
    if share_cols:
        shares = shares.with_columns(
            pl.concat_list(share_cols).list.arg_max().alias("_i"),
            pl.max_horizontal(share_cols).alias("dominant_share"),
        ).with_columns(
            pl.col("_i").replace_strict(list(range(len(share_cols))), [c[6:] for c in share_cols]).alias("dominant")
        )
        shares = shares.select("video_id", "dominant", "dominant_share")
    return videos.collect().join(shares, on="video_id", how="left").sort("video_uri")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cliper_batch.output.query", description="Inspect cliper-batch output with Polars.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="one line per video: status, segments, dominant expression")
    s.add_argument("output")
    f = sub.add_parser("find", help="segments by label / confidence / time")
    f.add_argument("output")
    f.add_argument("--label")
    f.add_argument("--min-confidence", type=float)
    f.add_argument("--start-s", type=float)
    f.add_argument("--end-s", type=float)
    f.add_argument("--video-id")
    f.add_argument("--limit", type=int, default=50)
    a = p.parse_args(argv)
    try:
        with pl.Config(tbl_rows=200, tbl_cols=20, fmt_str_lengths=60, tbl_width_chars=200):
            if a.cmd == "summary":
                print(summary(a.output))
            else:
                lf = find_segments(
                    scan_timelines(a.output),
                    label=a.label,
                    min_confidence=a.min_confidence,
                    start_s=a.start_s,
                    end_s=a.end_s,
                    video_id=a.video_id,
                )
                print(lf.select("video_uri", "track_id", "start_s", "end_s", "label", "confidence").head(a.limit).collect())
    except (NoAnnotations, schema.SchemaMismatch) as exc:
        print(f"query: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
