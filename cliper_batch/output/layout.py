"""Names inside an output folder, and the one way a file enters it (staging, then a move).

Part files are ``part-NNNNN.parquet`` (one commit of a run) and ``part-NNNNN-MMMMM.parquet``
(compaction of parts NNNNN..MMMMM). When rows of a part are superseded, the part is
replaced in place (one atomic move over it) after those rows were written to
``history/``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from ..uris import join

TIMELINES = schema.TIMELINES
VIDEOS = schema.VIDEOS
TABLES = (TIMELINES, VIDEOS)
HISTORY = "history"
STAGING = "_staging"
RUNS = "runs"
LOCK = "_lock.json"

_PART = re.compile(r"^part-(\d{5})(?:-(\d{5}))?\.parquet$")


@dataclass(frozen=True, order=True)
class PartName:
    first: int
    last: int

    def name(self) -> str:
        rng = f"{self.first:05d}" if self.first == self.last else f"{self.first:05d}-{self.last:05d}"
        return f"part-{rng}.parquet"

    def covers(self, other: "PartName") -> bool:
        """Whether this (merged) part replaces ``other``: a strictly larger range containing it."""
        return self.first <= other.first and other.last <= self.last and self != other


def parse_part(name: str) -> PartName | None:
    """``part-00003.parquet`` -> PartName(3, 3); ``part-00000-00041.parquet`` -> PartName(0, 41); else None."""
    m = _PART.match(name)
    if not m:
        return None
    first = int(m.group(1))
    return PartName(first, int(m.group(2) or first))


def current_dir(root: str, table: str, run_id: str) -> str:
    return join(root, table, run_id)


def history_dir(root: str, table: str, run_id: str) -> str:
    return join(root, HISTORY, table, run_id)


def part_files(fs, folder_glob: str) -> list[tuple[str, str, PartName]]:
    """(path, run_id, part name) of every part file matching ``<...>/<run_id>/*.parquet``."""
    out = []
    for p in fs.glob(folder_glob):
        parts = p.rstrip("/").split("/")
        pn = parse_part(parts[-1])
        if pn is not None:
            out.append((p, parts[-2], pn))
    return sorted(out, key=lambda t: (t[1], t[2]))


def commit_table(fs, root: str, token: str, table: pa.Table, dest: str) -> str:
    """Write ``table`` under ``_staging/<token>/`` and move it to ``dest`` (an absolute path in ``fs``).

    A reader globbing the output never sees a half-written file; a kill leaves at
    most a staging file, which recovery removes.
    """
    rel = dest[len(root.rstrip("/")) + 1 :] if dest.startswith(root.rstrip("/") + "/") else dest.split("/")[-1]
    staging = join(root, STAGING, token, rel)
    fs.makedirs(staging.rsplit("/", 1)[0], exist_ok=True)
    fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(staging, "wb") as f:
        pq.write_table(table, f, compression="zstd")
    fs.mv(staging, dest)
    return dest


def read_table(fs, path: str, columns: list[str] | None = None) -> pa.Table:
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def drop_staging(fs, root: str, token: str) -> None:
    try:
        fs.rm(join(root, STAGING, token), recursive=True)
    except FileNotFoundError:
        pass
