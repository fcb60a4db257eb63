"""The detector's image pyramid: area-resized levels of a batch of frames, as sparse matrix products."""
from __future__ import annotations

import torch


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
