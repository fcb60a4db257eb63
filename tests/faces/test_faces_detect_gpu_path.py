"""The detector's CUDA-path changes (issue 24, items 4 and 5), checked on the CPU.

TF32 is off (and restored) around the cascade on CUDA; calls pad to a power of two; NMS per
group is torchvision's, whatever the batch (one transfer on CUDA); the O-Net NMS on tensors
keeps exactly what the former pure-Python loop kept.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_batch.faces.detectors.mtcnn import detector as D
from cliper_batch.faces.detectors.mtcnn import nms
from cliper_batch.faces import vision_ops


def test_tf32_is_off_inside_the_cascade_on_cuda_and_restored_after():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = True, True
        with D._strict_fp32(torch.device("cuda:0")):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
        with pytest.raises(RuntimeError), D._strict_fp32(torch.device("cuda")):
            raise RuntimeError("a failing cascade")
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
        with D._strict_fp32(torch.device("cpu")):  # the CPU path touches nothing
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


@pytest.mark.parametrize("n,batch,want", [(1, 16, 1), (2, 16, 2), (3, 16, 4), (4, 16, 4), (5, 16, 8), (9, 16, 16),
                                          (16, 16, 16), (3, 1, 1), (7, 8, 8), (3, 6, 4), (5, 6, 6)])
def test_calls_pad_to_a_power_of_two_at_most_the_batch(n, batch, want):
    assert D.padded_batch(n, batch) == want


def test_a_short_call_is_padded_to_a_power_of_two(monkeypatch):
    det = D.FaceDetector(device="cpu", batch=16)
    seen = []
    monkeypatch.setattr(det, "_detect_batch", lambda chunk, idx: seen.append(chunk.shape[0]) or [[] for _ in idx])
    det.detect(np.zeros((19, 40, 40, 3), np.uint8))
    assert seen == [16, 4]


def _random_boxes(n: int, seed: int, groups: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 60
    # P-Net-like: a few sizes on a grid (many IoUs exactly at 0.5 in exact arithmetic), plus random ones
    side = torch.tensor([12.0, 12 / 0.709, 24.0])[torch.randint(0, 3, (n,), generator=g)]
    xy = torch.where(torch.rand(n, 1, generator=g) < 0.5, (xy / 2).floor() * 2, xy)
    boxes = torch.cat([xy, xy + side[:, None]], dim=1)
    scores = torch.rand(n, generator=g)
    ids = torch.randint(0, groups, (n,), generator=g)
    return boxes, scores, ids


@pytest.mark.parametrize("seed", range(4))
def test_grouped_nms_keeps_what_each_group_keeps_alone(seed):
    boxes, scores, ids = _random_boxes(400, seed, 5)
    got = nms.nms_groups(boxes, scores, ids, 0.5)
    want = set()
    for f in range(5):
        rows = torch.nonzero(ids == f).squeeze(1)
        want |= set(rows[vision_ops.nms(boxes[rows], scores[rows], 0.5)].tolist())
    assert set(got.tolist()) == want
    assert torch.all(scores[got][:-1] >= scores[got][1:])  # best score first
    one = nms.nms_groups(boxes, scores, torch.zeros_like(ids), 0.5)
    assert one.tolist() == vision_ops.nms(boxes, scores, 0.5).tolist()  # one group: the plain kernel, same order


def _old_nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """The former pure-Python O-Net NMS (reference)."""
    order = torch.argsort(scores, descending=True).tolist()
    b = boxes.tolist()
    keep: list[int] = []
    for i in order:
        x0, y0, x1, y1 = b[i]
        ai = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        suppressed = False
        for k in keep:
            u0, v0, u1, v1 = b[k]
            iw = min(x1, u1) - max(x0, u0)
            ih = min(y1, v1) - max(y0, v0)
            if iw <= 0 or ih <= 0:
                continue
            ak = (u1 - u0) * (v1 - v0)
            if iw * ih / max(min(ai, ak), 1e-9) > threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_min_overlap_nms_on_tensors_keeps_what_the_python_loop_kept(seed):
    boxes, scores, ids = _random_boxes(120, seed, 3)
    got = nms.nms_min(boxes, scores, ids, 0.7)
    want = []
    for f in range(3):
        rows = torch.nonzero(ids == f).squeeze(1)
        want += [int(rows[k]) for k in _old_nms_min(boxes[rows], scores[rows], 0.7)]
    assert got.tolist() == want
    assert nms.nms_min(boxes[:0], scores[:0], ids[:0], 0.7).numel() == 0
