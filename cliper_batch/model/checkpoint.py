"""CLIPER checkpoints: one ``.safetensors`` file, config in its metadata, no pickle.

File layout (format version 1)::

    tensors   visual.*            the open_clip image tower (float32)
              descriptors         [C, K, D] L2-normalised descriptor embeddings
              temporal_pool.*     parameters of the temporal module (none for 'mean')
    metadata  'cliper_batch.config'    JSON: format_version, the FULL open_clip model
                                       config (so loading needs no open_clip registry
                                       entry), classes, descriptors_per_class, embed_dim,
                                       temperature, temporal, temporal_cfg, image_size,
                                       mean, std, interpolation; plus 'arch',
                                       'provenance' and 'extra' (informational)
              'cliper_batch.model_id'  the id below, checked on load
              'format'                 'pt' (safetensors convention)

The model id is ``cliper-`` + the first 12 hex digits of a SHA-256 over the
canonical JSON of the settings that change results and every tensor (name,
shape, float32 bytes).  Same weights and settings give the same id whatever
the file name or the ``extra`` dict; a loaded file whose content no longer
matches its stored id is reported as corrupted.

Loading never unpickles: the header is parsed and checked here first, tensors
come from the safetensors library, and the architecture is rebuilt from the
stored config.  ``.pt``/``.pth``/``.bin`` (torch.save) files are refused.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ..uris import InvalidURI, filesystem_for, is_local, normalize_uri

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from .cliper import CLIPER

# Reading and checking a header needs neither torch nor open_clip (the annotate driver
# does only that); building, hashing and loading import them where they run.

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_KEY = "cliper_batch.config"
MODEL_ID_KEY = "cliper_batch.model_id"
CHECKPOINT_SUFFIX = ".safetensors"
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# Keys of the stored config that do not change what the model computes (excluded from the id).
_INFORMATIONAL_KEYS = frozenset({"format_version", "arch", "provenance", "extra"})
_SAFETENSORS_DTYPES = {
    "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "U32", "U64",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint's header says, read without loading any tensor data."""

    uri: str
    config: dict[str, Any]
    model_id: str | None
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (safetensors dtype, shape)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.config["classes"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def face_margin(self) -> float | None:
        """The crop margin the model was trained for (None: the engine's default)."""
        m = self.config.get("face_margin")
        return None if m is None else float(m)

    @property
    def visual_gflops(self) -> float:
        """Estimated image-tower cost per crop (:func:`visual_gflops`), from the header alone."""
        return visual_gflops(self.tensors, self.image_size)


def visual_gflops(tensors: Mapping[str, tuple[str, tuple[int, ...]]], image_size: int) -> float:
    """Rough cost of the image tower per crop, in GFLOPs, from tensor names and shapes only (no torch, no weights).

    ``2 x (weights of every visual matrix/conv kernel) x (positions each is applied to)``:
    the matmul/conv FLOPs of a transformer (attention's ``T^2`` term left out, ~4 % for ViT-B/16).
    Positions are the tokens of the tower's positional embedding when it has one
    (``visual.positional_embedding [T, W]`` or timm's ``pos_embed [1, T, W]``; ViT-B/16 at 224 px:
    197, estimate 34 GFLOPs, published 35), otherwise ``(image_size / 16)^2``, the resolution where
    a convolutional net spends most of its work. An order-of-magnitude figure for sizing workers
    (``pipeline.sizing.size_workers``), not a profile.
    """
    weights = 0
    positions = None
    for name, (_, shape) in tensors.items():
        if not name.startswith("visual."):
            continue
        if "pos" in name.rsplit(".", 1)[-1] and len(shape) >= 2:  # positional_embedding, pos_embed
            positions = int(shape[-2])
        elif len(shape) >= 2:
            weights += math.prod(int(d) for d in shape)
    if positions is None:
        positions = max(1, round((image_size / 16) ** 2))
    return 2.0 * weights * positions / 1e9


# ---------------------------------------------------------------------- config
def checkpoint_config(model: CLIPER, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON config stored with ``model`` (see module docstring)."""
    return {
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "open_clip_cfg": copy.deepcopy(model.open_clip_cfg),
        "classes": list(model.classes),
        "descriptors_per_class": model.descriptors_per_class,
        "embed_dim": model.embed_dim,
        "temperature": model.temperature,
        "temporal": model.temporal,
        "temporal_cfg": copy.deepcopy(model.temporal_cfg),
        "image_size": model.image_size,
        "mean": list(model.mean),
        "std": list(model.std),
        "interpolation": model.interpolation,
        "provenance": copy.deepcopy(model.provenance),
        "extra": copy.deepcopy(dict(extra or {})),
        # what the engine must do to a crop, and how its probabilities are calibrated; written only when
        # set, so checkpoints without them (and their model ids) read as before
        **({"grey": True} if model.grey else {}),
        **({"face_margin": model.face_margin} if model.face_margin is not None else {}),
        **({"calibration": model.calibration} if model.calibration != 1.0 else {}),
        **({"flip": True} if model.flip else {}),
    }


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _storable_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict as stored: CPU, contiguous, floating point as float32 (each a private copy)."""
    import torch

    out: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        t = t.to("cpu", torch.float32) if t.is_floating_point() else t.to("cpu")
        out[name] = t.contiguous().clone()
    return out


def _hash_content(config: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> str:
    import torch

    semantic = {k: v for k, v in config.items() if k not in _INFORMATIONAL_KEYS}
    h = hashlib.sha256()
    h.update(b"cliper-batch/model-id/v1\0")
    h.update(_canonical_json(semantic).encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach()
        t = t.to("cpu", torch.float32) if t.is_floating_point() else t.to("cpu")
        t = t.contiguous()
        h.update(f"\0{name}\0{str(t.dtype)}\0{list(t.shape)}\0".encode("utf-8"))
        if t.numel():
            h.update(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return "cliper-" + h.hexdigest()[:12]


def model_id_of(model: CLIPER) -> str:
    """Stable content id: same weights and result-relevant settings => same id (file name irrelevant)."""
    return _hash_content(checkpoint_config(model), model.state_dict())


# ------------------------------------------------------------------------ save
def save_checkpoint(
    model: CLIPER, uri: str, *, extra: Mapping[str, Any] | None = None, **storage_options: Any
) -> str:
    """Write ``model`` as one ``.safetensors`` file (local path or fsspec URL); returns the normalised URI.

    ``extra`` is any JSON-serialisable dict (training metrics, dataset names...);
    it is stored but does not change the model id.  Local writes are atomic.
    """
    try:
        target = normalize_uri(uri)
    except InvalidURI as exc:
        raise CheckpointError(f"cannot save checkpoint to {uri!r}: {exc}") from exc
    if not target.endswith(CHECKPOINT_SUFFIX):
        raise CheckpointError(f"checkpoint path must end with {CHECKPOINT_SUFFIX!r}: {uri!r}")
    from safetensors.torch import save as st_save

    config = checkpoint_config(model, extra)
    try:
        config_json = _canonical_json(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {uri!r}: config/extra is not JSON-serialisable: {exc}") from exc
    tensors = _storable_tensors(model)
    model_id = _hash_content(config, tensors)
    data = st_save(tensors, metadata={CONFIG_KEY: config_json, MODEL_ID_KEY: model_id, "format": "pt"})

    if is_local(target):
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        tmp = f"{target}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        fs, path = filesystem_for(target, **storage_options)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            try:
                fs.makedirs(parent, exist_ok=True)
            except (OSError, NotImplementedError):  # object stores have no real directories
                pass
        fs.pipe_file(path, data)
    log.info("saved CLIPER checkpoint %s (%s, %.1f MB)", target, model_id, len(data) / 1e6)
    return target


# ------------------------------------------------------------------------ read
def _describe_non_safetensors(head: bytes) -> str | None:
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (torch.save / .pt format), which needs pickle"
    if head[:1] == b"\x80":
        return "it is a Python pickle (torch.save legacy format)"
    return None


def _parse_header(uri: str, head8: bytes, header: bytes, size: int) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    try:
        parsed = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{uri}: not a safetensors file (header is not JSON: {exc})") from exc
    if not isinstance(parsed, dict):
        raise CheckpointError(f"{uri}: not a safetensors file (header is not a JSON object)")
    metadata = parsed.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{uri}: corrupted safetensors header (__metadata__ is not an object)")
    data_len = size - 8 - len(header)
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    end_max = 0
    for name, info in parsed.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            start, end = int(start), int(end)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{uri}: corrupted safetensors header entry for tensor {name!r}") from exc
        if dtype not in _SAFETENSORS_DTYPES or not (0 <= start <= end):
            raise CheckpointError(f"{uri}: corrupted safetensors header entry for tensor {name!r}: {info}")
        tensors[name] = (dtype, shape)
        end_max = max(end_max, end)
    if end_max > data_len:
        raise CheckpointError(
            f"{uri}: truncated or corrupted safetensors file (tensor data needs {end_max} bytes, file has {data_len})"
        )
    return metadata, tensors


def _read_header_bytes(uri: str, fs, path: str) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    try:
        size = int(fs.size(path))
        with fs.open(path, "rb") as f:
            head8 = f.read(8)
            if len(head8) < 8:
                raise CheckpointError(f"{uri}: not a safetensors file (only {len(head8)} bytes)")
            why = _describe_non_safetensors(head8)
            if why:
                raise CheckpointError(
                    f"{uri}: not a safetensors file: {why}. cliper-batch loads only .safetensors checkpoints "
                    "(no pickle, no code execution); re-save the weights with cliper_batch.model.save_checkpoint."
                )
            (n,) = struct.unpack("<Q", head8)
            if n < 2 or n > _MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{uri}: not a safetensors file or corrupted header (header length {n}, file size {size})"
                )
            header = f.read(n)
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {uri}") from exc
    except OSError as exc:
        raise CheckpointError(f"{uri}: cannot read checkpoint: {exc}") from exc
    if len(header) != n:
        raise CheckpointError(f"{uri}: truncated safetensors header ({len(header)} of {n} bytes)")
    return _parse_header(uri, head8, header, size)


def _require(cond: bool, uri: str, msg: str) -> None:
    if not cond:
        raise CheckpointError(f"{uri}: invalid cliper_batch.config: {msg}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# The temporal module CLIPER always has (:data:`cliper._TEMPORAL_BUILDERS`' built-in entry).
BUILTIN_TEMPORAL = ("mean",)


def _temporal_names() -> tuple[str, ...]:
    """The registered temporal modules. Only :mod:`.cliper` (torch) holds the registry and code that
    registers more must import it, so while it is not imported the built-in one is all there is."""
    cliper = sys.modules.get(f"{__package__}.cliper")
    return cliper.temporal_names() if cliper is not None else BUILTIN_TEMPORAL


def _validate_config(uri: str, config: Any) -> dict[str, Any]:
    _require(isinstance(config, dict), uri, "not a JSON object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{uri}: unknown checkpoint format version {version!r} (this cliper-batch reads version {FORMAT_VERSION}); "
            "upgrade cliper-batch or re-save the checkpoint"
        )
    oc = config.get("open_clip_cfg")
    _require(isinstance(oc, dict), uri, "'open_clip_cfg' (the full open_clip model config) is missing")
    _require(isinstance(oc.get("embed_dim"), int), uri, "'open_clip_cfg.embed_dim' must be an int")
    _require(isinstance(oc.get("vision_cfg"), dict), uri, "'open_clip_cfg.vision_cfg' must be an object")
    classes = config.get("classes")
    _require(
        isinstance(classes, list) and bool(classes) and all(isinstance(c, str) for c in classes),
        uri,
        "'classes' must be a non-empty list of strings",
    )
    for key in ("descriptors_per_class", "embed_dim", "image_size"):
        val = config.get(key)
        _require(isinstance(val, int) and not isinstance(val, bool) and val >= 1, uri, f"'{key}' must be an int >= 1")
    _require(config["embed_dim"] == oc["embed_dim"], uri, "'embed_dim' differs from open_clip_cfg.embed_dim")
    _require(_is_number(config.get("temperature")) and config["temperature"] > 0, uri, "'temperature' must be > 0")
    _require(isinstance(config.get("temporal"), str), uri, "'temporal' must be a string")
    registered = _temporal_names()
    if config["temporal"] not in registered:
        raise CheckpointError(
            f"{uri}: checkpoint needs temporal module {config['temporal']!r}, which is not registered "
            f"(registered: {', '.join(registered)}); import the code that registers it first"
        )
    _require(isinstance(config.get("temporal_cfg", {}), dict), uri, "'temporal_cfg' must be an object")
    for key in ("mean", "std"):
        val = config.get(key)
        _require(
            isinstance(val, list) and len(val) == 3 and all(_is_number(v) for v in val), uri, f"'{key}' must be 3 numbers"
        )
    _require(all(v > 0 for v in config["std"]), uri, "'std' values must be > 0")
    _require(isinstance(config.get("grey", False), bool), uri, "'grey' must be true or false")
    margin = config.get("face_margin")
    _require(margin is None or (_is_number(margin) and -0.4 <= margin <= 2.0), uri, "'face_margin' must lie in [-0.4, 2.0]")
    cal = config.get("calibration", 1.0)
    _require(_is_number(cal) and cal > 0, uri, "'calibration' (softmax temperature) must be > 0")
    _require(isinstance(config.get("flip", False), bool), uri, "'flip' must be true or false")
    return config


def read_checkpoint_header(uri: str, **storage_options: Any) -> CheckpointHeader:
    """Read and validate a checkpoint's header and config only (cheap: no tensor data is read)."""
    try:
        norm = normalize_uri(uri)
        fs, path = filesystem_for(norm, **storage_options)
    except InvalidURI as exc:
        raise CheckpointError(f"bad checkpoint location {uri!r}: {exc}") from exc
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint not found: {norm}")
    if fs.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory, expected a {CHECKPOINT_SUFFIX} file: {norm}")
    metadata, tensors = _read_header_bytes(norm, fs, path)
    raw = metadata.get(CONFIG_KEY)
    if raw is None:
        raise CheckpointError(
            f"{norm}: safetensors file without a {CONFIG_KEY!r} metadata entry: not a cliper-batch checkpoint "
            "(plain open_clip state dicts load with the 'openclip:<ARCH>@<file>' model spec)"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{norm}: {CONFIG_KEY!r} metadata is not valid JSON: {exc}") from exc
    config = _validate_config(norm, config)
    return CheckpointHeader(uri=norm, config=config, model_id=metadata.get(MODEL_ID_KEY), tensors=tensors)


def model_from_config(config: Mapping[str, Any]) -> CLIPER:
    """A CLIPER with the stored architecture and settings and placeholder weights (load a state dict next)."""
    import torch

    from .builder import build_cliper, tower_from_config

    n_classes, k, dim = len(config["classes"]), config["descriptors_per_class"], config["embed_dim"]
    placeholder = torch.zeros(n_classes, k, dim)
    placeholder[..., 0] = 1.0
    tower = tower_from_config(
        config["open_clip_cfg"], config["image_size"], config["mean"], config["std"],
        config.get("interpolation", "bicubic"), config.get("arch"),
    )
    return build_cliper(
        tower,
        placeholder,
        config["classes"],
        provenance=config.get("provenance") or {},
        temperature=config["temperature"],
        temporal=config["temporal"],
        temporal_cfg=config.get("temporal_cfg") or {},
        grey=bool(config.get("grey", False)),
        face_margin=config.get("face_margin"),
        calibration=float(config.get("calibration", 1.0)),
        flip=bool(config.get("flip", False)),
    )


def _check_tensors(uri: str, expected: Mapping[str, Tensor], found: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    bad_shapes = [
        f"{name}: file {list(found[name][1])} vs model {list(t.shape)}"
        for name, t in expected.items()
        if name in found and tuple(found[name][1]) != tuple(t.shape)
    ]
    if bad_shapes:
        problems.append("tensor shape mismatch: " + "; ".join(bad_shapes[:5]))
    if problems:
        raise CheckpointError(f"{uri}: tensors do not match the stored config: " + "; ".join(problems))


# Where every tensor of a CLIPER state dict lives (see the module docstring's file layout).
TENSOR_PREFIXES = ("visual.", "temporal_pool.")
DESCRIPTORS = "descriptors"


def check_header(uri: str, **storage_options: Any) -> CheckpointHeader:
    """Check from the header alone, without torch or open_clip, what can be checked there; returns the header.

    :func:`read_checkpoint_header` (config, every tensor's dtype and byte range,
    the file as long as the header promises) plus the layout the config fixes
    without building the architecture: only ``visual.*``, ``descriptors`` and
    ``temporal_pool.*`` tensors, a non-empty image tower, ``descriptors`` as
    float32 ``[classes, descriptors_per_class, embed_dim]``, and no
    ``temporal_pool.*`` for the parameter-free ``mean`` pooling. Each tower
    tensor's name and shape against the architecture is checked by
    :func:`check_checkpoint` and again when the weights load.
    """
    header = read_checkpoint_header(uri, **storage_options)
    cfg, found = header.config, header.tensors
    problems = []
    stray = sorted(n for n in found if n != DESCRIPTORS and not n.startswith(TENSOR_PREFIXES))
    if stray:
        problems.append(f"unexpected tensors {stray[:5]}{' ...' if len(stray) > 5 else ''}")
    if not any(n.startswith("visual.") for n in found):
        problems.append("no image tower tensors (visual.*)")
    want = (len(cfg["classes"]), cfg["descriptors_per_class"], cfg["embed_dim"])
    if DESCRIPTORS not in found:
        problems.append(f"missing tensors ['{DESCRIPTORS}']")
    elif found[DESCRIPTORS] != ("F32", want):
        dtype, shape = found[DESCRIPTORS]
        problems.append(f"{DESCRIPTORS}: file {dtype} {list(shape)} vs model F32 {list(want)}")
    if cfg["temporal"] == "mean":
        pooled = sorted(n for n in found if n.startswith("temporal_pool."))
        if pooled:
            problems.append(f"unexpected tensors {pooled[:5]} ('mean' pooling has no parameters)")
    if problems:
        raise CheckpointError(f"{header.uri}: tensors do not match the stored config: " + "; ".join(problems))
    return header


def check_checkpoint(uri: str, **storage_options: Any) -> CheckpointHeader:
    """Check, without reading the weights, that a checkpoint will load: header, config, tensor layout.

    Reads only the header (a few kB): the config must validate, the file must
    hold every byte the header promises (a truncated download is refused), and
    every tensor's name and shape must match the architecture the config builds
    (built on the ``meta`` device: no memory, no weights). The content hash is
    left to :func:`load_checkpoint_with_id`, which reads everything anyway.
    """
    import torch

    header = read_checkpoint_header(uri, **storage_options)
    with torch.device("meta"):
        skeleton = model_from_config(header.config)
    _check_tensors(header.uri, skeleton.state_dict(), header.tensors)
    return header


def load_checkpoint_with_id(
    uri: str, device: str | torch.device = "cpu", *, verify: bool = True, **storage_options: Any
) -> tuple[CLIPER, str]:
    """Load a checkpoint; returns ``(model in eval mode on device, model_id)``.

    ``verify`` recomputes the content hash and refuses a file whose content
    does not match its stored id (bit rot, partial overwrite, hand edits).
    """
    import torch

    header = read_checkpoint_header(uri, **storage_options)
    norm = header.uri
    model = model_from_config(header.config)
    _check_tensors(norm, model.state_dict(), header.tensors)

    from safetensors import SafetensorError
    from safetensors.torch import load as st_load
    from safetensors.torch import load_file as st_load_file

    try:
        if is_local(norm):
            tensors = st_load_file(norm, device="cpu")
        else:
            fs, path = filesystem_for(norm, **storage_options)
            tensors = st_load(fs.cat_file(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{norm}: corrupted safetensors data: {exc}") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{norm}: tensors do not fit the model: {exc}") from exc
    del tensors

    norms = model.descriptors.norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise CheckpointError(f"{norm}: descriptor embeddings are not L2-normalised (corrupted or hand-edited file)")
    model_id = header.model_id
    if verify or model_id is None:
        actual = model_id_of(model)
        if model_id is not None and actual != model_id:
            raise CheckpointError(
                f"{norm}: content does not match its stored model id ({model_id} stored, {actual} computed): "
                "the file is corrupted or was modified"
            )
        model_id = actual
    return model.to(device).eval(), model_id


def load_checkpoint(uri: str, device: str | torch.device = "cpu", **storage_options: Any) -> CLIPER:
    """Load a CLIPER ``.safetensors`` checkpoint (local path or fsspec URL) onto ``device``, in eval mode."""
    model, _ = load_checkpoint_with_id(uri, device, **storage_options)
    return model
