"""CLIPER's training losses on descriptor logits ``s[B, C, K]`` (cosine / temperature).

Both stages of CLIPER train with the same objective (reference:
``main_RAFDB_CLIPER.py`` of github.com/muse1998/CLIPER, summarised in
``cliper-method.md``). With ``y`` the target class and ``k`` a class's descriptor:

* **margin CE** - class logits ``z_c = max_k s[c, k]`` for rival classes and
  ``z_y = min_k s[y, k]`` for the target: the *worst* target descriptor has to
  beat the *best* descriptor of every rival class. Loss ``CE(z, y)``, batch mean.
* **fine-grained CE** (per sample) - ``1 + (C-1)*K`` logits: the best target
  descriptor ``max_k s[y, k]`` followed by every rival descriptor logit (rival
  classes in class order, descriptors in order); the target is index 0.
* **alpha** - per batch, ``n[y, j]`` counts the class-``y`` samples whose best
  target descriptor is ``j``; zero counts become ``-1/99``. A sample that
  picked ``j_i`` gets ``alpha_i = sum_j n[y, j] * softmax_j(1 / n[y, .])[j_i] / n[y, j_i]``,
  which up-weights rarely chosen descriptors so a few of them cannot absorb a
  class. Alpha is a constant (no gradient flows through the counts).
* **total** = margin CE + ``mean_i(alpha_i * fine CE_i)``.

Soft targets (e.g. FERPlus vote distributions) use the expectation of the
per-sample terms over the target distribution; alpha is computed from the hard
labels (the argmax of the distribution). With one-hot targets this is exactly
the hard-label loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ZERO_COUNT_VALUE = -1.0 / 99.0


@dataclass
class CliperLoss:
    """The loss of one batch and its parts (``total`` carries the gradient; the rest are detached)."""

    total: Tensor  # scalar
    margin: Tensor  # scalar: batch mean of the margin CE
    fine: Tensor  # scalar: batch mean of alpha_i * fine CE_i
    alpha: Tensor  # [B] per-sample weights


def _check(s: Tensor, y: Tensor) -> tuple[int, int, int]:
    if s.ndim != 3:
        raise ValueError(f"descriptor logits must be [B, C, K], got shape {tuple(s.shape)}")
    b, c, k = s.shape
    if c < 2:
        raise ValueError(f"CLIPER's losses need at least 2 classes, got C={c}")
    if y.ndim != 1 or y.shape[0] != b:
        raise ValueError(f"targets must be [B] = [{b}], got shape {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"targets must be integer class indices, got {y.dtype}")
    if b and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(f"targets must lie in [0, {c - 1}], got values in [{int(y.min())}, {int(y.max())}]")
    return b, c, k


def margin_logits(s: Tensor, y: Tensor) -> Tensor:
    """``[B, C]``: ``max_k s[c, k]`` for rival classes, ``min_k s[y, k]`` for the target class."""
    _check(s, y)
    target = F.one_hot(y.long(), s.shape[1]).bool()
    return torch.where(target, s.amin(dim=-1), s.amax(dim=-1))


def fine_grained_logits(s: Tensor, y: Tensor) -> Tensor:
    """``[B, 1 + (C-1)*K]``: the best target descriptor, then all rival descriptors (class order, k order)."""
    b, c, k = _check(s, y)
    yl = y.long()
    target = F.one_hot(yl, c).bool()
    pos = s[torch.arange(b, device=s.device), yl].amax(dim=-1, keepdim=True)  # [B, 1]
    neg = s[~target].reshape(b, (c - 1) * k)  # boolean mask keeps row-major order
    return torch.cat([pos, neg], dim=1)


@torch.no_grad()
def descriptor_weights(s: Tensor, y: Tensor) -> Tensor:
    """CLIPER's per-sample alpha ``[B]`` from the batch's best-target-descriptor counts (constant)."""
    b, c, k = _check(s, y)
    yl = y.long()
    best = s[torch.arange(b, device=s.device), yl].argmax(dim=-1)  # j_i, [B]
    counts = torch.zeros(c, k, dtype=torch.float32, device=s.device)
    counts.index_put_((yl, best), torch.ones(b, dtype=torch.float32, device=s.device), accumulate=True)
    counts = torch.where(counts == 0, torch.full_like(counts, ZERO_COUNT_VALUE), counts)
    rows = counts[yl]  # n[y_i, .], [B, K]
    picked = best.unsqueeze(1)
    share = torch.softmax(1.0 / rows, dim=1).gather(1, picked).squeeze(1)
    return rows.sum(dim=1) * share / rows.gather(1, picked).squeeze(1)


def cliper_loss(s: Tensor, y: Tensor, soft_targets: Tensor | None = None) -> CliperLoss:
    """CLIPER's total loss for descriptor logits ``s[B, C, K]`` and hard targets ``y[B]``.

    ``soft_targets`` (``[B, C]``, rows summing to 1) switches both terms to their
    expectation over the target distribution; ``y`` is then its argmax (used for alpha).
    """
    b, c, k = _check(s, y)
    if b == 0:
        raise ValueError("cannot compute a loss on an empty batch")
    s = s.float()
    alpha = descriptor_weights(s, y)
    if soft_targets is None:
        margin = F.cross_entropy(margin_logits(s, y), y.long())
        fine_i = F.cross_entropy(fine_grained_logits(s, y), torch.zeros(b, dtype=torch.long, device=s.device), reduction="none")
        fine = (alpha * fine_i).mean()
        return CliperLoss(total=margin + fine, margin=margin.detach(), fine=fine.detach(), alpha=alpha)

    if tuple(soft_targets.shape) != (b, c):
        raise ValueError(f"soft targets must be [B, C] = [{b}, {c}], got {tuple(soft_targets.shape)}")
    p = soft_targets.to(s.dtype)
    margin_i = s.new_zeros(b)
    fine_i = s.new_zeros(b)
    zeros = torch.zeros(b, dtype=torch.long, device=s.device)
    for cls in range(c):
        w = p[:, cls]
        if not bool((w > 0).any()):
            continue
        hyp = torch.full((b,), cls, dtype=torch.long, device=s.device)
        margin_i = margin_i + w * F.cross_entropy(margin_logits(s, hyp), hyp, reduction="none")
        fine_i = fine_i + w * F.cross_entropy(fine_grained_logits(s, hyp), zeros, reduction="none")
    margin = margin_i.mean()
    fine = (alpha * fine_i).mean()
    return CliperLoss(total=margin + fine, margin=margin.detach(), fine=fine.detach(), alpha=alpha)
