"""Device/precision selection and compiled frame encoders (eager | torch.compile | tensorrt) with fallbacks.

Only the image tower is compiled: ``images [N,3,S,S] -> L2-normalised features
[N,D]``.  Pooling over time and the descriptor product stay in eager float32
(:func:`cliper_batch.model.score_clips`), they are tiny.

Fallback chain (each step logs a WARNING with the reason, recorded in
:attr:`CompiledEncoder.reason`):

- ``tensorrt``: needs CUDA and the optional ``torch-tensorrt`` package
  (``pip install 'cliper-batch[tensorrt]'``).  Compiled ahead of time through the
  dynamo IR with a dynamic batch dimension
  (``Input(min_shape=1, opt_shape=opt, max_shape=max_batch)``) in the
  requested precision (default fp16).  If the import, compilation or the
  check against eager fails it falls back to ``torch.compile``, then eager;
  a failed check is logged as a WARNING with the measured cosine.
  On a CPU-only host it goes straight to eager (reason ``no CUDA device``):
  torch.compile costs 30-50 s per worker there for little or no gain.
- ``torch.compile``: compiled with a dynamic batch dimension, warmed up and
  checked against eager inside :func:`compile_encoder`; a failure then, or a
  compiler error on a later call (e.g. recompiling for a new shape), switches
  to eager for good.
- ``eager``: the model as is, under ``torch.autocast`` for fp16/bf16.

Batch profile (the frames one engine call takes): ``max_batch`` defaults to
:data:`DEFAULT_MAX_BATCH` = 512 and the tuned (opt) shape to at most
:data:`DEFAULT_OPT_BATCH` = 256; calls larger than ``max_batch`` are split
into opt-sized chunks, so full batches run at the shape the engine was tuned
for. Why not 1024 = the fused worker's 128 segments x 8 frames: ViT-B/16 at
224 px has 197 tokens per crop, so at 256 crops every GEMM has M = 50,432
rows - with 128x256 tiles that is already >= 394 tiles for the narrowest
(N = 768) projection, about three waves on a 132-SM H100/H200 - and a bigger
batch adds little but build time (tactics are timed at opt and max) and
activation memory at max (the 3072-wide MLP output alone is 1024 x 197 x
3072 x 2 B = 1.2 GB in fp16 at 1024), in an actor that also holds DALI's
decode chunks and MTCNN. ``bench/gpu/run.py`` times this very profile at
64/256/512/1024 frames so the choice can be checked on the card.

With ``cache_dir`` the TensorRT engine is saved (``torch_tensorrt.save``, an
ExportedProgram) under a key made of the model id, precision, shapes, GPU and
library versions, and reloaded by later workers with ``torch_tensorrt.load``
(which also registers torch-tensorrt's Python runtime op where the C++
runtime is absent; ``torch.export.load`` where it is not available); a cached
engine is checked against eager before use.  The cache holds serialized
programs: point it only at a directory this job controls.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import COMPILE_BACKENDS

from .devices import DeviceError, device_name
from .cliper import CLIPER, autocast_for, encode_images

log = logging.getLogger(__name__)

BACKENDS = COMPILE_BACKENDS
# Compiled output must match eager to this cosine similarity (per frame), else fall back.
MIN_COSINE_VS_EAGER = 0.99
# Default batch profile of the compiled encoder (frames per call); see the module docstring for why.
DEFAULT_MAX_BATCH = 512
DEFAULT_OPT_BATCH = 256

_DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def select_device(pref: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> the current CUDA device if available, else CPU; ``'cpu'``, ``'cuda'``, ``'cuda:N'`` validated.

    :func:`cliper_batch.model.devices.device_name` as a ``torch.device`` (raises :class:`DeviceError`).
    """
    return torch.device(device_name(pref))


def select_dtype(device: torch.device | str, requested: str | torch.dtype | None = None) -> torch.dtype:
    """Compute precision: default fp16 (autocast) on CUDA, fp32 on CPU; ``'fp32'|'fp16'|'bf16'`` (or dtypes) accepted."""
    device = torch.device(device)
    if requested is None or (isinstance(requested, str) and requested.strip().lower() in ("", "auto")):
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(requested, torch.dtype):
        dtype = requested
    else:
        try:
            dtype = _DTYPE_NAMES[requested.strip().lower()]
        except KeyError:
            raise DeviceError(f"unknown precision {requested!r}: use auto, fp32, fp16 or bf16") from None
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise DeviceError(f"unsupported precision {dtype}: use fp32, fp16 or bf16")
    if device.type == "cpu" and dtype == torch.float16:
        raise DeviceError("fp16 on CPU is not supported (slow, incomplete kernels): use fp32 or bf16")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"bf16 requested but {torch.cuda.get_device_name(device)} does not support it")
    return dtype


class _FrameEncoder(nn.Module):
    """The graph handed to torch.compile / TensorRT: the model's input adapter, image tower, L2 normalisation.

    The same steps as :meth:`CLIPER.encode_frames`, built from :func:`_encoder_of`.
    """

    def __init__(self, visual: nn.Module, input_adapter: nn.Module | None = None, flip: bool = False) -> None:
        super().__init__()
        self.input_adapter = input_adapter if input_adapter is not None else nn.Identity()
        self.visual = visual
        self.flip = flip

    def forward(self, images: Tensor) -> Tensor:
        return encode_images(self.visual, self.input_adapter, images, self.flip)


def _encoder_of(model: CLIPER, copy_weights: bool = False) -> _FrameEncoder:
    """``model``'s frame encoder as one module (optionally on a copy of its weights, for casting)."""
    if copy_weights:
        return _FrameEncoder(copy.deepcopy(model.visual), copy.deepcopy(model.input_adapter), model.flip)
    return _FrameEncoder(model.visual, model.input_adapter, model.flip)


@dataclass
class CompiledEncoder:
    """A frame encoder ``images [N,3,S,S] -> float32 L2-normalised [N,D]`` and how it was obtained.

    ``backend`` is what actually runs, ``requested`` what was asked for, and
    ``reason`` why they differ (or how the backend was set up).  Calls of more
    than ``max_batch`` frames (TensorRT's engine limit) are split into chunks of
    ``opt_batch`` frames, the shape the engine is tuned for.
    """

    fn: Callable[[Tensor], Tensor]
    backend: str
    requested: str
    reason: str
    device: torch.device
    dtype: torch.dtype
    max_batch: int = DEFAULT_MAX_BATCH
    opt_batch: int = DEFAULT_OPT_BATCH

    def __call__(self, images: Tensor) -> Tensor:
        with torch.inference_mode():
            if images.shape[0] <= self.max_batch:
                return F.normalize(self.fn(images).float(), dim=-1)
            parts = [self.fn(chunk).float() for chunk in images.split(min(self.opt_batch, self.max_batch))]
            return F.normalize(torch.cat(parts), dim=-1)

    def _fall_back(self, backend: str, fn: Callable[[Tensor], Tensor], why: str) -> None:
        log.warning("frame encoder: %s failed, falling back to %s: %s", self.backend, backend, why)
        self.reason = f"{self.reason}; then {self.backend} failed at run time ({why}), using {backend}"
        self.backend = backend
        self.fn = fn


def _eager_fn(model: CLIPER, device: torch.device, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    def run(images: Tensor) -> Tensor:
        with autocast_for(device, dtype):
            return model.encode_frames(images)

    return run


def _pad_single(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Run a batch of 1 as a batch of 2: compilers specialise size 1, which would force a recompile."""

    def run(images: Tensor) -> Tensor:
        if images.shape[0] == 1:
            return fn(images.expand(2, *images.shape[1:]).contiguous())[:1]
        return fn(images)

    return run


def _summary(exc: BaseException, limit: int = 300) -> str:
    """One line naming an exception and its cause (compiler errors wrap the real one)."""
    inner = getattr(exc, "inner_exception", None)
    text = " ".join(str(exc).split())
    if inner is not None and str(inner) not in text:
        text += f" ({type(inner).__name__}: {' '.join(str(inner).split())})"
    line = f"{type(exc).__name__}: {text}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass(frozen=True)
class EagerCheck:
    """How a compiled encoder compares with eager: the lowest per-frame cosine seen, and the problem if any."""

    min_cosine: float | None
    problem: str | None = None


def _check_against_eager(
    fn: Callable[[Tensor], Tensor], eager: Callable[[Tensor], Tensor], batches: list[Tensor]
) -> EagerCheck:
    """Compare ``fn`` with eager on every batch (per-frame cosine must be >= MIN_COSINE_VS_EAGER)."""
    lowest: float | None = None
    with torch.inference_mode():
        for x in batches:
            got = _first(fn(x)).float()
            ref = eager(x).float()
            if got.shape != ref.shape:
                return EagerCheck(lowest, f"output shape {tuple(got.shape)} != eager {tuple(ref.shape)} at batch {x.shape[0]}")
            cos = F.cosine_similarity(got, ref, dim=-1).min().item()
            lowest = cos if lowest is None else min(lowest, cos)
            if not cos >= MIN_COSINE_VS_EAGER:
                return EagerCheck(
                    lowest, f"outputs differ from eager (min cosine {cos:.4f} < {MIN_COSINE_VS_EAGER}) at batch {x.shape[0]}"
                )
    return EagerCheck(lowest)


def _example_batches(model: CLIPER, device: torch.device, sizes: list[int]) -> list[Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    s = model.image_size
    with torch.inference_mode():  # like the inputs score_clips produces
        return [torch.randn(n, 3, s, s, generator=gen).to(device) for n in sizes]


def _try_torch_compile(
    model: CLIPER, device: torch.device, dtype: torch.dtype, example_batch: int, options: dict[str, Any]
) -> tuple[Callable[[Tensor], Tensor] | None, str]:
    """(fn, note) on success, (None, why) on failure."""
    eager = _eager_fn(model, device, dtype)
    try:
        compiled = torch.compile(_encoder_of(model), **options)
    except Exception as exc:  # noqa: BLE001 - any failure means: not available
        return None, f"torch.compile setup failed: {_summary(exc)}"

    def run(images: Tensor) -> Tensor:
        # one graph for all inputs: normal tensors would trigger a recompile. Both workers hand in inference
        # tensors (score_clips normalises in inference mode; the fused stage crops and batches in it), so
        # this copy is only for other callers.
        if not images.is_inference():
            images = images.clone()
        with autocast_for(device, dtype):
            return compiled(images)

    fn = _pad_single(run)
    warm = max(2, min(example_batch, 8))
    batches = _example_batches(model, device, [warm, 1, warm + 3])
    torch._dynamo.mark_dynamic(batches[0], 0)
    try:
        check = _check_against_eager(fn, eager, batches)
    except Exception as exc:  # noqa: BLE001 - compiler errors come in many types
        return None, f"torch.compile failed at first call: {_summary(exc)}"
    if check.problem:
        log.warning("frame encoder: torch.compile rejected, %s", check.problem)
        return None, f"torch.compile {check.problem}"
    return fn, f"torch.compile (dynamic batch), warmed up; min cosine vs eager {check.min_cosine:.4f}"


def _gpu_tag(device: torch.device) -> str:
    props = torch.cuda.get_device_properties(device)
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{props.name}-sm{props.major}{props.minor}")


def tensorrt_compile_kwargs(torch_tensorrt: Any, dtype: torch.dtype) -> dict[str, Any]:
    """Keyword arguments for ``torch_tensorrt.compile`` that give a ``dtype`` engine for a graph already in ``dtype``.

    Older torch-tensorrt releases type weakly (kernel precision chosen from
    ``enabled_precisions``); newer ones (2.10-2.12 at least) default to
    explicit typing, where the graph's dtypes decide and ``enabled_precisions``
    other than fp32 is refused with an assertion.  So: pass
    ``enabled_precisions={dtype}`` only when the release does not type
    explicitly by default.  Shared with ``bench/gpu/run.py``.
    """
    defaults = getattr(getattr(torch_tensorrt, "dynamo", None), "_defaults", None)
    if getattr(defaults, "USE_EXPLICIT_TYPING", False):
        return {}
    return {"enabled_precisions": {dtype}}


def tensorrt_batch_profile(example_batch: int, max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) frames of the engine's dynamic batch dimension for these call sizes."""
    return 1, max(1, min(example_batch, max_batch, DEFAULT_OPT_BATCH)), max_batch


def tensorrt_input_spec(torch_tensorrt: Any, image_size: int, dtype: torch.dtype, example_batch: int, max_batch: int):
    """The ``torch_tensorrt.Input`` of a dynamic-batch image encoder, and its opt batch. Shared with ``bench/gpu``."""
    lo, opt, hi = tensorrt_batch_profile(example_batch, max_batch)
    s = image_size
    spec = torch_tensorrt.Input(min_shape=(lo, 3, s, s), opt_shape=(opt, 3, s, s), max_shape=(hi, 3, s, s), dtype=dtype)
    return spec, opt


def load_tensorrt_program(torch_tensorrt: Any, path: str) -> nn.Module:
    """A saved engine (ExportedProgram) as a callable module.

    ``torch_tensorrt.load`` first: importing torch-tensorrt registers its
    runtime ops, and its loader picks the Python runtime when the C++ one is
    absent; ``torch.export.load`` only for releases without ``load``.
    """
    loader = getattr(torch_tensorrt, "load", None)
    program = loader(path) if callable(loader) else torch.export.load(path)
    module = getattr(program, "module", None)
    return module() if callable(module) else program


def _try_tensorrt(
    model: CLIPER,
    device: torch.device,
    dtype: torch.dtype,
    example_batch: int,
    max_batch: int,
    cache_dir: str | None,
    model_id: str | None,
) -> tuple[Callable[[Tensor], Tensor] | None, str]:
    """(fn, note) on success, (None, why) on failure.  Compiles (or loads) a dynamic-batch TensorRT engine."""
    try:
        import torch_tensorrt  # optional extra; TensorRT libraries come from pypi.nvidia.com
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for missing TensorRT libraries
        return None, f"torch_tensorrt not importable ({_summary(exc)}); install cliper-batch[tensorrt]"

    s = model.image_size
    spec, opt = tensorrt_input_spec(torch_tensorrt, s, dtype, example_batch, max_batch)
    eager = _eager_fn(model, device, dtype)
    checks = _example_batches(model, device, sorted({1, opt, min(max_batch, opt + 3)}))

    cache_path = None
    if cache_dir:
        from .checkpoint import model_id_of

        key = "-".join([
            model_id or model_id_of(model), str(dtype).replace("torch.", ""), f"s{s}", f"b{opt}-{max_batch}",
            f"trt{torch_tensorrt.__version__}", f"torch{torch.__version__}", _gpu_tag(device),
        ])
        cache_path = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), re.sub(r"[^A-Za-z0-9.+_-]", "_", key) + ".ep")

    def wrap(module: Callable[..., Any]) -> Callable[[Tensor], Tensor]:
        def run(images: Tensor) -> Tensor:
            return _first(module(images.to(dtype))).float()
        return run

    if cache_path and os.path.isfile(cache_path):
        try:
            fn = wrap(load_tensorrt_program(torch_tensorrt, cache_path))
            check = _check_against_eager(fn, eager, checks)
            if check.problem is None:
                return fn, f"tensorrt engine loaded from cache {cache_path}; min cosine vs eager {check.min_cosine:.4f}"
            log.warning("cached TensorRT engine %s rejected (%s); recompiling", cache_path, check.problem)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot load cached TensorRT engine %s (%s); recompiling", cache_path, exc)
        try:
            os.unlink(cache_path)
        except OSError:
            pass

    try:
        # The engine runs in `dtype` end to end: weights cast here, inputs cast in `run`.
        encoder = _encoder_of(model, copy_weights=True).eval().to(device=device, dtype=dtype)
        with torch.no_grad():  # export traces parameters; inference tensors are not allowed there
            trt_module = torch_tensorrt.compile(
                encoder, ir="dynamo", inputs=[spec], **tensorrt_compile_kwargs(torch_tensorrt, dtype)
            )
    except Exception as exc:  # noqa: BLE001
        return None, f"tensorrt compilation failed: {_summary(exc)}"
    fn = wrap(trt_module)
    check = _check_against_eager(fn, eager, checks)
    if check.problem:
        # Typically fp16 weights (cast for explicit typing) drifting from eager's fp32-weights autocast.
        log.warning("frame encoder: TensorRT %s engine rejected, %s; falling back", dtype, check.problem)
        return None, f"tensorrt {check.problem}"

    note = (f"tensorrt engine compiled (dynamic batch 1..{max_batch}, opt {opt}, {dtype}); "
            f"min cosine vs eager {check.min_cosine:.4f}")
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = f"{cache_path}.tmp-{os.getpid()}.ep"
        try:
            try:
                torch_tensorrt.save(trt_module, tmp, output_format="exported_program", inputs=[spec])
            except (TypeError, ValueError, AssertionError) as exc:  # older API: example tensors, no retrace
                log.info("torch_tensorrt.save with Input specs failed (%s); retrying with an example tensor", exc)
                example = torch.randn(opt, 3, s, s, device=device, dtype=dtype)
                torch_tensorrt.save(trt_module, tmp, output_format="exported_program", inputs=[example],
                                    retrace=False)
            os.replace(tmp, cache_path)
            note += f", saved to cache {cache_path}"
        except Exception as exc:  # noqa: BLE001 - caching is an optimisation only
            log.warning("could not save TensorRT engine to %s: %s", cache_path, exc)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return fn, note


def compile_encoder(
    model: CLIPER,
    backend: str,
    device: torch.device | str,
    *,
    dtype: torch.dtype | None = None,
    example_batch: int = 8,
    max_batch: int = DEFAULT_MAX_BATCH,
    cache_dir: str | None = None,
    model_id: str | None = None,
    compile_options: dict[str, Any] | None = None,
) -> CompiledEncoder:
    """Build the frame encoder for ``backend``, falling back (with a WARNING and a recorded reason) when needed.

    ``example_batch`` is the usual number of frames per call (segments x frames
    per segment): TensorRT's opt shape, capped at :data:`DEFAULT_OPT_BATCH`.
    ``max_batch`` caps frames per engine call (larger calls are split into
    opt-sized chunks).  ``dtype`` defaults to :func:`select_dtype`.
    ``model_id`` (optional) keys the TensorRT cache without re-hashing the weights;
    ``compile_options`` go to ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown compile backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if example_batch < 1 or max_batch < 1:
        raise ValueError("example_batch and max_batch must be >= 1")
    device = torch.device(device)
    dtype = select_dtype(device, dtype)
    model = model.to(device).eval()
    eager = _eager_fn(model, device, dtype)
    reasons: list[str] = []

    def done(fn: Callable[[Tensor], Tensor], used: str, note: str) -> CompiledEncoder:
        reason = "; ".join([*reasons, note])
        if used != backend:
            log.warning("frame encoder: requested %s, using %s: %s", backend, used, reason)
        else:
            log.info("frame encoder: %s (%s)", used, reason)
        _, opt, _ = tensorrt_batch_profile(example_batch, max_batch)
        enc = CompiledEncoder(fn, used, backend, reason, device, dtype, max_batch, opt)
        if used == "torch.compile":
            enc.fn = _runtime_guard(enc, fn, eager)
        return enc

    if backend == "tensorrt":
        if device.type != "cuda":
            reasons.append("no CUDA device (tensorrt needs CUDA)")
            return done(eager, "eager", "using eager")
        fn, note = _try_tensorrt(model, device, dtype, example_batch, max_batch, cache_dir, model_id)
        if fn is not None:
            return done(fn, "tensorrt", note)
        reasons.append(note)
    if backend in ("tensorrt", "torch.compile"):
        fn, note = _try_torch_compile(model, device, dtype, example_batch, dict(compile_options or {}))
        if fn is not None:
            return done(fn, "torch.compile", note)
        reasons.append(note)
        return done(eager, "eager", "using eager")
    if device.type == "cpu" and dtype == torch.float32:
        fn, note = cpu_eager_encoder(model, device, dtype)
        return done(fn, "eager", f"eager as requested; {note}")
    return done(eager, "eager", "eager as requested")


def cpu_eager_encoder(model: CLIPER, device: torch.device, dtype: torch.dtype) -> tuple[Callable[[Tensor], Tensor], str]:
    """The eager encoder prepared for CPU inference: each BatchNorm folded into its conv, channels-last; or plain eager.

    A convolutional tower (the shipped real-face model is a small ResNet) spends a fifth of its
    CPU time on separate BatchNorm passes and on oneDNN's layout changes; folding each
    eval-mode BatchNorm into the convolution before it
    (:func:`torch.fx.experimental.optimization.fuse`, on a copy: the model keeps its own
    modules) and running the convolutions channels-last does the same arithmetic in fewer
    passes (docs/benchmarks.md, "CPU eager encoder"). The outputs move by float rounding only;
    they are checked against plain eager like a compiled encoder, and anything that fails
    (a tower torch.fx cannot trace, a mismatch) leaves plain eager, saying why. A tower
    without BatchNorm (a ViT) runs plain eager: there is nothing to fold.
    """
    eager = _eager_fn(model, device, dtype)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.visual.modules()):
        return eager, "no BatchNorm to fold"
    try:
        from torch.fx.experimental.optimization import fuse

        visual = fuse(model.visual).to(memory_format=torch.channels_last)
    except Exception as exc:  # noqa: BLE001 - any tracing failure leaves the plain tower
        log.info("frame encoder: BatchNorm not folded (%s), plain eager", _summary(exc))
        return eager, f"BatchNorm not folded ({_summary(exc, 120)})"
    folded = _FrameEncoder(visual, model.input_adapter, model.flip).eval()

    def run(images: Tensor) -> Tensor:
        return folded(images.contiguous(memory_format=torch.channels_last))

    check = _check_against_eager(run, eager, _example_batches(model, device, [2]))
    if check.problem is not None:
        log.warning("frame encoder: BatchNorm-folded tower differs from eager (%s), plain eager", check.problem)
        return eager, f"BatchNorm-folded tower rejected ({check.problem})"
    return run, f"BatchNorm folded into convolutions, channels-last; min cosine vs eager {check.min_cosine:.6f}"


def _runtime_guard(
    owner: CompiledEncoder, compiled: Callable[[Tensor], Tensor], eager: Callable[[Tensor], Tensor]
) -> Callable[[Tensor], Tensor]:
    """Switch ``owner`` to eager for good if the compiler fails on a later call (e.g. a recompile)."""

    failed = False

    def run(images: Tensor) -> Tensor:
        nonlocal failed
        if failed:  # callers holding this function (not the CompiledEncoder) also stay on eager
            return eager(images)
        try:
            return compiled(images)
        except torch._dynamo.exc.TorchDynamoException as exc:
            failed = True
            owner._fall_back("eager", eager, _summary(exc))
            return eager(images)

    return run
