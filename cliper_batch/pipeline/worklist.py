"""The run's work list, streamed: what the planner chose, held in memory only while it is short.

The planner hands over one listing chunk's plan at a time (:func:`cliper_batch.corpus.incremental.plan_chunks`).
Up to :data:`IN_MEMORY` videos the work list stays a Python list, and the run is what it always was
(``from_blocks`` over one Arrow table, the single-actor path for a few videos). Past that it is
written, chunk by chunk, as Parquet files under the run's staging folder of the output
(``_staging/<run_id>/worklist/``, removed when the writer closes, or by the next run's recovery),
and Ray Data reads them back through a Datasource of those files (:func:`_source_class`): the read tasks run on the workers,
one file at a time, so the driver holds one chunk of the plan at a time whatever the corpus size,
and the streaming executor's backpressure is the bounded window of work in flight. The output is
a location every worker can read (object store or shared disk) already; so is this folder.

The writer gets the same object as its ``expected`` videos (:class:`~cliper_batch.output.regroup.Regrouper`):
the videos that never reported back are found at the end by reading the files again, against a
compact set of the ids that did.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .. import rows
from ..corpus.incremental import WorkPlan
from ..corpus.listing import CHUNK
from ..output.layout import STAGING
from ..types import VideoRef
from ..uris import filesystem_for, join

IN_MEMORY = CHUNK  # at most this many videos to do: the work list stays in the driver's memory
MAX_BLOCKS = 10_000  # Ray Data blocks for the whole work list (tasks retry, and errored blocks drop, per block)
READ_CONCURRENCY = 2  # work-list files read at once (each read task needs a Ray worker process)
ROW_BYTES = 150  # about what one row (video_id, ref JSON) takes, for Ray Data's size estimates


def refs_table(refs) -> pa.Table:
    """The work list as Arrow columns (``video_id``, ``ref`` JSON): ~100 bytes a video, where a list of
    dicts for ``from_items`` costs several times that on the driver at a million videos."""
    return pa.table({"video_id": [r.video_id for r in refs], "ref": [rows.encode_ref(r) for r in refs]})


class WorkList:
    """The videos a run annotates (``total``), appended one plan chunk at a time (:meth:`add`)."""

    def __init__(self, output_uri: str, run_id: str, storage_options: dict | None = None, in_memory: int | None = None):
        self.output_uri, self.run_id = output_uri, run_id
        self.storage_options = dict(storage_options or {})
        self.in_memory = IN_MEMORY if in_memory is None else in_memory
        self.total = 0
        self.attempts: dict[str, int] = {}  # video_id -> attempt when > 1 (retried failures: few)
        self._held: list[VideoRef] = []
        self.files: list[tuple[str, int]] = []  # (path inside the output's filesystem, rows)
        self.peak_held = 0  # the most videos held in memory at once (the unit test's bound)

    def add(self, plan: WorkPlan) -> None:
        self._held.extend(plan.todo)
        self.total += len(plan.todo)
        self.attempts.update(plan.attempts)
        self.peak_held = max(self.peak_held, len(self._held))
        if len(self._held) > self.in_memory:
            self._spill()

    def close(self) -> "WorkList":
        """After the last chunk: a spilled work list writes what it still holds."""
        if self.files and self._held:
            self._spill()
        return self

    @property
    def spilled(self) -> bool:
        return bool(self.files)

    @property
    def refs(self) -> list[VideoRef]:
        """The whole work list (only when it was never spilled)."""
        if self.spilled:
            raise RuntimeError(f"the work list of {self.total} videos is on disk; stream it (chunks())")
        return self._held

    def _folder(self) -> tuple[object, str]:
        fs, root = filesystem_for(self.output_uri, **self.storage_options)
        return fs, join(root, STAGING, self.run_id, "worklist")

    def _spill(self) -> None:
        fs, folder = self._folder()
        fs.makedirs(folder, exist_ok=True)
        path = f"{folder}/w-{len(self.files):06d}.parquet"
        with fs.open(path, "wb") as f:
            pq.write_table(refs_table(self._held), f)
        self.files.append((path, len(self._held)))
        self._held = []

    def chunks(self) -> Iterator[list[VideoRef]]:
        """The work list again, a chunk at a time (what the writer checks at the end)."""
        if not self.spilled:
            yield self._held
            return
        fs, _ = self._folder()
        for path, _ in self.files:
            yield [rows.decode_ref(r) for r in _read(fs, path).column("ref").to_pylist()]

    def dataset(self):
        """The spilled work list as a Ray Dataset of ``{video_id, ref}`` rows in up to :data:`MAX_BLOCKS` blocks."""
        import ray

        step = -(-self.total // max(1, min(self.total, MAX_BLOCKS)))
        # num_cpus=0: the model actors hold every CPU of a CPU-only cluster from the start (a fixed pool); a
        # read task that waited for a CPU would never run. Reading one small Parquet file is I/O, not compute.
        # With no CPU to wait for, nothing else bounds how many read tasks run at once: Ray started one worker
        # process per file (100 at 10^7 videos, ~150 MB each, filling the host's memory). READ_CONCURRENCY
        # tasks at a time keep the consumers fed (a file is 100 000 videos, read in well under a second).
        return ray.data.read_datasource(_source_class()(self.output_uri, self.storage_options, self.files, step),
                                        num_cpus=0, concurrency=READ_CONCURRENCY)


def _read(fs, path: str) -> pa.Table:
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def _read_blocks(output_uri: str, storage_options: dict, path: str, step: int) -> Iterator[pa.Table]:
    """(On a worker) one work-list file as blocks of ``step`` videos."""
    fs, _ = filesystem_for(output_uri, **storage_options)
    table = _read(fs, path)
    for i in range(0, table.num_rows, step):
        yield table.slice(i, step)


@functools.cache
def _source_class() -> type:
    """:class:`WorkListSource`, defined on first use: importing Ray Data costs a short run ~0.8 s it never needs."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class WorkListSource(Datasource):
        """A Ray Data source of work-list files: one read task per file, its rows in blocks of ``step``."""

        def __init__(self, output_uri: str, storage_options: dict, files: list[tuple[str, int]], step: int):
            super().__init__()
            self.output_uri, self.storage_options, self.files, self.step = output_uri, storage_options, files, step

        def estimate_inmemory_data_size(self) -> int:
            return sum(n for _, n in self.files) * ROW_BYTES

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list:
            return [
                ReadTask(
                    functools.partial(_read_blocks, self.output_uri, self.storage_options, path, self.step),
                    BlockMetadata(num_rows=n, size_bytes=n * ROW_BYTES, exec_stats=None, input_files=None),
                    per_task_row_limit=per_task_row_limit,
                )
                for path, n in self.files
            ]

    return WorkListSource


__all__ = ["IN_MEMORY", "WorkList", "refs_table"]
