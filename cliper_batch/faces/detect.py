"""Batched MTCNN face detection in torch (CPU or GPU) on sampled video frames.

Why MTCNN, and why our own code: no model hub is reachable, so the weights
must ship inside the installable package. They do: ``weights/mtcnn.safetensors``
(2 MB, next to a NOTICE stating origin, licences and checksums) holds the three
MTCNN nets of ``facenet-pytorch`` 2.6.0 (MIT), converted once from its plain
``state_dict`` files by ``scripts/convert_mtcnn_weights.py``. safetensors
loads without executing any code, and the file's sha256 is pinned here, so a
truncated or altered file is refused instead of silently giving different
detections. This module re-implements the P/R/O-Net architectures (same
parameter names, same flatten order) and the detection cascade:

* P-Net runs over every pyramid level of a batch of frames;
* the R-Net (24x24) and O-Net (48x48) crops of *all* candidates of the batch
  are cut and resampled in one ``roi_align`` call each (torchvision's kernel, loaded without
  importing torchvision: :mod:`.vision_ops`)
  (adaptive sampling, i.e. an area-style average, zero padding outside the
  frame like the original MTCNN) instead of a Python loop per box;
* non-maximum suppression is torchvision's ``nms`` kernel (CPU), run per frame (and per pyramid
  level for P-Net): on CUDA the candidates come to the host in one transfer for it, so the
  decisions are the CPU ones bit for bit (:func:`_nms_groups` says why not a shifted batched NMS);
* host syncs per cascade call are a handful, not a few per pyramid level: one ``nonzero`` over
  every level's P-Net map, one index per stage for all its tensors, one transfer per NMS and
  one for the results;
* on CUDA the cascade runs with TF32 off (:func:`_strict_fp32`: why).

Where the CPU goes, and what was cut (one thread, 640x360 frames; ``python -m bench.detector``):
ATen's adaptive average pool (``F.interpolate(mode="area")``) for the 9 pyramid levels and its
max-pool (which also computes argmax indices) were ~45 % of the detector. The levels are now
built by :class:`AreaPyramid` (the same area bins as two sparse matrix products per level, equal
to ATen's within float rounding) and the nets' ceil-mode max pools by :class:`CeilMaxPool`
(strided maxima, the same values); what is left is mostly P-Net's convolutions and the R/O-Net
crops. Any change that moves a result bumps :data:`cliper_batch.types.FACE_DETECTOR_VERSION`,
which is in ``config_hash``.

**A frame's faces are a function of that frame alone.** They were not when
frames were batched by whatever chunk came in: CPU convolution and matrix
kernels are chosen, and split across threads, by the batch size and the
thread count, and round differently (measured: P/R/O-Net outputs move by
1e-7..1e-6 between batch sizes 1, 2, 3 and 16, and between 1 and 2 threads).
That moved boxes by ~1e-4 px, so the staged worker (1-thread decode actor)
and the fused one (several threads) wrote different face columns, and a
borderline P-Net candidate could flip and move a box by a pixel, or a
threshold decision downstream. So there is one cascade, written for a batch
of ``B`` frames, and the only device-dependent choice is ``B``
(:attr:`FaceDetector.batch`):

* **CPU: B = 1**, every frame on :attr:`FaceDetector.threads` intra-op threads
  (1 by default, whatever the worker set), so every call has the same shapes
  and kernels for the same frame. Batching saves no work on one thread
  (24 frames 640x360: 1.26 CPU s batched, 1.02 CPU s frame by frame), and
  frame-by-frame calls on 2 threads cost 5.8 CPU s (threads synchronise on
  many tiny ops). The cores are used instead by running frames in parallel:
  a pool of :attr:`FaceDetector.workers` Python threads, each running whole
  frames on one intra-op thread (torch releases the GIL inside its ops).
  The result is bit-identical for any pool size.
* **CUDA: B up to 16** (:data:`CUDA_BATCH`): frame-at-a-time is dozens of tiny
  kernels and host syncs per frame. A call of ``n`` frames is padded with black
  frames (results dropped) to the next power of two (:func:`padded_batch`: the
  sparse tracker's 1-4-frame calls no longer pay for 16), so the P-Net
  convolutions see one of five shapes whatever the chunking. R-Net
  and O-Net see all candidates of the batch, so their row count still depends
  on the neighbours; GPU GEMMs compute each row independently of the row
  count in practice, but this is not a guarantee - and the CUDA path has only
  been exercised on CPU: there B = 8 finds the faces of B = 1, within 0.0013 px on the
  benchmark video and bit-identical on the test frames, and padding frames never leak.

Frames are first shrunk (area averaging) so their long side is at most
``max_side`` pixels; boxes and landmarks are mapped back to the original
frame. ``min_face_size`` is measured in that *detection* image (P-Net cannot
see faces below 12 px there), so a 1920x1080 frame with ``max_side=640`` and
``min_face_size=20`` finds faces of roughly 60 original pixels and up.

Box convention (shared with :mod:`cliper_batch.crops`): continuous pixel
coordinates ``(x0, y0, x1, y1)``; pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``,
so ``(0, 0, W, H)`` is the whole frame. Returned boxes are clipped to the frame.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import mtcnn_weights as _pinned
from . import vision_ops
from ..mtcnn_weights import DetectorUnavailable

Box = tuple[float, float, float, float]
Point = tuple[float, float]

# The packaged weights (``pnet.*``, ``rnet.*``, ``onet.*``) and their pinned sha256 live in a
# torch-free module, so the annotate driver can check them without importing torch.
WEIGHTS_FILE = _pinned.WEIGHTS_FILE
MTCNN_SHA256 = _pinned.MTCNN_SHA256
NETS = ("pnet", "rnet", "onet")

_PYRAMID_FACTOR = 0.709  # scale step between pyramid levels (the MTCNN paper's value)
_PNET_CELL = 12  # P-Net's receptive field / window, in pixels
_PNET_STRIDE = 2
_NMS_PER_SCALE = 0.5
_NMS_STAGE = 0.7
_MAX_PNET_CANDIDATES = 1000  # per frame, after P-Net NMS (bounds R-Net work on textured frames)
CUDA_BATCH = 16  # frames per cascade call on CUDA at most (a shorter call is padded to a power of two)


class FaceInputError(ValueError):
    """Frames or parameters given to the face detector are malformed."""


@dataclass(frozen=True)
class Detection:
    """One face found in one frame.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the original frame (continuous
    coordinates, clipped to the frame); ``score`` is O-Net's face probability;
    ``landmarks`` are five ``(x, y)`` points in the original frame, in the
    order left eye, right eye, nose tip, left mouth corner, right mouth corner
    ("left"/"right" as seen in the image).
    """

    frame_index: int
    box: Box
    score: float
    landmarks: tuple[Point, Point, Point, Point, Point] | None = None

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


# --------------------------------------------------------------------------- networks
# Parameter names and the (N, W, H, C) flatten order before the dense layers
# match the facenet-pytorch state dicts (which were converted from the original
# Caffe/TensorFlow MTCNN), so the weight files load with strict=True.


class CeilMaxPool(nn.Module):
    """``nn.MaxPool2d(kernel, stride, ceil_mode=True)`` (``kernel >= stride``, no padding) as ``kernel`` strided maxima per axis.

    Same values (a maximum is exact, in any order) for 4-8x less CPU on these
    small maps: ATen's CPU max-pool also computes the argmax indices and loops
    per window (measured, one thread: P-Net's 10x215x383 2x2 map 4.5 ms vs
    0.6 ms; R-Net's 300x28x22x22 3x3 map 36 ms vs 10 ms). A ceil-mode window
    hanging over the bottom/right edge sees ``-inf`` padding there, as in ATen.
    """

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        if kernel < stride:
            raise ValueError(f"CeilMaxPool needs kernel >= stride, got {kernel} < {stride}")
        self.kernel, self.stride = kernel, stride

    def _axis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        k, s, n = self.kernel, self.stride, x.shape[dim]
        out = -(-(n - k) // s) + 1 if n >= k else 1  # ceil((n - k) / s) + 1 windows, each starting inside
        need = (out - 1) * s + k
        if need > n:  # the last window hangs over the edge: -inf there never wins
            pad = [0] * (2 * x.ndim)
            pad[2 * (x.ndim - 1 - dim) + 1] = need - n
            x = F.pad(x, pad, value=float("-inf"))
        every = tuple(slice(None, None, s) if d == dim else slice(None) for d in range(x.ndim))
        span = (out - 1) * s + 1
        y = x.narrow(dim, 0, span)[every]
        for i in range(1, k):
            y = torch.maximum(y, x.narrow(dim, i, span)[every])
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._axis(self._axis(x, 2), 3)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 windows at stride 2 -> (box regression, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = CeilMaxPool(2, 2)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refine net: 24x24 crops -> (box regression, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = CeilMaxPool(3, 2)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = CeilMaxPool(3, 2)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net: 48x48 crops -> (box regression, 5 landmarks as 10 numbers, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = CeilMaxPool(3, 2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = CeilMaxPool(3, 2)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = CeilMaxPool(2, 2)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


# --------------------------------------------------------------------------- weights


def load_mtcnn_weights(weights_path: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The three state dicts, read from the packaged safetensors file (or ``weights_path``) and sha256-checked.

    Raises :class:`DetectorUnavailable`, saying what to do, when the file is
    missing, unreadable, not the pinned one (truncated, altered) or not loadable.
    """
    from safetensors.torch import load

    path = weights_path if weights_path is not None else WEIGHTS_FILE
    fix = _pinned.FIX
    raw = _pinned.read_pinned_weights(path)
    try:
        flat = load(raw)
    except Exception as exc:  # noqa: BLE001 - only reachable if the pinned file itself were malformed
        raise DetectorUnavailable(f"MTCNN weights {path} do not load as safetensors: {exc}; {fix}") from exc
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in NETS}
    for key, value in flat.items():
        net, _, param = key.partition(".")
        if net not in out:
            raise DetectorUnavailable(f"MTCNN weights {path} hold an unexpected tensor {key!r}; {fix}")
        out[net][param] = value
    return out


# --------------------------------------------------------------------------- helpers


def _check_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate ``[F, H, W, 3]`` uint8 RGB frames; return them as a (CPU or device) uint8 tensor, no copy if possible."""
    if isinstance(frames, np.ndarray):
        arr = np.ascontiguousarray(frames)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    elif isinstance(frames, torch.Tensor):
        t = frames
    else:
        raise FaceInputError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if t.dtype != torch.uint8:
        raise FaceInputError(f"frames must be uint8 RGB, got dtype {t.dtype}")
    if t.ndim == 3:
        raise FaceInputError(f"frames must be a batch [F, H, W, 3]; got one frame of shape {tuple(t.shape)} (add a leading axis)")
    if t.ndim != 4 or t.shape[-1] != 3:
        raise FaceInputError(f"frames must have shape [F, H, W, 3], got {tuple(t.shape)}")
    if t.shape[1] < 1 or t.shape[2] < 1:
        raise FaceInputError(f"frames must be non-empty images, got shape {tuple(t.shape)}")
    return t


def _to_device_float(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` on ``device`` (uint8 travels, the cast happens there)."""
    return frames.to(device, non_blocking=True).permute(0, 3, 1, 2).float()


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (side = the longer side)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx = boxes[:, 0] + w * 0.5
    cy = boxes[:, 1] + h * 0.5
    return torch.stack([cx - side * 0.5, cy - side * 0.5, cx + side * 0.5, cy + side * 0.5], dim=1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply MTCNN box regression: offsets are fractions of the box width/height."""
    w = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
    scale = torch.cat([w, h, w, h], dim=1)
    return boxes + reg * scale


def area_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Sparse ``[n_out, n_in]`` matrix whose product with a column of ``n_in`` values gives their area means over ``n_out`` bins.

    The bins of ``F.interpolate(mode="area")`` (= ``adaptive_avg_pool``): output ``i`` averages
    inputs ``floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out) - 1``; a row holds ``1/length`` there.
    """
    i = torch.arange(n_out)
    start = (i * n_in) // n_out
    length = ((i + 1) * n_in + n_out - 1) // n_out - start
    rows = torch.repeat_interleave(i, length)
    first = torch.repeat_interleave(torch.cumsum(length, 0) - length, length)
    cols = torch.repeat_interleave(start, length) + torch.arange(rows.numel()) - first
    values = torch.repeat_interleave(1.0 / length.to(torch.float32), length)
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_out, n_in), check_invariants=True)
    return coo.coalesce().to(device)


class AreaPyramid:
    """Area-resized levels of a batch of float frames, each level straight from the frames.

    A level equals ``F.interpolate(frames, size, mode="area")`` up to float rounding (<= 1e-4 in
    0..255 pixel units), computed separably as two sparse matrix products with the frames in
    ``[H, B*W*3]`` (pixel-interleaved) layout: rows first, then columns, each output reading only
    its 1-3 (larger levels) to ~30 (smallest) inputs per axis. ATen's adaptive average pool spends
    most of its time on per-output-pixel index arithmetic; it was the detector's largest single
    cost (9 levels of a 640x360 frame, one thread: ~16 ms on the detector's channels-last frames,
    ~9 ms on contiguous ones, vs ~4 ms here). The sparse matrices depend only on the sizes and are
    kept by the caller (``mats``), so a video's frames build them once.
    """

    def __init__(self, images: torch.Tensor, mats: dict[tuple[int, int], torch.Tensor]) -> None:
        b, c, self.height, self.width = images.shape
        self.shape = (b, c)
        self._mats = mats
        # [B, C, H, W] -> [H, B*W*C]: a view when B = 1 and the frames are pixel-interleaved, as decoded
        self._rows = images.permute(2, 0, 3, 1).reshape(self.height, b * self.width * c)

    def _mat(self, n_in: int, n_out: int) -> torch.Tensor:
        key = (n_in, n_out)
        if key not in self._mats:
            self._mats[key] = area_matrix(n_in, n_out, self._rows.device)
        return self._mats[key]

    def level(self, height: int, width: int) -> torch.Tensor:
        """The frames area-resized to ``height`` x ``width``: float ``[B, C, height, width]``, contiguous."""
        (b, c), w = self.shape, self.width
        rows = torch.sparse.mm(self._mat(self.height, height), self._rows)  # [height, B*W*C]
        cols = rows.view(height, b, w, c).permute(2, 0, 1, 3).reshape(w, height * b * c)
        out = torch.sparse.mm(self._mat(w, width), cols)  # [width, height*B*C]
        return out.view(width, height, b, c).permute(2, 3, 1, 0).contiguous()


def _crops(images: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each box of frame ``ids[k]`` of ``images`` ``[B, 3, h, w]``, resampled to ``size`` x ``size`` in one call, normalised.

    Area outside the frame reads 0 (black), as in the original MTCNN's padding.
    """
    rois = torch.cat([ids.to(boxes.dtype).unsqueeze(1), boxes], dim=1)
    out = vision_ops.roi_align(images, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return _normalize(out)


def _nms_per_frame(
    boxes: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, threshold: float, frames: int
) -> torch.Tensor:
    """IoU NMS within each frame (``ids``: frame of each box); indices of the kept boxes, best score first."""
    if frames == 1 and boxes.device.type == "cpu":  # the CPU layout: one frame, one call, nothing to group
        if boxes.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=boxes.device)
        return vision_ops.nms(boxes, scores, threshold)
    return _nms_groups(boxes, scores, ids, threshold)


def _nms_groups(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float, major: torch.Tensor | None = None
) -> torch.Tensor:
    """torchvision's float32 NMS within each group (``groups``: any integer id per box); indices of the kept boxes.

    Order: best score first (stable), within each ``major`` value in ascending order if given.
    Each group's boxes go through the CPU NMS kernel on their own, in their original order, so a
    group keeps exactly what it keeps when it is alone: the same decisions on every device and
    for every batch size. (torchvision's ``batched_nms`` shifts the groups apart instead, which
    rounds the coordinates: P-Net's grid boxes have IoU of exactly 0.5 in exact arithmetic, so
    rounding flips decisions at the 0.5 threshold; measured: a final box moved by 2 px in float64,
    3.6 px in float32.) On CUDA the candidates (a few thousand boxes at most) come to the host
    in one transfer and the kept indices go back: one sync for the whole call instead of one NMS
    launch and sync per group.
    """
    dev = boxes.device
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    cols = [boxes.double(), scores.double().unsqueeze(1), groups.double().unsqueeze(1)]
    if major is not None:
        cols.append(major.double().unsqueeze(1))
    host = torch.cat(cols, dim=1).cpu() if dev.type != "cpu" else torch.cat(cols, dim=1)
    b, sc, g = host[:, :4].float(), host[:, 4].float(), host[:, 5].long()  # float32 values, exactly as they were
    order = torch.argsort(g, stable=True)
    kept, start = [], 0
    for count in torch.bincount(g).tolist():
        if count:
            rows = order[start : start + count]
            kept.append(rows[vision_ops.nms(b[rows], sc[rows], threshold)])
        start += count
    keep = kept[0] if len(kept) == 1 else torch.cat(kept)
    keep = keep[torch.argsort(sc[keep], descending=True, stable=True)]  # stable: a group's own order stays
    if major is not None:
        keep = keep[torch.argsort(host[keep, 6], stable=True)]
    return keep.to(dev, non_blocking=True)


def _cap_per_frame(keep: torch.Tensor, ids: torch.Tensor, cap: int) -> torch.Tensor:
    """The first ``cap`` entries of ``keep`` (score-sorted indices) of each frame, in ``keep``'s order."""
    if keep.numel() <= cap:
        return keep
    kid = ids[keep]
    order = torch.argsort(kid, stable=True)  # grouped by frame, score order kept within a frame
    sorted_ids = kid[order]
    first = torch.searchsorted(sorted_ids, sorted_ids, right=False)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=keep.device) - first
    return keep[rank < cap]


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS within each frame where overlap = intersection / smaller area (drops boxes nested inside a better one).

    Indices of the kept boxes: frame by frame (ascending), best score first within a frame.
    The overlap matrix is computed on the boxes' device in float64 (the values the former
    pure-Python loop computed from ``tolist()``, bit for bit); only the boolean matrix comes
    to the host for the greedy pass (one sync, as torchvision's own NMS does).
    """
    n = boxes.shape[0]
    dev = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=dev)
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(ids[by_score], stable=True)]  # frames ascending, best score first in each
    b = boxes[order].double()
    x0, y0, x1, y1 = b.unbind(1)
    w, h = x1 - x0, y1 - y0
    mine = w.clamp(min=0.0) * h.clamp(min=0.0)  # the candidate's area (clamped: it may be degenerate)
    theirs = w * h  # a kept box's area
    iw = torch.minimum(x1[:, None], x1[None, :]) - torch.maximum(x0[:, None], x0[None, :])
    ih = torch.minimum(y1[:, None], y1[None, :]) - torch.maximum(y0[:, None], y0[None, :])
    smaller = torch.minimum(mine[:, None], theirs[None, :]).clamp(min=1e-9)
    frame = ids[order]
    over = (iw > 0) & (ih > 0) & (iw * ih / smaller > threshold) & (frame[:, None] == frame[None, :])
    over = over.cpu().numpy()  # [candidate, earlier box]: would the earlier box suppress the candidate
    keep: list[int] = []
    for i in range(n):
        if not keep or not over[i, keep].any():
            keep.append(i)
    return order[torch.tensor(keep, dtype=torch.long, device=dev)]


@contextmanager
def _strict_fp32(device: torch.device) -> Iterator[None]:
    """On CUDA, run the block with TF32 off for cuDNN convolutions and matmuls, then restore the caller's setting.

    Why: cuDNN convolutions default to TF32 on Ampere and later (10-bit mantissa inputs), which
    moves P/R/O-Net scores by ~1e-3 and boxes by tenths of a pixel: enough to flip a candidate
    at the 0.6 / 0.7 / 0.9 thresholds, so a GPU worker would find other faces and tracks than
    a CPU worker under the same ``config_hash``. The detector is tiny (a few MFLOPs per frame
    beside the encoder's GFLOPs), so strict fp32 costs next to nothing; this keeps the device
    class out of the hash. The flags are process-wide, so they are set around the cascade
    only (the encoder's own precision is its own business). No-op on the CPU.
    """
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = False, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def padded_batch(n: int, batch: int) -> int:
    """Frames of a cascade call for ``n`` real frames when calls hold at most ``batch``: the next power of two, capped.

    A 1-4-frame call (the sparse tracker's re-checks) pads to 1, 2 or 4 frames instead of a full
    ``batch`` of black frames, and the P-Net shapes stay among a handful (1, 2, 4, ... ``batch``).
    """
    return min(int(batch), 1 << max(0, int(n) - 1).bit_length())


# --------------------------------------------------------------------------- detector


class FaceDetector:
    """MTCNN face detector holding its three nets on one device; takes frame batches of any size.

    Parameters
    ----------
    device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
    min_face_size: smallest face side (pixels of the downscaled detection image) searched for; >= 12.
    thresholds: face-probability cut-offs of P-Net, R-Net and O-Net. The defaults are the usual
        MTCNN ones except O-Net's 0.9 (instead of 0.7), which removed the false positives we
        measured on face-free photos without losing any real face (see ``docs/faces.md``).
    max_side: frames are shrunk so their long side is at most this (never enlarged).
    threads: torch intra-op threads while detecting (the caller's setting is restored after each
        call). Fixed, so that a frame's faces never depend on the worker's thread setting; see the
        module docstring for why 1 is the default.
    workers: Python threads running cascade calls in parallel (each call on ``threads`` intra-op
        threads). Set it to the cores the worker may use; the result is the same for any value.
    batch: frames per cascade call at most (a shorter call is padded with black frames to a power of two). Default:
        1 on CPU (bit-identical per frame), :data:`CUDA_BATCH` on CUDA (see the module docstring).
    weights_path: the MTCNN safetensors file; default: the one packaged with the engine
        (:data:`WEIGHTS_FILE`). Any file must have the pinned sha256 :data:`MTCNN_SHA256`.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9),
        max_side: int = 640,
        threads: int = 1,
        workers: int = 1,
        batch: int | None = None,
        weights_path: str | None = None,
    ) -> None:
        if not isinstance(min_face_size, (int, np.integer)) or min_face_size < _PNET_CELL:
            raise FaceInputError(f"min_face_size must be an int >= {_PNET_CELL}, got {min_face_size!r}")
        if len(thresholds) != 3 or not all(0.0 <= float(t) < 1.0 for t in thresholds):
            raise FaceInputError(f"thresholds must be three probabilities in [0, 1), got {thresholds!r}")
        if not isinstance(max_side, (int, np.integer)) or max_side < _PNET_CELL:
            raise FaceInputError(f"max_side must be an int >= {_PNET_CELL}, got {max_side!r}")
        for name, value in (("threads", threads), ("workers", workers), ("batch", 1 if batch is None else batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FaceInputError(f"{name} must be an int >= 1, got {value!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise FaceInputError(f"device {self.device} requested but CUDA is not available here")
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.max_side = int(max_side)
        self.threads = int(threads)
        self.workers = int(workers)
        self.batch = int(batch) if batch is not None else (CUDA_BATCH if self.device.type == "cuda" else 1)
        self._area_mats: dict[tuple[int, int], torch.Tensor] = {}  # pyramid resize matrices by (size in, size out)
        weights = load_mtcnn_weights(weights_path)
        vision_ops.load_kernels()  # here, not in the first call's frame pool
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for net, name in ((self.pnet, "pnet"), (self.rnet, "rnet"), (self.onet, "onet")):
            net.load_state_dict(weights[name], strict=True)
            net.to(self.device).eval().requires_grad_(False)

    # ----------------------------------------------------------------- public

    def detect(
        self, frames: np.ndarray | torch.Tensor, frame_indices: Sequence[int] | None = None
    ) -> list[list[Detection]]:
        """Faces in each frame of ``frames`` (``[F, H, W, 3]`` uint8 RGB), best score first; one list per frame, in order.

        ``frame_indices`` (length F) sets :attr:`Detection.frame_index`; by
        default it is the position in ``frames``.
        """
        x = _check_frames(frames)
        n = x.shape[0]
        if frame_indices is None:
            idx = list(range(n))
        else:
            idx = [int(i) for i in frame_indices]
            if len(idx) != n:
                raise FaceInputError(f"frame_indices has {len(idx)} entries for {n} frames")
        starts = range(0, n, self.batch)

        def call(start: int) -> list[list[Detection]]:
            chunk = x[start : start + self.batch].contiguous()  # same strides for any input
            size = padded_batch(chunk.shape[0], self.batch)
            if chunk.shape[0] < size:  # black padding frames: calls come in a few fixed shapes
                chunk = torch.cat([chunk, chunk.new_zeros((size - chunk.shape[0], *chunk.shape[1:]))])
            return self._detect_batch(chunk, idx[start : start + self.batch])

        # The thread count is process-wide: set once here, around the pool. Pool threads are new in
        # every call, so each one takes the count set here when it first runs an op.
        with _torch_threads(self.threads):
            if self.workers == 1 or len(starts) == 1:
                parts = [call(s) for s in starts]
            else:
                with ThreadPoolExecutor(max_workers=min(self.workers, len(starts)), thread_name_prefix="mtcnn") as pool:
                    parts = list(pool.map(call, starts))  # in frame order
        return [dets for part in parts for dets in part]

    # ----------------------------------------------------------------- cascade

    def _detect_batch(self, chunk: torch.Tensor, idx: list[int]) -> list[list[Detection]]:
        """Detections of the first ``len(idx)`` frames of ``chunk`` (uint8 ``[B, H, W, 3]``), in one cascade call.

        Frames past ``len(idx)`` are padding: they go through the cascade (so the
        shapes are fixed) and anything found in them is dropped.
        """
        n, (h, w) = len(idx), (chunk.shape[1], chunk.shape[2])
        s = min(1.0, self.max_side / max(h, w))
        dh, dw = (max(1, round(h * s)), max(1, round(w * s))) if s < 1.0 else (h, w)
        sx, sy = w / dw, h / dh  # detection -> original pixels
        scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
        with torch.inference_mode(), _strict_fp32(self.device):  # inference_mode is thread-local: entered here
            images = _to_device_float(chunk, self.device)
            if (dh, dw) != (h, w):
                images = AreaPyramid(images, self._area_mats).level(dh, dw)
            boxes, scores, points, ids = self._cascade(images)
            k = boxes.shape[0]
            # one transfer for everything (float64 holds float32 values and frame ids exactly)
            host = torch.cat([boxes.double(), points.double().reshape(k, 10), scores.double().unsqueeze(1),
                              ids.double().unsqueeze(1)], dim=1).cpu()
            boxes = host[:, :4] * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, float(w))
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, float(h))
            points = host[:, 4:14].reshape(k, 5, 2) * scale[:2]
        out: list[list[Detection]] = [[] for _ in range(n)]
        for bx, sc, pt, f in zip(boxes.tolist(), host[:, 14].tolist(), points.tolist(), host[:, 15].tolist()):
            f = int(f)
            if f >= n or bx[2] - bx[0] <= 0 or bx[3] - bx[1] <= 0:  # f >= n: a padding frame
                continue
            lm = tuple((float(px), float(py)) for px, py in pt)
            out[f].append(Detection(idx[f], (bx[0], bx[1], bx[2], bx[3]), float(sc), lm))  # type: ignore[arg-type]
        for dets in out:
            dets.sort(key=lambda d: -d.score)
        return out

    def _scales(self, h: int, w: int) -> list[float]:
        m = _PNET_CELL / self.min_face_size
        side = min(h, w) * m
        scales = []
        scale = m
        while side >= _PNET_CELL:
            scales.append(scale)
            scale *= _PYRAMID_FACTOR
            side *= _PYRAMID_FACTOR
        return scales

    def _cascade(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run P/R/O-Net on float frames ``[B, 3, h, w]``; returns boxes [K, 4], scores [K], landmarks [K, 5, 2], frame ids [K]."""
        dev = images.device
        frames, h, w = images.shape[0], images.shape[2], images.shape[3]
        t1, t2, t3 = self.thresholds
        empty = (
            torch.zeros(0, 4, device=dev),
            torch.zeros(0, device=dev),
            torch.zeros(0, 5, 2, device=dev),
            torch.zeros(0, dtype=torch.long, device=dev),
        )

        # ---- stage 1: P-Net over the image pyramid, all frames at once; candidates of every level in one nonzero
        pyramid = AreaPyramid(images, self._area_mats)
        scales = self._scales(h, w)
        probs, regs, cells, level_widths = [], [], [], []
        for scale in scales:
            reg, prob = self.pnet(_normalize(pyramid.level(int(h * scale + 1), int(w * scale + 1))))
            probs.append(prob[:, 1].reshape(-1))  # [B*hl*wl], (frame, y, x) order
            regs.append(reg.permute(0, 2, 3, 1).reshape(-1, 4))
            cells.append(prob.shape[2] * prob.shape[3])
            level_widths.append(prob.shape[3])
        if not probs:
            return empty
        score_all = torch.cat(probs)
        flat = torch.nonzero(score_all >= t1).squeeze(1)  # the stage's one host sync (the count)
        if flat.numel() == 0:
            return empty
        sizes = torch.tensor([frames * c for c in cells], device=dev)
        starts = torch.cumsum(sizes, 0) - sizes
        level = torch.searchsorted(starts, flat, right=True) - 1
        local = flat - starts[level]
        cell = torch.tensor(cells, device=dev)[level]
        widths = torch.tensor(level_widths, device=dev)[level]
        fi = local // cell
        rem = local - fi * cell
        yi = rem // widths
        xi = rem - yi * widths
        score = score_all[flat]
        r = torch.cat(regs)[flat]
        # float32 as before: (x * stride) / float32(scale), + float32(cell / scale)
        scale_t = torch.tensor(scales, dtype=torch.float32, device=dev)[level]
        cell_t = torch.tensor([_PNET_CELL / sc for sc in scales], dtype=torch.float32, device=dev)[level]
        x0 = xi.float() * _PNET_STRIDE / scale_t
        y0 = yi.float() * _PNET_STRIDE / scale_t
        bx = torch.stack([x0, y0, x0 + cell_t, y0 + cell_t], dim=1)
        keep = self._nms_levels(bx, score, fi, level, len(scales), frames)
        boxes, scores, reg, ids = bx[keep], score[keep], r[keep], fi[keep]
        keep = _cap_per_frame(_nms_per_frame(boxes, scores, ids, _NMS_STAGE, frames), ids, _MAX_PNET_CANDIDATES)
        boxes, ids = _square(_regress(boxes[keep], reg[keep])), ids[keep]

        # ---- stage 2: R-Net on 24x24 crops of every candidate
        reg, prob = self.rnet(_crops(images, ids, boxes, 24))
        ok = torch.nonzero(prob[:, 1] > t2).squeeze(1)  # one sync; every tensor indexed with it
        if ok.numel() == 0:
            return empty
        boxes, scores, reg, ids = boxes[ok], prob[ok, 1], reg[ok], ids[ok]
        keep = _nms_per_frame(boxes, scores, ids, _NMS_STAGE, frames)
        boxes, ids = _square(_regress(boxes[keep], reg[keep])), ids[keep]

        # ---- stage 3: O-Net on 48x48 crops -> final boxes + landmarks
        reg, lm, prob = self.onet(_crops(images, ids, boxes, 48))
        ok = torch.nonzero(prob[:, 1] > t3).squeeze(1)
        if ok.numel() == 0:
            return empty
        boxes, scores, reg, lm, ids = boxes[ok], prob[ok, 1], reg[ok], lm[ok], ids[ok]
        bw = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
        bh = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
        points = torch.stack([boxes[:, :1] + bw * lm[:, :5], boxes[:, 1:2] + bh * lm[:, 5:]], dim=2)
        boxes = _regress(boxes, reg)
        sel = _nms_min(boxes, scores, ids, _NMS_STAGE)
        return boxes[sel], scores[sel], points[sel], ids[sel]

    @staticmethod
    def _nms_levels(
        boxes: torch.Tensor, scores: torch.Tensor, fi: torch.Tensor, level: torch.Tensor, levels: int, frames: int
    ) -> torch.Tensor:
        """P-Net's NMS within each (pyramid level, frame); indices of the kept candidates, level by level.

        CPU layout (one frame per call): each level's candidates (contiguous, levels in order)
        through torchvision's NMS on their own, exactly as the former per-level loop, with one
        ``bincount`` for the counts. Otherwise :func:`_nms_groups` with every (level, frame) a group.
        """
        if frames == 1 and boxes.device.type == "cpu":
            kept, start = [], 0
            for count in torch.bincount(level, minlength=levels).tolist():
                if count:
                    kept.append(start + vision_ops.nms(boxes[start : start + count], scores[start : start + count],
                                                       _NMS_PER_SCALE))
                start += count
            return torch.cat(kept)
        return _nms_groups(boxes, scores, level * frames + fi, _NMS_PER_SCALE, major=level)


__all__ = [
    "AreaPyramid",
    "CUDA_BATCH",
    "CeilMaxPool",
    "Detection",
    "DetectorUnavailable",
    "FaceDetector",
    "FaceInputError",
    "MTCNN_SHA256",
    "WEIGHTS_FILE",
    "area_matrix",
    "load_mtcnn_weights",
]
