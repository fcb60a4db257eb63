"""The current view: ``timelines/`` and ``videos/`` hold only current rows; superseded ones move to ``history/``.

Current, per (``video_id``, ``model_id``, ``config_hash``):

* in ``videos/``: the latest manifest row (ok or failed): the video's state now;
* in ``timelines/``: the rows of the latest run that annotated it successfully
  (what :func:`cliper_batch.output.query.scan_timelines` returns).

So after a finished run a plain ``pl.scan_parquet("<out>/timelines/**/*.parquet")``
gives exactly ``scan_timelines``' rows, and ``videos/**`` one row per video. Every
superseded row is kept under ``history/<table>/<run_id>/``.

Moving rows out of a part, crash-safe at every step and idempotent:

1. the superseded rows are written to ``history/<table>/<run>/<part>.<digest>.parquet``
   (``digest`` is a hash of those rows' keys, so a redo writes the same file again);
2. the part is replaced in place by its remaining rows (written to staging, then one
   move over the old file; object stores replace an object atomically too), or
   removed when no row remains.

A kill between 1 and 2 leaves the old part intact and a history file that the redo
overwrites; recovery redoes the retirement of every run without a run record.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .layout import HISTORY, TIMELINES, VIDEOS, commit_table, history_dir, part_files, read_table
from ..uris import join

log = logging.getLogger(__name__)

KEY = ["video_id", "model_id", "config_hash"]


@dataclass
class Retirement:
    rows_moved: dict[str, int] = field(default_factory=dict)  # table -> rows moved to history/
    parts_rewritten: list[str] = field(default_factory=list)


def _manifest(fs, root: str, base: str) -> tuple[pl.DataFrame, list[str]]:
    """Key, run, status and file number of every manifest row in ``<root>/<base>/<run>/*.parquet``; the files."""
    files = sorted(fs.glob(join(root, base, "*", "*.parquet")))
    frames = [
        pl.from_arrow(read_table(fs, path, columns=[*KEY, "run_id", "status"])).with_columns(pl.lit(i, pl.UInt32).alias("file"))
        for i, path in enumerate(files)
    ]
    if not frames:
        return _no_rows(), files
    return pl.concat(frames, how="vertical_relaxed"), files


def _no_rows() -> pl.DataFrame:
    return pl.DataFrame(schema={**{k: pl.String for k in KEY}, "run_id": pl.String, "status": pl.String, "file": pl.UInt32})


def _key_hashes(fs, path: str) -> np.ndarray:
    return pl.from_arrow(read_table(fs, path, columns=KEY)).select(pl.struct(KEY).hash(seed=0)).to_series().to_numpy()


def _rows_with_keys(fs, path: str, file: int, keys: np.ndarray) -> pl.DataFrame:
    """The manifest rows of one part whose key hash is in ``keys`` (as :func:`_manifest` gives them)."""
    df = pl.from_arrow(read_table(fs, path, columns=[*KEY, "run_id", "status"]))
    hit = np.isin(df.select(pl.struct(KEY).hash(seed=0)).to_series().to_numpy(), keys)
    return df.filter(pl.Series(hit)).with_columns(pl.lit(file, pl.UInt32).alias("file"))


def _manifest_touching(fs, root: str, runs: set[str]) -> tuple[pl.DataFrame, list[str], pl.DataFrame]:
    """:func:`_manifest` of ``videos/`` and ``history/videos/``, only the rows of keys that ``runs`` wrote and that
    have another row somewhere (the only keys these runs can supersede): (current rows, files, history rows).

    A run's own rows are read as 64-bit key hashes first (8 bytes a video: a first night of 10^7
    videos never holds its manifest as strings), the other parts are filtered by them, and the
    exact rows come back only for the keys found elsewhere. A hash collision only adds rows that
    the exact (string) logic of :func:`retire_superseded` then leaves alone.
    """
    files = sorted(fs.glob(join(root, VIDEOS, "*", "*.parquet")))
    hist_files = sorted(fs.glob(join(root, HISTORY, VIDEOS, "*", "*.parquet")))
    mine = [i for i, f in enumerate(files) if f.rstrip("/").split("/")[-2] in runs]
    empty = _no_rows()
    if not mine:
        return empty, files, empty
    keys, counts = np.unique(np.concatenate([_key_hashes(fs, files[i]) for i in mine]), return_counts=True)
    others = set(range(len(files))) - set(mine)
    cur = [_rows_with_keys(fs, files[i], i, keys) for i in sorted(others)]
    hist = [_rows_with_keys(fs, f, i, keys) for i, f in enumerate(hist_files)]
    found = pl.concat([empty, *cur, *hist], how="vertical_relaxed").select(pl.struct(KEY).hash(seed=0)).to_series().to_numpy()
    wanted = np.union1d(found, keys[counts > 1])
    cur += [_rows_with_keys(fs, files[i], i, wanted) for i in mine] if len(wanted) else []
    return pl.concat([empty, *cur], how="vertical_relaxed"), files, pl.concat([empty, *hist], how="vertical_relaxed")


def retire_superseded(fs, root: str, *, runs: list[str] | None, token: str) -> Retirement:
    """Move the rows that ``runs`` superseded (``None``: every run, a full pass) to ``history/``."""
    out = Retirement()
    if runs is None:
        cur, cur_files = _manifest(fs, root, VIDEOS)
        hist, _ = _manifest(fs, root, f"{HISTORY}/{VIDEOS}")
    else:
        cur, cur_files, hist = _manifest_touching(fs, root, set(runs))
    if cur.is_empty():
        return out
    # Only a key with more than one row in videos/, or rows in history/ already, can have stale rows
    # (a first annotation supersedes nothing): on a first night this keeps the work at one group-by.
    scope = cur if runs is None else cur.filter(pl.col("run_id").is_in(list(runs)))
    multi = cur.group_by(KEY).len().filter(pl.col("len") > 1).select(KEY)
    keys = pl.concat([multi, hist.select(KEY).unique()]).unique().join(scope.select(KEY).unique(), on=KEY, how="semi")
    if keys.is_empty():
        return out
    cur_k = cur.join(keys, on=KEY, how="semi")
    # videos/: every row but the latest per key
    latest = cur_k.group_by(KEY).agg(pl.col("run_id").max().alias("latest"))
    stale_videos = cur_k.join(latest, on=KEY).filter(pl.col("run_id") != pl.col("latest"))
    # timelines/: rows of ok runs other than the latest ok run per key (ok rows may sit in history/ already)
    ok = pl.concat([cur_k, hist.join(keys, on=KEY, how="semi")], how="vertical_relaxed").filter(pl.col("status") == "ok")
    latest_ok = ok.group_by(KEY).agg(pl.col("run_id").max().alias("latest"))
    stale_pairs = ok.join(latest_ok, on=KEY).filter(pl.col("run_id") != pl.col("latest")).select(*KEY, "run_id").unique()
    del cur, hist, scope, multi

    for (file,), rows in stale_videos.group_by("file"):
        _move_rows(fs, root, VIDEOS, cur_files[file], rows.select(*KEY, "run_id"), token, out)
    for run in sorted(stale_pairs["run_id"].unique().to_list()):
        pairs = stale_pairs.filter(pl.col("run_id") == run)
        for path, _, _ in part_files(fs, join(root, TIMELINES, run, "*.parquet")):
            _move_rows(fs, root, TIMELINES, path, pairs, token, out)
    if out.rows_moved:
        log.info("moved superseded rows to %s/: %s", HISTORY, out.rows_moved)
    return out


def _move_rows(fs, root: str, table: str, path: str, stale: pl.DataFrame, token: str, out: Retirement) -> None:
    """Move the rows of the part at ``path`` whose (key, run_id) is in ``stale`` to history/, keep the rest."""
    t = read_table(fs, path)
    df = pl.from_arrow(t.select([*KEY, "run_id"])).with_row_index("_i")
    hit = df.join(stale, on=[*KEY, "run_id"], how="semi")["_i"].to_numpy()
    if len(hit) == 0:
        return
    mask = pa.array(pl.Series(range(t.num_rows)).is_in(hit).to_numpy())
    moved, kept = t.filter(mask), t.filter(pc.invert(mask))
    run, name = path.rstrip("/").split("/")[-2:]
    digest = hashlib.sha256("\n".join(sorted(map(str, df.filter(pl.col("_i").is_in(hit)).drop("_i").rows()))).encode()).hexdigest()[:12]
    commit_table(fs, root, token, moved, f"{history_dir(root, table, run)}/{name[: -len('.parquet')]}.{digest}.parquet")
    if kept.num_rows:
        commit_table(fs, root, token, kept, path)  # one move over the old part
    else:
        fs.rm(path)
    out.rows_moved[table] = out.rows_moved.get(table, 0) + moved.num_rows
    out.parts_rewritten.append(path)


__all__ = ["KEY", "Retirement", "retire_superseded"]
