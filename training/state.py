"""The training-state checkpoint: what a resumed run needs (one ``train_state.pt`` per Ray Train checkpoint).

Contents: completed epochs and the stage they ended in, the optimizer step
count, the prompt vectors, the image tower, the fixed descriptors, the
optimizer and LR-scheduler state of the current stage, the metric history, and
what the run was built from (model spec, classes, K, template, a fingerprint of
the frozen text tower) so a resume with a different setup is refused instead of
silently mixing models. Saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (tensors and plain containers only: no
arbitrary unpickling). The *inference* checkpoint is a different file, written
by :func:`cliper_batch.model.checkpoint.save_checkpoint`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = "cliper-batch/train-state/v1"


class TrainStateError(ValueError):
    """A training checkpoint that is unreadable or does not fit the current run (the message says why)."""


@dataclass
class TrainState:
    """Everything needed to continue training after the last completed epoch."""

    epoch: int  # completed epochs (1-based count; the next epoch is epoch + 1)
    stage: int  # stage of the last completed epoch: 1 (prompts) or 2 (image tower)
    global_step: int  # optimizer steps taken in all stages
    model_spec: str
    classes: list[str]
    descriptors_per_class: int
    template: str
    text_fingerprint: str
    ctx: Tensor
    visual: dict[str, Tensor]
    descriptors: Tensor
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def identity(self) -> dict[str, Any]:
        return {
            "model_spec": self.model_spec,
            "classes": list(self.classes),
            "descriptors_per_class": self.descriptors_per_class,
            "template": self.template,
            "text_fingerprint": self.text_fingerprint,
        }


def save_state(state: TrainState, directory: str) -> str:
    """Write ``train_state.pt`` and ``metrics.jsonl`` into ``directory``; returns the state file path."""
    os.makedirs(directory, exist_ok=True)
    payload = asdict(state)
    payload["history"] = json.dumps(state.history)
    payload["format"] = STATE_FORMAT
    path = os.path.join(directory, STATE_FILE)
    torch.save(payload, path)
    with open(os.path.join(directory, METRICS_FILE), "w", encoding="utf-8") as fh:
        fh.write(metrics_jsonl(state.history))
    return path


def metrics_jsonl(history: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)


def load_state(directory: str) -> TrainState:
    """Read ``train_state.pt`` from a checkpoint directory."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        raise TrainStateError(f"not a cliper-batch training checkpoint: {path} is missing")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/foreign files
        raise TrainStateError(f"{path}: cannot read training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise TrainStateError(f"{path}: unknown training-state format {payload.get('format') if isinstance(payload, dict) else type(payload)}")
    payload.pop("format")
    try:
        payload["history"] = json.loads(payload["history"])
        return TrainState(**payload)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TrainStateError(f"{path}: incomplete training state ({exc})") from exc


def check_compatible(state: TrainState, current: dict[str, Any], source: str) -> None:
    """Refuse to resume from a state built from another model, class list, K, template or text tower."""
    saved = state.identity()
    diffs = [f"{k}: checkpoint {saved[k]!r} vs now {current[k]!r}" for k in saved if saved[k] != current.get(k)]
    if diffs:
        raise TrainStateError(f"cannot resume from {source}: it was trained with a different setup ({'; '.join(diffs)})")
