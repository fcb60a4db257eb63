"""Incremental runs: which listed videos still need annotating with this model and config.

A video is done when the latest successful manifest row for (video_id,
model_id, config_hash) carries the same content fingerprint (size plus
mtime/ETag) as the listing now. A changed video is annotated again, and the
query loader then returns only its newest rows (it supersedes the old ones).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from .query import NoAnnotations, scan_videos
from .types import VideoRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkPlan:
    todo: list[VideoRef]
    skipped_done: int  # already annotated, unchanged
    skipped_since: int  # older than --since
    deferred_limit: int  # left for a later run by --limit
    changed: int  # annotated before, content changed since


def annotated_videos(output: str, model_id: str, config_hash: str, storage_options: dict | None = None) -> dict[str, str | None]:
    """video_id -> fingerprint of its latest successful annotation with this model and config."""
    try:
        lf = scan_videos(output, storage_options=storage_options)
    except NoAnnotations:
        return {}
    df = (
        lf.filter((pl.col("status") == "ok") & (pl.col("model_id") == model_id) & (pl.col("config_hash") == config_hash))
        .sort("run_id")
        .group_by("video_id")
        .agg(pl.col("fingerprint").last())
        .collect()
    )
    return dict(zip(df["video_id"].to_list(), df["fingerprint"].to_list()))


def plan_work(
    refs: list[VideoRef],
    done: dict[str, str | None],
    *,
    force: bool = False,
    since: float | None = None,
    limit: int | None = None,
) -> WorkPlan:
    """Filter the listing: skip done+unchanged videos (unless ``force``), videos older than ``since``; cap at ``limit``."""
    todo: list[VideoRef] = []
    skipped_done = skipped_since = changed = 0
    for r in refs:
        if since is not None and r.mtime is not None and r.mtime < since:
            skipped_since += 1
            continue
        if not force and r.video_id in done:
            prev = done[r.video_id]
            if prev is not None and prev == r.fingerprint:
                skipped_done += 1
                continue
            changed += 1
        todo.append(r)
    deferred = 0
    if limit is not None and len(todo) > limit:
        deferred = len(todo) - limit
        todo = todo[:limit]
    return WorkPlan(todo, skipped_done, skipped_since, deferred, changed)


__all__ = ["WorkPlan", "annotated_videos", "plan_work"]
