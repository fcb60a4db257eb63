"""The parts of one run: complete videos (from :class:`~.regroup.Regrouper`) committed as numbered Parquet parts.

A part is written to ``_staging`` and then moved into place, so a reader that
globs ``timelines/**/*.parquet`` never sees a half-written file. A video's rows
are committed only together with its manifest row, in the same part number
(timelines first), and only once every one of its segments has arrived. Closing
the writer moves the rows this run superseded to ``history/`` (:mod:`.current`).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from . import schema
from ..types import VideoRef
from ..uris import filesystem_for
from . import current, run_record
from .layout import TIMELINES, VIDEOS, PartName, commit_table, current_dir, drop_staging
from .regroup import Regrouper, WorkList, WriterStats

log = logging.getLogger(__name__)

# OSError numbers that mean the output's filesystem takes no more writes: nothing this run can do helps
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class OutputUnwritable(RuntimeError):
    """The output's filesystem refused a commit (full, over quota, read-only): the run stops, the next one recovers.

    Its message is one line naming the path and what to do. Parts commit whole (staging, then a
    move; a video's timelines and manifest in the same part number), so what is committed is
    complete videos; a timelines part whose manifest part never came is removed by the next run's
    recovery, with every video not committed done again.
    """

    def __init__(self, exc: OSError, path: str):
        self.path = exc.filename or path
        self.errno = exc.errno
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        fix = "remount it read-write" if exc.errno == errno.EROFS else "free space on it"
        super().__init__(
            f"cannot write the output: {self.path}: {exc.strerror or exc} ({name}); {fix} and run again "
            "(the next run recovers the output and annotates every video not committed)"
        )


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
        expected: "list[VideoRef] | WorkList | None" = None,
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
        self.unwritable: OutputUnwritable | None = None  # set when the disk refused a write: nothing more is written

    @property
    def stats(self) -> WriterStats:
        return self.regroup.stats

    def add_batch(self, batch: dict[str, np.ndarray]) -> None:
        """Regroup ``batch``; commit when a part is due. Raises :class:`OutputUnwritable` if the disk refuses it."""
        self.regroup.add_batch(batch)
        if self._should_flush() and self.unwritable is None:
            with self._disk(self.root):
                self.flush()

    @contextlib.contextmanager
    def _disk(self, path: str):
        """An OSError of a full or read-only output becomes :class:`OutputUnwritable` (kept in ``unwritable``)."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            self.unwritable = self.unwritable or OutputUnwritable(exc, path)
            log.debug("output unwritable", exc_info=True)
            raise self.unwritable from exc

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
        tl_path = None
        if timelines:
            tl = pa.Table.from_pylist(timelines, schema=self.timeline_schema)
            tl_path = commit_table(self.fs, self.root, self.run_id, tl,
                                   f"{current_dir(self.root, TIMELINES, self.run_id)}/{name}")
        vt = pa.Table.from_pylist(videos, schema=self.video_schema)
        try:
            commit_table(self.fs, self.root, self.run_id, vt, f"{current_dir(self.root, VIDEOS, self.run_id)}/{name}")
        except OSError:
            if tl_path is not None:  # a part is whole or absent: its timelines go too (else the next run's recovery)
                with contextlib.suppress(OSError):
                    self.fs.rm(tl_path)
            raise
        self._part += 1
        self.stats.parts += 1
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - t0, len(videos))

    def _flush_if_full(self) -> None:
        if len(self.regroup.ready_videos) >= self.videos_per_part or len(self.regroup.ready_timelines) >= self.rows_per_part:
            self.flush()

    def close(self, *, lost_error_type: str | None = "WorkerLost", lost_reason: str = "") -> WriterStats:
        """Account for unfinished videos (see :meth:`Regrouper.finish`), flush, retire superseded rows, drop staging."""
        if self._closed is not None:
            return self._closed
        if self.unwritable is None:  # else: write nothing more (the next run's recovery finishes the output)
            try:
                with self._disk(self.root):
                    self.regroup.finish(lost_error_type=lost_error_type, lost_reason=lost_reason, flush=self._flush_if_full)
                    self.flush()
                    self.retired = current.retire_superseded(self.fs, self.root, runs=[self.run_id], token=self.run_id)
                    drop_staging(self.fs, self.root, self.run_id)
            except OutputUnwritable:
                pass  # kept in self.unwritable: the caller reports it
        self._closed = self.stats
        return self._closed

    def write_record(self, run_id: str, record: dict) -> None:
        """The run record (``runs/<run_id>.json``), unless the disk refused an earlier write (or refuses this one:
        then ``unwritable`` is set and the run has no record, as a killed one; the next run recovers it)."""
        if self.unwritable is not None:
            return
        try:
            with self._disk(run_record.record_path(self.root, run_id)):
                run_record.write_record(self.fs, self.root, run_id, record)
        except OutputUnwritable:
            pass

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed is None:
            self.close(lost_error_type=None)


__all__ = ["OutputWriter", "WriterStats"]
