"""Non-maximum suppression for the MTCNN cascade: per frame, per group, nested boxes; the same decisions on every device."""
from __future__ import annotations

import torch

from ... import vision_ops


def nms_per_frame(
    boxes: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, threshold: float, frames: int
) -> torch.Tensor:
    """IoU NMS within each frame (``ids``: frame of each box); indices of the kept boxes, best score first."""
    if frames == 1 and boxes.device.type == "cpu":  # the CPU layout: one frame, one call, nothing to group
        if boxes.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=boxes.device)
        return vision_ops.nms(boxes, scores, threshold)
    return nms_groups(boxes, scores, ids, threshold)


def nms_groups(
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


def cap_per_frame(keep: torch.Tensor, ids: torch.Tensor, cap: int) -> torch.Tensor:
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


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, threshold: float) -> torch.Tensor:
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
