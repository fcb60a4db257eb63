"""Two-stage CLIPER fine-tuning on Ray Train (``python -m cliper_batch.training.train ...`` or via ``ray job submit``).

This module is the driver and its command line: :func:`run_training` checks the
options (:mod:`.config`) and the datasets on the driver, then runs a Ray Train
``TorchTrainer`` whose workers run :func:`.loop.train_loop_per_worker` (the
recipe, checkpoints, resume and the ``--export`` of the inference checkpoint:
see :mod:`.loop`); :func:`main` is ``python -m cliper_batch.training.train``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from .clips import AUGMENTATIONS
from .config import PRECISIONS, TrainConfig, TrainConfigError
from .datasets import DatasetError, parse_dataset_spec
from .loop import load_sets
from .prompts import CTX_INITS
from .state import TrainStateError, load_state

log = logging.getLogger("cliper_batch.training")


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
    ``__main__``, a name the workers cannot import; the worker function lives in
    :mod:`.loop` (never run as ``__main__``) and is shipped by its module's one
    name, ``cliper_batch.training.loop``, however this file was started.
    """
    from cliper_batch.training.loop import train_loop_per_worker

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
    p.add_argument("--restart-schedule", action="store_true",
                   help="with --resume-from: its weights, but a new optimizer and LR schedule from this run's "
                        "settings (a warm restart, e.g. a shorter cosine cycle at a lower lr)")
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
