"""The writer owns the output folder: it regroups scored rows per video and commits Parquet parts.

Layout under ``<output>`` (any fsspec URL)::

    timelines/<run_id>/part-00000.parquet   one row per (video, track, segment)
    videos/<run_id>/part-00000.parquet      one row per input video (the run's manifest)
    runs/<run_id>.json                      the run record, written last
    _staging/<run_id>/...                   files being written (never read)

A part is written to ``_staging`` and then moved into place, so a reader that
globs ``timelines/**/*.parquet`` never sees a half-written file. A video's
rows are committed only together with its manifest row, in the same part
number, and only once every one of its segments has arrived.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from . import rows
from .types import VideoOutcome, VideoRef
from .uris import filesystem_for, join

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """Rows of one video waiting for completeness."""

    segments: list[dict] = field(default_factory=list)
    outcome: VideoOutcome | None = None


@dataclass
class WriterStats:
    videos_ok: int = 0
    videos_failed: int = 0
    segments: int = 0
    video_seconds: float = 0.0
    parts: int = 0
    score_busy_s: float = 0.0  # summed over scoring actors
    score_first_t: float | None = None  # wall clock when the first scoring batch started
    score_last_t: float | None = None  # ... and when the last one ended
    score_backends: set[str] = field(default_factory=set)  # e.g. {"eager@cpu"}, {"tensorrt@cuda:0"}

    @property
    def score_window_s(self) -> float:
        if self.score_first_t is None or self.score_last_t is None:
            return 0.0
        return max(self.score_last_t - self.score_first_t, 0.0)


class OutputWriter:
    """Driver-side sink for scored batches. Use as a context manager."""

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
    ):
        self.fs, self.root = filesystem_for(output_uri, **(storage_options or {}))
        # Videos this run must account for: any that never reports back (its worker crashed
        # past its retries) becomes a failed manifest row at close().
        self._unreported: dict[str, VideoRef] = {r.video_id: r for r in (expected or [])}
        self.output_uri = output_uri
        self.classes = tuple(classes)
        self.run_id, self.model_id, self.config_hash = run_id, model_id, config_hash
        self.rows_per_part, self.videos_per_part, self.seconds_per_part = rows_per_part, videos_per_part, seconds_per_part
        self.timeline_schema = schema.timeline_schema(self.classes)
        self.video_schema = schema.video_schema()
        self.stats = WriterStats()
        self._pending: dict[str, _Pending] = {}
        self._failed: set[str] = set()  # videos already closed as failed: late segment rows are dropped
        self._ready_timelines: list[dict] = []
        self._ready_videos: list[dict] = []
        self._last_flush = time.monotonic()
        self._part = 0

    # -- intake ---------------------------------------------------------
    def add_batch(self, batch: dict[str, np.ndarray]) -> None:
        probs = batch["probs"]
        if "score_t0" in batch and len(batch["score_t0"]):
            t0 = float(batch["score_t0"].min())
            busy = float(batch["score_busy_s"].sum())
            st = self.stats
            st.score_busy_s += busy
            st.score_first_t = t0 if st.score_first_t is None else min(st.score_first_t, t0)
            st.score_last_t = max(st.score_last_t or 0.0, t0 + busy)
            if "score_backend" in batch:
                st.score_backends.update(str(b) for b in set(batch["score_backend"]))
        for i, kind in enumerate(batch["row_kind"]):
            vid = str(batch["video_id"][i])
            if kind == rows.VIDEO:
                self._pending.setdefault(vid, _Pending()).outcome = rows.decode_outcome(str(batch["outcome"][i]))
            else:
                if vid in self._failed:
                    continue
                self._pending.setdefault(vid, _Pending()).segments.append(self._timeline_row(batch, i, probs[i]))
            self._maybe_complete(vid)
        if self._should_flush():
            self.flush()

    def _timeline_row(self, batch, i: int, p: np.ndarray) -> dict:
        best = int(np.argmax(p))
        row = {
            "video_id": str(batch["video_id"][i]),
            "video_uri": str(batch["video_uri"][i]),
            "track_id": int(batch["track_id"][i]),
            "segment_index": int(batch["segment_index"][i]),
            "start_s": float(batch["start_s"][i]),
            "end_s": float(batch["end_s"][i]),
            "label": self.classes[best],
            "confidence": float(p[best]),
            "descriptor": int(batch["descriptor"][i]),
        }
        for c, v in zip(self.classes, p):
            row[schema.class_column(c)] = float(v)
        for k in rows.FACE_FLOAT_COLUMNS:
            v = batch.get(k)
            x = None if v is None else float(v[i])
            row[k] = None if x is None or np.isnan(x) else x
        v = batch.get("frames_with_face")
        row["frames_with_face"] = None if v is None or int(v[i]) < 0 else int(v[i])
        return row

    def _maybe_complete(self, vid: str) -> None:
        self._unreported.pop(vid, None)
        p = self._pending.get(vid)
        if p is None or p.outcome is None:
            return
        o = p.outcome
        if o.status == "ok" and len(p.segments) < o.n_segments:
            return  # more segment rows still in flight
        del self._pending[vid]
        if o.status != "ok":
            self._failed.add(vid)
            self.stats.videos_failed += 1
        else:
            p.segments.sort(key=lambda r: (r["track_id"], r["segment_index"]))
            self._ready_timelines.extend(p.segments)
            self.stats.videos_ok += 1
            self.stats.segments += len(p.segments)
            self.stats.video_seconds += o.info.duration_s if o.info else 0.0
        self._ready_videos.append(self._video_row(o, n_tracks=len({r["track_id"] for r in p.segments})))

    def _video_row(self, o: VideoOutcome, n_tracks: int) -> dict:
        info = o.info
        return {
            "video_id": o.ref.video_id,
            "video_uri": o.ref.uri,
            "size_bytes": o.ref.size_bytes,
            "fingerprint": o.ref.fingerprint,
            "status": o.status,
            "error_type": o.error_type,
            "error": o.error,
            "duration_s": info.duration_s if info else None,
            "fps": info.fps if info else None,
            "width": info.width if info else None,
            "height": info.height if info else None,
            "codec": info.codec if info else None,
            "rotation": info.rotation if info else None,
            "n_segments": o.n_segments if o.status == "ok" else 0,
            "n_tracks": n_tracks if o.status == "ok" else 0,
            "decoder": o.extra.get("decoder"),
            "model_id": self.model_id,
            "config_hash": self.config_hash,
            "run_id": self.run_id,
        }

    # -- output ---------------------------------------------------------
    def _should_flush(self) -> bool:
        return (
            len(self._ready_timelines) >= self.rows_per_part
            or len(self._ready_videos) >= self.videos_per_part
            or (self._ready_videos and time.monotonic() - self._last_flush > self.seconds_per_part)
        )

    def _commit(self, table: pa.Table, kind: str, name: str) -> str:
        staging = join(self.root, "_staging", self.run_id, kind, name)
        final = join(self.root, kind, self.run_id, name)
        self.fs.makedirs(join(self.root, "_staging", self.run_id, kind), exist_ok=True)
        self.fs.makedirs(join(self.root, kind, self.run_id), exist_ok=True)
        with self.fs.open(staging, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        self.fs.mv(staging, final)
        return final

    def flush(self) -> None:
        """Commit every complete video so far as one part (timelines first, then the manifest)."""
        self._last_flush = time.monotonic()
        if not self._ready_videos:
            return
        name = f"part-{self._part:05d}.parquet"
        for r in self._ready_timelines:
            r.update(model_id=self.model_id, config_hash=self.config_hash, run_id=self.run_id)
        if self._ready_timelines:
            tl = pa.Table.from_pylist(self._ready_timelines, schema=self.timeline_schema)
            self._commit(tl, schema.TIMELINES, name)
        vt = pa.Table.from_pylist(self._ready_videos, schema=self.video_schema)
        self._commit(vt, schema.VIDEOS, name)
        self._ready_timelines, self._ready_videos = [], []
        self._part += 1
        self.stats.parts += 1

    def close(self) -> WriterStats:
        """Flush; videos whose rows never completed become ``failed``; drop the staging folder."""
        for vid in list(self._pending):
            p = self._pending.pop(vid)
            o = p.outcome
            if o is None:
                uri = p.segments[0]["video_uri"] if p.segments else ""
                o = VideoOutcome(ref=VideoRef(vid, uri), status="failed")
            else:
                o.status = "failed"
            o.error_type = o.error_type or "IncompleteVideo"
            o.error = o.error or f"only {len(p.segments)} of {o.n_segments} segment rows reached the writer"
            self.stats.videos_failed += 1
            self._failed.add(vid)
            self._ready_videos.append(self._video_row(o, n_tracks=0))
        for vid, ref in self._unreported.items():
            o = VideoOutcome(
                ref=ref,
                status="failed",
                error_type="WorkerLost",
                error=f"{ref.uri}: no result came back (its worker crashed or was lost after retries)",
            )
            self.stats.videos_failed += 1
            self._ready_videos.append(self._video_row(o, n_tracks=0))
        self._unreported = {}
        self.flush()
        try:
            self.fs.rm(join(self.root, "_staging", self.run_id), recursive=True)
        except FileNotFoundError:
            pass
        return self.stats

    def write_run_record(self, record: dict) -> str:
        """``runs/<run_id>.json``: written last, so its presence means the run finished."""
        self.fs.makedirs(join(self.root, "runs"), exist_ok=True)
        path = join(self.root, "runs", f"{self.run_id}.json")
        tmp = join(self.root, "_staging", f"{self.run_id}.json")
        self.fs.makedirs(join(self.root, "_staging"), exist_ok=True)
        with self.fs.open(tmp, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
        self.fs.mv(tmp, path)
        return path


class OutputBusy(RuntimeError):
    """Another live run holds the output folder."""


class OutputLock:
    """``<output>/_lock.json``: one annotate run per output folder at a time.

    A lock left by a run that died (its PID is gone on this host, or it is older
    than ``stale_after_s`` when held from another host) is taken over; the
    caller then runs :func:`recover_output` before writing.
    """

    def __init__(self, output_uri: str, run_id: str, *, stale_after_s: float = 24 * 3600, storage_options: dict | None = None):
        self.fs, self.root = filesystem_for(output_uri, **(storage_options or {}))
        self.path = join(self.root, "_lock.json")
        self.run_id = run_id
        self.stale_after_s = stale_after_s
        self.previous: dict | None = None

    def acquire(self) -> "OutputLock":
        import os
        import socket

        if self.fs.exists(self.path):
            try:
                with self.fs.open(self.path, "r") as f:
                    held = json.load(f)
            except (OSError, ValueError):
                held = {}
            if self._alive(held):
                raise OutputBusy(
                    f"output is in use by run {held.get('run_id')} (host {held.get('host')}, pid {held.get('pid')}, "
                    f"since {held.get('started_at')}); wait for it, or delete {self.path} if that run is gone"
                )
            log.warning("taking over the lock of run %s, which did not finish", held.get("run_id"))
            self.previous = held
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(self.path, "w") as f:
            json.dump(
                {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}, f
            )
        return self

    def _alive(self, held: dict) -> bool:
        import os
        import socket

        if not held:
            return False
        if held.get("host") == socket.gethostname():
            try:
                os.kill(int(held.get("pid", -1)), 0)
            except (ProcessLookupError, ValueError, TypeError):
                return False
            except PermissionError:
                return True
            return True
        return time.time() - float(held.get("started_at", 0)) < self.stale_after_s

    def release(self) -> None:
        try:
            with self.fs.open(self.path, "r") as f:
                held = json.load(f)
            if held.get("run_id") == self.run_id:
                self.fs.rm(self.path)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class Recovery:
    orphan_parts_removed: list[str] = field(default_factory=list)
    staging_removed: list[str] = field(default_factory=list)
    interrupted_runs: list[str] = field(default_factory=list)


def part_range(name: str) -> tuple[int, int] | None:
    """(first, last) part numbers covered by ``part-NNNNN.parquet`` / ``part-NNNNN-MMMMM.parquet``."""
    import re

    m = re.match(r"^part-(\d{5})(?:-(\d{5}))?\.parquet$", name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or m.group(1))


def recover_output(output_uri: str, *, current_run_id: str, storage_options: dict | None = None) -> Recovery:
    """Make an output folder consistent after a killed run (call while holding the lock).

    * a ``timelines`` part without its ``videos`` part (killed between the two
      moves) is removed: its videos have no manifest row, so they are redone;
    * parts covered by a committed merged part (a killed compaction) are removed;
    * staging folders of other runs are removed;
    * a run with committed parts but no run record gets one with
      ``status: interrupted``.
    """
    fs, root = filesystem_for(output_uri, **(storage_options or {}))
    rec = Recovery()
    if not fs.exists(root):
        return rec
    video_parts = set()
    for p in fs.glob(join(root, schema.VIDEOS, "*", "*.parquet")):
        video_parts.add(p.split("/")[-2] + "/" + p.split("/")[-1])
    # A compaction killed after committing a merged part but before deleting the parts
    # it replaces: the merged (committed) part wins, the covered ones go.
    committed_ranges: dict[str, list[tuple[int, int]]] = {}
    for key in video_parts:
        run, name = key.split("/")
        r = part_range(name)
        if r and r[1] > r[0]:
            committed_ranges.setdefault(run, []).append(r)
    for table in (schema.VIDEOS, schema.TIMELINES):
        for p in fs.glob(join(root, table, "*", "*.parquet")):
            run, name = p.split("/")[-2], p.split("/")[-1]
            r = part_range(name)
            if r and any(lo <= r[0] and r[1] <= hi and r != (lo, hi) for lo, hi in committed_ranges.get(run, [])):
                fs.rm(p)
                rec.orphan_parts_removed.append(p)
                video_parts.discard(f"{run}/{name}")
    for p in fs.glob(join(root, schema.TIMELINES, "*", "*.parquet")):
        key = p.split("/")[-2] + "/" + p.split("/")[-1]
        if key not in video_parts:
            fs.rm(p)
            rec.orphan_parts_removed.append(p)
    for d in fs.glob(join(root, "_staging", "*")):
        name = d.rstrip("/").split("/")[-1]
        if name != current_run_id and not name.startswith(current_run_id):
            fs.rm(d, recursive=fs.isdir(d))
            rec.staging_removed.append(d)
    runs = {k.split("/")[0] for k in video_parts}
    for run in sorted(runs):
        record = join(root, "runs", f"{run}.json")
        if run != current_run_id and not fs.exists(record):
            fs.makedirs(join(root, "runs"), exist_ok=True)
            with fs.open(record, "w") as f:
                json.dump({"run_id": run, "status": "interrupted", "recovered_by": current_run_id}, f, indent=2)
            rec.interrupted_runs.append(run)
    if rec.orphan_parts_removed or rec.staging_removed or rec.interrupted_runs:
        log.warning("recovered output %s: %s", output_uri, rec)
    return rec
