"""The Ray Train worker of a training run: data, model, restore, the two stages' epochs, checkpoints, export.

Stage 1 learns the METD prompt vectors with both towers frozen (AdamW lr 1e-2,
wd 0, eps 1e-4, constant LR, 2 epochs); stage 2 encodes the prompts once into
fixed descriptors and fine-tunes only the image tower (AdamW lr 5e-6, wd 0.1,
eps 1e-4, CosineAnnealingWarmRestarts(T_0=10, T_mult=1) stepped per epoch).
Both use CLIPER's loss (:mod:`.losses`) at temperature 0.01, batch 128 - all
configurable (:class:`~.config.TrainConfig`). Epochs are numbered across the stages
(CLIPER: 1-2 stage 1, 3-59 stage 2).

Distribution: a Ray Train ``TorchTrainer`` (started by :mod:`.train`) runs
:func:`train_loop_per_worker` on ``num_workers`` workers (DDP via
``ray.train.torch.prepare_model``; the batch size is global, split evenly over
workers). After every epoch all workers call ``ray.train.report`` (a barrier);
rank 0 alone writes the checkpoint (``train_state.pt`` + ``metrics.jsonl``) and
rewrites ``<storage_path>/<name>/metrics.jsonl``. A rerun with the same
``--name`` and ``--storage-path`` resumes from the latest checkpoint
(``ray.train.get_checkpoint``); ``--resume-from DIR`` starts a new run from a
given checkpoint directory. Evaluation is exact: each worker scores a disjoint
shard of the test set and the confusion matrices are summed.

At the end, ``--export PATH.safetensors`` writes the inference checkpoint
(image tower + fixed descriptors, no text tower) with
:func:`cliper_batch.model.checkpoint.save_checkpoint`; the annotate job loads it
with ``cliper_batch.model.factory.load_model(PATH)``.
"""
from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .datasets import DatasetError, LabeledSet, load_dataset, remap_to
from .losses import cliper_loss
from .metrics import confusion_matrix, scores_from_confusion
from .state import METRICS_FILE, TrainState, TrainStateError, check_compatible, load_state, metrics_jsonl, save_state

log = logging.getLogger("cliper_batch.training")


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
def evaluate(tm, stage: int, loader, device, cfg: TrainConfig, soft: bool) -> dict[str, Any]:
    """Loss, WAR, UAR, per-class recall and the confusion matrix of ``tm`` on ``loader`` (summed over workers)."""
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


def export_model(tm, cfg: TrainConfig, history: list[dict[str, Any]], last_stage: int) -> str:
    """Write the inference checkpoint (``cfg.export``) of ``tm`` as trained so far; its URI."""
    from cliper_batch.model.checkpoint import save_checkpoint

    if last_stage == 1:
        tm.fix_descriptors(cfg.center_descriptors)
    final = history[-1] if history else {}
    tm.cliper.set_preprocessing(grey=cfg.grey, face_margin=cfg.face_margin)  # what the engine must do to a crop
    uri = save_checkpoint(tm.cliper, cfg.export, extra={"training": {
        "run": cfg.name, "train_data": cfg.train_data, "test_data": cfg.test_data or cfg.train_data,
        "epochs": len(history), "stage1_epochs": cfg.stage1_epochs, "stage2_epochs": cfg.stage2_epochs,
        "final": {k: final.get(k) for k in ("epoch", "war", "uar", "test_loss", "train_loss")},
        **({"averaged_from": final["averaged_from"]} if "averaged_from" in final else {}),
    }})
    log.info("exported the inference checkpoint to %s", uri)
    return uri


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


def _restore(cfg: TrainConfig, tm, identity: dict[str, Any]) -> tuple[TrainState | None, bool]:
    """The state to continue from: this run's latest checkpoint, else ``--resume-from``, else None; and whether
    its optimizer and LR schedule continue (not when ``--restart-schedule`` starts them anew from ``--resume-from``)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    source = "the run's latest checkpoint"
    keep_schedule = True
    if checkpoint is None and cfg.resume_from:
        checkpoint = ray.train.Checkpoint(cfg.resume_from)
        source = cfg.resume_from
        keep_schedule = not cfg.restart_schedule
    if checkpoint is None:
        return None, True
    with checkpoint.as_directory() as directory:
        state = load_state(directory)
    check_compatible(state, identity, f"{source} ({checkpoint.path})")
    with torch.no_grad():
        tm.prompts.ctx.copy_(state.ctx.to(tm.prompts.ctx))
        tm.cliper.visual.load_state_dict(state.visual)
        tm.cliper.descriptors.copy_(state.descriptors.to(tm.cliper.descriptors))
    return state, keep_schedule


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
    state, keep_schedule = _restore(cfg, tm, identity)
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
            if resuming_here and keep_schedule:
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
        row.update(evaluate(tm, stage, test_loader, device, cfg, soft))
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
        export_model(tm, cfg, history, current_stage or (state.stage if state else 1))
