"""Fused crop + bilinear resize + normalise for many boxes at once (Triton).

Same sampling, padding and normalisation convention as
:func:`cliper_batch.crops.reference.crop_resize_normalize` (read that module's
docstring): pixel-centre bilinear sampling (``align_corners=False``), taps
outside the frame read the mean colour (so they normalise to 0), then
``(v / 255 - mean) / std``, output NCHW.

Why a kernel: the torch path converts whole frames to float and runs one
``grid_sample`` per frame; this kernel reads the uint8 frames directly and
writes only the ``[N, 3, S, S]`` result, in a single launch for all boxes of
all frames. It is purely memory-bound, so its figure of merit is effective
bandwidth: see :func:`crop_resize_bytes_moved`.

Work layout: program ``(n, t)`` computes output pixels
``t*BLOCK .. t*BLOCK+BLOCK-1`` (row-major over the ``S x S`` crop) of box
``n``, for all three channels. Neighbouring lanes hold neighbouring output
columns, so their taps are neighbouring input pixels of the same one or two
frame rows (gathers that stay within a few cache lines), and each channel's
store is one contiguous, fully coalesced ``BLOCK``-wide write.

On CPU the kernel runs under Triton's interpreter only (``TRITON_INTERPRET=1``
set before this module is imported, with CPU tensors); that is how the tests
check it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from cliper_batch.crops.reference import CLIP_MEAN, CLIP_STD, CropInputError, validate_box_values

DEFAULT_BLOCK = 1024
_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _crop_resize_normalize_kernel(
    frames_ptr,  # uint8 [F, H, W, 3] (any strides)
    boxes_ptr,  # float32 [N, 5] contiguous: frame_index, x0, y0, x1, y1
    params_ptr,  # float32 [6]: fill (mean * 255) for R, G, B, then 1 / (255 * std) for R, G, B
    out_ptr,  # [N, 3, S, S] contiguous, float32 / float16 / bfloat16
    H,
    W,
    stride_f,
    stride_h,
    stride_w,
    stride_c,
    S,
    BLOCK: tl.constexpr,
):
    n = tl.program_id(0)
    t = tl.program_id(1)
    box = boxes_ptr + n * 5
    fi = tl.load(box).to(tl.int64)
    x0 = tl.load(box + 1)
    y0 = tl.load(box + 2)
    x1 = tl.load(box + 3)
    y1 = tl.load(box + 4)
    step_x = (x1 - x0) / S
    step_y = (y1 - y0) / S

    S2 = S * S
    p = t * BLOCK + tl.arange(0, BLOCK)
    inside = p < S2
    i = p // S
    j = p - i * S
    # Index-space sample position (pixel centres at integers), align_corners=False.
    xs = x0 + (j.to(tl.float32) + 0.5) * step_x - 0.5
    ys = y0 + (i.to(tl.float32) + 0.5) * step_y - 0.5
    xf = tl.floor(xs)
    yf = tl.floor(ys)
    wx1 = xs - xf
    wy1 = ys - yf
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    # Clamp to a sane range before the int cast so huge boxes cannot overflow int32.
    xf = tl.minimum(tl.maximum(xf, -2.0), W + 1.0)
    yf = tl.minimum(tl.maximum(yf, -2.0), H + 1.0)
    ix0 = xf.to(tl.int32)
    iy0 = yf.to(tl.int32)
    ix1 = ix0 + 1
    iy1 = iy0 + 1
    vx0 = (ix0 >= 0) & (ix0 < W)
    vx1 = (ix1 >= 0) & (ix1 < W)
    vy0 = (iy0 >= 0) & (iy0 < H)
    vy1 = (iy1 >= 0) & (iy1 < H)
    # Addresses from clamped indices (masked lanes never dereference, but keep them in bounds anyway).
    cx0 = tl.minimum(tl.maximum(ix0, 0), W - 1).to(tl.int64) * stride_w
    cx1 = tl.minimum(tl.maximum(ix1, 0), W - 1).to(tl.int64) * stride_w
    cy0 = tl.minimum(tl.maximum(iy0, 0), H - 1).to(tl.int64) * stride_h
    cy1 = tl.minimum(tl.maximum(iy1, 0), H - 1).to(tl.int64) * stride_h
    base = frames_ptr + fi * stride_f
    m00 = inside & vy0 & vx0
    m01 = inside & vy0 & vx1
    m10 = inside & vy1 & vx0
    m11 = inside & vy1 & vx1
    w00 = wy0 * wx0
    w01 = wy0 * wx1
    w10 = wy1 * wx0
    w11 = wy1 * wx1
    out_base = out_ptr + n.to(tl.int64) * 3 * S2 + p
    for c in tl.static_range(3):
        fill = tl.load(params_ptr + c)
        scale = tl.load(params_ptr + 3 + c)
        cc = c * stride_c
        # Each tap contributes (value - fill); out-of-frame taps contribute 0 (they "read" the fill colour).
        a00 = tl.where(m00, tl.load(base + cy0 + cx0 + cc, mask=m00, other=0).to(tl.float32) - fill, 0.0)
        a01 = tl.where(m01, tl.load(base + cy0 + cx1 + cc, mask=m01, other=0).to(tl.float32) - fill, 0.0)
        a10 = tl.where(m10, tl.load(base + cy1 + cx0 + cc, mask=m10, other=0).to(tl.float32) - fill, 0.0)
        a11 = tl.where(m11, tl.load(base + cy1 + cx1 + cc, mask=m11, other=0).to(tl.float32) - fill, 0.0)
        v = (a00 * w00 + a01 * w01 + a10 * w10 + a11 * w11) * scale
        tl.store(out_base + c * S2, v.to(out_ptr.dtype.element_ty), mask=inside)


def _interpreting() -> bool:
    """Whether the kernel was built for Triton's CPU interpreter (fixed when this module was imported)."""
    return type(_crop_resize_normalize_kernel).__name__ == "InterpretedFunction"


def _validate(
    frames: torch.Tensor, boxes: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float], out_dtype, check_boxes: bool
) -> tuple[torch.Tensor, list[float], list[float]]:
    where = "crop_resize_normalize_triton"
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        raise CropInputError(f"{where}: frames must be a uint8 tensor, got {getattr(frames, 'dtype', type(frames))}")
    if frames.dim() != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
        raise CropInputError(f"{where}: frames must have shape [F, H, W, 3] (non-empty), got {tuple(frames.shape)}")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes)
        raise CropInputError(f"{where}: boxes must be a [N, 5] tensor (frame_index, x0, y0, x1, y1), got {got}")
    if not boxes.dtype.is_floating_point:
        raise CropInputError(f"{where}: boxes must be floating point (float32), got {boxes.dtype}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CropInputError(f"{where}: size must be a positive int, got {size!r}")
    if out_dtype not in _OUT_DTYPES:
        raise CropInputError(f"{where}: out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
    if _interpreting():
        if frames.device.type != "cpu":
            raise CropInputError(f"{where}: TRITON_INTERPRET=1 runs on CPU tensors only, frames are on {frames.device}")
    elif frames.device.type != "cuda":
        raise CropInputError(
            f"{where}: frames must be on a CUDA device (got {frames.device}); use cliper_batch.crops.reference on CPU, "
            "or set TRITON_INTERPRET=1 before this module is first imported"
        )
    if boxes.device != frames.device:
        raise CropInputError(f"{where}: boxes are on {boxes.device} but frames on {frames.device}")
    mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
    if len(mean_l) != 3 or len(std_l) != 3 or not all(s > 0 for s in std_l):
        raise CropInputError(f"{where}: mean/std need 3 values each, std > 0; got {mean_l} and {std_l}")
    if frames.shape[1] * frames.shape[2] >= 2**30:
        raise CropInputError(f"{where}: frame {tuple(frames.shape)} too large for int32 pixel indices")
    boxes = boxes.to(torch.float32).contiguous()
    if check_boxes:  # one host sync; skip with check_boxes=False when boxes are trusted
        validate_box_values(boxes, frames.shape[0], where)
    return boxes, mean_l, std_l


_PARAMS_CACHE: dict[tuple[str, tuple[float, ...], tuple[float, ...]], torch.Tensor] = {}


def _params(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """The kernel's [fill x3, scale x3] tensor, cached per device and stats.

    Caching avoids a host->device copy on every call (and keeps calls capturable in a CUDA graph).
    """
    key = (str(device), mean, std)
    t = _PARAMS_CACHE.get(key)
    if t is None:
        vals = [255.0 * m for m in mean] + [1.0 / (255.0 * s) for s in std]
        t = torch.tensor(vals, dtype=torch.float32, device=device)
        _PARAMS_CACHE[key] = t
    return t


def _device_guard(device: torch.device):
    """``torch.cuda.device(device)`` for CUDA tensors (a no-op context otherwise).

    Triton launches on the *current* CUDA device: frames on ``cuda:1`` while ``cuda:0`` is
    current would run the kernel on device 0 with device-1 pointers, an illegal memory access
    (a sticky error) on multi-GPU hosts. The guard makes the frames' device current for the launch.
    """
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def crop_resize_normalize_triton(
    frames: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    out_dtype: torch.dtype = torch.float32,
    *,
    out: torch.Tensor | None = None,
    block: int = DEFAULT_BLOCK,
    num_warps: int = 4,
    check_boxes: bool = True,
) -> torch.Tensor:
    """Crop + bilinear resize + normalise every box in one launch: ``[N, 3, size, size]`` of ``out_dtype``.

    ``frames``: uint8 ``[F, H, W, 3]`` on a CUDA device (contiguous is fastest;
    any strides work). ``boxes``: float ``[N, 5]`` on the same device,
    ``(frame_index, x0, y0, x1, y1)`` in pixels (may extend past the frame);
    ``N == 0`` returns an empty tensor. ``out``: optional preallocated
    contiguous output (e.g. a CUDA-graph static buffer). ``check_boxes``
    validates box values with one device->host sync; pass False for trusted
    boxes. Raises :class:`cliper_batch.crops.reference.CropInputError` on bad input.
    """
    boxes, mean_l, std_l = _validate(frames, boxes, size, mean, std, out_dtype, check_boxes)
    n = boxes.shape[0]
    shape = (n, 3, size, size)
    if out is None:
        out = torch.empty(shape, dtype=out_dtype, device=frames.device)
    elif tuple(out.shape) != shape or out.dtype != out_dtype or out.device != frames.device or not out.is_contiguous():
        raise CropInputError(
            f"crop_resize_normalize_triton: out must be a contiguous {out_dtype} tensor of shape {shape} on "
            f"{frames.device}, got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if n == 0:
        return out
    if block < 16 or block & (block - 1):
        raise CropInputError(f"crop_resize_normalize_triton: block must be a power of two >= 16, got {block}")
    params = _params(frames.device, tuple(mean_l), tuple(std_l))
    _, h, w, _ = frames.shape
    grid = (n, triton.cdiv(size * size, block))
    sf, sh, sw, sc = frames.stride()
    with _device_guard(frames.device):
        _crop_resize_normalize_kernel[grid](
            frames, boxes, params, out, h, w, sf, sh, sw, sc, size, BLOCK=block, num_warps=num_warps
        )
    return out


def crop_resize_bytes_moved(
    frames_shape: Sequence[int], boxes: torch.Tensor, size: int, out_dtype: torch.dtype = torch.float32
) -> dict[str, int]:
    """Bytes one :func:`crop_resize_normalize_triton` call must move, for bandwidth accounting.

    ``read``: per box, the distinct in-frame input pixels its bilinear taps
    touch (distinct tap rows x distinct tap columns x 3 bytes), summed over
    boxes (overlapping boxes count once each, as separate DRAM reads would),
    plus the boxes themselves. ``written``: the output tensor. ``total`` is
    their sum: divide by kernel time for the effective GB/s.
    """
    _, h, w, _ = (int(v) for v in frames_shape)
    b = boxes.detach().to("cpu", torch.float64)
    n = b.shape[0]
    elt = torch.empty((), dtype=out_dtype).element_size()
    written = n * 3 * size * size * elt
    if n == 0:
        return {"read": 0, "written": 0, "total": 0}
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size

    def distinct(lo: torch.Tensor, hi: torch.Tensor, limit: int) -> torch.Tensor:
        pos = lo[:, None] + t[None, :] * (hi - lo)[:, None] - 0.5  # [N, S], increasing along S
        f = torch.floor(pos)
        taps = torch.stack([f, f + 1], dim=-1).reshape(n, 2 * size)  # sorted: f_k <= f_k+1 <= f_{k+1}+1
        taps, _ = torch.sort(taps, dim=1)
        valid = (taps >= 0) & (taps < limit)
        new = torch.ones_like(valid)
        new[:, 1:] = taps[:, 1:] != taps[:, :-1]
        return (valid & new).sum(dim=1)

    rows = distinct(b[:, 2], b[:, 4], h)
    cols = distinct(b[:, 1], b[:, 3], w)
    read = int((rows * cols).sum()) * 3 + n * 5 * 4
    return {"read": read, "written": written, "total": read + written}
