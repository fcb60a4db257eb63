"""Compaction: merge a run's small Parquet parts into one, without changing what queries return.

    python -m cliper_batch.output.compaction ./annotations

Runs with more than one part get one merged part per table, named after the part
range it replaces (``part-00000-00041.parquet``). Before merging, compaction moves
every superseded row to ``history/`` (a full pass of
:func:`cliper_batch.output.current.retire_superseded`), which also brings output
written before the current/history split up to date.

Order of operations, so a kill at any point leaves the folder correct after the
next :func:`~cliper_batch.output.recovery.recover_output`: per table, the merged file
is written to ``_staging`` and moved into place, then the parts it covers are
deleted. A merged file is complete (staging), so recovery deletes parts covered by
one if compaction was killed before it did.

Compaction holds the output lock, so it never runs beside an annotate run.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import pyarrow as pa

from . import current
from .layout import TABLES, PartName, commit_table, drop_staging, part_files, read_table
from .lock import OutputBusy, OutputLock
from .recovery import recover_output
from .run_record import new_run_id
from ..uris import filesystem_for, join


@dataclass
class CompactionReport:
    runs_compacted: list[str] = field(default_factory=list)
    files_before: int = 0  # manifest (videos/) parts
    files_after: int = 0
    rows_retired: dict[str, int] = field(default_factory=dict)


def _merge(fs, files: list[str]) -> pa.Table:
    tables = [read_table(fs, f) for f in files]
    meta = tables[0].schema.metadata
    return pa.concat_tables(tables, promote_options="default").replace_schema_metadata(meta)


def compact(output_uri: str, *, min_parts: int = 2, storage_options: dict | None = None) -> CompactionReport:
    """Retire superseded rows, then merge every run folder (per table) that has at least ``min_parts`` parts."""
    fs, root = filesystem_for(output_uri, **(storage_options or {}))
    report = CompactionReport()
    token = "compact-" + new_run_id()
    with OutputLock(output_uri, token, storage_options=storage_options):
        recover_output(output_uri, current_run_id=token, storage_options=storage_options)
        report.rows_retired = current.retire_superseded(fs, root, runs=None, token=token).rows_moved
        compacted: set[str] = set()
        for table in TABLES:
            by_run: dict[str, list] = {}
            for path, run, pn in part_files(fs, join(root, table, "*", "*.parquet")):
                by_run.setdefault(run, []).append((path, pn))
            for run, files in sorted(by_run.items()):
                n_after = len(files)
                if len(files) >= min_parts:
                    merged = PartName(min(pn.first for _, pn in files), max(pn.last for _, pn in files))
                    commit_table(fs, root, token, _merge(fs, [p for p, _ in files]), join(root, table, run, merged.name()))
                    for p, pn in files:
                        if pn != merged:
                            fs.rm(p)
                    compacted.add(run)
                    n_after = 1
                if table == TABLES[1]:
                    report.files_before += len(files)
                    report.files_after += n_after
        report.runs_compacted = sorted(compacted)
        drop_staging(fs, root, token)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cliper_batch.output.compaction", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="an annotate output folder (local or fsspec URL)")
    p.add_argument("--min-parts", type=int, default=2, help="compact runs with at least this many parts (default 2)")
    a = p.parse_args(argv)
    try:
        r = compact(a.output, min_parts=a.min_parts)
    except OutputBusy as exc:
        print(f"compact: error: {exc}", file=sys.stderr)
        return 2
    print(f"compacted {len(r.runs_compacted)} run(s): {r.files_before} manifest parts -> {r.files_after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
