"""Where an open_clip model's weights come from: a pretrained tag, a local file or an fsspec URL (copied to a cache).

:func:`resolve_pretrained` classifies what a ``openclip:ARCH@PRETRAINED`` spec names and
prepares it for ``open_clip.create_model_and_transforms`` (:func:`~.builder.create_open_clip`);
:class:`PretrainedError` says what cannot be found, fetched or loaded. Nothing here is
zero-shot logic: the builder and the zero-shot model both use it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import open_clip

from ..uris import InvalidURI, filesystem_for, is_local, normalize_uri

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0


class PretrainedError(ValueError):
    """Pretrained weights that cannot be found, fetched or loaded (the message says which and why)."""


def cache_root(cache_dir: str | None = None) -> str:
    """Local cache for fetched weights: ``cache_dir``, else ``$CLIPER_BATCH_CACHE``, else ``~/.cache/cliper_batch``."""
    root = cache_dir or os.environ.get("CLIPER_BATCH_CACHE") or os.path.join("~", ".cache", "cliper_batch")
    return os.path.abspath(os.path.expanduser(root))


@dataclass(frozen=True)
class ResolvedPretrained:
    """How open_clip will get the weights: ``pretrained`` for ``create_model_and_transforms`` plus extra kwargs."""

    pretrained: str | None
    kind: str  # none | tag | file
    create_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _fetch_to_cache(url: str, cache_dir: str | None, storage_options: dict[str, Any]) -> str:
    """Copy a remote weights file to the local cache (reused when the size matches) and return the local path."""
    try:
        fs, path = filesystem_for(url, **storage_options)
    except InvalidURI as exc:
        raise PretrainedError(f"bad pretrained URL {url!r}: {exc}") from exc
    if not fs.exists(path) or fs.isdir(path):
        raise PretrainedError(f"pretrained weights file not found: {url}")
    base = os.path.basename(path.rstrip("/")) or "weights"
    folder = os.path.join(cache_root(cache_dir), "pretrained")
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] + "-" + base)
    try:
        size = fs.size(path)
    except (OSError, NotImplementedError):
        size = None
    if os.path.isfile(local) and (size is None or os.path.getsize(local) == size):
        log.info("using cached copy of %s: %s", url, local)
        return local
    tmp = f"{local}.tmp-{os.getpid()}"
    try:
        fs.get_file(path, tmp)
        os.replace(tmp, local)
    except OSError as exc:
        raise PretrainedError(f"cannot copy pretrained weights {url} to {local}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("copied %s to %s", url, local)
    return local


def _host_reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host (or the configured HTTPS proxy) opens within ``timeout``."""
    proxies = urllib.request.getproxies()
    target = proxies.get("https") or proxies.get("http") or url
    parts = urlsplit(target if "://" in target else f"http://{target}")
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _resolve_tag(arch: str, tag: str, cfg: dict[str, Any]) -> ResolvedPretrained:
    """Check a pretrained tag can be fetched before open_clip tries (its hub client retries for ~45 s offline).

    Reachable hub -> let open_clip download.  Unreachable but the file is in the
    Hugging Face cache -> load that file directly, with the tag's preprocessing
    and activation settings (what open_clip would do after downloading).
    Otherwise -> a clear error now.
    """
    hf_hub = cfg.get("hf_hub") or ""
    url = cfg.get("url") or ""
    tag_settings: dict[str, Any] = {
        "image_mean": cfg.get("mean"),
        "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"),
        "image_resize_mode": cfg.get("resize_mode"),
        "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
    }
    tag_settings = {k: v for k, v in tag_settings.items() if v is not None}
    hint = (
        f"pass a local or fsspec copy of the weights instead: 'openclip:{arch}@/path/to/open_clip_model.safetensors'"
    )
    if hf_hub:
        try:
            import huggingface_hub
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            huggingface_hub = None  # type: ignore[assignment]
        if huggingface_hub is not None:
            # open_clip's convention: 'org/repo/file' or 'org/repo/' (default file name)
            repo_id, filename = os.path.split(hf_hub)
            filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
            alternatives = list(getattr(open_clip.pretrained, "_get_safe_alternatives", lambda f: [])(filename))
            endpoint = huggingface_hub.constants.ENDPOINT
            offline = _hf_offline() or bool(getattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False))
            if not offline and _host_reachable(endpoint):
                return ResolvedPretrained(tag, "tag", {}, f"open_clip tag {tag!r} ({hf_hub})")
            for candidate in [*alternatives, filename]:
                cached = try_to_load_from_cache(repo_id=repo_id, filename=candidate)
                if isinstance(cached, str) and os.path.isfile(cached):
                    log.warning("model hub unreachable; using cached weights for tag %r: %s", tag, cached)
                    return ResolvedPretrained(cached, "file", tag_settings, f"open_clip tag {tag!r} (cached {cached})")
            raise PretrainedError(
                f"cannot fetch pretrained weights {arch}@{tag}: the model hub ({endpoint}) is unreachable"
                f"{' (HF_HUB_OFFLINE is set)' if offline else ''} and {hf_hub} is not in the local "
                f"Hugging Face cache; {hint}"
            )
    if url:
        cached = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(cached) or _host_reachable(url):
            return ResolvedPretrained(tag, "tag", {}, f"open_clip tag {tag!r} ({url})")
        raise PretrainedError(f"cannot fetch pretrained weights {arch}@{tag}: {url} is unreachable; {hint}")
    raise PretrainedError(f"pretrained tag {tag!r} for {arch} names no download source; {hint}")


def resolve_pretrained(
    arch: str, pretrained: str | None, *, cache_dir: str | None = None, **storage_options: Any
) -> ResolvedPretrained:
    """Classify ``pretrained`` (None, an open_clip tag, a local file, an fsspec URL) and prepare it for open_clip."""
    if not pretrained:
        return ResolvedPretrained(None, "none", {}, "random init")
    if "://" in pretrained and not is_local(pretrained):
        local = _fetch_to_cache(normalize_uri(pretrained), cache_dir, storage_options)
        return ResolvedPretrained(local, "file", {}, f"file {pretrained}")
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if tag_cfg:
        return _resolve_tag(arch, pretrained, tag_cfg)
    path = normalize_uri(pretrained)
    if os.path.isfile(path):
        return ResolvedPretrained(path, "file", {}, f"file {path}")
    known = open_clip.list_pretrained_tags_by_model(arch)
    if os.sep in pretrained or "." in os.path.basename(pretrained):
        raise PretrainedError(f"pretrained weights file not found: {path}")
    raise PretrainedError(
        f"{pretrained!r} is neither a pretrained tag of {arch} nor an existing file; "
        f"known tags for {arch}: {', '.join(known) if known else '(none)'}"
    )
