"""MTCNN's three nets (P-Net, R-Net, O-Net) in torch, and their weights from the packaged, sha256-pinned file."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .weights import FIX, WEIGHTS_FILE, DetectorUnavailable, read_pinned_weights

NETS = ("pnet", "rnet", "onet")


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
    fix = FIX
    raw = read_pinned_weights(path)
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
