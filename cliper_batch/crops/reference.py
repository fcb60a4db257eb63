"""Crop boxes out of decoded frames and resample them to the model's input size.

This is the CPU/torch path the engine uses, and the reference that the fused
Triton kernel (:mod:`cliper_batch.kernels.crop_resize`) is tested against.

Conventions (shared bit-for-bit in intent with the Triton kernel)
-----------------------------------------------------------------
* **Frames** are ``uint8`` tensors ``[F, H, W, 3]`` (RGB, channels last).
* **Boxes** are ``float32`` tensors ``[N, 5]``: ``(frame_index, x0, y0, x1, y1)``
  in *continuous pixel coordinates*: pixel ``(r, c)`` covers the square
  ``[c, c+1) x [r, r+1)``, so the box ``(0, 0, W, H)`` is exactly the whole
  frame. Boxes may extend past the frame edges (or lie fully outside it);
  they must have ``x1 > x0`` and ``y1 > y0``.
* **Sampling** is bilinear with the pixel-centre convention (what
  ``torch.nn.functional.interpolate``/``grid_sample`` call
  ``align_corners=False``). Output pixel ``(i, j)`` of an ``S x S`` crop
  samples the frame at index-space coordinates::

      x = x0 + (j + 0.5) * (x1 - x0) / S - 0.5
      y = y0 + (i + 0.5) * (y1 - y0) / S - 0.5

  where index-space ``(x, y) = (c, r)`` is the centre of pixel ``(r, c)``.
  The value is the usual bilinear blend of the four taps
  ``floor(x) + {0, 1}`` by ``floor(y) + {0, 1}``.
* **Padding**: the frame is treated as embedded in an infinite canvas of the
  *fill colour*, i.e. every tap outside ``[0, W-1] x [0, H-1]`` reads the fill
  colour (it is blended, not clamped). For :func:`crop_resize_normalize` the
  fill is the normalisation mean, so pixels sampled wholly outside the frame
  normalise to exactly 0 and edge pixels fade towards 0. For
  :func:`crop_resize` the default fill is the CLIP mean colour in 0..255, so
  ``normalise(crop_resize(...))`` matches :func:`crop_resize_normalize` up to
  uint8 rounding.
* **Normalisation**: ``(v / 255 - mean) / std`` per channel, output
  ``[N, 3, S, S]`` float32 (NCHW, what a ViT's patch embedding takes).
* There is **no anti-aliasing**: shrinking a box by more than ~2x aliases
  (each output pixel reads only 4 input pixels). Face boxes in video are
  usually within 1-4x of 224 px, where this is the standard trade-off.

Implementation: per frame, one ``grid_sample`` call whose sampling grid
stacks all boxes of that frame along the height axis (no per-box Python loop
and no per-box copy of the frame); only the frame's window that holds every
tap of its boxes (:func:`tap_window`) is converted to float, the same values
bit for bit. Because bilinear weights sum to 1 and normalisation is affine per
channel, sampling ``frame - fill`` with zero padding and adding/scaling
afterwards is exactly the convention above.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# OpenAI CLIP image normalisation (open_clip's OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

Box = tuple[float, float, float, float]


MIN_MARGIN = -0.4  # the square keeps at least 20 % of the face box's longer side


class CropInputError(ValueError):
    """Frames, boxes or parameters given to a crop function are malformed."""


def center_square_box(width: int, height: int) -> Box:
    """The largest square centred in a ``width x height`` frame, as ``(x0, y0, x1, y1)`` pixels.

    Used when no face detector runs (``faces="none"``): the model sees the
    centre square of every sampled frame, like CLIP's resize + centre crop.
    """
    if width < 1 or height < 1:
        raise CropInputError(f"center_square_box: frame size must be positive, got {width}x{height}")
    side = float(min(width, height))
    x0 = (width - side) / 2.0
    y0 = (height - side) / 2.0
    return (x0, y0, x0 + side, y0 + side)


def center_crop_plan(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``faces="none"``: decode size (short side -> ``size``) and the top-left of the centred ``size`` square in it.

    Decoding at that size makes the centre crop an exact ``size x size`` box on
    whole pixels (the crop functions then copy pixels, no resampling).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    scale = size / min(width, height)
    out_w = max(size, int(round(width * scale)))
    out_h = max(size, int(round(height * scale)))
    return (out_w, out_h), ((out_w - size) // 2, (out_h - size) // 2)


def square_box_with_margin(box_xyxy: Sequence[float], margin: float, width: int, height: int) -> Box:
    """Turn a face box into the square crop box the model sees.

    The square is centred on the face box; its side is the face box's longer
    side times ``1 + 2 * margin`` (``margin`` is the fraction of the longer
    side added on *each* side, e.g. 0.2 -> side = 1.4 x face). It is not
    shifted or shrunk to fit the frame: a face at the edge stays centred and
    the out-of-frame part is padded at sampling time (see module docstring).

    ``width``/``height`` are the frame size, used to reject boxes that do not
    overlap the frame at all (a detector bug, not a face).
    """
    if len(box_xyxy) != 4:
        raise CropInputError(f"square_box_with_margin: box must be (x0, y0, x1, y1), got {tuple(box_xyxy)!r}")
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    vals = torch.tensor([x0, y0, x1, y1, float(margin)], dtype=torch.float64)
    if not bool(torch.isfinite(vals).all()):
        raise CropInputError(f"square_box_with_margin: non-finite box or margin: {box_xyxy!r}, margin={margin!r}")
    if not (x1 > x0 and y1 > y0):
        raise CropInputError(f"square_box_with_margin: empty box {box_xyxy!r} (need x1 > x0 and y1 > y0)")
    if margin < MIN_MARGIN:  # a negative margin crops inside the box (a model trained on tight crops)
        raise CropInputError(f"square_box_with_margin: margin must be >= {MIN_MARGIN}, got {margin}")
    if width < 1 or height < 1:
        raise CropInputError(f"square_box_with_margin: frame size must be positive, got {width}x{height}")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise CropInputError(
            f"square_box_with_margin: box {box_xyxy!r} does not overlap the {width}x{height} frame"
        )
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin) / 2.0
    return (cx - half, cy - half, cx + half, cy + half)


def _check_inputs(frames: torch.Tensor, boxes: torch.Tensor, size: int, where: str) -> torch.Tensor:
    """Validate frames/boxes/size; return boxes as float32 on the frames' device."""
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        raise CropInputError(f"{where}: frames must be a uint8 tensor, got {getattr(frames, 'dtype', type(frames))}")
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise CropInputError(f"{where}: frames must have shape [F, H, W, 3], got {tuple(frames.shape)}")
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise CropInputError(f"{where}: frames must be non-empty, got {tuple(frames.shape)}")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5:
        raise CropInputError(
            f"{where}: boxes must be a [N, 5] tensor (frame_index, x0, y0, x1, y1), got "
            f"{tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes)}"
        )
    if not boxes.dtype.is_floating_point:
        raise CropInputError(f"{where}: boxes must be floating point (float32), got {boxes.dtype}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CropInputError(f"{where}: size must be a positive int, got {size!r}")
    boxes = boxes.to(device=frames.device, dtype=torch.float32)
    validate_box_values(boxes, frames.shape[0], where)
    return boxes


def validate_box_values(boxes: torch.Tensor, n_frames: int, where: str) -> None:
    """Raise :class:`CropInputError` for the first box that is not finite, has a bad frame index or is empty.

    One fused reduction, so one host sync on a GPU tensor.
    """
    if boxes.shape[0] == 0:
        return
    fi = boxes[:, 0]
    bad = (
        ~torch.isfinite(boxes).all(dim=1)
        | (fi != torch.floor(fi))
        | (fi < 0)
        | (fi >= n_frames)
        | ~(boxes[:, 3] > boxes[:, 1])
        | ~(boxes[:, 4] > boxes[:, 2])
    )
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise CropInputError(
            f"{where}: box {k} = {boxes[k].tolist()} is invalid (need finite values, an integer frame index in "
            f"[0, {n_frames}), x1 > x0 and y1 > y0)"
        )


def _check_stats(mean: Sequence[float], std: Sequence[float], where: str) -> tuple[list[float], list[float]]:
    mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
    if len(mean_l) != 3 or len(std_l) != 3:
        raise CropInputError(f"{where}: mean and std need 3 values (RGB), got {mean_l} and {std_l}")
    if not all(s > 0 for s in std_l):
        raise CropInputError(f"{where}: std values must be > 0, got {std_l}")
    return mean_l, std_l


def tap_window(lo, hi):
    """The pixels ``[first, end)`` along one axis holding every bilinear tap of a box spanning ``[lo, hi)``.

    The box's samples lie in ``[lo - 0.5, hi - 0.5)`` (index space), their taps at ``floor`` and
    ``floor + 1``, so ``[floor(lo) - 1, ceil(hi) + 1)`` holds them all. Not clipped to the frame.
    Works on numpy arrays and torch tensors alike (``// 1`` floors both); the torch crops
    convert only this window of a frame, DALI's box cropper slices it.
    """
    return lo // 1 - 1, -((-hi) // 1) + 1


def _sample_minus_fill(frames: torch.Tensor, boxes: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Bilinear crops of ``frames - fill`` (0..255 units, zero padding) as float32 ``[N, 3, S, S]``.

    ``boxes`` are validated float32 on the frames' device; ``fill`` is a
    float32 ``[3]`` tensor on that device.
    """
    n = boxes.shape[0]
    _, h, w, _ = frames.shape
    out = torch.empty((n, 3, size, size), dtype=torch.float32, device=frames.device)
    if n == 0:
        return out
    # Normalised grid coordinates (align_corners=False): u = 2 * x_cont / W - 1,
    # where x_cont = x0 + (j + 0.5) * (x1 - x0) / S is the continuous-coordinate sample.
    t = (torch.arange(size, device=frames.device, dtype=torch.float32) + 0.5) / size  # [S]
    xc = boxes[:, 1:2] + t[None, :] * (boxes[:, 3:4] - boxes[:, 1:2])  # [N, S]
    yc = boxes[:, 2:3] + t[None, :] * (boxes[:, 4:5] - boxes[:, 2:3])  # [N, S]
    gx = xc * (2.0 / w) - 1.0
    gy = yc * (2.0 / h) - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [N, S, S, 2]
    frame_idx = boxes[:, 0].long()
    order = torch.argsort(frame_idx, stable=True)
    sorted_idx = frame_idx[order]
    present, counts = torch.unique_consecutive(sorted_idx, return_counts=True)
    # Each frame's window: the rectangle holding every bilinear tap of its boxes (tap_window), clipped to the
    # frame. Only the window is converted to float: the frame is mostly background (two ~100 px faces in
    # 640x360), and grid_sample reads nothing else.
    k = frames.shape[0]
    lo = torch.full((k, 2), float("inf"), device=boxes.device).scatter_reduce(
        0, frame_idx[:, None].expand(n, 2), boxes[:, 1:3], "amin")
    hi = torch.full((k, 2), float("-inf"), device=boxes.device).scatter_reduce(
        0, frame_idx[:, None].expand(n, 2), boxes[:, 3:5], "amax")
    lo, hi = tap_window(lo[present], hi[present])
    lo = lo.clamp(min=0).long()
    hi = torch.minimum(hi, torch.tensor([float(w), float(h)], device=boxes.device)).long()
    windows = torch.cat([lo, hi], dim=1).tolist()  # [x0, y0, x1, y1] per frame with boxes: one host sync
    # one float frame for the call; outside a frame's window it holds zeros or an earlier frame's values, never read
    img = torch.zeros((3, h, w), dtype=torch.float32, device=frames.device)
    start = 0
    # One grid_sample per frame that has boxes: all its boxes stacked along the grid's height.
    for f, c, (xa, ya, xb, yb) in zip(present.tolist(), counts.tolist(), windows, strict=True):
        sel = order[start : start + c]
        start += c
        if xb > xa and yb > ya:  # (no window: every box is off the frame and reads only zero padding)
            img[:, ya:yb, xa:xb].copy_(frames[f, ya:yb, xa:xb].permute(2, 0, 1)).sub_(fill[:, None, None])
        g = grid[sel].reshape(1, c * size, size, 2)
        res = F.grid_sample(img[None], g, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[sel] = res[0].reshape(3, c, size, size).permute(1, 0, 2, 3)
    return out


def crop_resize(
    frames: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """Crop ``boxes`` from ``frames`` and resize each to ``size x size``: uint8 ``[N, size, size, 3]``.

    ``fill`` is the padding colour in 0..255 (default: the CLIP mean colour).
    Values are rounded to nearest and clamped to 0..255. See the module
    docstring for the exact sampling convention.
    """
    boxes = _check_inputs(frames, boxes, size, "crop_resize")
    fill_l = [255.0 * m for m in CLIP_MEAN] if fill is None else [float(v) for v in fill]
    if len(fill_l) != 3:
        raise CropInputError(f"crop_resize: fill needs 3 values (RGB), got {fill_l}")
    fill_t = torch.tensor(fill_l, dtype=torch.float32, device=frames.device)
    v = _sample_minus_fill(frames, boxes, size, fill_t) + fill_t[None, :, None, None]
    return v.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def crop_resize_normalize(
    frames: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Crop, bilinear-resize and normalise: float32 ``[N, 3, size, size]`` ready for the image encoder.

    Out-of-frame taps read the mean colour, so they normalise to 0.
    """
    boxes = _check_inputs(frames, boxes, size, "crop_resize_normalize")
    mean_l, std_l = _check_stats(mean, std, "crop_resize_normalize")
    fill_t = torch.tensor([255.0 * m for m in mean_l], dtype=torch.float32, device=frames.device)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std_l], dtype=torch.float32, device=frames.device)
    return _sample_minus_fill(frames, boxes, size, fill_t).mul_(scale[None, :, None, None])


def boxes_tensor(frame_boxes: Sequence[tuple[int, Sequence[float]]]) -> torch.Tensor:
    """Pack ``[(frame_index, (x0, y0, x1, y1)), ...]`` into the float32 ``[N, 5]`` box tensor."""
    rows = [[float(fi), *(float(v) for v in box)] for fi, box in frame_boxes]
    for k, r in enumerate(rows):
        if len(r) != 5:
            raise CropInputError(f"boxes_tensor: entry {k} must be (frame_index, (x0, y0, x1, y1)), got {r}")
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 5)
