"""What the report shows, read from an annotation output with lazy Polars queries in bounded memory.

Everything corpus-wide (counts, failures, expression shares, top videos per
label, the segment search list) is an aggregate computed by a lazy query whose
result is bounded by the number of classes, error types or a given ``top``/
``limit`` - never by the number of videos or segments. Only the chosen detail
videos have their timeline rows collected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl

from ..output import query
from ..uris import InvalidURI, filesystem_for, join, video_id_for


def collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Run a query on Polars' streaming engine: Parquet is read in batches, so memory follows the result, not the input."""
    return lf.collect(engine="streaming")


class ReportInputError(ValueError):
    """The output folder (or a requested video) cannot be reported on; the message says why."""


@dataclass(frozen=True)
class RunInfo:
    """One finished annotate run, from ``runs/<run_id>.json``."""

    run_id: str
    started_at: str | None
    wall_s: float | None
    videos_total: int
    videos_ok: int
    videos_failed: int
    videos_skipped: int
    video_seconds: float
    video_seconds_per_s: float | None
    crops_per_s: float | None
    model_id: str | None
    model_spec: str | None
    score_backend: str
    worker: str | None
    input: str | None


@dataclass(frozen=True)
class FailureGroup:
    error_type: str
    count: int
    examples: list[tuple[str, str]]  # (video_uri, error message)


@dataclass(frozen=True)
class TopVideo:
    video_id: str
    video_uri: str
    share: float
    seconds: float


@dataclass(frozen=True)
class CorpusSummary:
    """Corpus-wide numbers over the latest manifest row of every video."""

    n_videos: int  # items: videos and images
    n_ok: int
    n_failed: int
    video_seconds: float
    face_seconds: float
    n_segments: int
    classes: list[str]
    shares: dict[str, float]  # label -> share of face-time (all current segments, duration-weighted)
    top_videos: dict[str, list[TopVideo]]  # label -> videos with the largest share of it
    failures: list[FailureGroup]
    n_images: int = 0  # of n_videos, still images (kind == "image")


@dataclass(frozen=True)
class TrackDetail:
    track_id: int
    segments: pl.DataFrame  # start_s, end_s, label, confidence, p_<class>..., face box
    box: tuple[float, float, float, float] | None  # median normalised (x0, y0, x1, y1)
    thumb_time_s: float  # where the thumbnail is cut
    shares: dict[str, float]
    first_s: float
    last_s: float


@dataclass(frozen=True)
class VideoDetail:
    video_id: str
    video_uri: str
    status: str
    error_type: str | None
    error: str | None
    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    run_id: str
    model_id: str
    tracks: list[TrackDetail] = field(default_factory=list)
    kind: str = "video"  # video | image

    @property
    def is_image(self) -> bool:
        return self.kind == "image"


def load_runs(output: str, storage_options: dict | None = None) -> list[RunInfo]:
    """Every finished run's record, oldest first. Raises :class:`ReportInputError` when there is none."""
    try:
        fs, root = filesystem_for(output, **(storage_options or {}))
    except InvalidURI as exc:
        raise ReportInputError(str(exc)) from exc
    if not fs.exists(root):
        raise ReportInputError(f"{output}: no such folder")
    paths = sorted(fs.glob(join(root, "runs", "*.json")))
    if not paths:
        raise ReportInputError(
            f"{output}: no finished annotate run here (no runs/<run_id>.json); run `cliper-annotate --output {output} ...` first"
        )
    runs = []
    for p in paths:
        try:
            with fs.open(p, "r") as fh:
                rec = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ReportInputError(f"{p}: unreadable run record ({type(exc).__name__}: {exc})") from exc
        runs.append(_run_info(rec, p))
    return runs


def _run_info(rec: dict, path: str) -> RunInfo:
    s = rec.get("summary") or {}
    scoring = rec.get("scoring") or {}
    if not isinstance(s, dict) or "run_id" not in rec:
        raise ReportInputError(f"{path}: not a cliper-batch run record (no run_id/summary)")
    backends = scoring.get("backends") or []
    return RunInfo(
        run_id=str(rec["run_id"]),
        started_at=rec.get("started_at"),
        wall_s=s.get("wall_s"),
        videos_total=int(s.get("videos_total") or 0),
        videos_ok=int(s.get("videos_ok") or 0),
        videos_failed=int(s.get("videos_failed") or 0),
        videos_skipped=int(s.get("videos_skipped") or 0),
        video_seconds=float(s.get("video_seconds") or 0.0),
        video_seconds_per_s=rec.get("video_seconds_per_s"),
        crops_per_s=rec.get("crops_per_s"),
        model_id=rec.get("model_id"),
        model_spec=rec.get("model_spec"),
        score_backend=", ".join(backends) or str(s.get("score_backend") or "-"),
        worker=(rec.get("resources") or {}).get("worker"),
        input=rec.get("input"),
    )


class OutputTables:
    """The output's two tables as lazy frames: the latest manifest row per video, and the current timeline rows."""

    def __init__(self, output: str, storage_options: dict | None = None):
        self.output = output
        try:
            self.manifest = (
                query.scan_videos(output, storage_options=storage_options).sort("run_id").group_by("video_id").last()
            )
        except (query.NoAnnotations, query.schema.SchemaMismatch) as exc:
            raise ReportInputError(str(exc)) from exc
        try:
            self.timelines: pl.LazyFrame | None = query.scan_timelines(output, storage_options=storage_options)
            self.classes = [c[2:] for c in query.class_columns(self.timelines)]
        except query.NoAnnotations:  # every video failed: the report still shows runs and failures
            self.timelines, self.classes = None, []

    def resolve_video(self, ref: str) -> str:
        """A ``--video`` argument (a video id, or the path/URL the video was annotated under) -> its video id."""
        ids = [ref]
        try:
            ids.append(video_id_for(ref))
        except InvalidURI:
            pass
        hit = collect(self.manifest.filter(pl.col("video_id").is_in(ids)).select("video_id"))
        if hit.height:
            return hit["video_id"][0]
        raise ReportInputError(
            f"{ref!r} is neither a video id nor a video annotated in {self.output}"
            + same_name_hint(self.manifest, ref)
        )


def same_name_hint(manifest: pl.LazyFrame, ref: str) -> str:
    """Suggest annotated videos whose file name equals ``ref``'s (the usual cause: the file moved)."""
    name = ref.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        return ""
    same = collect(manifest.filter(pl.col("video_uri").str.ends_with("/" + name)).select("video_id", "video_uri").head(5))
    if not same.height:
        return ""
    lines = "".join(f"\n  {r['video_id']}  {r['video_uri']}" for r in same.iter_rows(named=True))
    return f"; annotated videos with the same file name (did it move since it was annotated?):{lines}"


def corpus_summary(tables: OutputTables, top: int = 5, failure_examples: int = 3) -> CorpusSummary:
    m = tables.manifest
    counts = collect(m.select(
        pl.len().alias("n"),
        (pl.col("status") == "ok").sum().alias("ok"),
        (pl.col("status") != "ok").sum().alias("failed"),
        pl.col("duration_s").filter(pl.col("status") == "ok").sum().alias("video_seconds"),
        (pl.col("kind") == "image").sum().alias("images"),  # null (files before the column) = video
    )).row(0, named=True)
    fails = collect(
        m.filter(pl.col("status") != "ok")
        .with_columns(pl.col("error_type").fill_null("Unknown"), pl.col("error").fill_null(""))
        .group_by("error_type")
        .agg(
            pl.len().alias("count"),
            pl.col("video_uri").sort().head(failure_examples).alias("uris"),
            pl.col("error").sort_by("video_uri").head(failure_examples).alias("errors"),
        )
        .sort(["count", "error_type"], descending=[True, False])
    )
    failures = [
        FailureGroup(r["error_type"], int(r["count"]), list(zip(r["uris"], r["errors"]))) for r in fails.iter_rows(named=True)
    ]
    shares: dict[str, float] = {}
    top_videos: dict[str, list[TopVideo]] = {}
    face_seconds, n_segments = 0.0, 0
    if tables.timelines is not None:
        lf = tables.timelines
        dur = pl.col("end_s") - pl.col("start_s")
        by_label = collect(lf.group_by("label").agg(dur.sum().alias("s"), pl.len().alias("n")))
        face_seconds = float(by_label["s"].sum() or 0.0)
        n_segments = int(by_label["n"].sum() or 0)
        got = dict(zip(by_label["label"], by_label["s"]))
        shares = {c: (got.get(c, 0.0) / face_seconds if face_seconds else 0.0) for c in tables.classes}
        top_videos = _top_videos(tables, top)
    return CorpusSummary(
        n_videos=int(counts["n"]),
        n_ok=int(counts["ok"]),
        n_failed=int(counts["failed"]),
        video_seconds=float(counts["video_seconds"] or 0.0),
        face_seconds=face_seconds,
        n_segments=n_segments,
        classes=list(tables.classes),
        shares=shares,
        top_videos=top_videos,
        failures=failures,
        n_images=int(counts["images"] or 0),
    )


def _top_videos(tables: OutputTables, top: int) -> dict[str, list[TopVideo]]:
    """Per label, the ``top`` videos where it wins the largest share of face-time (ties: longer, then by name).

    Grouped by ``video_id`` alone (the URI column is read only for the winners).
    """
    classes = tables.classes
    per_video = query.expression_shares(tables.timelines, by=["video_id"])
    share_cols = [f"share_{c}" for c in classes]
    best = collect(
        per_video.unpivot(index=["video_id", "seconds"], on=share_cols, variable_name="col", value_name="share")
        .filter(pl.col("share") > 0)
        .sort(["share", "seconds", "video_id"], descending=[True, True, False])
        .group_by("col")
        .head(top)
    )
    uris = collect(tables.manifest.filter(pl.col("video_id").is_in(best["video_id"].unique().implode()))
                   .select("video_id", "video_uri"))
    best = best.join(uris, on="video_id", how="left")
    out: dict[str, list[TopVideo]] = {c: [] for c in classes}
    for r in best.sort(["col", "share", "seconds", "video_uri"], descending=[False, True, True, False]).iter_rows(named=True):
        out[r["col"][len("share_"):]].append(TopVideo(r["video_id"], r["video_uri"], float(r["share"]), float(r["seconds"])))
    return out


def top_segments(tables: OutputTables, per_label: int = 200) -> pl.DataFrame:
    """The ``per_label`` most confident segments of each label (the report's search list).

    Two passes so that only two narrow columns are aggregated over the whole
    table: each label's ``per_label``-th best confidence first, then the rows
    at or above it.
    """
    cols = ["video_id", "video_uri", "track_id", "start_s", "end_s", "label", "confidence"]
    if tables.timelines is None or per_label == 0:
        return pl.DataFrame(schema={c: pl.Utf8 for c in cols})
    lf = tables.timelines
    floor = collect(lf.group_by("label").agg(pl.col("confidence").top_k(per_label).min().alias("_floor")))
    best = collect(
        lf.join(floor.lazy(), on="label").filter(pl.col("confidence") >= pl.col("_floor")).select(cols)
    )
    return (
        best.sort(["confidence", "video_uri", "track_id", "start_s"], descending=[True, False, False, False])
        .group_by("label", maintain_order=True)
        .head(per_label)
        .sort(["label", "confidence"], descending=[False, True])
        .select(cols)
    )


def video_table(tables: OutputTables, limit: int) -> tuple[pl.DataFrame, int]:
    """Up to ``limit`` videos (failed first, then by name) with their dominant label; and the total count."""
    total = int(collect(tables.manifest.select(pl.len())).item())
    rows = tables.manifest.select(
        "video_id", "video_uri", pl.col("kind").fill_null("video"), "status", "error_type", "duration_s", "n_tracks",
        "n_segments",
    ).sort([pl.col("status") == "ok", "video_uri"]).head(limit)
    if tables.timelines is not None and tables.classes:
        chosen = rows.select("video_id")
        shares = query.expression_shares(tables.timelines.join(chosen, on="video_id", how="semi"), by=["video_id"])
        share_cols = [f"share_{c}" for c in tables.classes]
        dom = shares.select(
            "video_id",
            pl.concat_list(share_cols).list.arg_max().replace_strict(list(range(len(share_cols))), tables.classes,
                                                                      return_dtype=pl.Utf8).alias("dominant"),
            pl.max_horizontal(share_cols).alias("dominant_share"),
        )
        rows = rows.join(dom, on="video_id", how="left")
    else:
        rows = rows.with_columns(pl.lit(None, pl.Utf8).alias("dominant"), pl.lit(None, pl.Float64).alias("dominant_share"))
    return collect(rows), total


def choose_videos(tables: OutputTables, summary: CorpusSummary, videos: list[str], limit: int) -> list[str]:
    """The detail set: the ``--video`` ones if given, else the top videos of each label, round robin, up to ``limit``.

    With no timelines at all (every video failed) the first failed videos are shown.
    """
    if videos:
        ids = []
        for v in videos:
            vid = tables.resolve_video(v)
            if vid not in ids:
                ids.append(vid)
        return ids
    ids = []
    lists = [summary.top_videos.get(c, []) for c in summary.classes]
    for rank in range(max((len(x) for x in lists), default=0)):
        for lst in lists:
            if rank < len(lst) and lst[rank].video_id not in ids and len(ids) < limit:
                ids.append(lst[rank].video_id)
    if len(ids) < limit:  # failed videos are worth a look too
        more = collect(
            tables.manifest.filter(~pl.col("video_id").is_in(ids))
            .sort([pl.col("status") == "ok", "video_uri"])
            .select("video_id")
            .head(limit - len(ids))
        )
        ids += more["video_id"].to_list()
    return ids


def video_details(tables: OutputTables, video_ids: list[str]) -> list[VideoDetail]:
    """Manifest row and per-track timelines of each chosen video, in the given order."""
    if not video_ids:
        return []
    man = {r["video_id"]: r for r in collect(tables.manifest.filter(pl.col("video_id").is_in(video_ids))).iter_rows(named=True)}
    rows = (
        collect(tables.timelines.filter(pl.col("video_id").is_in(video_ids))).sort(["video_id", "track_id", "start_s"])
        if tables.timelines is not None
        else None
    )
    out = []
    for vid in video_ids:
        m = man[vid]
        tracks = []
        if rows is not None and m["status"] == "ok":
            mine = rows.filter(pl.col("video_id") == vid)
            for (tid,), seg in mine.group_by("track_id", maintain_order=True):
                tracks.append(_track(int(tid), seg, tables.classes))
        out.append(
            VideoDetail(
                video_id=vid, video_uri=m["video_uri"], status=m["status"], error_type=m["error_type"], error=m["error"],
                duration_s=m["duration_s"], fps=m["fps"], width=m["width"], height=m["height"], run_id=m["run_id"],
                model_id=m["model_id"], tracks=tracks, kind=m.get("kind") or "video",
            )
        )
    return out


def _track(track_id: int, seg: pl.DataFrame, classes: list[str]) -> TrackDetail:
    box_cols = ["face_x0", "face_y0", "face_x1", "face_y1"]
    boxes = seg.select(box_cols).drop_nulls()
    box = tuple(float(boxes[c].median()) for c in box_cols) if boxes.height else None
    mid = seg.row(seg.height // 2, named=True)  # the middle segment of the track
    dur = seg["end_s"] - seg["start_s"]
    if not float(dur.sum()) > 0:  # a still image's track: no duration, its rows count (query.expression_shares)
        dur = pl.Series([1.0] * seg.height)
    total = float(dur.sum()) or 1.0
    shares = {c: float(dur.filter(seg["label"] == c).sum()) / total for c in classes}
    return TrackDetail(
        track_id=track_id,
        segments=seg,
        box=box,
        thumb_time_s=(mid["start_s"] + mid["end_s"]) / 2,
        shares=shares,
        first_s=float(seg["start_s"].min()),
        last_s=float(seg["end_s"].max()),
    )
