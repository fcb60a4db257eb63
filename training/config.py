"""The options of a training run (:class:`TrainConfig`) and their validation.

Defaults are CLIPER's recipe: stage 1 (prompt vectors, both towers frozen) AdamW lr 1e-2, wd 0,
2 epochs; stage 2 (image tower) AdamW lr 5e-6, wd 0.1, cosine warm restarts (T_0 10), 57
epochs; eps 1e-4, temperature 0.01, global batch 128 (see :mod:`.loop` for how they are used).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .clips import AUGMENTATIONS
from .prompts import CLIPER_TEMPLATE, CTX_INITS, DEFAULT_PLACEHOLDER

PRECISIONS = ("fp32", "bf16")


class TrainConfigError(ValueError):
    """An invalid training option (the message names it)."""


@dataclass
class TrainConfig:
    """Every option of a training run (CLI flags map 1:1, ``--stage1-lr`` -> ``stage1_lr``)."""

    train_data: str
    test_data: str | None = None  # default: train_data (with test_split)
    train_split: str = "train"
    test_split: str = "test"
    model: str = "openclip:ViT-B-16@openai"
    classes: list[str] | None = None  # default: the training set's class list
    descriptors_per_class: int = 5
    template: str = CLIPER_TEMPLATE
    placeholder: str = DEFAULT_PLACEHOLDER
    temperature: float = 0.01
    ctx_init: str = "random"  # prompt vectors: random (CLIPER) | class (shared per class; random-init text towers)
    center_descriptors: bool = False  # stage 2 anchors minus their shared mean (random-init text towers; model.py)
    num_frames: int = 16  # T frames per clip for video datasets (images use 1)
    augment: str = "cliper"  # train transform: cliper (CLIPER's recipe) | mild | face | none (see training/clips.py)
    grey: bool = False  # the model sees luma only (grey datasets such as FER2013); stored in the checkpoint
    face_margin: float | None = None  # crop tightness of the training faces (engine margin); stored in the checkpoint
    stage1_epochs: int = 2
    stage2_epochs: int = 57
    stage1_lr: float = 1e-2
    stage1_weight_decay: float = 0.0
    stage2_lr: float = 5e-6
    stage2_weight_decay: float = 0.1
    adam_eps: float = 1e-4
    cosine_t0: int = 10
    cosine_t_mult: int = 1
    batch_size: int = 128  # global, split over workers
    eval_batch_size: int = 128
    loader_workers: int = 4  # DataLoader processes per Ray worker
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    seed: int = 0
    max_steps_per_epoch: int | None = None  # cap for quick runs
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    torch_threads: int | None = None  # default: cpus_per_worker
    storage_path: str = "./cliper_runs"  # local folder or fsspec URI (s3://...)
    name: str = "cliper-train"
    export: str | None = None  # .safetensors path/URI of the inference checkpoint
    resume_from: str | None = None  # checkpoint directory (local or URI) to start from
    # with resume_from: keep its weights, but start the optimizer and LR schedule anew with this run's settings
    # (a warm restart); a rerun of this run resumes its own checkpoints with their optimizer state as always
    restart_schedule: bool = False
    keep_checkpoints: int = 2
    max_failures: int = 0  # Ray Train restarts of the worker group after a failure

    def validate(self) -> "TrainConfig":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise TrainConfigError(msg)

        need(bool(self.train_data), "--train-data is required")
        need(self.descriptors_per_class >= 1, "descriptors_per_class must be >= 1")
        need(self.temperature > 0, "temperature must be > 0")
        need(self.num_frames >= 1, "num_frames must be >= 1")
        need(self.ctx_init in CTX_INITS, f"ctx_init must be one of {list(CTX_INITS)}, got {self.ctx_init!r}")
        need(self.augment in AUGMENTATIONS, f"augment must be one of {list(AUGMENTATIONS)}, got {self.augment!r}")
        need(self.stage1_epochs >= 0 and self.stage2_epochs >= 0, "epoch counts must be >= 0")
        need(self.stage1_epochs + self.stage2_epochs >= 1, "train at least one epoch (stage1_epochs + stage2_epochs)")
        need(self.stage1_lr > 0 and self.stage2_lr > 0, "learning rates must be > 0")
        need(self.stage1_weight_decay >= 0 and self.stage2_weight_decay >= 0, "weight decay must be >= 0")
        need(self.adam_eps > 0, "adam_eps must be > 0")
        need(self.cosine_t0 >= 1 and self.cosine_t_mult >= 1, "cosine_t0 and cosine_t_mult must be >= 1")
        need(self.face_margin is None or -0.4 <= self.face_margin <= 2.0,
             f"face_margin must lie in [-0.4, 2.0], got {self.face_margin}")
        need(self.num_workers >= 1, "num_workers must be >= 1")
        need(self.batch_size >= self.num_workers, f"batch_size ({self.batch_size}) must be >= num_workers")
        need(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        need(self.loader_workers >= 0, "loader_workers must be >= 0")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        need(self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "max_steps_per_epoch must be >= 1")
        need(self.cpus_per_worker > 0, "cpus_per_worker must be > 0")
        need(self.torch_threads is None or self.torch_threads >= 1, "torch_threads must be >= 1")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(not self.restart_schedule or bool(self.resume_from), "--restart-schedule needs --resume-from")
        need(bool(self.name) and "/" not in self.name, "name must be a non-empty folder name")
        need(self.export is None or self.export.endswith(".safetensors"), "--export must end with .safetensors")
        test_data = self.test_data or self.train_data
        if test_data == self.train_data and self.test_split == self.train_split:
            raise TrainConfigError("the test split equals the training split; pass --test-data or another --test-split")
        return self

    @property
    def total_epochs(self) -> int:
        return self.stage1_epochs + self.stage2_epochs

    def stage_of(self, epoch_index: int) -> int:
        """Stage (1 or 2) of the 0-based epoch index."""
        return 1 if epoch_index < self.stage1_epochs else 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainConfigError(f"unknown training options {sorted(unknown)}")
        return cls(**d)
