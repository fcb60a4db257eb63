"""Validation and normalisation of user-supplied paths and URLs (fsspec)."""
from __future__ import annotations

import hashlib
import os
from urllib.parse import urlsplit

import fsspec

from . import store_retries

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv", ".3gp", ".ogv",
)
# Still images: annotated as one-frame items (cliper_batch/decode/images.py), one row per face (or per image, --faces none).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# What a folder or glob listing picks up.
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
IMAGE, VIDEO = "image", "video"


class InvalidURI(ValueError):
    """A path or URL that cliper-batch refuses to use."""


def protocol_of(uri: str) -> str:
    """The URL scheme ('file' for plain paths); Windows drive letters count as local."""
    scheme = urlsplit(uri).scheme
    if not scheme or (len(scheme) == 1 and os.name == "nt"):
        return "file"
    return scheme.lower()


def normalize_uri(uri: str) -> str:
    """Check a user path/URL and return a canonical form.

    Local paths become absolute ``file://`` URLs-free paths (plain absolute paths);
    remote URLs keep their scheme and must name a protocol fsspec knows.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidURI("empty path or URL")
    if "\x00" in uri:
        raise InvalidURI(f"path or URL contains a NUL byte: {uri!r}")
    proto = protocol_of(uri)
    if proto in ("file", "local"):
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return os.path.abspath(os.path.expanduser(path))
    try:
        cls = fsspec.get_filesystem_class(proto)
    except (ValueError, ImportError) as exc:
        raise InvalidURI(
            f"unsupported URL scheme {proto!r} in {uri!r}: {exc}. "
            "Install the fsspec backend for it (e.g. `pip install 'cliper-batch[cloud]'` for s3/gcs)."
        ) from exc
    # One spelling per object (e.g. memory://a and memory:///a), so ids are stable.
    return f"{proto}://{cls._strip_protocol(uri)}"


def media_kind(uri: str) -> str:
    """``"image"`` for a URI with an image extension (:data:`IMAGE_EXTENSIONS`), else ``"video"``.

    The one rule that decides how an item is read (:func:`cliper_batch.decode.probe.probe`) and the
    ``kind`` column of both output tables. Query strings are not part of a file name here:
    fsspec URIs name objects, not web pages.
    """
    return IMAGE if uri.lower().endswith(IMAGE_EXTENSIONS) else VIDEO


def is_local(uri: str) -> bool:
    return protocol_of(uri) in ("file", "local")


def video_id_for(uri: str) -> str:
    """A stable id for a video: the first 16 hex digits of sha256(normalised URI)."""
    return normalized_id(normalize_uri(uri))


def normalized_id(normalized_uri: str) -> str:
    """:func:`video_id_for` of a URI that :func:`normalize_uri` already returned (no second normalisation)."""
    return hashlib.sha256(normalized_uri.encode("utf-8")).hexdigest()[:16]


def filesystem_for(uri: str, **storage_options) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path-within-filesystem) for a normalised URI.

    s3:// gets botocore's standard retry mode unless the user configured retries, and its
    retries are counted for the run record (:mod:`cliper_batch.store_retries`).
    """
    norm = normalize_uri(uri)
    fs, path = fsspec.core.url_to_fs(norm, **store_retries.with_defaults(protocol_of(norm), storage_options))
    store_retries.watch(fs)
    return fs, path


def join(base: str, *parts: str) -> str:
    base = base.rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts]])


def is_inside(child: str, parent: str) -> bool:
    """Whether ``child`` lies at or below ``parent`` (same protocol, path prefix on component boundaries)."""
    c, p = normalize_uri(child), normalize_uri(parent)
    if protocol_of(c) != protocol_of(p):
        return False
    if is_local(c):
        c, p = os.path.realpath(c), os.path.realpath(p)
    c, p = c.rstrip("/"), p.rstrip("/")
    return c == p or c.startswith(p + "/")


def check_locations(input_uri: str, output_uri: str) -> str:
    """Validate --output (normalised) against --input: never inside the corpus."""
    output_uri = normalize_uri(output_uri)
    if is_inside(output_uri, input_uri):
        raise InvalidURI(f"output {output_uri!r} lies inside the input corpus {input_uri!r}; choose another folder")
    return output_uri
