"""Host frames to the model's device: one stacked copy per chunk, through reusable pinned buffers on CUDA.

A CPU decoder (PyAV, DALI-CPU) hands over frames in pageable host memory. A
copy from pageable memory to a GPU is synchronous and goes through a driver
bounce buffer; from page-locked ("pinned") memory it is a direct DMA that can
overlap the next chunk's decode. Pinning is expensive to set up, so
:class:`FrameUpload` keeps two pinned buffers per worker and alternates between
them (double buffering): chunk ``k`` is stacked into buffer ``k % 2`` and
copied asynchronously; before buffer ``k % 2`` is written again (chunk
``k + 2``), the copy that read it is waited for (a CUDA event recorded after
the copy). A buffer grows only when a chunk needs more room (a larger video),
never per chunk.

On a CPU device there is nothing to upload: the stacked chunk is the result
(``stack_to``); no staging, no extra copy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FrameUpload", "stack_to"]


def _stack_into(frames: Sequence, out: torch.Tensor | None = None) -> torch.Tensor:
    """``frames`` (numpy arrays or tensors of one shape) stacked on a new first axis, into ``out`` when given."""
    if isinstance(frames[0], torch.Tensor):
        return torch.stack(list(frames), out=out)
    if out is None:
        return torch.from_numpy(np.stack(frames))
    np.stack(frames, out=out.numpy())
    return out


def stack_to(frames: Sequence, device: torch.device, upload: FrameUpload | None = None) -> torch.Tensor:
    """One chunk of host frames as a ``[n, H, W, 3]`` tensor on ``device`` (through ``upload``'s buffers when given)."""
    if upload is not None:
        return upload(frames)
    return _stack_into(frames).to(device)


@dataclass
class _Slot:
    buffer: torch.Tensor | None = None
    copied: object | None = None  # torch.cuda.Event recorded after the copy that last read ``buffer``


class FrameUpload:
    """Stack host frames into one of two reusable (pinned on CUDA) buffers and copy them to ``device`` asynchronously.

    ``pin`` defaults to ``device`` being CUDA. The returned tensor never shares
    memory with a staging buffer (the copy is forced even to a CPU device, so
    the buffer reuse can be tested without a GPU). One instance belongs to one
    frame stream: it is not thread-safe.
    """

    def __init__(self, device: torch.device | str, pin: bool | None = None) -> None:
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" if pin is None else bool(pin)
        self._slots = (_Slot(), _Slot())
        self._next = 0
        self.allocations = 0  # buffers allocated so far (grows only with the chunk size)

    def __call__(self, frames: Sequence) -> torch.Tensor:
        shape = (len(frames), *tuple(frames[0].shape))
        slot = self._slots[self._next]
        self._next ^= 1
        if slot.copied is not None:
            slot.copied.synchronize()  # the copy that read this buffer two chunks ago has finished
            slot.copied = None
        buf = slot.buffer
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = slot.buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
            self.allocations += 1
        host = _stack_into(frames, buf[: shape[0]])
        out = host.to(self.device, non_blocking=self.pin, copy=True)
        if self.device.type == "cuda":
            slot.copied = torch.cuda.Event()
            slot.copied.record(torch.cuda.current_stream(self.device))  # the copy's stream, whatever device is current
        return out
