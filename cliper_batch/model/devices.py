"""Which torch device a run uses (``auto | cpu | cuda | cuda:N``), answered without importing torch when it can be.

Importing torch costs a CPU-only laptop several CPU seconds, and the annotate
driver never computes on a device: only its workers do. So the driver asks
:func:`device_name`, which imports torch only when a CUDA device could exist
here, judged by a light probe (:func:`cuda_may_be_present`: the kernel driver's
files, no library loaded). Where the probe finds none, ``auto`` is ``cpu`` and
``cuda`` is refused, exactly as ``torch.cuda.is_available()`` would answer;
where it finds one, torch answers (``torch.cuda``), as before.
:func:`cliper_batch.model.backends.select_device` is the same function returning a
``torch.device``, for code that has torch anyway.
"""
from __future__ import annotations

import os
import re
import sys

_SPELLING = re.compile(r"auto|cpu|cuda(?::(\d+))?")

# Device files a CUDA-capable torch needs to see a GPU: the NVIDIA kernel driver
# (/proc/driver/nvidia, /dev/nvidiactl), WSL2's GPU paravirtualisation (/dev/dxg, no
# /proc entry there), and ROCm's (/dev/kfd: ROCm builds of torch report AMD GPUs
# through torch.cuda).
GPU_DEVICE_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


class DeviceError(ValueError):
    """A device or precision request this host cannot honour."""


def cuda_may_be_present() -> bool:
    """False only where torch could not see a CUDA device either: Linux without any GPU driver files, or macOS.

    True (let torch decide) when torch is imported already (asking it is free
    then), on Linux with a GPU driver present, and on any other platform.
    """
    if "torch" in sys.modules:
        return True
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in GPU_DEVICE_FILES)
    return sys.platform != "darwin"  # macOS builds of torch have no CUDA; elsewhere, ask torch


def device_name(pref: object = "auto") -> str:
    """``'auto'`` -> the current CUDA device (``'cuda:N'``) if available, else ``'cpu'``; ``cpu``/``cuda``/``cuda:N`` validated.

    Raises :class:`DeviceError` for an unknown spelling, or CUDA asked for where
    none is available (or the index is out of range).
    """
    text = (str(pref) if pref is not None else "auto").strip().lower() or "auto"
    m = _SPELLING.fullmatch(text)
    if not m:
        raise DeviceError(f"unknown device {pref!r}: use auto, cpu, cuda or cuda:N")
    if text == "cpu":
        return "cpu"
    if not cuda_may_be_present():
        if text == "auto":
            return "cpu"
        raise DeviceError(
            f"device {pref!r} requested but CUDA is not available on this host (no GPU driver found: none of "
            f"{', '.join(GPU_DEVICE_FILES)} exists)"
        )
    import torch

    if not torch.cuda.is_available():
        if text == "auto":
            return "cpu"
        raise DeviceError(f"device {pref!r} requested but CUDA is not available on this host (torch.cuda.is_available() is False)")
    count = torch.cuda.device_count()
    index = int(m.group(1)) if m.group(1) is not None else torch.cuda.current_device()
    if index >= count:
        raise DeviceError(f"device {pref!r} requested but only {count} CUDA device(s) are visible")
    return f"cuda:{index}"


__all__ = ["GPU_DEVICE_FILES", "DeviceError", "cuda_may_be_present", "device_name"]
