"""The crop primitives a worker hands to :mod:`cliper_batch.video_annotation`, and the choice between them.

A crop primitive maps ``frames [F, H, W, 3]`` uint8 and ``boxes [N, 5]``
float32 (both on the frames' device) to ``N`` model-sized crops:

* :func:`uint8_crops`: the torch reference :func:`cliper_batch.crops.reference.crop_resize`
  (whole-pixel ``S x S`` boxes copied), uint8 ``[N, S, S, 3]``: what the staged
  worker ships through the object store (4x smaller than floats; normalised on
  the scoring device);
* :func:`normalized_crops`: float32 ``[N, 3, S, S]`` ready for the encoder, for
  the fused worker whose crops never leave the device: the Triton kernel
  (:mod:`cliper_batch.kernels.crop_resize`) on CUDA when it imports and passes
  its once-per-process self-test (:func:`triton_self_test`), else
  DALI's operators (:class:`cliper_batch.crops.dali.DaliBoxCropper`)
  on CUDA when DALI is installed, else the torch reference
  :func:`cliper_batch.crops.reference.crop_resize_normalize` (:func:`select_crop_backend`
  decides and says why). Triton stays first until the GPU check
  (``bench/gpu/run.py``: ``kernel`` vs ``kernel.dali_crops``) measures DALI
  faster; ``dali`` can be forced by passing the choice to the stage.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from .reference import crop_resize, crop_resize_normalize
from ..failures import sticky_cuda_error

log = logging.getLogger(__name__)

CropFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "CropBackendChoice", "CropFn", "load_triton_crop", "normalized_crops", "select_crop_backend", "triton_self_test",
    "uint8_crops",
]


@dataclass(frozen=True)
class CropBackendChoice:
    """Which normalising crop implementation a worker uses, and why (logged, and exposed on the stage)."""

    name: str  # 'triton' | 'dali' | 'torch'
    reason: str


def load_triton_crop() -> Callable[..., torch.Tensor]:
    """The fused Triton kernel wrapper; ImportError when Triton or the kernel module is unusable.

    A module built for Triton's CPU interpreter (``TRITON_INTERPRET=1``) cannot
    run CUDA tensors, so it counts as unavailable here.
    """
    from ..kernels import crop_resize as mod

    if mod._interpreting():
        raise ImportError("the Triton crop kernel was imported under TRITON_INTERPRET=1 (CPU interpreter only)")
    return mod.crop_resize_normalize_triton


# Per process and device: None = the Triton crop passed its self-test there, else why it failed.
_SELF_TESTS: dict[str, str | None] = {}
_SELF_TEST_LOCK = threading.Lock()
SELF_TEST_TOLERANCE = 1e-2  # max |triton - torch| of the normalised self-test crops (the kernel tests' fp32 bound)


def _self_test_inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny frames and boxes for the self-test: whole-frame, sub-pixel, partly outside, on the second frame."""
    g = torch.Generator().manual_seed(24)
    frames = torch.randint(0, 256, (2, 12, 17, 3), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[0, 0, 0, 17, 12], [1, 2.5, 1.25, 9.75, 8.5], [1, -4, -3, 6, 7], [0, 12, 6, 21, 15]],
                         dtype=torch.float32)
    return frames.to(device), boxes.to(device)


def triton_self_test(device: torch.device | str, crop: Callable[..., torch.Tensor] | None = None) -> str | None:
    """One tiny launch of the Triton crop on ``device`` compared with the torch reference; None if it passed, else why.

    Importing Triton proves little: its first launch compiles a small C launcher (a C
    compiler and the Python headers must be there) and the kernel for this GPU, so on a
    slim CUDA image every crop would raise. Like the NVDEC self-test, this runs once per
    process and device (:func:`select_crop_backend` caches it). A sticky CUDA error in the
    launch is raised, not reported: the process's CUDA context is broken, falling back to
    another crop would not help, and the actor must end (see ``pipeline.model_actor``).
    ``crop`` defaults to the kernel wrapper; tests pass another.
    """
    dev = torch.device(device)
    try:
        fn = crop or load_triton_crop()
        frames, boxes = _self_test_inputs(dev)
        got = fn(frames, boxes, 8)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        want = crop_resize_normalize(frames.cpu(), boxes.cpu(), 8)
        got = got.detach().float().cpu()
        if tuple(got.shape) != tuple(want.shape):
            return f"self-test crop has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        err = float((got - want).abs().max())
        if not err <= SELF_TEST_TOLERANCE:  # also catches NaN
            return f"self-test crop differs from the torch reference by {err:.3g} (> {SELF_TEST_TOLERANCE})"
    except Exception as exc:  # noqa: BLE001 - any failure of the launch means: do not use Triton here
        if sticky_cuda_error(exc):
            raise
        first = (str(exc) or repr(exc)).strip().splitlines()
        return f"self-test launch failed: {type(exc).__name__}: {first[0][:300] if first else ''}"
    return None


def _cached_self_test(dev: torch.device) -> str | None:
    key = str(dev)
    with _SELF_TEST_LOCK:
        if key not in _SELF_TESTS:
            problem = triton_self_test(dev)
            _SELF_TESTS[key] = problem
            if problem:
                log.warning("Triton crop kernel unusable on %s, falling back: %s", dev, problem)
        return _SELF_TESTS[key]


def select_crop_backend(
    device: torch.device | str, triton_available: bool | None = None, dali_installed: bool | None = None
) -> CropBackendChoice:
    """On CUDA: ``triton`` if the kernel imports and passes its self-test, else ``dali`` if DALI is installed; otherwise ``torch``.

    ``triton_available=None`` tries the import and then :func:`triton_self_test`
    (once per process and device; a failure is logged once, with its reason, and
    named in the choice's reason); ``dali_installed=None`` looks for
    ``nvidia.dali``; tests pass them explicitly. On the CPU the torch reference
    is used: DALI's CPU operators are not faster there and the staged worker's
    crops need no normalisation on the host.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return CropBackendChoice("torch", f"tensors on {dev}: the Triton kernel and DALI crops run on CUDA, using the torch reference")
    why, unusable = "", "not importable"
    if triton_available is None:
        try:
            load_triton_crop()
            triton_available = True
        except ImportError as exc:
            triton_available, why = False, f" ({exc})"
        else:
            problem = _cached_self_test(dev)
            if problem:
                triton_available, why, unusable = False, f" ({problem})", "not usable"
    if triton_available:
        return CropBackendChoice("triton", f"tensors on {dev} and Triton importable: fused crop_resize_normalize kernel")
    if dali_installed is None:
        from ..decode.dali_backend import dali_available

        dali_installed = dali_available()
    if dali_installed:
        return CropBackendChoice("dali", f"tensors on {dev}, the Triton kernel is {unusable}{why}: DALI crop operators")
    return CropBackendChoice("torch", f"tensors on {dev} but neither the Triton kernel{why} nor DALI is available: torch reference")


def uint8_crops(size: int) -> CropFn:
    """Crop + resize to uint8 ``[N, S, S, 3]`` on the host (the staged worker's primitive).

    The torch reference :func:`~cliper_batch.crops.reference.crop_resize`, except that
    boxes which are whole-pixel ``S x S`` squares inside their frame (the centre
    crop of ``faces="none"``, decoded at short side ``S``) are copied: the same
    pixels (bilinear sampling at pixel centres is the identity; a test checks
    it) at about 1/60 of the cost on a CPU.
    """
    size = int(size)

    def crop(frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        copied = _pixel_copy(frames, boxes, size)
        return copied if copied is not None else crop_resize(frames, boxes, size)

    return crop


def _pixel_copy(frames: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor | None:
    """The crops when every box is a whole-pixel ``size x size`` square inside its frame, else ``None``."""
    if frames.device.type != "cpu" or boxes.device.type != "cpu" or boxes.ndim != 2 or boxes.shape[1] != 5 or not len(boxes):
        return None
    b = boxes.to(torch.float64)
    f, x0, y0, x1, y1 = b.unbind(1)
    n_frames, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    whole = bool(torch.equal(b, b.round()))
    square = bool(((x1 - x0) == size).all() and ((y1 - y0) == size).all())
    inside = bool((f >= 0).all() and (f < n_frames).all() and (x0 >= 0).all() and (y0 >= 0).all()
                  and (x1 <= width).all() and (y1 <= height).all())
    if not (whole and square and inside):
        return None
    return torch.stack([frames[i, y : y + size, x : x + size] for i, x, y in b[:, :3].long().tolist()])


def normalized_crops(
    backend: str, size: int, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cuda",
    out_dtype: torch.dtype = torch.float32,
) -> CropFn:
    """Crop + resize + normalise to float ``[N, 3, S, S]`` with ``backend`` (``'triton'``, ``'dali'`` or ``'torch'``).

    ``device``: where the frames live (used by ``'dali'``, whose operators run there).
    ``out_dtype``: the crops' dtype with ``'triton'`` (float16 when the encoder runs in fp16:
    half the bytes written and read, no cast before the first layer); the others write float32.
    """
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if backend == "triton":
        # the boxes come from video_annotation (centre square / validated face squares): no host sync to re-check them
        return partial(load_triton_crop(), size=int(size), mean=mean_t, std=std_t, check_boxes=False,
                       out_dtype=out_dtype)
    if backend == "dali":
        from .dali import DaliBoxCropper

        dev = torch.device(device)
        cropper = DaliBoxCropper(device="gpu" if dev.type == "cuda" else "cpu", device_id=dev.index)
        return partial(cropper, size=int(size), mean=mean_t, std=std_t)
    if backend == "torch":
        return partial(crop_resize_normalize, size=int(size), mean=mean_t, std=std_t)
    raise ValueError(f"crop backend must be 'triton', 'dali' or 'torch', got {backend!r}")
