"""Make an output folder consistent after a killed run or compaction (run while holding the lock)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..uris import filesystem_for, join
from . import current, run_record
from .layout import STAGING, TABLES, TIMELINES, VIDEOS, history_dir, parse_part, part_files

log = logging.getLogger(__name__)


@dataclass
class Recovery:
    orphan_parts_removed: list[str] = field(default_factory=list)
    staging_removed: list[str] = field(default_factory=list)
    interrupted_runs: list[str] = field(default_factory=list)
    rows_retired: dict[str, int] = field(default_factory=dict)


def recover_output(output_uri: str, *, current_run_id: str, storage_options: dict | None = None) -> Recovery:
    """Repair what a kill at any point can leave, in this order:

    1. parts covered by a committed merged part of the same table (a compaction killed
       before it deleted the originals) are removed: a merged part is complete, being
       written through staging;
    2. in a run without a run record (killed), a ``timelines`` part whose range has no
       ``videos`` part (killed between the two moves) is removed: its videos have no
       manifest row, so they are done again;
    3. staging folders of other runs are removed (half-written files, never read);
    4. for a run without a run record, the rows it superseded are moved to ``history/``
       (finishing a retirement it was killed in, or never began), then it gets
       ``runs/<id>.json`` with ``status: interrupted``.
    """
    fs, root = filesystem_for(output_uri, **(storage_options or {}))
    rec = Recovery()
    if not fs.exists(root):
        return rec
    parts = {t: part_files(fs, join(root, t, "*", "*.parquet")) for t in TABLES}
    for table in TABLES:
        by_run: dict[str, list] = {}
        for path, run, pn in parts[table]:
            by_run.setdefault(run, []).append((path, pn))
        keep = []
        for run, files in by_run.items():
            for path, pn in files:
                if any(other.covers(pn) for _, other in files):
                    fs.rm(path)
                    rec.orphan_parts_removed.append(path)
                else:
                    keep.append((path, run, pn))
        parts[table] = keep
    runs = {run for t in TABLES for _, run, _ in parts[t]}
    unfinished = sorted(r for r in runs if r != current_run_id and not run_record.has_record(fs, root, r))
    for path, run, pn in parts[TIMELINES]:
        if run not in unfinished:
            continue
        # manifest parts of the run, current or (rows since superseded) in history/
        videos = [vpn for _, vrun, vpn in parts[VIDEOS] if vrun == run] + [
            hp for p in fs.glob(join(history_dir(root, VIDEOS, run), "*.parquet"))
            if (hp := parse_part(p.split("/")[-1].split(".")[0] + ".parquet")) is not None
        ]
        if not all(any(v.first <= n <= v.last for v in videos) for n in range(pn.first, pn.last + 1)):
            fs.rm(path)
            rec.orphan_parts_removed.append(path)
    for d in fs.glob(join(root, STAGING, "*")):
        name = d.rstrip("/").split("/")[-1]
        if name != current_run_id and not name.startswith(current_run_id):
            fs.rm(d, recursive=fs.isdir(d))
            rec.staging_removed.append(d)
    unfinished = [r for r in unfinished if any(run == r for _, run, _ in parts[VIDEOS])]
    if unfinished:
        rec.rows_retired = current.retire_superseded(fs, root, runs=unfinished, token=current_run_id).rows_moved
        for run in unfinished:
            run_record.write_record(
                fs, root, run, {"run_id": run, "status": run_record.INTERRUPTED, "recovered_by": current_run_id}
            )
            rec.interrupted_runs.append(run)
    if rec.orphan_parts_removed or rec.staging_removed or rec.interrupted_runs:
        log.warning("recovered output %s: %s", output_uri, rec)
    return rec


__all__ = ["Recovery", "recover_output"]
