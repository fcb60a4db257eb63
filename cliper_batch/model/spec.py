"""Model specs: parse one, and learn what it will produce (classes, K, input size, id) without loading weights.

The forms are listed in :mod:`.factory` (which loads models) and in
:data:`ACCEPTED_FORMS`. For a checkpoint spec nothing here imports torch or
open_clip: the checkpoint's header says everything (:func:`~.checkpoint.read_checkpoint_header`),
so the annotate driver plans a run without them. An ``openclip:`` spec needs
open_clip's architecture registry, imported (with this package's test
architectures registered, :mod:`.factory`) on first use.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ..labels import CANONICAL_CLASSES, validate_classes
from .checkpoint import CHECKPOINT_SUFFIX, read_checkpoint_header


def _open_clip():
    """open_clip with the test architectures of ``configs/`` registered (several seconds on first import)."""
    from .archs import open_clip_registered

    return open_clip_registered()


TINY_ARCH = "Tiny-ViT-T-16"
DEFAULT_DESCRIPTORS_PER_CLASS = 5
OPENCLIP_PREFIX = "openclip:"
BUILTIN_PREFIX = "builtin:"

# Checkpoints shipped inside the package (``cliper_batch/models/``, the repository's ``models/``); a
# ``builtin:NAME`` spec is resolved to the file in each process that parses it (driver and every worker,
# wherever the package is installed or the job's working dir was unpacked). Model cards: docs/models.md.
BUILTIN_MODELS: dict[str, str] = {
    "fer2013": "cliper-fer2013.safetensors",  # real faces (FER2013), the default model
    "demo": "cliper-demo.safetensors",  # synthetic cartoon faces (the demo corpus only)
}
DEFAULT_MODEL = "builtin:fer2013"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def builtin_model_path(name: str) -> Path:
    """The shipped checkpoint ``name`` (:data:`BUILTIN_MODELS`) in this installation."""
    if name not in BUILTIN_MODELS:
        raise ModelSpecError(
            f"unknown built-in model {name!r} (shipped: {', '.join(sorted(BUILTIN_MODELS))})\n{ACCEPTED_FORMS}"
        )
    return MODELS_DIR / BUILTIN_MODELS[name]

ACCEPTED_FORMS = (
    "accepted model specs:\n"
    "  builtin:NAME                             a checkpoint shipped with cliper-batch: fer2013 (real faces, the\n"
    "                                           default), demo (synthetic faces)\n"
    "  <path or fsspec URL>.safetensors         CLIPER checkpoint\n"
    "  openclip:<ARCH>                          zero-shot, random init (tests/benchmarks only)\n"
    "  openclip:<ARCH>@<TAG>                    zero-shot, open_clip pretrained tag (e.g. openclip:ViT-B-16@openai)\n"
    "  openclip:<ARCH>@<path or URL>            zero-shot, open_clip state-dict file\n"
    "  openclip:...?classes=a,b,c&k=5           optional class list / descriptors per class"
)


class ModelSpecError(ValueError):
    """A model spec that cannot be used; the message lists the accepted forms or the specific problem."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec."""

    text: str
    kind: str  # checkpoint | openclip
    uri: str | None = None  # checkpoint location
    arch: str | None = None
    pretrained: str | None = None
    classes: tuple[str, ...] | None = None  # None: the checkpoint's / the default
    descriptors_per_class: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a spec will produce, found without loading weights (for planning output schemas and crop sizes)."""

    spec: str
    kind: str
    classes: tuple[str, ...]
    descriptors_per_class: int
    image_size: int
    model_id: str | None  # known up front for checkpoints only
    # image-tower GFLOPs per crop from a checkpoint's header (checkpoint.visual_gflops); None for openclip: specs
    visual_gflops: float | None = None
    # the face-crop margin the model was trained for (a checkpoint's 'face_margin'); None = the engine's default
    face_margin: float | None = None


def _error(spec: str, problem: str) -> ModelSpecError:
    return ModelSpecError(f"model spec {spec!r}: {problem}\n{ACCEPTED_FORMS}")


def _merge(spec: str, name: str, from_query: Any, from_kwarg: Any) -> Any:
    if from_query is not None and from_kwarg is not None and from_query != from_kwarg:
        raise _error(spec, f"{name} given twice with different values ({from_query!r} vs {from_kwarg!r})")
    return from_query if from_query is not None else from_kwarg


def _parse_classes(spec: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [c.strip() for c in value.split(",")] if isinstance(value, str) else list(value)
    try:
        return validate_classes([c for c in items if c])
    except ValueError as exc:
        raise _error(spec, f"bad classes: {exc}") from exc


def _parse_k(spec: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise _error(spec, f"k must be an integer >= 1, got {value!r}") from None
    if k < 1:
        raise _error(spec, f"k must be >= 1, got {k}")
    return k


def parse_spec(
    spec: str, *, classes: tuple[str, ...] | list[str] | str | None = None, descriptors_per_class: int | None = None
) -> ModelSpec:
    """Parse and validate a model spec string (no weights are touched)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"empty model spec\n{ACCEPTED_FORMS}")
    text = spec.strip()
    kw_classes = _parse_classes(text, classes)
    kw_k = _parse_k(text, descriptors_per_class)

    if text.startswith(OPENCLIP_PREFIX):
        body, _, query = text[len(OPENCLIP_PREFIX):].partition("?")
        q_classes = q_k = None
        if query:
            seen: set[str] = set()
            try:
                pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
            except ValueError as exc:
                raise _error(text, f"bad query string {query!r}: {exc}") from exc
            for key, value in pairs:
                if key in seen:
                    raise _error(text, f"query parameter {key!r} given twice")
                seen.add(key)
                if key == "classes":
                    q_classes = _parse_classes(text, value)
                elif key == "k":
                    q_k = _parse_k(text, value)
                else:
                    raise _error(text, f"unknown query parameter {key!r} (known: classes, k)")
        arch, at, pretrained = body.partition("@")
        arch = arch.strip()
        if not arch:
            raise _error(text, "missing architecture after 'openclip:'")
        if arch not in _open_clip().list_models():
            raise _error(
                text,
                f"unknown open_clip architecture {arch!r} (see open_clip.list_models(), e.g. ViT-B-16, ViT-B-32, "
                f"ViT-L-14; small test architecture: {TINY_ARCH})",
            )
        if at and not pretrained.strip():
            raise _error(text, "empty pretrained weights after '@'")
        return ModelSpec(
            text=text,
            kind="openclip",
            arch=arch,
            pretrained=pretrained.strip() or None,
            classes=_merge(text, "classes", q_classes, kw_classes),
            descriptors_per_class=_merge(text, "k", q_k, kw_k),
        )

    if text.startswith(BUILTIN_PREFIX):
        path = builtin_model_path(text[len(BUILTIN_PREFIX):].strip())
        return ModelSpec(text=text, kind="checkpoint", uri=str(path), classes=kw_classes, descriptors_per_class=kw_k)

    if text.partition("?")[0].endswith(CHECKPOINT_SUFFIX):
        if "?" in text:
            raise _error(text, "query parameters are only for openclip: specs (a checkpoint fixes its classes)")
        return ModelSpec(text=text, kind="checkpoint", uri=text, classes=kw_classes, descriptors_per_class=kw_k)

    lowered = text.lower()
    if lowered.endswith((".pt", ".pth", ".bin", ".ckpt", ".pkl")):
        raise _error(
            text,
            "pickle-based checkpoints are not loaded (no code execution); CLIPER checkpoints are .safetensors, "
            "and an open_clip state dict loads as openclip:<ARCH>@<file>",
        )
    raise _error(text, "not a .safetensors checkpoint and not an openclip: spec")


def check_fixed(spec: ModelSpec, classes: tuple[str, ...], k: int) -> None:
    if spec.classes is not None and tuple(spec.classes) != tuple(classes):
        raise _error(spec.text, f"the checkpoint's classes are {list(classes)}, not {list(spec.classes)}")
    if spec.descriptors_per_class is not None and spec.descriptors_per_class != k:
        raise _error(spec.text, f"the checkpoint has k={k} descriptors per class, not {spec.descriptors_per_class}")


def inspect_model(
    spec: str,
    *,
    classes: tuple[str, ...] | list[str] | str | None = None,
    descriptors_per_class: int | None = None,
    **storage_options: Any,
) -> ModelInfo:
    """Classes, K and input size a spec will produce, reading only a checkpoint header (no weights)."""
    parsed = parse_spec(spec, classes=classes, descriptors_per_class=descriptors_per_class)
    if parsed.kind == "checkpoint":
        header = read_checkpoint_header(parsed.uri, **storage_options)  # type: ignore[arg-type]
        k = int(header.config["descriptors_per_class"])
        check_fixed(parsed, header.classes, k)
        return ModelInfo(
            parsed.text, "checkpoint", header.classes, k, header.image_size, header.model_id, header.visual_gflops,
            header.face_margin,
        )
    cfg = _open_clip().get_model_config(parsed.arch)
    size = cfg["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return ModelInfo(
        parsed.text,
        "openclip",
        parsed.classes or CANONICAL_CLASSES,
        parsed.descriptors_per_class or DEFAULT_DESCRIPTORS_PER_CLASS,
        int(size),
        None,
    )


def describe_model(model_spec: str, storage_options: dict | None = None) -> ModelInfo:
    """Fail fast on a bad spec and learn the model's id, classes and input size (``model_id`` always set).

    A checkpoint's header says all of it (no weights read); a zero-shot spec's id
    depends on its encoded descriptors, so that one is built once on CPU here.
    """
    info = inspect_model(model_spec, **(storage_options or {}))
    if info.model_id is not None:
        return info
    from .checkpoint import model_id_of

    model = build_zero_shot_model(parse_spec(model_spec), **(storage_options or {}))
    return replace(info, model_id=model_id_of(model), classes=tuple(model.classes), image_size=int(model.image_size))


def build_zero_shot_model(parsed: ModelSpec, *, cache_dir: str | None = None, **storage_options: Any):
    """The zero-shot CLIPER an ``openclip:`` spec names, on CPU; an unusable one raises :class:`ModelSpecError`.

    Torch and open_clip are imported here (only a zero-shot spec needs them).
    """
    from .pretrained import PretrainedError
    from .zeroshot import build_zero_shot

    try:
        return build_zero_shot(
            parsed.arch,  # type: ignore[arg-type]
            parsed.pretrained,
            parsed.classes or CANONICAL_CLASSES,
            parsed.descriptors_per_class or DEFAULT_DESCRIPTORS_PER_CLASS,
            cache_dir=cache_dir,
            **storage_options,
        )
    except PretrainedError as exc:
        raise ModelSpecError(f"model spec {parsed.text!r}: {exc}") from exc


__all__ = [
    "ACCEPTED_FORMS",
    "DEFAULT_DESCRIPTORS_PER_CLASS",
    "OPENCLIP_PREFIX",
    "TINY_ARCH",
    "ModelInfo",
    "ModelSpec",
    "ModelSpecError",
    "build_zero_shot_model",
    "check_fixed",
    "describe_model",
    "inspect_model",
    "parse_spec",
]
