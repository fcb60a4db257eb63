"""DALI crop primitives: the model's input crops made by DALI operators (GPU or CPU), not by torch or Triton.

It sits with :mod:`cliper_batch.crops.reference` in the data flow (after decoding: it
uses the decoder's frame index for its decode-and-crop pipeline).

Two primitives, both producing what :func:`cliper_batch.crops.reference.crop_resize_normalize`
produces - float32 ``[N, 3, S, S]``, bilinear with the pixel-centre convention,
no anti-aliasing, ``(v / 255 - mean) / std`` - so they can stand in for it:

- :class:`DaliBoxCropper` (face tracks): frames already decoded, one DALI sample
  per box, fed with ``external_source``. Per sample: ``fn.slice`` of an integer
  window around the box (1 px beyond every bilinear tap, padded with the mean
  colour where it leaves the frame) -> ``fn.resize`` with the box as region of
  interest (``roi_start``/``roi_end`` in window pixels, ``INTERP_LINEAR``,
  ``antialias=False``, float output) -> ``fn.crop_mirror_normalize`` to CHW.
- :class:`DaliCenterCropDecoder` (``--faces none``): decode -> centre square ->
  resize -> normalise in *one* pipeline: ``fn.decoders.video`` then ``fn.resize``
  with the centre square as region of interest and ``fn.crop_mirror_normalize``
  (layout ``FCHW``). Frame indices come from :class:`DaliDecoder` (same
  timeline, same chunking), so sampling is identical to the decode-only path.

Agreement with the torch reference, measured on CPU (``tests/crops/test_dali_crops.py``):
boxes inside the frame agree to float rounding (< 1e-4); where a box leaves the
frame the pad colour differs by up to half a grey level, because ``fn.slice``
pads in the frame's uint8 type and the mean colour (e.g. 122.77) is rounded to
the nearest integer: at most ``0.5 / (255 * min(std)) = 0.0073`` in normalised
units, against 0.0 in the reference.

Device placement: on ``'gpu'`` the input frames (torch CUDA tensors) go in
through ``external_source(device='gpu')`` and the crops come back as CUDA
tensors, copied on torch's stream with the same ordering rules as the decoder
(:func:`cliper_batch.decode.dali_backend._gpu_output_to_torch`). ``nvidia.dali``
is imported lazily: this module imports without it.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .reference import CLIP_MEAN, CLIP_STD, _check_inputs, _check_stats, center_square_box, tap_window
from ..decode.base import DecodeError, DecoderUnavailable, validate_request
from ..decode.dali_backend import CopyFence, DaliDecoder, _gpu_output_to_torch, dali_available
from ..types import VideoInfo

__all__ = ["CropSpec", "DaliBoxCropper", "DaliCenterCropDecoder", "box_windows", "PAD_TOLERANCE"]

# Largest difference from the torch reference, normalised units (see the module docstring).
PAD_TOLERANCE = 0.5 / (255.0 * min(CLIP_STD)) + 1e-4


@dataclass(frozen=True)
class CropSpec:
    """Output side and normalisation of the crops (what the model expects)."""

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def box_windows(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer slice windows holding every bilinear tap of each box, and the box inside its window.

    ``boxes``: float ``[N, 5]`` ``(frame, x0, y0, x1, y1)``. Returns int32
    ``anchor`` and ``shape`` as ``(y, x)`` / ``(h, w)`` (``fn.slice`` with
    ``axes=(0, 1)`` on HWC) and float32 ``roi_start``/``roi_end`` as ``(y, x)``
    relative to the window (``fn.resize``'s order). Samples lie in
    ``[x0 - 0.5, x1 - 0.5)``, taps at ``floor`` and ``floor + 1``, so the window
    ``[floor(x0) - 1, ceil(x1) + 1)`` (:func:`~cliper_batch.crops.reference.tap_window`)
    holds them all and DALI never clamps.
    """
    b = np.asarray(boxes, dtype=np.float64)
    x0, y0, x1, y1 = b[:, 1], b[:, 2], b[:, 3], b[:, 4]
    (wx, x_end), (wy, y_end) = tap_window(x0, x1), tap_window(y0, y1)
    ww, wh = x_end - wx, y_end - wy
    anchor = np.stack([wy, wx], 1).astype(np.int32)
    shape = np.stack([wh, ww], 1).astype(np.int32)
    roi_start = np.stack([y0 - wy, x0 - wx], 1).astype(np.float32)
    roi_end = np.stack([y1 - wy, x1 - wx], 1).astype(np.float32)
    return anchor, shape, roi_start, roi_end


def _normalise(fn, types, images, spec: CropSpec, layout: str):
    return fn.crop_mirror_normalize(
        images, mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std], output_layout=layout,
        dtype=types.FLOAT,
    )


def _resize_roi(fn, types, images, size: int, roi_start, roi_end):
    return fn.resize(
        images, size=[size, size], roi_start=roi_start, roi_end=roi_end, roi_relative=False,
        interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.FLOAT,
    )


class _DaliRunner:
    """What both primitives share: device checks, one pipeline per key, a lock, and the output copy."""

    def __init__(self, device: str, device_id: int | None, num_threads: int):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if not dali_available():
            raise DecoderUnavailable("DALI crops requested but nvidia.dali is not installed")
        self.device = device
        self.device_id = (0 if device_id is None else int(device_id)) if device == "gpu" else None
        self.num_threads = int(num_threads)
        self._pipelines: dict = {}
        self._lock = threading.Lock()
        self._copy = CopyFence()

    def _pipeline(self, key, build):
        pipe = self._pipelines.get(key)
        if pipe is None:
            pipe = self._pipelines[key] = build()
        return pipe

    def _to_torch(self, out) -> torch.Tensor:
        """A DALI output TensorList (dense) as one torch tensor on this runner's device."""
        if self.device == "gpu":
            arr, done = _gpu_output_to_torch(out.as_tensor(), self.device_id)
            self._copy.set(done)
            return arr
        return torch.from_numpy(np.array(out.as_tensor(), copy=True))


class DaliBoxCropper(_DaliRunner):
    """:func:`~cliper_batch.crops.reference.crop_resize_normalize` with DALI operators: one sample per box (face tracks).

    Args:
        device: 'gpu' (frames are CUDA tensors, crops come back on the GPU) or 'cpu'.
        max_batch: boxes per pipeline run (larger requests are run in chunks).
    """

    def __init__(self, device: str = "gpu", device_id: int | None = None, num_threads: int = 2, max_batch: int = 256):
        super().__init__(device, device_id, num_threads)
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = int(max_batch)
        self.name = f"dali-{device}"

    def _build(self, spec: CropSpec):
        from nvidia.dali import Pipeline, fn, types

        pipe = Pipeline(batch_size=self.max_batch, num_threads=self.num_threads, device_id=self.device_id,
                        prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        where = "gpu" if self.device == "gpu" else "cpu"
        with pipe:
            img = fn.external_source(name="frames", device=where, dtype=types.UINT8, ndim=3, layout="HWC")
            anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
            roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
            roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
            # Pad colour: the mean, rounded to the frame's uint8 (the only approximation; see module docstring).
            window = fn.slice(img, anchor, shape, axes=(0, 1), out_of_bounds_policy="pad",
                              fill_values=[float(round(255.0 * m)) for m in spec.mean])
            crops = _normalise(fn, types, _resize_roi(fn, types, window, spec.size, roi_start, roi_end), spec, "CHW")
            pipe.set_outputs(crops)
        pipe.build()
        return pipe

    def __call__(
        self,
        frames: torch.Tensor,
        boxes: torch.Tensor,
        size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> torch.Tensor:
        """Crops of ``boxes`` from ``frames`` ``[F, H, W, 3]`` uint8: float32 ``[N, 3, size, size]``."""
        boxes = _check_inputs(frames, boxes, size, "DaliBoxCropper")
        mean_l, std_l = _check_stats(mean, std, "DaliBoxCropper")
        spec = CropSpec(int(size), tuple(mean_l), tuple(std_l))
        dev = frames.device
        n = boxes.shape[0]
        if n == 0:
            return torch.empty((0, 3, size, size), dtype=torch.float32, device=dev)
        if (self.device == "gpu") != (dev.type == "cuda"):
            raise ValueError(f"DaliBoxCropper on {self.device} got frames on {dev}")
        host_boxes = boxes.detach().cpu().numpy()
        anchor, shape, roi_start, roi_end = box_windows(host_boxes)
        frame_of = host_boxes[:, 0].astype(np.int64)
        frames = frames.contiguous()
        parts = []
        with self._lock:
            pipe = self._pipeline(spec, lambda: self._build(spec))
            for lo in range(0, n, self.max_batch):
                hi = min(n, lo + self.max_batch)
                self._copy.wait()  # the previous run's output buffer is about to be reused
                # One sample per box; samples are views of the frames, not copies (DALI copies what it needs).
                imgs = [frames[int(f)] if self.device == "gpu" else frames[int(f)].numpy() for f in frame_of[lo:hi]]
                pipe.feed_input("frames", imgs, layout="HWC")
                pipe.feed_input("anchor", list(anchor[lo:hi]))
                pipe.feed_input("shape", list(shape[lo:hi]))
                pipe.feed_input("roi_start", list(roi_start[lo:hi]))
                pipe.feed_input("roi_end", list(roi_end[lo:hi]))
                (out,) = pipe.run()
                parts.append(self._to_torch(out))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class DaliCenterCropDecoder(_DaliRunner):
    """Decode -> centre square -> resize -> normalise in one DALI pipeline (``--faces none``).

    :meth:`crops` returns, for each timestamp, the model input that
    ``crop_resize_normalize(frame, centre square)`` gives for the frame
    displayed at that time, upright, as float32 ``[T, 3, S, S]`` (on
    ``cuda:device_id`` for ``'gpu'``, NVDEC decoding). Frame indices, codec
    checks and chunking come from :class:`DaliDecoder`.
    """

    def __init__(self, device: str = "gpu", device_id: int | None = None, num_threads: int = 2,
                 storage_options: dict | None = None, max_chunk_frames: int | None = None):
        super().__init__(device, device_id, num_threads)
        self.decoder = DaliDecoder(device=device, device_id=device_id, num_threads=num_threads,
                                   storage_options=storage_options, max_chunk_frames=max_chunk_frames)
        self.name = f"{self.decoder.name}+crop"

    def _build(self, spec: CropSpec):
        from nvidia.dali import Pipeline, fn, types

        pipe = Pipeline(batch_size=1, num_threads=self.num_threads, device_id=self.device_id,
                        prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
        with pipe:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, no_copy=True)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT, ndim=1)
            roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT, ndim=1)
            if self.device == "gpu":
                video = fn.decoders.video(encoded, frames=frames, device="mixed", affine=False)
            else:
                video = fn.decoders.video(encoded, frames=frames, device="cpu")
            crops = _normalise(fn, types, _resize_roi(fn, types, video, spec.size, roi_start, roi_end), spec, "FCHW")
            pipe.set_outputs(crops)
        pipe.build()
        return pipe

    def crops(self, uri: str, info: VideoInfo, timestamps: Sequence[float], spec: CropSpec) -> torch.Tensor:
        ts = validate_request(uri, timestamps, None)
        dev = torch.device("cuda", self.device_id) if self.device == "gpu" else torch.device("cpu")
        if not ts:
            return torch.empty((0, 3, spec.size, spec.size), dtype=torch.float32, device=dev)
        data, indices = self.decoder.load_indices(uri, info, ts)
        stored_w, stored_h = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
        # The centre square is the same region before and after a 90-degree turn: crop the stored frame, turn the crop.
        x0, y0, x1, y1 = center_square_box(stored_w, stored_h)
        roi_start, roi_end = np.array([y0, x0], np.float32), np.array([y1, x1], np.float32)
        chunk = max(1, min(self.decoder.max_chunk_frames, self.decoder.chunk_bytes // max(1, stored_w * stored_h * 3)))
        out = torch.empty((len(ts), 3, spec.size, spec.size), dtype=torch.float32, device=dev)
        with self._lock:
            for start, stop, order in DaliDecoder.chunk_plan(indices, chunk):
                try:
                    pipe = self._pipeline(spec, lambda: self._build(spec))
                    self._copy.wait()
                    pipe.feed_input("encoded", [data])
                    pipe.feed_input("frames", [np.asarray(order, np.int32)])
                    pipe.feed_input("roi_start", [roi_start])
                    pipe.feed_input("roi_end", [roi_end])
                    (res,) = pipe.run()
                    got = self._to_torch(res)
                except Exception as exc:  # a failed run poisons the pipeline: drop it, report the video
                    self._copy.wait()
                    self._pipelines.pop(spec, None)
                    raise DecodeError(uri, f"DALI {self.name} could not decode and crop frames "
                                           f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
                got = got.reshape(len(order), 3, spec.size, spec.size)
                row = {idx: i for i, idx in enumerate(order)}
                pick = torch.tensor([row[indices[k]] for k in range(start, stop)], device=got.device)
                out[start:stop] = got.index_select(0, pick)
        if info.rotation:
            out = torch.rot90(out, k=-(info.rotation // 90) % 4, dims=(2, 3)).contiguous()
        return out
