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

The failure classes come from :mod:`cliper_batch.failures`. The plan is computed
with Polars joins, not a Python loop over the manifest, so a million-video listing
plans in seconds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import polars as pl

from . import failures
from .query import NoAnnotations, scan_videos
from .types import VideoRef

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
    cls = pl.col("error_class").fill_null(
        pl.col("error_type").replace_strict(failures.ERROR_CLASSES, default=failures.TRANSIENT, return_dtype=pl.String)
    )
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


def plan_work(
    refs: list[VideoRef],
    state: pl.DataFrame | None = None,
    *,
    force: bool = False,
    since: float | None = None,
    limit: int | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
) -> WorkPlan:
    """Filter the listing (see the module docstring); ``force`` redoes every listed video; cap at ``limit``."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    state = pl.DataFrame(schema=STATE_SCHEMA) if state is None else state
    listing = pl.DataFrame(
        {
            "i": pl.Series(range(len(refs)), dtype=pl.Int64),
            "video_id": [r.video_id for r in refs],
            "fingerprint": [r.fingerprint for r in refs],
            "mtime": [r.mtime for r in refs],
        },
        schema={"i": pl.Int64, "video_id": pl.String, "fingerprint": pl.String, "mtime": pl.Float64},
    )
    fp = pl.col("fingerprint")
    old = pl.col("mtime").is_not_null() & (pl.col("mtime") < since) if since is not None else pl.lit(False)
    done = pl.lit(not force) & pl.col("ok_fingerprint").is_not_null() & (pl.col("ok_fingerprint") == fp).fill_null(False)
    failed_same = (pl.col("last_status") == "failed").fill_null(False) & pl.col("last_fingerprint").eq_missing(fp)
    blocked = (
        pl.lit(not (force or retry_failed))
        & failed_same
        & ((pl.col("last_class") == failures.DATA) | (pl.col("last_attempt") >= max_attempts)).fill_null(False)
    )
    d = (
        listing.join(state, on="video_id", how="left")
        .with_columns(
            old.alias("old"),
            done.alias("done"),
            blocked.alias("blocked"),
            (pl.col("last_class") == failures.DATA).fill_null(False).alias("data"),
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
        .sort("i")
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
        attempts=dict(zip(retry["video_id"].to_list(), retry["attempt"].to_list())),
    )


__all__ = ["STATE_SCHEMA", "WorkPlan", "manifest_state", "plan_work"]
