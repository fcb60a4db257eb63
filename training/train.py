"""Two-stage CLIPER fine-tuning on Ray Train (``python -m cliper_batch.training.train ...`` or via ``ray job submit``).

Stage 1 learns the METD prompt vectors with both towers frozen (AdamW lr 1e-2,
wd 0, eps 1e-4, constant LR, 2 epochs); stage 2 encodes the prompts once into
fixed descriptors and fine-tunes only the image tower (AdamW lr 5e-6, wd 0.1,
eps 1e-4, CosineAnnealingWarmRestarts(T_0=10, T_mult=1) stepped per epoch).
Both use CLIPER's loss (:mod:`.losses`) at temperature 0.01, batch 128 - all
configurable (:class:`TrainConfig`). Epochs are numbered across the stages
(CLIPER: 1-2 stage 1, 3-59 stage 2).

Distribution: a Ray Train ``TorchTrainer`` runs :func:`train_loop_per_worker`
on ``num_workers`` workers (DDP via ``ray.train.torch.prepare_model``; the
batch size is global, split evenly over workers). After every epoch all
workers call ``ray.train.report`` (a barrier); rank 0 alone writes the
checkpoint (``train_state.pt`` + ``metrics.jsonl``) and rewrites
``<storage_path>/<name>/metrics.jsonl``. A rerun with the same ``--name`` and
``--storage-path`` resumes from the latest checkpoint (``ray.train.get_checkpoint``);
``--resume-from DIR`` starts a new run from a given checkpoint directory.
Evaluation is exact: each worker scores a disjoint shard of the test set and
the confusion matrices are summed.

At the end, ``--export PATH.safetensors`` writes the inference checkpoint
(image tower + fixed descriptors, no text tower) with
:func:`cliper_batch.model.checkpoint.save_checkpoint`; the annotate job loads it
with ``cliper_batch.model.factory.load_model(PATH)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .clips import AUGMENTATIONS
from .datasets import DatasetError, LabeledSet, load_dataset, parse_dataset_spec, remap_to
from .losses import cliper_loss
from .metrics import confusion_matrix, scores_from_confusion
from .prompts import CLIPER_TEMPLATE, CTX_INITS, DEFAULT_PLACEHOLDER
from .state import METRICS_FILE, TrainState, TrainStateError, check_compatible, load_state, metrics_jsonl, save_state

log = logging.getLogger("cliper_batch.training")

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


# ------------------------------------------------------------------------- data


def load_sets(cfg: TrainConfig) -> tuple[LabeledSet, LabeledSet, tuple[str, ...]]:
    """The training and test sets, both under the run's class list (matched by name)."""
    train = load_dataset(cfg.train_data, cfg.train_split)
    test = load_dataset(cfg.test_data or cfg.train_data, cfg.test_split)
    if (cfg.test_data or cfg.train_data) == cfg.train_data and "all" in (train.split, test.split):
        raise DatasetError(
            f"{cfg.train_data}: the manifest has no 'split' column, so train and test would be the same rows; "
            "add a split column or pass separate --train-data and --test-data manifests"
        )
    classes = tuple(cfg.classes) if cfg.classes else train.classes
    if not len(train):
        raise DatasetError(f"training set {cfg.train_data!r} ({cfg.train_split}) is empty")
    if not len(test):
        raise DatasetError(f"test set {cfg.test_data or cfg.train_data!r} ({cfg.test_split}) is empty")
    return remap_to(train, classes), remap_to(test, classes), classes


def _sync(values: Tensor) -> Tensor:
    """Sum over workers (no-op outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _autocast(device: torch.device, precision: str):
    import contextlib

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------- stages


def _stage_setup(stage: int, tm, cfg: TrainConfig):
    """Freeze/unfreeze for ``stage``, wrap the stage's module for DDP, create its optimizer and LR schedule."""
    import ray.train.torch

    from .model import PromptStage

    if stage == 1:
        tm.cliper.visual.requires_grad_(False)
        tm.prompts.ctx.requires_grad_(True)
        module: nn.Module = PromptStage(tm.cliper, tm.prompts)
        params = [tm.prompts.ctx]
        opt = torch.optim.AdamW(params, lr=cfg.stage1_lr, weight_decay=cfg.stage1_weight_decay, eps=cfg.adam_eps)
        sched: Any = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=1.0)  # constant, as in CLIPER
    else:
        tm.prompts.ctx.requires_grad_(False)
        tm.cliper.visual.requires_grad_(True)
        module = tm.cliper
        params = list(tm.cliper.visual.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.stage2_lr, weight_decay=cfg.stage2_weight_decay, eps=cfg.adam_eps)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.cosine_t0, T_mult=cfg.cosine_t_mult)
    wrapped = ray.train.torch.prepare_model(module)
    return wrapped, opt, sched


def _train_epoch(wrapped, tm, opt, loader, device, cfg: TrainConfig, soft: bool, stage: int) -> dict[str, float]:
    wrapped.train()
    if stage == 1:
        # the frozen image tower runs as at inference: no BatchNorm running-stat updates, no dropout
        tm.cliper.visual.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss*B, margin*B, fine*B, correct, samples
    steps = 0
    for clips, y, target in loader:
        clips = clips.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with _autocast(device, cfg.precision):
            s = wrapped(clips)
        loss = cliper_loss(s.float(), y, target if soft else None)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        b = y.shape[0]
        with torch.no_grad():
            correct = (s.detach().float().mean(dim=-1).argmax(dim=-1) == y).sum()
            sums += torch.stack([
                loss.total.detach().double() * b, loss.margin.double() * b, loss.fine.double() * b,
                correct.double(), torch.tensor(float(b), dtype=torch.float64, device=device),
            ])
        steps += 1
        if cfg.max_steps_per_epoch is not None and steps >= cfg.max_steps_per_epoch:
            break
    _sync(sums)
    n = max(float(sums[4]), 1.0)
    return {
        "train_loss": float(sums[0]) / n,
        "train_margin_loss": float(sums[1]) / n,
        "train_fine_loss": float(sums[2]) / n,
        "train_acc": float(sums[3]) / n,
        "train_samples": int(sums[4]),
        "steps": steps,
    }


@torch.no_grad()
def _evaluate(tm, stage: int, loader, device, cfg: TrainConfig, soft: bool) -> dict[str, Any]:
    cliper = tm.cliper
    cliper.eval()
    desc = tm.prompt_descriptors() if stage == 1 else cliper.descriptors
    n_classes = len(tm.classes)
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for clips, y, target in loader:
        clips, y, target = clips.to(device), y.to(device), target.to(device)
        b, t = clips.shape[:2]
        with _autocast(device, cfg.precision):
            feats = cliper.encode_frames(clips.reshape(b * t, *clips.shape[2:])).view(b, t, -1)
        pooled = cliper.pool_frames(feats)
        s = torch.einsum("bd,ckd->bck", pooled, desc.float()) / cliper.temperature
        loss = cliper_loss(s, y, target if soft else None)
        cm += confusion_matrix(s.mean(dim=-1).argmax(dim=-1), y, n_classes)
        sums += torch.tensor([loss.total.item() * b, float(b)], dtype=torch.float64, device=device)
    _sync(cm)
    _sync(sums)
    scores = scores_from_confusion(cm)
    return {
        "test_loss": float(sums[0]) / max(float(sums[1]), 1.0),
        "war": scores.war,
        "uar": scores.uar,
        "per_class_recall": scores.per_class_recall,
        "confusion": scores.confusion,
        "test_samples": int(sums[1]),
    }


def _write_run_metrics(cfg: TrainConfig, history: list[dict[str, Any]]) -> None:
    """Rewrite ``<storage_path>/<name>/metrics.jsonl`` (whole file: object stores cannot append)."""
    from cliper_batch.uris import filesystem_for, is_local, join, normalize_uri

    target = join(normalize_uri(cfg.storage_path), cfg.name, METRICS_FILE)
    data = metrics_jsonl(history)
    if is_local(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return
    fs, path = filesystem_for(target)
    fs.pipe_file(path, data.encode("utf-8"))


def _restore(cfg: TrainConfig, tm, identity: dict[str, Any]) -> TrainState | None:
    """The state to continue from: this run's latest checkpoint, else ``--resume-from``, else None."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    source = "the run's latest checkpoint"
    if checkpoint is None and cfg.resume_from:
        checkpoint = ray.train.Checkpoint(cfg.resume_from)
        source = cfg.resume_from
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = load_state(directory)
    check_compatible(state, identity, f"{source} ({checkpoint.path})")
    with torch.no_grad():
        tm.prompts.ctx.copy_(state.ctx.to(tm.prompts.ctx))
        tm.cliper.visual.load_state_dict(state.visual)
        tm.cliper.descriptors.copy_(state.descriptors.to(tm.cliper.descriptors))
    return state


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function: build data and model, restore, run the remaining epochs, export."""
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    from .clips import ClipDataset
    from .model import build_training_model

    cfg = TrainConfig.from_dict(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()
    random.seed(cfg.seed * 1000 + rank)
    torch.manual_seed(cfg.seed * 1000 + rank)

    train_set, test_set, classes = load_sets(cfg)
    tm = build_training_model(
        cfg.model, classes, cfg.descriptors_per_class, template=cfg.template, placeholder=cfg.placeholder,
        temperature=cfg.temperature, seed=cfg.seed, ctx_init=cfg.ctx_init,
    ).to(device)
    identity = {
        "model_spec": cfg.model, "classes": list(classes), "descriptors_per_class": cfg.descriptors_per_class,
        "template": cfg.template, "text_fingerprint": tm.text_fingerprint,
    }
    state = _restore(cfg, tm, identity)
    start = state.epoch if state else 0
    history: list[dict[str, Any]] = list(state.history) if state else []
    global_step = state.global_step if state else 0
    if state and state.stage == 2 and start < cfg.total_epochs and cfg.stage_of(start) == 1:
        raise TrainStateError(
            f"the checkpoint finished epoch {start} in stage 2, but with --stage1-epochs {cfg.stage1_epochs} "
            f"epoch {start + 1} would be a stage-1 epoch"
        )

    mean, std = tm.cliper.mean, tm.cliper.std
    kwargs = dict(image_size=tm.cliper.image_size, mean=mean, std=std, num_frames=cfg.num_frames, classes=classes,
                  interpolation=tm.cliper.interpolation)
    train_ds = ClipDataset(train_set, train=True, augment=cfg.augment, grey=cfg.grey, **kwargs)
    test_ds = ClipDataset(test_set, train=False, grey=cfg.grey, **kwargs)
    soft = train_set.has_soft_labels
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader_opts = dict(num_workers=cfg.loader_workers, pin_memory=device.type == "cuda",
                       persistent_workers=cfg.loader_workers > 0)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size // world, sampler=sampler, **loader_opts)
    test_loader = DataLoader(Subset(test_ds, range(rank, len(test_ds), world)),
                             batch_size=max(1, cfg.eval_batch_size // world), shuffle=False, **loader_opts)
    if rank == 0:
        log.info("training %s on %d samples (%s), testing on %d; classes %s; %d worker(s); epochs %d..%d",
                 cfg.model, len(train_ds), train_set.name, len(test_ds), list(classes), world, start + 1,
                 cfg.total_epochs)

    current_stage = None
    wrapped = opt = sched = None
    for e in range(start, cfg.total_epochs):
        stage = cfg.stage_of(e)
        if stage != current_stage:
            resuming_here = state is not None and e == start and state.stage == stage
            if stage == 2 and not (state is not None and state.stage == 2):
                tm.fix_descriptors(cfg.center_descriptors)  # prompts -> fixed anchors for the image tower
            wrapped, opt, sched = _stage_setup(stage, tm, cfg)
            if resuming_here:
                opt.load_state_dict(state.optimizer)
                sched.load_state_dict(state.scheduler)
            current_stage = stage
        sampler.set_epoch(e)
        lr = opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": e + 1, "stage": stage, "lr": lr, "world_size": world}
        row.update(_train_epoch(wrapped, tm, opt, train_loader, device, cfg, soft, stage))
        train_time = time.perf_counter() - t0
        global_step += row.pop("steps")
        sched.step()
        row.update(_evaluate(tm, stage, test_loader, device, cfg, soft))
        row.update({
            "global_step": global_step,
            "train_time_s": train_time,
            "samples_per_s": row["train_samples"] / train_time if train_time > 0 else 0.0,
            "epoch_time_s": time.perf_counter() - t0,
            "classes": list(classes),
        })
        history.append(row)
        with tempfile.TemporaryDirectory(prefix="cliper-ckpt-") as tmp:
            checkpoint = None
            if rank == 0:
                save_state(TrainState(
                    epoch=e + 1, stage=stage, global_step=global_step, model_spec=cfg.model, classes=list(classes),
                    descriptors_per_class=cfg.descriptors_per_class, template=cfg.template,
                    text_fingerprint=tm.text_fingerprint,
                    ctx=tm.prompts.ctx.detach().cpu().clone(),
                    visual={k: v.detach().cpu().clone() for k, v in tm.cliper.visual.state_dict().items()},
                    descriptors=tm.cliper.descriptors.detach().cpu().clone(),
                    optimizer=opt.state_dict(), scheduler=sched.state_dict(), history=history,
                ), tmp)
                _write_run_metrics(cfg, history)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
                log.info("epoch %d/%d (stage %d): loss %.4f, train acc %.4f, WAR %.4f, UAR %.4f, %.1f samples/s",
                         e + 1, cfg.total_epochs, stage, row["train_loss"], row["train_acc"], row["war"], row["uar"],
                         row["samples_per_s"])
            ray.train.report(
                {k: v for k, v in row.items() if k not in ("confusion", "per_class_recall", "classes")},
                checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{e + 1:04d}",
            )

    if cfg.export and rank == 0:
        from cliper_batch.model.checkpoint import save_checkpoint

        last_stage = current_stage or (state.stage if state else 1)
        if last_stage == 1:
            tm.fix_descriptors(cfg.center_descriptors)
        final = history[-1] if history else {}
        uri = save_checkpoint(tm.cliper, cfg.export, extra={"training": {
            "run": cfg.name, "train_data": cfg.train_data, "test_data": cfg.test_data or cfg.train_data,
            "epochs": len(history), "stage1_epochs": cfg.stage1_epochs, "stage2_epochs": cfg.stage2_epochs,
            "final": {k: final.get(k) for k in ("epoch", "war", "uar", "test_loss", "train_loss")},
        }})
        log.info("exported the inference checkpoint to %s", uri)


# ------------------------------------------------------------------------- driver


@dataclass
class TrainOutcome:
    """What a finished run left behind."""

    run_dir: str
    checkpoint: str | None  # latest Ray Train checkpoint directory
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    export: str | None = None


def _loop_function():
    """``train_loop_per_worker`` by its one import name, so Ray pickles it by reference.

    Under ``python -m cliper_batch.training.train`` this file runs as
    ``__main__``, a name the workers cannot import; the function of the module
    ``cliper_batch.training.train`` (the same file) is the one to ship.
    """
    from cliper_batch.training.train import train_loop_per_worker

    return train_loop_per_worker


def run_training(cfg: TrainConfig) -> TrainOutcome:
    """Run (or resume) a training run on the connected Ray cluster (``ray.init()`` if none is)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from cliper_batch.uris import is_local, join, normalize_uri

    from .model import _parse

    cfg.validate()
    cfg = dataclasses.replace(cfg, storage_path=normalize_uri(cfg.storage_path))
    specs = [parse_dataset_spec(cfg.train_data)] + ([parse_dataset_spec(cfg.test_data)] if cfg.test_data else [])
    if all(os.path.exists(s.path) for s in specs):
        load_sets(cfg)  # fail here, with the adapter's message, rather than inside every worker
    else:
        log.warning("dataset path(s) not visible on the driver; the workers will read them: %s",
                    ", ".join(s.path for s in specs if not os.path.exists(s.path)))
    _parse(cfg.model)
    if cfg.export and is_local(cfg.export):
        cfg = dataclasses.replace(cfg, export=normalize_uri(cfg.export))
    if cfg.resume_from and is_local(cfg.resume_from):
        path = normalize_uri(cfg.resume_from)
        if not os.path.isdir(path):
            raise TrainStateError(f"--resume-from {cfg.resume_from}: no such checkpoint directory")
        cfg = dataclasses.replace(cfg, resume_from=path)
    if not ray.is_initialized():
        ray.init()
    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        _loop_function(),
        train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    history: list[dict[str, Any]] = []
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as directory:
            history = load_state(directory).history
    return TrainOutcome(
        run_dir=join(cfg.storage_path, cfg.name),
        checkpoint=result.checkpoint.path if result.checkpoint is not None else None,
        metrics=dict(result.metrics or {}),
        history=history,
        export=cfg.export,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cliper_batch.training.train",
        description="Two-stage CLIPER fine-tuning on Ray Train (stage 1: prompts, stage 2: image tower).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TrainConfig(train_data="")
    p.add_argument("--train-data", required=True,
                   help="dataset spec KIND:PATH[?opts], KIND in rafdb, affectnet, ferplus, dfew, ferv39k, mafw, "
                        "manifest (or a .csv/.parquet manifest path)")
    p.add_argument("--test-data", default=None, help="dataset spec of the test set (default: --train-data)")
    p.add_argument("--train-split", default=d.train_split)
    p.add_argument("--test-split", default=d.test_split)
    p.add_argument("--model", default=d.model, help="openclip:ARCH[@PRETRAINED] (open_clip tag or weights file)")
    p.add_argument("--classes", default=None, help="comma-separated class list (default: the training set's)")
    p.add_argument("--descriptors-per-class", type=int, default=d.descriptors_per_class, help="K")
    p.add_argument("--template", default=d.template, help="prompt template; each placeholder token is learned")
    p.add_argument("--placeholder", default=d.placeholder)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--ctx-init", choices=CTX_INITS, default=d.ctx_init,
                   help="initial prompt vectors: random (CLIPER, randn/1000) or class (a class's descriptors start "
                        "from one shared vector; for random-init text towers, e.g. the demo model)")
    p.add_argument("--center-descriptors", action=argparse.BooleanOptionalAction, default=d.center_descriptors,
                   help="subtract the descriptors' shared mean when fixing them for stage 2 (for random-init text "
                        "towers, e.g. the demo model; off = CLIPER as published)")
    p.add_argument("--num-frames", type=int, default=d.num_frames, help="frames per video clip (T)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=d.augment,
                   help="train augmentation: cliper (CLIPER's recipe), mild (flip, brightness, crop >= 70%% area), "
                        "face (mild + contrast, rotation, erasing; real faces from random init), none")
    p.add_argument("--grey", action=argparse.BooleanOptionalAction, default=d.grey,
                   help="the model sees luma only (grey training data, e.g. FER2013); the engine converts its crops")
    p.add_argument("--face-margin", type=float, default=None,
                   help="how tightly the training faces are cropped, as the engine's margin around a detector box "
                        "(fraction of the box side; negative = tighter than the box); stored in the checkpoint")
    p.add_argument("--stage1-epochs", type=int, default=d.stage1_epochs)
    p.add_argument("--stage2-epochs", type=int, default=d.stage2_epochs)
    p.add_argument("--stage1-lr", type=float, default=d.stage1_lr)
    p.add_argument("--stage1-weight-decay", type=float, default=d.stage1_weight_decay)
    p.add_argument("--stage2-lr", type=float, default=d.stage2_lr)
    p.add_argument("--stage2-weight-decay", type=float, default=d.stage2_weight_decay)
    p.add_argument("--adam-eps", type=float, default=d.adam_eps)
    p.add_argument("--cosine-t0", type=int, default=d.cosine_t0)
    p.add_argument("--cosine-t-mult", type=int, default=d.cosine_t_mult)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--loader-workers", type=int, default=d.loader_workers)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=d.num_workers, help="Ray Train workers (one GPU each with --use-gpu)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=d.cpus_per_worker)
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--storage-path", default=d.storage_path, help="run storage: local folder or fsspec URI")
    p.add_argument("--name", default=d.name, help="run name (a rerun with the same name resumes)")
    p.add_argument("--export", default=None, help="write the inference checkpoint (.safetensors) here at the end")
    p.add_argument("--resume-from", default=None, help="start from this checkpoint directory")
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    p.add_argument("--max-failures", type=int, default=d.max_failures)
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k != "address"}
    if values["classes"]:
        values["classes"] = [c.strip() for c in values["classes"].split(",") if c.strip()]
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    from .model import ModelBuildError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args).validate()
    except TrainConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.address:
        import ray

        ray.init(address=args.address)
    try:
        outcome = run_training(cfg)
    except (TrainConfigError, DatasetError, TrainStateError, ModelBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    final = outcome.history[-1] if outcome.history else outcome.metrics
    print(json.dumps({
        "run_dir": outcome.run_dir, "checkpoint": outcome.checkpoint, "export": outcome.export,
        "epoch": final.get("epoch"), "war": final.get("war"), "uar": final.get("uar"),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
