"""The row contract between pipeline stages (one schema for every block).

Every block that flows from the decode stage to the score stage has the same
columns. Two kinds of rows share them:

* ``row_kind == "segment"``: one (video, track, segment) to score, its crops in
  ``crops`` (``T x S x S x 3`` uint8);
* ``row_kind == "video"``: exactly one per input video, emitted after all its
  segment rows, carrying the :class:`~cliper_batch.types.VideoOutcome` as JSON
  in ``outcome`` (status, error, probe facts, ``n_segments``) and a zero
  ``crops`` tensor. Errors travel as data next to the samples, so one bad video
  never raises through Ray.

The fused worker's rows have no ``crops`` column (its crops stay on the
device). Scoring (:func:`scored_rows`) drops ``crops`` and adds ``probs``
(``C`` float32), ``descriptor`` (int16; -1 on outcome rows) and the scoring
columns ``score_t0`` (float64, wall-clock start of the block's scoring),
``score_busy_s`` (float64, the model's busy time for the block spread evenly
over its rows) and ``score_backend`` (e.g. ``eager@cpu``). Both workers emit
exactly these scored rows; the writer regroups them per video.

``store_retries`` (int32, on every row) carries the object-store retries the worker
processes made (:mod:`cliper_batch.store_retries`): each video's outcome row the retries of
its decoding process since that process's last report, and the first row of a scored block
those of the scoring process; 0 elsewhere. The writer sums the column into the run record.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import asdict, fields

import numpy as np

from . import store_retries
from .types import VideoInfo, VideoOutcome, VideoRef

SEGMENT = "segment"
VIDEO = "video"


FACE_FLOAT_COLUMNS = ("face_x0", "face_y0", "face_x1", "face_y1", "face_score")
FACE_COLUMNS = (*FACE_FLOAT_COLUMNS, "frames_with_face")
# the columns that pass through scoring (unchanged, but for the scoring process's own store_retries added)
KEY_COLUMNS = (
    "row_kind", "video_id", "video_uri", "track_id", "segment_index", "start_s", "end_s", "outcome", *FACE_COLUMNS,
    "store_retries",
)


def _no_faces(n: int) -> dict[str, np.ndarray]:
    """Face columns for rows without a face (NaN / -1; the writer turns them into nulls)."""
    out = {c: np.full(n, np.nan, dtype=np.float32) for c in FACE_FLOAT_COLUMNS}
    out["frames_with_face"] = np.full(n, -1, dtype=np.int16)
    return out


def segment_rows(
    ref: VideoRef,
    segments,
    crops: np.ndarray | None,
    track_ids: np.ndarray | None = None,
    faces: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Rows for ``len(segments)`` clips (one per segment, or per (track, segment) with ``track_ids``).

    ``crops=None`` leaves the ``crops`` column out (rows whose crops never leave the worker's device).
    """
    n = len(segments)
    out = {
        "row_kind": np.array([SEGMENT] * n, dtype=object),
        "video_id": np.array([ref.video_id] * n, dtype=object),
        "video_uri": np.array([ref.uri] * n, dtype=object),
        "track_id": np.zeros(n, dtype=np.int32) if track_ids is None else np.asarray(track_ids, dtype=np.int32),
        "segment_index": np.array([s.index for s in segments], dtype=np.int32),
        "start_s": np.array([s.start_s for s in segments], dtype=np.float64),
        "end_s": np.array([s.end_s for s in segments], dtype=np.float64),
        "outcome": np.array([""] * n, dtype=object),
        "store_retries": np.zeros(n, dtype=np.int32),
    }
    if crops is not None:
        out["crops"] = crops
    out.update(_no_faces(n) if faces is None else faces)
    return out


def scored_rows(
    block: dict[str, np.ndarray],
    probs: np.ndarray,
    descriptor: np.ndarray,
    t_start: float,
    busy_s: float,
    backend: str,
) -> dict[str, np.ndarray]:
    """``block``'s rows without ``crops``, plus the score columns (``probs``/``descriptor`` per row)."""
    n = len(block["row_kind"])
    out = {k: block[k] for k in KEY_COLUMNS}
    out["probs"] = probs
    out["descriptor"] = descriptor
    out["score_t0"] = np.full(n, t_start, dtype=np.float64)
    out["score_busy_s"] = np.full(n, busy_s / max(n, 1), dtype=np.float64)
    out["score_backend"] = np.array([backend] * n, dtype=object)
    retries = store_retries.take_total() if n else 0  # the scoring process's (its model download, say)
    if retries:
        out["store_retries"] = out["store_retries"].copy()
        out["store_retries"][0] += retries
    return out


def record_failure(outcome: VideoOutcome, exc: BaseException, expected: tuple[type[BaseException], ...]) -> None:
    """Mark ``outcome`` failed with ``exc`` (a failure of one video is data, not a crash).

    ``expected`` are the error types whose message says it all (bad file, decode
    error); any other exception also keeps a short traceback in ``extra``.
    """
    outcome.status = "failed"
    outcome.n_segments = 0
    outcome.error_type = type(exc).__name__
    outcome.error = str(exc) or repr(exc)
    if not isinstance(exc, expected):
        outcome.extra["traceback"] = traceback.format_exc(limit=8)


def outcome_row(outcome: VideoOutcome, crop_shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """The one ``row_kind == "video"`` row of a video; ``crop_shape`` adds a zero ``crops`` cell of that shape."""
    out = {
        "row_kind": np.array([VIDEO], dtype=object),
        "video_id": np.array([outcome.ref.video_id], dtype=object),
        "video_uri": np.array([outcome.ref.uri], dtype=object),
        "track_id": np.zeros(1, dtype=np.int32),
        "segment_index": np.full(1, -1, dtype=np.int32),
        "start_s": np.zeros(1, dtype=np.float64),
        "end_s": np.zeros(1, dtype=np.float64),
        "outcome": np.array([encode_outcome(outcome)], dtype=object),
        "store_retries": np.array([store_retries.take_total()], dtype=np.int32),  # this process's, since its last
    }
    if crop_shape is not None:
        out["crops"] = np.zeros((1, *crop_shape), dtype=np.uint8)
    out.update(_no_faces(1))
    return out


_REF_FIELDS = tuple(f.name for f in fields(VideoRef))


def encode_ref(ref: VideoRef) -> str:
    # a flat dataclass: no asdict() deep copy (the driver encodes every listed video)
    return json.dumps({k: getattr(ref, k) for k in _REF_FIELDS})


def decode_ref(text: str) -> VideoRef:
    return VideoRef(**json.loads(text))


def encode_outcome(outcome: VideoOutcome) -> str:
    d = asdict(outcome)
    return json.dumps(d, default=str)


def decode_outcome(text: str) -> VideoOutcome:
    d = json.loads(text)
    info = VideoInfo(**d["info"]) if d.get("info") else None
    return VideoOutcome(
        ref=VideoRef(**d["ref"]),
        status=d["status"],
        error=d.get("error"),
        error_type=d.get("error_type"),
        info=info,
        n_segments=int(d.get("n_segments", 0)),
        extra=d.get("extra") or {},
    )
