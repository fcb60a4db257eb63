"""Arrow schemas of every output table (documented in docs/output-schema.md).

Both tables carry ``cliper_batch.schema_version`` in their Parquet metadata;
``query`` checks it and explains a mismatch.
"""
from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = "1"
META_VERSION_KEY = b"cliper_batch.schema_version"
META_CLASSES_KEY = b"cliper_batch.classes"
META_TABLE_KEY = b"cliper_batch.table"

TIMELINES = "timelines"
VIDEOS = "videos"


def class_column(name: str) -> str:
    return f"p_{name}"


def timeline_schema(classes: tuple[str, ...] | list[str]) -> pa.Schema:
    """One row per (video, track, segment); a still image is one segment (index 0, start = end = 0) per face."""
    fields = [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("video_uri", pa.string(), nullable=False),
        # added within v1 (read as null = "video" from older files): image | video (uris.media_kind)
        pa.field("kind", pa.string()),
        pa.field("track_id", pa.int32(), nullable=False),  # 0 when --faces none
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # argmax class
        pa.field("confidence", pa.float32(), nullable=False),  # probability of `label`
    ]
    fields += [pa.field(class_column(c), pa.float32(), nullable=False) for c in classes]
    fields += [
        pa.field("descriptor", pa.int16(), nullable=False),  # best descriptor index within `label`
        # Face box (normalised 0..1, median over the segment); null when --faces none.
        pa.field("face_x0", pa.float32()),
        pa.field("face_y0", pa.float32()),
        pa.field("face_x1", pa.float32()),
        pa.field("face_y1", pa.float32()),
        pa.field("face_score", pa.float32()),
        pa.field("frames_with_face", pa.int16()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
    return pa.schema(fields, metadata=_meta(TIMELINES, classes))


def classes_of(metadata: dict[bytes, bytes] | None) -> list[str] | None:
    """The model classes a timelines file's metadata names (None when it names none)."""
    raw = (metadata or {}).get(META_CLASSES_KEY)
    return None if raw is None else list(json.loads(raw))


def video_schema() -> pa.Schema:
    """One row per input item (video or image) per run (the run's manifest)."""
    fields = [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("video_uri", pa.string(), nullable=False),
        pa.field("kind", pa.string()),  # added within v1 (null = "video" in older files): image | video
        pa.field("size_bytes", pa.int64()),  # from the listing
        pa.field("fingerprint", pa.string()),  # size + mtime/ETag: decides whether an incremental run redoes it
        pa.field("status", pa.string(), nullable=False),  # ok | failed
        pa.field("error_type", pa.string()),
        pa.field("error", pa.string()),
        # added within v1 (nullable, read as null from older files): retry policy bookkeeping
        pa.field("error_class", pa.string()),  # data | setup | transient (cliper_batch.failures); null when ok
        pa.field("attempt", pa.int32()),  # 1 for a video's first try at this fingerprint, +1 per retry
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("rotation", pa.int16()),
        pa.field("n_segments", pa.int32(), nullable=False),
        pa.field("n_tracks", pa.int32(), nullable=False),
        pa.field("decoder", pa.string()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
    return pa.schema(fields, metadata=_meta(VIDEOS, None))


def _meta(table: str, classes) -> dict[bytes, bytes]:
    meta = {META_VERSION_KEY: SCHEMA_VERSION.encode(), META_TABLE_KEY: table.encode()}
    if classes is not None:
        meta[META_CLASSES_KEY] = json.dumps(list(classes)).encode()
    return meta


class SchemaMismatch(RuntimeError):
    """Output written by an incompatible cliper-batch version."""


def check_metadata(metadata: dict[bytes, bytes] | None, where: str) -> None:
    found = (metadata or {}).get(META_VERSION_KEY)
    if found is None:
        raise SchemaMismatch(
            f"{where}: no {META_VERSION_KEY.decode()} in Parquet metadata; "
            "this file was not written by cliper-batch (or by a pre-release)."
        )
    if found.decode() != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{where}: written with output schema v{found.decode()}, this cliper-batch reads v{SCHEMA_VERSION}. "
            "Re-run the annotation with this version, or read it with the version that wrote it."
        )
