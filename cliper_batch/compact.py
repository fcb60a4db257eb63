"""Compaction: merge a run's small Parquet parts into one, without changing what queries return.

    python -m cliper_batch.compact ./annotations

Runs with more than one part get one merged part per table, named after the part
range it replaces (``part-00000-00041.parquet``). Order of operations, so a kill at
any point leaves the folder correct after the next :func:`recover_output`:

1. merged timelines and videos files are written to ``_staging`` and moved into place
   (timelines first: a merged timelines file without its merged videos file is an
   orphan and is removed by recovery, the original parts being intact);
2. the original parts covered by the range are deleted (recovery finishes this step
   if it was interrupted).

Compaction holds the output lock, so it never runs beside an annotate run.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .pipeline.run import new_run_id
from .uris import filesystem_for, join
from .writer import OutputBusy, OutputLock, recover_output
from .writer import part_range



@dataclass
class CompactionReport:
    runs_compacted: list[str] = field(default_factory=list)
    files_before: int = 0
    files_after: int = 0


def _merge(fs, files: list[str]) -> pa.Table:
    tables = []
    for f in files:
        with fs.open(f, "rb") as fh:
            tables.append(pq.read_table(fh))
    meta = tables[0].schema.metadata
    return pa.concat_tables(tables).replace_schema_metadata(meta)


def compact(output_uri: str, *, min_parts: int = 2, storage_options: dict | None = None) -> CompactionReport:
    """Merge every run folder that has at least ``min_parts`` parts."""
    fs, root = filesystem_for(output_uri, **(storage_options or {}))
    report = CompactionReport()
    token = "compact-" + new_run_id()
    with OutputLock(output_uri, token, storage_options=storage_options):
        recover_output(output_uri, current_run_id=token, storage_options=storage_options)
        runs = sorted({p.rstrip("/").split("/")[-1] for p in fs.glob(join(root, schema.VIDEOS, "*")) if fs.isdir(p)})
        for run in runs:
            names = sorted(
                p.split("/")[-1] for p in fs.glob(join(root, schema.VIDEOS, run, "*.parquet")) if part_range(p.split("/")[-1])
            )
            report.files_before += len(names)
            if len(names) < min_parts:
                report.files_after += len(names)
                continue
            ranges = [part_range(n) for n in names]
            merged = f"part-{min(r[0] for r in ranges):05d}-{max(r[1] for r in ranges):05d}.parquet"
            for table in (schema.TIMELINES, schema.VIDEOS):  # timelines first (see module docstring)
                files = [join(root, table, run, n) for n in names if fs.exists(join(root, table, run, n))]
                if not files:
                    continue
                staging = join(root, "_staging", token, table, run, merged)
                fs.makedirs(join(root, "_staging", token, table, run), exist_ok=True)
                merged_table = _merge(fs, files)
                with fs.open(staging, "wb") as fh:
                    pq.write_table(merged_table, fh, compression="zstd")
                fs.mv(staging, join(root, table, run, merged))
            for table in (schema.VIDEOS, schema.TIMELINES):
                for n in names:
                    if n != merged and fs.exists(join(root, table, run, n)):
                        fs.rm(join(root, table, run, n))
            report.runs_compacted.append(run)
            report.files_after += 1
        try:
            fs.rm(join(root, "_staging", token), recursive=True)
        except FileNotFoundError:
            pass
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cliper_batch.compact", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
