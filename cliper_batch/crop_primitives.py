"""The crop primitives a worker hands to :mod:`cliper_batch.video_annotation`, and the choice between them.

A crop primitive maps ``frames [F, H, W, 3]`` uint8 and ``boxes [N, 5]``
float32 (both on the frames' device) to ``N`` model-sized crops:

* :func:`uint8_crops`: the torch reference :func:`cliper_batch.crops.crop_resize`
  (whole-pixel ``S x S`` boxes copied), uint8 ``[N, S, S, 3]``: what the staged
  worker ships through the object store (4x smaller than floats; normalised on
  the scoring device);
* :func:`normalized_crops`: float32 ``[N, 3, S, S]`` ready for the encoder, for
  the fused worker whose crops never leave the device: the Triton kernel
  (:mod:`cliper_batch.kernels.crop_resize`) on CUDA when it imports, else the
  torch reference :func:`cliper_batch.crops.crop_resize_normalize`
  (:func:`select_crop_backend` decides and says why).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from .crops import crop_resize, crop_resize_normalize

CropFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["CropBackendChoice", "CropFn", "load_triton_crop", "normalized_crops", "select_crop_backend", "uint8_crops"]


@dataclass(frozen=True)
class CropBackendChoice:
    """Which normalising crop implementation a worker uses, and why (logged, and exposed on the stage)."""

    name: str  # 'triton' | 'torch'
    reason: str


def load_triton_crop() -> Callable[..., torch.Tensor]:
    """The fused Triton kernel wrapper; ImportError when Triton or the kernel module is unusable.

    A module built for Triton's CPU interpreter (``TRITON_INTERPRET=1``) cannot
    run CUDA tensors, so it counts as unavailable here.
    """
    from .kernels import crop_resize as mod

    if mod._interpreting():
        raise ImportError("the Triton crop kernel was imported under TRITON_INTERPRET=1 (CPU interpreter only)")
    return mod.crop_resize_normalize_triton


def select_crop_backend(device: torch.device | str, triton_available: bool | None = None) -> CropBackendChoice:
    """``triton`` when the tensors live on CUDA and the kernel imports, else ``torch`` (:mod:`cliper_batch.crops`).

    ``triton_available=None`` tries the import; tests pass it explicitly.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return CropBackendChoice("torch", f"tensors on {dev}: the Triton kernel needs CUDA, using the torch reference")
    why = ""
    if triton_available is None:
        try:
            load_triton_crop()
            triton_available = True
        except ImportError as exc:
            triton_available, why = False, f" ({exc})"
    if triton_available:
        return CropBackendChoice("triton", f"tensors on {dev} and Triton importable: fused crop_resize_normalize kernel")
    return CropBackendChoice("torch", f"tensors on {dev} but the Triton kernel is not importable{why}: torch reference")


def uint8_crops(size: int) -> CropFn:
    """Crop + resize to uint8 ``[N, S, S, 3]`` on the host (the staged worker's primitive).

    The torch reference :func:`~cliper_batch.crops.crop_resize`, except that
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


def normalized_crops(backend: str, size: int, mean: Sequence[float], std: Sequence[float]) -> CropFn:
    """Crop + resize + normalise to float32 ``[N, 3, S, S]`` with ``backend`` (``'triton'`` or ``'torch'``)."""
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if backend == "triton":
        # the boxes come from video_annotation (centre square / validated face squares): no host sync to re-check them
        return partial(load_triton_crop(), size=int(size), mean=mean_t, std=std_t, check_boxes=False)
    if backend == "torch":
        return partial(crop_resize_normalize, size=int(size), mean=mean_t, std=std_t)
    raise ValueError(f"crop backend must be 'triton' or 'torch', got {backend!r}")
