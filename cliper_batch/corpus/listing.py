"""List a corpus: an fsspec directory, glob, or text/Parquet manifest -> sorted, de-duplicated ``VideoRef``s.

A ``VideoRef`` is any item to annotate: a video, or a still image (its extension says which).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import posixpath
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq

from ..types import VideoRef
from ..uris import MEDIA_EXTENSIONS, InvalidURI, filesystem_for, is_local, normalize_uri, normalized_id, protocol_of

MANIFEST_URI_COLUMNS = ("video_uri", "uri", "path")
# Videos per listing chunk: what the driver holds of the listing and of the plan at once (iter_videos).
CHUNK = 50_000


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


def _manifest_entries(fs, path: str, uri: str) -> Iterator[str]:
    """The manifest's entries in file order, one at a time (a text file line by line, a Parquet file batch by batch)."""
    base = posixpath.dirname(path)
    if path.lower().endswith(".parquet"):
        f = fs.open(path, "rb")
        with f:
            pf = pq.ParquetFile(f)
            col = next((c for c in MANIFEST_URI_COLUMNS if c in pf.schema_arrow.names), None)
            if col is None:
                raise InvalidURI(f"Parquet manifest {uri} has none of the columns {MANIFEST_URI_COLUMNS}")
            entries = (v for b in pf.iter_batches(columns=[col], batch_size=CHUNK) for v in b.column(0).to_pylist() if v)
            yield from (_resolve(fs, uri, base, e) for e in entries)
        return
    with fs.open(path, "rt", encoding="utf-8") as f:
        for ln in f:
            if ln.strip() and not ln.lstrip().startswith("#"):
                yield _resolve(fs, uri, base, ln.strip())


def _resolve(fs, uri: str, base: str, entry: str) -> str:
    if protocol_of(entry) == "file" and "://" not in entry and not posixpath.isabs(entry):
        return _unstrip(fs, uri, posixpath.join(base, entry))  # relative to the manifest
    return entry


def _walk_in_order(fs, path: str) -> Iterator[dict]:
    """Every file below ``path`` (fsspec info dicts) in path order: one folder's entries in memory at a time.

    A folder's files and subfolders are sorted together (a subfolder as ``name/``), so the
    files come out in the order of their full paths, as one sort of the whole listing gives.
    """
    entries = fs.ls(path, detail=True)
    keyed = sorted(((e["name"].rstrip("/") + ("/" if e.get("type") == "directory" else ""), e) for e in entries),
                   key=lambda ke: ke[0])
    del entries
    for key, e in keyed:
        if key.endswith("/"):
            if key.rstrip("/") != path.rstrip("/"):  # some filesystems list the folder itself
                yield from _walk_in_order(fs, e["name"])
        else:  # a file, or a link to nothing (it becomes a failed row, as any unreadable file)
            yield e


class SeenKeys:
    """A compact set of 64-bit keys (video ids): sorted numpy runs, 8 bytes a key, merged as they pile up."""

    def __init__(self):
        self._runs: list[np.ndarray] = []

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Mask of the ``keys`` not seen before (and first in ``keys``); adds them."""
        _, first = np.unique(keys, return_index=True)
        new = np.zeros(len(keys), dtype=bool)
        new[first] = True
        for run in self._runs:
            new &= ~np.isin(keys, run, assume_unique=False)
        if new.any():
            self._runs.append(np.sort(keys[new]))
        if len(self._runs) > 8:
            self._runs = [np.concatenate(self._runs)]
            self._runs[0].sort()
        return new

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)


def id_key(video_id: str) -> int:
    """The 64-bit key of a listing's ``video_id`` (16 hex digits)."""
    return int(video_id, 16)


def iter_videos(input_uri: str, chunk_size: int | None = None, **storage_options) -> Iterator[list[VideoRef]]:
    """:func:`list_videos` as a stream: lists of at most ``chunk_size`` ``VideoRef`` s, each sorted by URI.

    The driver holds one chunk (plus one folder's entries, or fsspec's glob result),
    never the whole listing. A folder comes out in global URI order (:func:`_walk_in_order`);
    a manifest in its own order chunk by chunk (each chunk sorted; one chunk is the whole
    manifest up to ``chunk_size`` entries), de-duplicated across chunks by a compact key set
    (:class:`SeenKeys`). Raises :class:`CorpusNotFound` at the first ``next`` when the input
    does not exist or lists nothing.
    """
    chunk_size = int(chunk_size or CHUNK)
    uri = normalize_uri(input_uri)
    fs, path = filesystem_for(uri, **storage_options)
    if any(ch in path for ch in "*?["):
        found = sorted((p, i) for p, i in fs.glob(path, detail=True).items() if _is_media(p) and i.get("type") == "file")
        infos: Iterable[dict] = ({**i, "name": p} for p, i in found)
        manifest = None
    elif fs.isdir(path):
        infos, manifest = (i for i in _walk_in_order(fs, path) if _is_media(i["name"])), None
    elif fs.isfile(path):
        if path.lower().endswith((".txt", ".lst", ".parquet")):
            infos, manifest = (), _manifest_entries(fs, path, uri)
        else:
            infos, manifest = (), iter([uri])
    else:
        raise CorpusNotFound(f"input {input_uri!r} does not exist")
    listed = 0
    if manifest is None:  # a folder or glob: its URIs come normalised and unique
        for part in _batched(infos, chunk_size):
            refs = []
            for i in part:
                n = normalize_uri(_unstrip(fs, uri, i["name"]))
                size, mtime, fp = fingerprint_of(i)
                refs.append(VideoRef(video_id=normalized_id(n), uri=n, size_bytes=size, mtime=mtime, fingerprint=fp))
            listed += len(refs)
            yield sorted(refs, key=lambda r: r.uri)
    else:
        seen = SeenKeys()
        for part in _batched(manifest, chunk_size):
            refs = _manifest_refs(part, storage_options)
            keep = seen.add_new(np.fromiter((id_key(r.video_id) for r in refs), dtype=np.uint64, count=len(refs)))
            refs = [r for r, k in zip(refs, keep) if k]
            listed += len(refs)
            if refs:
                yield sorted(refs, key=lambda r: r.uri)
    if not listed:
        raise CorpusNotFound(f"input {input_uri!r} lists no videos or images (extensions: {', '.join(MEDIA_EXTENSIONS)})")


def _batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while part := list(itertools.islice(it, n)):
        yield part


def _manifest_refs(entries: list[str], storage_options: dict) -> list[VideoRef]:
    """``VideoRef`` s of one chunk of manifest entries: normalised, one info call each (threads, one filesystem
    per protocol). An entry that is not a usable URI (unknown scheme, NUL byte) still becomes a video, one
    that will fail with that reason in the manifest: never a failed listing."""
    normalised, unusable = [], []
    for u in dict.fromkeys(entries):
        try:
            normalised.append(normalize_uri(u))
        except InvalidURI:
            unusable.append(u)
    normalised = list(dict.fromkeys(normalised))
    marks: dict[str, tuple] = {}
    by_proto: dict[str, list[str]] = {}
    for u in normalised:
        by_proto.setdefault(protocol_of(u), []).append(u)
    for group in by_proto.values():
        mfs, _ = filesystem_for(group[0], **storage_options)
        paths = group if is_local(group[0]) else [mfs._strip_protocol(u) for u in group]
        marks.update(zip(group, map(fingerprint_of, _infos(mfs, paths))))
    refs: dict[str, VideoRef] = {}
    for n in normalised:
        size, mtime, fp = marks.pop(n, (None, None, None))
        refs[n] = VideoRef(video_id=normalized_id(n), uri=n, size_bytes=size, mtime=mtime, fingerprint=fp)
    for u in unusable:
        refs.setdefault(u, VideoRef(video_id=hashlib.sha256(u.encode("utf-8", "replace")).hexdigest()[:16], uri=u))
    return list(refs.values())


def list_videos(input_uri: str, **storage_options) -> list[VideoRef]:
    """Every video an ``--input`` names, sorted by URI, each with a stable ``video_id``.

    * a directory: every file below it with a video or image extension (recursively;
      ``uris.MEDIA_EXTENSIONS``: an image is a one-frame item, ``uris.media_kind``);
    * a glob (``*``, ``?``, ``[``): the matching files with a video or image extension;
    * a ``.txt``/``.lst`` manifest (one URI per line, ``#`` comments) or a
      ``.parquet`` manifest with a ``video_uri``/``uri``/``path`` column: every
      listed URI, whatever its extension (a bad file becomes a ``failed`` row);
    * a single video or image file.

    The whole listing in memory: a run streams it instead (:func:`iter_videos`).
    """
    return sorted((r for chunk in iter_videos(input_uri, **storage_options) for r in chunk), key=lambda r: r.uri)
