"""Classification metrics of expression recognition: WAR (accuracy), UAR (mean per-class recall), confusion."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int) -> Tensor:
    """``[C, C]`` int64 counts, rows = true class, columns = predicted class."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    idx = target.long() * n_classes + pred.long()
    return torch.bincount(idx.flatten(), minlength=n_classes * n_classes).view(n_classes, n_classes)


@dataclass(frozen=True)
class Scores:
    """WAR, UAR and the confusion matrix they come from."""

    war: float  # weighted average recall = accuracy
    uar: float  # unweighted average recall over classes that have test samples
    confusion: list[list[int]]
    per_class_recall: list[float | None]  # None for classes without samples

    @property
    def n(self) -> int:
        return sum(sum(row) for row in self.confusion)


def scores_from_confusion(confusion: Tensor) -> Scores:
    """WAR/UAR from a confusion matrix; classes without samples are left out of UAR (their recall is None)."""
    cm = confusion.detach().to("cpu", torch.float64)
    support = cm.sum(dim=1)
    total = float(support.sum())
    war = float(cm.diagonal().sum() / total) if total > 0 else 0.0
    recalls: list[float | None] = [
        float(cm[i, i] / support[i]) if support[i] > 0 else None for i in range(cm.shape[0])
    ]
    present = [r for r in recalls if r is not None]
    uar = sum(present) / len(present) if present else 0.0
    return Scores(war=war, uar=uar, confusion=confusion.to("cpu", torch.int64).tolist(), per_class_recall=recalls)
