"""Dataset specs ``KIND:PATH[?key=value&...]`` and the kind -> loader registry.

:func:`load_dataset` takes a *dataset spec* (e.g. ``rafdb:/data/RAF-DB/basic``,
``dfew:/data/DFEW?fold=2``, ``manifest:/data/labels.parquet``; a bare
``*.csv``/``*.parquet`` path is a manifest) and a split name. Every kind is
registered here explicitly, in :data:`_ADAPTERS`, with the options its spec
accepts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from .affectnet import load_affectnet
from .base import DatasetError, LabeledSet
from .dfew import load_dfew
from .fer2013 import load_fer2013
from .ferplus import load_ferplus
from .ferv39k import load_ferv39k
from .mafw import load_mafw
from .manifest import load_manifest
from .rafdb import load_rafdb

def _as_bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise DatasetError(f"{where}: expected a boolean, got {value!r}")


def _as_int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{where}: expected an integer, got {value!r}") from None


# kind -> (loader, {option: converter})
_ADAPTERS: dict[str, tuple[Callable[..., LabeledSet], dict[str, Callable[[str, str], Any]]]] = {
    "rafdb": (load_rafdb, {"aligned": _as_bool}),
    "affectnet": (load_affectnet, {"n_classes": _as_int, "classes": _as_int, "crop_faces": _as_bool}),
    "ferplus": (load_ferplus, {"mode": lambda v, w: v, "include_contempt": _as_bool}),
    "dfew": (load_dfew, {"fold": _as_int}),
    "ferv39k": (load_ferv39k, {}),
    "mafw": (load_mafw, {"fold": _as_int, "n_classes": _as_int, "classes": _as_int}),
    "fer2013": (load_fer2013, {"copies": _as_bool}),
    "manifest": (load_manifest, {}),
}
DATASET_KINDS = tuple(_ADAPTERS)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``KIND:PATH[?key=value&...]`` dataset spec."""

    text: str
    kind: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse a dataset spec; a bare ``.csv``/``.tsv``/``.parquet`` path means ``manifest:``."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("empty dataset spec")
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if not sep or kind.lower() not in _ADAPTERS:
        if text.lower().split("?")[0].endswith((".csv", ".tsv", ".parquet", ".pq")):
            kind, rest = "manifest", text
        else:
            raise DatasetError(
                f"dataset spec {text!r}: expected KIND:PATH with KIND in {', '.join(DATASET_KINDS)} "
                "(or a .csv/.parquet manifest path)"
            )
    kind = kind.lower()
    path, _, query = rest.partition("?")
    if not path:
        raise DatasetError(f"dataset spec {text!r}: missing path")
    _, converters = _ADAPTERS[kind]
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in converters:
            raise DatasetError(
                f"dataset spec {text!r}: unknown option {key!r} for {kind} (known: {', '.join(converters) or 'none'})"
            )
        name = "n_classes" if key == "classes" else key
        options[name] = converters[key](value, f"dataset spec {text!r}")
    return DatasetSpec(text, kind, path, options)


def load_dataset(spec: str, split: str | None) -> LabeledSet:
    """Load one split of the dataset a spec names (see :func:`parse_dataset_spec`)."""
    parsed = parse_dataset_spec(spec)
    loader, _ = _ADAPTERS[parsed.kind]
    if parsed.kind == "manifest":
        return loader(parsed.path, split, **parsed.options)
    if split is None:
        raise DatasetError(f"dataset spec {spec!r}: a split name is required for {parsed.kind}")
    return loader(parsed.path, split, **parsed.options)
