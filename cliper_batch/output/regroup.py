"""Regroup scored rows into complete videos: a video is ready only when its outcome and every segment arrived.

Rows of one video reach the driver in any order, spread over batches (segment rows,
then the video's outcome row, or interleaved with other videos). :class:`Regrouper`
holds them per video and releases a video's timeline rows together with its manifest
row once all of them are there.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import failures
from . import schema
from .. import rows
from ..types import VideoOutcome, VideoRef
from ..uris import media_kind



class WorkList(Protocol):
    """The run's work list as the writer reads it (``pipeline/worklist.py`` builds it): in memory as ``refs``, or
    ``spilled`` to files that ``chunks()`` reads back in bounded pieces."""

    spilled: bool
    refs: list[VideoRef]

    def chunks(self) -> Iterator[list[VideoRef]]: ...

_REPORTED_BUFFER = 1 << 20  # reported ids buffered as Python ints before they are folded into the sorted array


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
    failed_by_class: dict[str, int] = field(default_factory=dict)  # failure class -> videos
    videos_dropped: int = 0  # unfinished when the run was interrupted: not recorded, done by the next run
    store_retries: int = 0  # object-store retries the worker processes reported (rows' store_retries column)

    @property
    def score_window_s(self) -> float:
        if self.score_first_t is None or self.score_last_t is None:
            return 0.0
        return max(self.score_last_t - self.score_first_t, 0.0)



def in_sorted(keys: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """``np.isin(keys, sorted_unique)`` for a sorted array of unique values, by binary search: O(len(keys) log n).

    ``np.isin`` sorts both arrays together on every call; with the 10^7 reported ids of a large
    run and its work list read back a chunk at a time, that was minutes of the run's close.
    """
    if not len(sorted_unique):
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_unique, keys), len(sorted_unique) - 1)
    return sorted_unique[at] == keys

class Regrouper:
    """Scored batches in, complete per-video rows out (:meth:`take`)."""

    def __init__(
        self,
        classes: tuple[str, ...],
        *,
        model_id: str,
        config_hash: str,
        run_id: str,
        expected: "list[VideoRef] | WorkList | None" = None,
        attempts: dict[str, int] | None = None,
    ):
        self.classes = tuple(classes)
        self.model_id, self.config_hash, self.run_id = model_id, config_hash, run_id
        # Videos this run must account for: any that never reports back (its worker crashed
        # past its retries) becomes a failed manifest row in finish(). A list is held as a dict;
        # a spilled work list (pipeline/worklist.py) is read again in finish() against the ids
        # that reported, kept as 64-bit keys (8 bytes a video, not a dict entry).
        self._expected_stream = expected if getattr(expected, "spilled", False) else None
        if self._expected_stream is None and expected is not None and not isinstance(expected, list):
            expected = expected.refs
        self._unreported: dict[str, VideoRef] = {}
        if self._expected_stream is None:
            self._unreported = {r.video_id: r for r in (expected or [])}
        self._reported: list[int] = []
        self._reported_keys = np.empty(0, dtype=np.uint64)
        self._attempts = attempts or {}  # video_id -> attempt number of this run (1 when absent)
        self.stats = WriterStats()
        self._pending: dict[str, _Pending] = {}
        self._failed: set[str] = set()  # videos already closed as failed: late segment rows are dropped
        self.ready_timelines: list[dict] = []
        self.ready_videos: list[dict] = []

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
        if "store_retries" in batch:
            self.stats.store_retries += int(batch["store_retries"].sum())
        for i, kind in enumerate(batch["row_kind"]):
            vid = str(batch["video_id"][i])
            if kind == rows.VIDEO:
                self._pending.setdefault(vid, _Pending()).outcome = rows.decode_outcome(str(batch["outcome"][i]))
            else:
                if vid in self._failed:
                    continue
                self._pending.setdefault(vid, _Pending()).segments.append(self._timeline_row(batch, i, probs[i]))
            self._maybe_complete(vid)

    def take(self) -> tuple[list[dict], list[dict]]:
        """The complete videos so far: (timeline rows, manifest rows); the buffers are emptied."""
        out = self.ready_timelines, self.ready_videos
        self.ready_timelines, self.ready_videos = [], []
        return out

    def _timeline_row(self, batch, i: int, p: np.ndarray) -> dict:
        best = int(np.argmax(p))
        row = {
            "video_id": str(batch["video_id"][i]),
            "video_uri": str(batch["video_uri"][i]),
            "kind": media_kind(str(batch["video_uri"][i])),
            "track_id": int(batch["track_id"][i]),
            "segment_index": int(batch["segment_index"][i]),
            "start_s": float(batch["start_s"][i]),
            "end_s": float(batch["end_s"][i]),
            "label": self.classes[best],
            "confidence": float(p[best]),
            "descriptor": int(batch["descriptor"][i]),
            "model_id": self.model_id,
            "config_hash": self.config_hash,
            "run_id": self.run_id,
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
        if self._expected_stream is None:
            self._unreported.pop(vid, None)
        elif len(vid) == 16:  # a listed video's id: 16 hex digits
            with contextlib.suppress(ValueError):
                self._reported.append(int(vid, 16))
            if len(self._reported) >= _REPORTED_BUFFER:
                self._compact_reported()
        p = self._pending.get(vid)
        if p is None or p.outcome is None:
            return
        o = p.outcome
        if o.status == "ok" and len(p.segments) < o.n_segments:
            return  # more segment rows still in flight
        del self._pending[vid]
        self._close(o, p.segments)

    def _close(self, o: VideoOutcome, segments: list[dict]) -> None:
        if o.status != "ok":
            self._failed.add(o.ref.video_id)
            self.stats.videos_failed += 1
            cls = failures.classify(o.error_type)
            self.stats.failed_by_class[cls] = self.stats.failed_by_class.get(cls, 0) + 1
            segments = []
        else:
            segments.sort(key=lambda r: (r["track_id"], r["segment_index"]))
            self.ready_timelines.extend(segments)
            self.stats.videos_ok += 1
            self.stats.segments += len(segments)
            self.stats.video_seconds += o.info.duration_s if o.info else 0.0
        self.ready_videos.append(self._video_row(o, n_tracks=len({r["track_id"] for r in segments})))

    def _video_row(self, o: VideoOutcome, n_tracks: int) -> dict:
        info = o.info
        ok = o.status == "ok"
        return {
            "video_id": o.ref.video_id,
            "video_uri": o.ref.uri,
            "kind": media_kind(o.ref.uri),
            "size_bytes": o.ref.size_bytes,
            "fingerprint": o.ref.fingerprint,
            "status": o.status,
            "error_type": o.error_type,
            "error": o.error,
            "error_class": None if ok else failures.classify(o.error_type),
            "attempt": self._attempts.get(o.ref.video_id, 1),
            "duration_s": info.duration_s if info else None,
            "fps": info.fps if info and info.fps > 0 else None,  # a still image has none
            "width": info.width if info else None,
            "height": info.height if info else None,
            "codec": info.codec if info else None,
            "rotation": info.rotation if info else None,
            "n_segments": o.n_segments if ok else 0,
            "n_tracks": n_tracks if ok else 0,
            "decoder": o.extra.get("decoder"),
            "model_id": self.model_id,
            "config_hash": self.config_hash,
            "run_id": self.run_id,
        }

    def _compact_reported(self) -> None:
        """Fold the buffered reported keys into the sorted, unique uint64 array."""
        if self._reported:
            new = np.fromiter(self._reported, dtype=np.uint64, count=len(self._reported))
            self._reported_keys = np.union1d(self._reported_keys, new)
            self._reported = []

    def _unreported_stream(self) -> Iterator[list[VideoRef]]:
        """The spilled work list's videos that never reported, a chunk at a time."""
        self._compact_reported()
        for chunk in self._expected_stream.chunks():
            keys = np.fromiter((int(r.video_id, 16) for r in chunk), dtype=np.uint64, count=len(chunk))
            yield [r for r, seen in zip(chunk, in_sorted(keys, self._reported_keys)) if not seen]

    def finish(
        self, *, lost_error_type: str | None = "WorkerLost", lost_reason: str = "", flush: Callable[[], None] | None = None
    ) -> None:
        """Account for every expected video that is not complete.

        ``lost_error_type`` set: a video whose rows never completed becomes a failed
        row (``IncompleteVideo`` when its outcome came, else ``lost_error_type``).
        ``None`` (the run was interrupted): they are dropped, unrecorded, so the next
        run does them as if never tried. ``flush`` (the writer's) is called between chunks of a
        spilled work list, so its failed rows never pile up in memory.
        """
        unfinished = list(self._pending.items())
        unreported = [list(self._unreported.values())]
        if self._expected_stream is not None:
            unreported = self._unreported_stream()
        self._pending, self._unreported = {}, {}
        if lost_error_type is None:
            self.stats.videos_dropped += len(unfinished) + sum(len(c) for c in unreported)
            return
        for vid, p in unfinished:
            o = p.outcome
            if o is None:
                uri = p.segments[0]["video_uri"] if p.segments else ""
                o = VideoOutcome(ref=VideoRef(vid, uri), status="failed")
            else:
                o.status = "failed"
            o.error_type = o.error_type or "IncompleteVideo"
            o.error = o.error or f"only {len(p.segments)} of {o.n_segments} segment rows reached the writer"
            self._close(o, [])
        why = lost_reason or "its worker crashed or was lost after retries"
        for chunk in unreported:
            for ref in chunk:
                self._close(
                    VideoOutcome(ref=ref, status="failed", error_type=lost_error_type, error=f"{ref.uri}: no result came back ({why})"),
                    [],
                )
            if flush is not None:
                flush()


__all__ = ["Regrouper", "WriterStats", "in_sorted"]
