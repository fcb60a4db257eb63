"""List a corpus: an fsspec directory, glob, or text/Parquet manifest -> sorted, de-duplicated ``VideoRef``s."""
from __future__ import annotations

import posixpath

import pyarrow.parquet as pq

from .types import VideoRef
from .uris import VIDEO_EXTENSIONS, InvalidURI, filesystem_for, is_local, normalize_uri, protocol_of, video_id_for

MANIFEST_URI_COLUMNS = ("video_uri", "uri", "path")


class CorpusNotFound(FileNotFoundError):
    """The --input location does not exist or lists no videos."""


def _unstrip(fs, uri: str, path: str) -> str:
    """Turn a filesystem-internal path back into a URI of the same protocol."""
    if is_local(uri):
        return path
    return fs.unstrip_protocol(path)


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _read_manifest(fs, path: str, uri: str) -> list[str]:
    base = posixpath.dirname(path)
    if path.lower().endswith(".parquet"):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        col = next((c for c in MANIFEST_URI_COLUMNS if c in table.column_names), None)
        if col is None:
            raise InvalidURI(f"Parquet manifest {uri} has none of the columns {MANIFEST_URI_COLUMNS}")
        entries = [v for v in table.column(col).to_pylist() if v]
    else:
        with fs.open(path, "rt", encoding="utf-8") as f:
            entries = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for entry in entries:
        if protocol_of(entry) == "file" and "://" not in entry and not posixpath.isabs(entry):
            entry = _unstrip(fs, uri, posixpath.join(base, entry))  # relative to the manifest
        out.append(entry)
    return out


def list_videos(input_uri: str, **storage_options) -> list[VideoRef]:
    """Every video an ``--input`` names, sorted by URI, each with a stable ``video_id``.

    * a directory: every file below it with a video extension (recursively);
    * a glob (``*``, ``?``, ``[``): the matching files with a video extension;
    * a ``.txt``/``.lst`` manifest (one URI per line, ``#`` comments) or a
      ``.parquet`` manifest with a ``video_uri``/``uri``/``path`` column: every
      listed URI, whatever its extension (a bad file becomes a ``failed`` row);
    * a single video file.
    """
    uri = normalize_uri(input_uri)
    fs, path = filesystem_for(uri, **storage_options)
    if any(ch in path for ch in "*?["):
        found = [p for p in fs.glob(path) if _is_video(p) and fs.isfile(p)]
        uris = [_unstrip(fs, uri, p) for p in found]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if _is_video(p)]
        uris = [_unstrip(fs, uri, p) for p in found]
    elif fs.isfile(path):
        if path.lower().endswith((".txt", ".lst", ".parquet")):
            uris = _read_manifest(fs, path, uri)
        else:
            uris = [uri]
    else:
        raise CorpusNotFound(f"input {input_uri!r} does not exist")
    refs: dict[str, VideoRef] = {}
    for u in uris:
        n = normalize_uri(u)
        refs.setdefault(n, VideoRef(video_id=video_id_for(n), uri=n))
    if not refs:
        raise CorpusNotFound(f"input {input_uri!r} lists no videos (extensions: {', '.join(VIDEO_EXTENSIONS)})")
    return sorted(refs.values(), key=lambda r: r.uri)
