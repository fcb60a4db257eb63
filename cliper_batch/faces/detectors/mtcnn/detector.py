"""The MTCNN cascade on batches of frames: :class:`FaceDetector` (P-Net over the pyramid, R-Net, O-Net).

Why it is written this way (batch size per device, one frame per thread on CPU, strict fp32 on
CUDA): :mod:`cliper_batch.faces.detectors.mtcnn`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from ... import vision_ops
from ..base import Detection, FaceInputError
from . import nms
from .nets import NETS, ONet, PNet, RNet, load_mtcnn_weights
from .pyramid import AreaPyramid

_PYRAMID_FACTOR = 0.709  # scale step between pyramid levels (the MTCNN paper's value)
_PNET_CELL = 12  # P-Net's receptive field / window, in pixels
_PNET_STRIDE = 2
_NMS_PER_SCALE = 0.5
_NMS_STAGE = 0.7
_MAX_PNET_CANDIDATES = 1000  # per frame, after P-Net NMS (bounds R-Net work on textured frames)
CUDA_BATCH = 16  # frames per cascade call on CUDA at most (a shorter call is padded to a power of two)



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


def _crops(images: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each box of frame ``ids[k]`` of ``images`` ``[B, 3, h, w]``, resampled to ``size`` x ``size`` in one call, normalised.

    Area outside the frame reads 0 (black), as in the original MTCNN's padding.
    """
    rois = torch.cat([ids.to(boxes.dtype).unsqueeze(1), boxes], dim=1)
    out = vision_ops.roi_align(images, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return _normalize(out)


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
        (:data:`cliper_batch.faces.detectors.mtcnn.weights.WEIGHTS_FILE`). Any file must have the pinned sha256
        :data:`cliper_batch.faces.detectors.mtcnn.weights.MTCNN_SHA256`.
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
        keep = nms.cap_per_frame(nms.nms_per_frame(boxes, scores, ids, _NMS_STAGE, frames), ids, _MAX_PNET_CANDIDATES)
        boxes, ids = _square(_regress(boxes[keep], reg[keep])), ids[keep]

        # ---- stage 2: R-Net on 24x24 crops of every candidate
        reg, prob = self.rnet(_crops(images, ids, boxes, 24))
        ok = torch.nonzero(prob[:, 1] > t2).squeeze(1)  # one sync; every tensor indexed with it
        if ok.numel() == 0:
            return empty
        boxes, scores, reg, ids = boxes[ok], prob[ok, 1], reg[ok], ids[ok]
        keep = nms.nms_per_frame(boxes, scores, ids, _NMS_STAGE, frames)
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
        sel = nms.nms_min(boxes, scores, ids, _NMS_STAGE)
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
        return nms.nms_groups(boxes, scores, level * frames + fi, _NMS_PER_SCALE, major=level)


__all__ = ["CUDA_BATCH", "FaceDetector", "padded_batch"]
