"""``python -m cliper_batch.report OUTPUT --out report.html``: one self-contained HTML file, viewable offline."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import polars as pl

from ..output.schema import SchemaMismatch
from ..uris import InvalidURI
from .build import ReportOptions, build_report
from .data import ReportInputError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cliper_batch.report",
        description="Write an offline HTML report (runs, failures, expression timelines per face track, corpus view) "
        "of a cliper-batch annotation output.",
    )
    p.add_argument("output", help="the annotation output folder or URL (what --output of the annotate run named)")
    p.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--video", action="append", default=[], metavar="ID",
                   help="show this video in detail: its video id or the path/URL it was annotated under (repeatable)")
    p.add_argument("--limit", type=int, default=12,
                   help="videos shown in detail when no --video is given: the top ones of each label (default 12)")
    p.add_argument("--top", type=int, default=5, help="videos listed per label in the corpus view (default 5)")
    p.add_argument("--segments-per-label", type=int, default=200,
                   help="most confident segments per label in the page's search list (default 200)")
    p.add_argument("--table-rows", type=int, default=1000, help="rows of the video table (default 1000)")
    p.add_argument("--no-thumbnails", action="store_true", help="do not decode face thumbnails from the videos")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="report: %(message)s")
    t0 = time.perf_counter()
    try:
        opts = ReportOptions(videos=a.video, limit=a.limit, top=a.top, segments_per_label=a.segments_per_label,
                             table_rows=a.table_rows, thumbnails=not a.no_thumbnails)
    except ValueError as exc:
        p.error(str(exc))
    try:
        page = build_report(a.output, opts)
    except (ReportInputError, SchemaMismatch, InvalidURI) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, pl.exceptions.PolarsError, OSError) as exc:  # e.g. a damaged Parquet file, an unreadable folder
        print(f"report: error: cannot read {a.output}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        print(f"report: error: cannot write {a.out}: {exc}", file=sys.stderr)
        return 2
    print(f"report: wrote {os.path.abspath(a.out)} ({len(page.encode()) / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
