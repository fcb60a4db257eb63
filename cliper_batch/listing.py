"""List a corpus: an fsspec directory, glob, or text/Parquet manifest -> sorted, de-duplicated ``VideoRef``s.

A ``VideoRef`` is any item to annotate: a video, or a still image (its extension says which).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import posixpath
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq

from .types import VideoRef
from .uris import MEDIA_EXTENSIONS, InvalidURI, filesystem_for, is_local, normalize_uri, normalized_id, protocol_of

MANIFEST_URI_COLUMNS = ("video_uri", "uri", "path")


class CorpusNotFound(FileNotFoundError):
    """The --input location does not exist or lists no videos."""


def _unstrip(fs, uri: str, path: str) -> str:
    """Turn a filesystem-internal path back into a URI of the same protocol."""
    if is_local(uri):
        return path
    return fs.unstrip_protocol(path)


def fingerprint_of(info: dict) -> tuple[int | None, float | None, str | None]:
    """(size, mtime, fingerprint) from an fsspec ``info`` dict: size plus the best change marker it has."""
    size = info.get("size")
    mtime = info.get("mtime")
    if mtime is None:
        for key in ("LastModified", "last_modified", "updated", "mtime", "created"):
            v = info.get(key)
            if v is None:
                continue
            if isinstance(v, _dt.datetime):
                mtime = v.timestamp()
            elif isinstance(v, (int, float)):
                mtime = float(v)
            else:
                try:
                    mtime = _dt.datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
                except ValueError:
                    continue
            break
    marker = info.get("ETag") or info.get("etag") or info.get("md5Hash") or (f"{mtime:.6f}" if mtime is not None else "")
    fp = f"{size}:{str(marker).strip(chr(34))}" if size is not None else None
    return (int(size) if size is not None else None), mtime, fp


def _infos(fs, paths: list[str], workers: int = 32, chunk: int = 256) -> list[dict]:
    """fsspec ``info`` for many paths, in order (threads: one HEAD each on object stores); a failure gives ``{}``.

    Paths go to the threads in chunks, so a million-entry manifest makes thousands of
    tasks, not a million futures.
    """

    def one(p):
        try:
            return fs.info(p)
        except (OSError, ValueError):
            return {}

    def many(ps):
        return [one(p) for p in ps]

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return [i for got in ex.map(many, [paths[k : k + chunk] for k in range(0, len(paths), chunk)]) for i in got]


def _is_media(path: str) -> bool:
    return path.lower().endswith(MEDIA_EXTENSIONS)


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

    * a directory: every file below it with a video or image extension (recursively;
      ``uris.MEDIA_EXTENSIONS``: an image is a one-frame item, ``uris.media_kind``);
    * a glob (``*``, ``?``, ``[``): the matching files with a video or image extension;
    * a ``.txt``/``.lst`` manifest (one URI per line, ``#`` comments) or a
      ``.parquet`` manifest with a ``video_uri``/``uri``/``path`` column: every
      listed URI, whatever its extension (a bad file becomes a ``failed`` row);
    * a single video or image file.
    """
    uri = normalize_uri(input_uri)
    fs, path = filesystem_for(uri, **storage_options)
    # normalised URI -> (size, mtime, fingerprint): three values per video, not fsspec's info dict
    marks: dict[str, tuple] = {}
    if any(ch in path for ch in "*?["):
        found = {p: i for p, i in fs.glob(path, detail=True).items() if _is_media(p) and i.get("type") == "file"}
        marks = {normalize_uri(_unstrip(fs, uri, p)): fingerprint_of(i) for p, i in found.items()}
        uris = list(marks)
    elif fs.isdir(path):
        for _, _, files in fs.walk(path, detail=True):  # one folder's infos at a time
            for i in files.values():
                if _is_media(i["name"]):
                    marks[normalize_uri(_unstrip(fs, uri, i["name"]))] = fingerprint_of(i)
        uris = list(marks)
    elif fs.isfile(path):
        if path.lower().endswith((".txt", ".lst", ".parquet")):
            uris = _read_manifest(fs, path, uri)
        else:
            uris = [uri]
    else:
        raise CorpusNotFound(f"input {input_uri!r} does not exist")
    # A manifest entry that is not a usable URI (unknown scheme, NUL byte) still becomes a
    # video, one that will fail with that reason in the manifest: never a failed listing.
    normalised, unusable = [], []
    if marks:  # a folder or glob: its URIs are normalised and unique already (no second copy of each)
        normalised = uris
    else:
        for u in dict.fromkeys(uris):
            try:
                normalised.append(normalize_uri(u))
            except InvalidURI:
                unusable.append(u)
        normalised = list(dict.fromkeys(normalised))
    del uris
    missing = [u for u in normalised if u not in marks]
    if missing:  # manifest entries: one info call each, in threads, grouped by protocol (one filesystem each)
        by_proto: dict[str, list[str]] = {}
        for u in missing:
            by_proto.setdefault(protocol_of(u), []).append(u)
        for group in by_proto.values():
            mfs, _ = filesystem_for(group[0], **storage_options)
            paths = group if is_local(group[0]) else [mfs._strip_protocol(u) for u in group]
            marks.update(zip(group, map(fingerprint_of, _infos(mfs, paths))))
    refs: dict[str, VideoRef] = {}
    for n in normalised:
        size, mtime, fp = marks.pop(n, (None, None, None))
        refs[n] = VideoRef(video_id=normalized_id(n), uri=n, size_bytes=size, mtime=mtime, fingerprint=fp)
    del marks, normalised
    for u in unusable:
        refs.setdefault(u, VideoRef(video_id=hashlib.sha256(u.encode("utf-8", "replace")).hexdigest()[:16], uri=u))
    if not refs:
        raise CorpusNotFound(f"input {input_uri!r} lists no videos or images (extensions: {', '.join(MEDIA_EXTENSIONS)})")
    return sorted(refs.values(), key=lambda r: r.uri)
