"""Incremental runs and the retry policy: which listed videos this run annotates, and which attempt it is.

For each listed video, against the manifest rows of the same (model_id, config_hash):

* **done**: its latest successful row carries the listing's fingerprint (size plus
  mtime/ETag) -> skipped;
* **failed before, file unchanged** (its latest row failed with the same fingerprint):
  a *data* failure is not retried (the file itself is bad: only a change of the file
  brings it back); a *transient* or *setup* failure is retried while its attempt
  count is below ``max_attempts``; ``retry_failed`` retries every failed video once
  more, whatever its class or count;
* **new or changed** -> annotated (attempt 1).

The failure classes come from :mod:`cliper_batch.failures`. A run plans as the
listing streams (:func:`plan_chunks`): the output's state is read once into a compact
sorted key set (:func:`done_state`, ~30 bytes a video), and each listing chunk is
looked up in it with vectorised binary searches, so the driver's memory is the
state plus one chunk, not the whole listing joined at once.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .. import failures
from ..output import schema
from ..output.query import NoAnnotations, manifest_files, scan_videos
from ..types import VideoRef

log = logging.getLogger(__name__)

STATE_SCHEMA = {
    "video_id": pl.String,
    "ever_ok": pl.Boolean,  # some run annotated it successfully
    "ok_fingerprint": pl.String,  # fingerprint of the latest successful row
    "last_status": pl.String,  # status of the latest row
    "last_fingerprint": pl.String,
    "last_class": pl.String,  # failure class of the latest row (null when ok)
    "last_attempt": pl.Int32,
}


@dataclass(frozen=True)
class WorkPlan:
    todo: list[VideoRef]
    skipped_done: int  # already annotated, unchanged
    skipped_since: int  # older than --since
    deferred_limit: int  # left for a later run by --limit
    changed: int  # annotated before, content changed since
    skipped_data: int = 0  # failed before as bad data, file unchanged: not retried
    skipped_gave_up: int = 0  # failed before max_attempts times (transient/setup), file unchanged
    retried: int = 0  # failed before, tried again this run
    attempts: dict[str, int] = field(default_factory=dict)  # video_id -> attempt number when > 1

    @property
    def skipped_failed(self) -> int:
        return self.skipped_data + self.skipped_gave_up


def manifest_state(output: str, model_id: str, config_hash: str, storage_options: dict | None = None) -> pl.DataFrame:
    """Per video: latest successful fingerprint and the latest row's status, fingerprint, class and attempt."""
    try:
        lf = scan_videos(output, storage_options=storage_options)
    except NoAnnotations:
        return pl.DataFrame(schema=STATE_SCHEMA)
    cls = _failure_class()
    return (
        lf.filter((pl.col("model_id") == model_id) & (pl.col("config_hash") == config_hash))
        .select("video_id", "run_id", "status", "fingerprint", cls.alias("cls"), pl.col("attempt").fill_null(1))
        .sort("run_id")
        .group_by("video_id")
        .agg(
            (pl.col("status") == "ok").any().alias("ever_ok"),
            pl.col("fingerprint").filter(pl.col("status") == "ok").last().alias("ok_fingerprint"),
            pl.col("status").last().alias("last_status"),
            pl.col("fingerprint").last().alias("last_fingerprint"),
            pl.when(pl.col("status") != "ok").then(pl.col("cls")).last().alias("last_class"),
            pl.col("attempt").last().cast(pl.Int32).alias("last_attempt"),
        )
        .collect()
        .select(list(STATE_SCHEMA))
    )


# The done set, compact: per video the state above with its id and fingerprints as 64-bit hashes (Polars'
# seeded hash, the same on the listing's side in this process), sorted by key. ~20 bytes a video, where
# the string state (STATE_SCHEMA) takes several times that: the diff of each listing chunk looks its
# videos up here (a binary search), so the driver never joins the whole listing at once. ``last_data``:
# the latest row failed as bad data (the only use of its failure class).
COMPACT_SCHEMA = {
    "key": pl.UInt64,
    "ever_ok": pl.Boolean,
    "ok_fp": pl.UInt64,
    "last_failed": pl.Boolean,
    "last_fp": pl.UInt64,
    "last_data": pl.Boolean,
    "last_attempt": pl.Int32,
}


def _key(col: pl.Expr) -> pl.Expr:
    return col.hash(seed=0)


def _fp(col: pl.Expr) -> pl.Expr:
    """A fingerprint's hash; null stays null (an unknown fingerprint matches nothing but another null)."""
    return pl.when(col.is_null()).then(None).otherwise(col.hash(seed=0))


def _failure_class() -> pl.Expr:
    """A manifest row's failure class: ``error_class``, or for rows written before that column, from ``error_type``."""
    return pl.col("error_class").fill_null(
        pl.col("error_type").replace_strict(failures.ERROR_CLASSES, default=failures.TRANSIENT, return_dtype=pl.String)
    )


@dataclass(frozen=True)
class DoneState:
    """The output's state per (hashed) video for one (model, config): :data:`COMPACT_SCHEMA`, sorted by key."""

    df: pl.DataFrame

    @property
    def keys(self) -> np.ndarray:
        return self.df["key"].to_numpy()

    @classmethod
    def empty(cls) -> "DoneState":
        return cls(pl.DataFrame(schema=COMPACT_SCHEMA))

    @classmethod
    def from_state(cls, state: pl.DataFrame) -> "DoneState":
        """From a :func:`manifest_state` frame (strings)."""
        return cls(
            state.select(
                _key(pl.col("video_id")).alias("key"),
                pl.col("ever_ok"),
                _fp(pl.col("ok_fingerprint")).alias("ok_fp"),
                (pl.col("last_status") == "failed").alias("last_failed"),
                _fp(pl.col("last_fingerprint")).alias("last_fp"),
                (pl.col("last_class") == failures.DATA).fill_null(False).alias("last_data"),
                pl.col("last_attempt").cast(pl.Int32),
            ).sort("key")
        )


# manifest columns the done set reads (error_class and attempt are absent from files of older runs: null)
_READ = ("video_id", "model_id", "config_hash", "run_id", "status", "fingerprint", "error_type", "error_class", "attempt")
_LATER_COLUMNS = ("error_class", "attempt")


_BATCH_ROWS = 200_000  # manifest rows read before they are reduced to compact columns (a few files of strings)


def _read_manifest_file(fs, path: str) -> pa.Table:
    """The columns the done set reads from one manifest file; those its run predates are null."""
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        names = set(pf.schema_arrow.names)
        table = pf.read(columns=[c for c in _READ if c in names])
    for c in _LATER_COLUMNS:
        if c not in names:
            table = table.append_column(c, pa.nulls(table.num_rows, schema.video_schema().field(c).type))
    return table.select(list(_READ))


def _compact_rows(tables: list[pa.Table], model_id: str, config_hash: str, runs: dict[str, int]) -> dict[str, np.ndarray] | None:
    """Manifest rows of (model, config) as compact numpy columns (run ids as codes into ``runs``)."""
    df = pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))
    df = df.filter((pl.col("model_id") == model_id) & (pl.col("config_hash") == config_hash))
    if df.is_empty():
        return None
    for run in df["run_id"].unique().to_list():
        runs.setdefault(run, len(runs))
    ok = pl.col("status") == "ok"
    df = df.select(
        _key(pl.col("video_id")).alias("key"),
        pl.col("run_id").replace_strict(runs, return_dtype=pl.UInt32).alias("run"),
        ok.alias("ok"),
        (pl.col("status") == "failed").alias("failed"),
        pl.col("fingerprint").hash(seed=0).alias("fp"),
        pl.col("fingerprint").is_not_null().alias("has_fp"),
        ((_failure_class() == failures.DATA) & ~ok).fill_null(False).alias("data"),
        pl.col("attempt").fill_null(1).cast(pl.Int32),
    )
    return {c: df[c].to_numpy() for c in df.columns}


def _compact_batches(fs, files: list[str], model_id: str, config_hash: str, runs: dict[str, int]) -> Iterator[dict]:
    """The manifest files, read a few at a time (about :data:`_BATCH_ROWS` rows), as compact numpy columns."""
    tables, rows = [], 0
    for i, path in enumerate(files):
        tables.append(_read_manifest_file(fs, path))
        rows += tables[-1].num_rows
        if rows >= _BATCH_ROWS or i == len(files) - 1:
            part = _compact_rows(tables, model_id, config_hash, runs)
            tables, rows = [], 0
            if part is not None:
                yield part


def _latest_per_video(columns: dict[str, np.ndarray], runs: dict[str, int]) -> pl.DataFrame:
    """Reduce manifest rows (numpy columns) to :data:`COMPACT_SCHEMA`: per key, its rows in run order, the latest."""
    rank = np.empty(len(runs), dtype=np.uint32)  # run code -> rank of the run id (run ids sort by time)
    rank[[runs[r] for r in sorted(runs)]] = np.arange(len(runs), dtype=np.uint32)
    order = np.lexsort((rank[columns.pop("run")], columns["key"]))
    for c in list(columns):  # one column at a time: the peak is one column more than the rows
        columns[c] = columns[c][order]
    del order
    key, n = columns["key"], len(columns["key"])
    last = np.flatnonzero(np.append(key[1:] != key[:-1], True))  # each video's latest row
    first = np.concatenate(([0], last[:-1] + 1))
    ok, fp, has_fp = columns["ok"], columns["fp"], columns["has_fp"]
    last_ok = np.maximum.reduceat(np.where(ok, np.arange(n), -1), first)  # each video's latest ok row, or -1
    at = np.maximum(last_ok, 0)
    ok_fp = pa.array(fp[at], mask=(last_ok < 0) | ~has_fp[at])
    out = pa.table({
        "key": key[last],
        "ever_ok": last_ok >= 0,
        "ok_fp": ok_fp,
        "last_failed": columns["failed"][last],
        "last_fp": pa.array(fp[last], mask=~has_fp[last]),
        "last_data": columns["data"][last],
        "last_attempt": columns["attempt"][last],
    })
    return pl.from_arrow(out)


def done_state(output: str, model_id: str, config_hash: str, storage_options: dict | None = None) -> DoneState:
    """:func:`manifest_state`, compact (:class:`DoneState`): strings never held for more than a few manifest files.

    The manifest is read a few files at a time into numpy columns of hashes, run codes and flags (~28 bytes a row),
    then ordered by (video, run) and reduced to each video's latest row with numpy: the driver's peak is a
    small multiple of the rows' compact size, not of the manifest's strings.
    """
    try:
        fs, files = manifest_files(output, storage_options=storage_options)
    except NoAnnotations:
        return DoneState.empty()
    runs: dict[str, int] = {}
    parts = list(_compact_batches(fs, files, model_id, config_hash, runs))
    if not parts:
        return DoneState.empty()
    columns = {c: np.concatenate([p.pop(c) for p in parts]) for c in list(parts[0])}
    del parts
    return DoneState(_latest_per_video(columns, runs).select(list(COMPACT_SCHEMA)))


def plan_work(
    refs: list[VideoRef],
    state: pl.DataFrame | DoneState | None = None,
    *,
    force: bool = False,
    since: float | None = None,
    limit: int | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
) -> WorkPlan:
    """Filter the listing (see the module docstring); ``force`` redoes every listed video; cap at ``limit``.

    ``state``: a :func:`manifest_state` frame or a :class:`DoneState`. A run plans chunk by chunk
    (:func:`plan_chunks`); this is one chunk.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if state is None:
        state = DoneState.empty()
    elif isinstance(state, pl.DataFrame):
        state = DoneState.from_state(state)
    listing = pl.DataFrame(
        {
            "i": pl.Series(range(len(refs)), dtype=pl.Int64),
            "video_id": [r.video_id for r in refs],
            "fingerprint": [r.fingerprint for r in refs],
            "mtime": [r.mtime for r in refs],
        },
        schema={"i": pl.Int64, "video_id": pl.String, "fingerprint": pl.String, "mtime": pl.Float64},
    ).select("i", _key(pl.col("video_id")).alias("key"), _fp(pl.col("fingerprint")).alias("fp"), "mtime")
    # each listed video's state row: a binary search in the sorted keys (no join of the whole state)
    keys, wanted = state.keys, listing["key"].to_numpy()
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    found = (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), dtype=bool)
    looked_up = state.df.drop("key")[at] if len(keys) else pl.DataFrame(schema={k: v for k, v in COMPACT_SCHEMA.items() if k != "key"})
    if len(keys) and not found.all():
        looked_up = looked_up.with_columns(pl.when(pl.Series(found)).then(pl.col(c)).alias(c) for c in looked_up.columns)
    elif not len(keys):
        looked_up = pl.DataFrame({c: pl.Series([None] * len(refs), dtype=t) for c, t in COMPACT_SCHEMA.items() if c != "key"})
    fp = pl.col("fp")
    old = pl.col("mtime").is_not_null() & (pl.col("mtime") < since) if since is not None else pl.lit(False)
    done = pl.lit(not force) & pl.col("ok_fp").is_not_null() & (pl.col("ok_fp") == fp).fill_null(False)
    failed_same = pl.col("last_failed").fill_null(False) & pl.col("last_fp").eq_missing(fp)
    blocked = (
        pl.lit(not (force or retry_failed))
        & failed_same
        & (pl.col("last_data") | (pl.col("last_attempt") >= max_attempts)).fill_null(False)
    )
    d = (
        pl.concat([listing, looked_up], how="horizontal")
        .with_columns(
            old.alias("old"),
            done.alias("done"),
            blocked.alias("blocked"),
            pl.col("last_data").fill_null(False).alias("data"),
            failed_same.alias("failed_same"),
            pl.col("ever_ok").fill_null(False).alias("had_ok"),
            pl.when(failed_same).then(pl.col("last_attempt").fill_null(1) + 1).otherwise(1).alias("attempt"),
        )
        .with_columns(
            pl.when(pl.col("old")).then(pl.lit("since"))
            .when(pl.col("done")).then(pl.lit("done"))
            .when(pl.col("blocked") & pl.col("data")).then(pl.lit("data"))
            .when(pl.col("blocked")).then(pl.lit("gave_up"))
            .otherwise(pl.lit("todo"))
            .alias("decision")
        )
    )
    counts = dict(d.group_by("decision").len().iter_rows())
    todo = d.filter(pl.col("decision") == "todo")
    deferred = 0
    if limit is not None and todo.height > limit:
        deferred = todo.height - limit
        todo = todo.head(limit)
    retry = todo.filter(pl.col("failed_same"))
    return WorkPlan(
        todo=[refs[i] for i in todo["i"].to_list()],
        skipped_done=counts.get("done", 0),
        skipped_since=counts.get("since", 0),
        deferred_limit=deferred,
        changed=0 if force else int((todo["had_ok"] & ~todo["failed_same"]).sum()),
        skipped_data=counts.get("data", 0),
        skipped_gave_up=counts.get("gave_up", 0),
        retried=retry.height,
        attempts={refs[i].video_id: a for i, a in zip(retry["i"].to_list(), retry["attempt"].to_list())},
    )


# WorkPlan's counts: what a run record's "plan" holds
PLAN_COUNTS = ("skipped_done", "skipped_since", "deferred_limit", "changed", "skipped_data", "skipped_gave_up", "retried")


class PlanTotals:
    """A streamed plan's counts (:data:`PLAN_COUNTS`, plus ``listed`` and ``todo``), summed chunk by chunk."""

    def __init__(self):
        self.listed = self.todo = 0
        for k in PLAN_COUNTS:
            setattr(self, k, 0)

    def add(self, listed: int, plan: WorkPlan) -> None:
        self.listed += listed
        self.todo += len(plan.todo)
        for k in PLAN_COUNTS:
            setattr(self, k, getattr(self, k) + getattr(plan, k))

    @property
    def skipped_failed(self) -> int:
        return self.skipped_data + self.skipped_gave_up

    def record(self) -> dict:
        """The run record's ``plan``: the counts a whole-corpus :class:`WorkPlan` gave."""
        return {k: getattr(self, k) for k in PLAN_COUNTS}


def plan_chunks(
    chunks: Iterable[list[VideoRef]],
    state: DoneState,
    totals: PlanTotals,
    *,
    limit: int | None = None,
    **policy,
) -> Iterator[WorkPlan]:
    """:func:`plan_work` per listing chunk, ``limit`` counted across chunks; ``totals`` grows as they stream."""
    for refs in chunks:
        left = None if limit is None else max(limit - totals.todo, 0)
        plan = plan_work(refs, state, limit=left, **policy)
        totals.add(len(refs), plan)
        yield plan


__all__ = ["COMPACT_SCHEMA", "STATE_SCHEMA", "DoneState", "PlanTotals", "WorkPlan", "done_state", "manifest_state", "plan_chunks", "plan_work"]
