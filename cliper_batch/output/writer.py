"""The parts of one run: complete videos (from :class:`~.regroup.Regrouper`) committed as numbered Parquet parts.

A part is written to ``_staging`` and then moved into place, so a reader that
globs ``timelines/**/*.parquet`` never sees a half-written file. A video's rows
are committed only together with its manifest row, in the same part number
(timelines first), and only once every one of its segments has arrived. Closing
the writer moves the rows this run superseded to ``history/`` (:mod:`.current`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from .. import schema
from ..types import VideoRef
from ..uris import filesystem_for
from . import current
from .layout import TIMELINES, VIDEOS, PartName, commit_table, current_dir, drop_staging
from .regroup import Regrouper, WriterStats

log = logging.getLogger(__name__)


class OutputWriter:
    """Driver-side sink for scored batches.

    ``with OutputWriter(...) as w: w.add_batch(...); stats = w.close()``. Leaving the
    ``with`` block without :meth:`close` (an exception) commits the complete videos
    and drops the unfinished ones unrecorded, as :meth:`close` with
    ``lost_error_type=None`` does.
    """

    def __init__(
        self,
        output_uri: str,
        classes: tuple[str, ...],
        *,
        run_id: str,
        model_id: str,
        config_hash: str,
        rows_per_part: int = 200_000,
        videos_per_part: int = 2_000,
        seconds_per_part: float = 120.0,
        storage_options: dict | None = None,
        expected: list[VideoRef] | None = None,
        attempts: dict[str, int] | None = None,
        on_commit: Callable[[float, int], None] | None = None,
    ):
        """``on_commit(seconds, videos)`` is called after each committed part (the driver's metrics)."""
        self.on_commit = on_commit
        self.fs, self.root = filesystem_for(output_uri, **(storage_options or {}))
        self.output_uri = output_uri
        self.run_id = run_id
        self.rows_per_part, self.videos_per_part, self.seconds_per_part = rows_per_part, videos_per_part, seconds_per_part
        self.timeline_schema = schema.timeline_schema(tuple(classes))
        self.video_schema = schema.video_schema()
        self.regroup = Regrouper(
            classes, model_id=model_id, config_hash=config_hash, run_id=run_id, expected=expected, attempts=attempts
        )
        self._last_flush = time.monotonic()
        self._part = 0
        self._closed: WriterStats | None = None
        self.retired: current.Retirement | None = None

    @property
    def stats(self) -> WriterStats:
        return self.regroup.stats

    def add_batch(self, batch: dict[str, np.ndarray]) -> None:
        self.regroup.add_batch(batch)
        if self._should_flush():
            self.flush()

    def _should_flush(self) -> bool:
        r = self.regroup
        return (
            len(r.ready_timelines) >= self.rows_per_part
            or len(r.ready_videos) >= self.videos_per_part
            or bool(r.ready_videos and time.monotonic() - self._last_flush > self.seconds_per_part)
        )

    def flush(self) -> None:
        """Commit every complete video so far as one part (timelines first, then the manifest)."""
        self._last_flush = time.monotonic()
        if not self.regroup.ready_videos:
            return
        t0 = time.perf_counter()
        timelines, videos = self.regroup.take()
        name = PartName(self._part, self._part).name()
        if timelines:
            tl = pa.Table.from_pylist(timelines, schema=self.timeline_schema)
            commit_table(self.fs, self.root, self.run_id, tl, f"{current_dir(self.root, TIMELINES, self.run_id)}/{name}")
        vt = pa.Table.from_pylist(videos, schema=self.video_schema)
        commit_table(self.fs, self.root, self.run_id, vt, f"{current_dir(self.root, VIDEOS, self.run_id)}/{name}")
        self._part += 1
        self.stats.parts += 1
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - t0, len(videos))

    def close(self, *, lost_error_type: str | None = "WorkerLost", lost_reason: str = "") -> WriterStats:
        """Account for unfinished videos (see :meth:`Regrouper.finish`), flush, retire superseded rows, drop staging."""
        if self._closed is not None:
            return self._closed
        self.regroup.finish(lost_error_type=lost_error_type, lost_reason=lost_reason)
        self.flush()
        self.retired = current.retire_superseded(self.fs, self.root, runs=[self.run_id], token=self.run_id)
        drop_staging(self.fs, self.root, self.run_id)
        self._closed = self.stats
        return self._closed

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed is None:
            self.close(lost_error_type=None)


__all__ = ["OutputWriter", "WriterStats"]
