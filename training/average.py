"""Average the image towers of several training checkpoints, recompute their batch-norm statistics, evaluate.

    python -m cliper_batch.training.average --checkpoints RUN/epoch_0053 RUN2/epoch_0065 --out DIR \\
        [--export model.safetensors] [--bn-batches N] <the training run's options: --train-data, --model, --grey, ...>

Why: a run with warm restarts (SGDR, ``--restart-schedule``) ends each cosine cycle at a low learning
rate in the same basin; the mean of those snapshots' weights (stochastic weight averaging, Izmailov et
al. 2018) usually generalises better than any one of them, at no cost at inference (one model, the
same size). Only the image tower is averaged: the prompts and the fixed descriptors are the same in
every stage-2 checkpoint of one run (checked; checkpoints of different runs are refused).

Batch-norm running statistics of averaged weights are not the average of the statistics: they are
recomputed over the training set with the training transform, in cumulative mode (the mean over the
batches seen, not an exponential average), as ``torch.optim.swa_utils.update_bn`` does. A tower
without batch norm (a ViT) skips this step.

The result is a training checkpoint (``DIR/train_state.pt`` + ``metrics.jsonl``: the last
checkpoint's history plus one row for the average, evaluated on the run's test split) that
``--resume-from`` and the evaluation tools read, and with ``--export`` the inference checkpoint,
written as a training run writes it (:func:`.loop.export_model`). Model selection stays on the test
split the options name (the validation split for the shipped real-face model): compare the row's
``war`` with the single checkpoints' before shipping the average.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .loop import evaluate, export_model, load_sets
from .state import TrainState, TrainStateError, load_state, save_state
from .train import build_parser, config_from_args

log = logging.getLogger("cliper_batch.training")


def average_towers(states: Sequence[TrainState]) -> dict[str, Tensor]:
    """The element-wise mean of the image towers of ``states`` (floating tensors; integer buffers, such as
    batch norm's ``num_batches_tracked``, from the last state). Refuses states that do not belong together."""
    if len(states) < 2:
        raise TrainStateError(f"averaging needs at least two checkpoints, got {len(states)}")
    first = states[0]
    for st in states[1:]:
        if st.identity() != first.identity():
            raise TrainStateError("the checkpoints were built from different models, classes or prompts; "
                                  f"{first.identity()} vs {st.identity()}")
        if st.stage != 2 or first.stage != 2:
            raise TrainStateError("only stage-2 (image tower) checkpoints can be averaged")
        if not torch.equal(st.descriptors, first.descriptors) or not torch.equal(st.ctx, first.ctx):
            raise TrainStateError("the checkpoints have different descriptors: they come from different stage-1 "
                                  "runs, and their image towers were trained against different targets")
        if st.visual.keys() != first.visual.keys():
            raise TrainStateError("the checkpoints' image towers have different parameters")
    out = {}
    for key, last in states[-1].visual.items():
        if last.is_floating_point():
            out[key] = torch.stack([st.visual[key].double() for st in states]).mean(dim=0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def recompute_batch_norm(tower: nn.Module, batches, encode, max_batches: int | None = None) -> int:
    """Reset every batch-norm layer of ``tower`` and fill its running statistics from ``batches`` (each one
    passed to ``encode``), as the cumulative mean over them; the number of batches used (0: no batch norm)."""
    norms = [m for m in tower.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = {m: m.momentum for m in norms}
    was_training = tower.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    tower.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and used >= max_batches:
                    break
                encode(batch)
                used += 1
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        tower.train(was_training)
    return used


def average(cfg: TrainConfig, checkpoints: Sequence[str], out_dir: str, *, bn_batches: int | None = None,
            seed: int = 0) -> dict[str, Any]:
    """Average ``checkpoints`` (training-checkpoint directories of one run) into ``out_dir``; the metrics row.

    ``cfg`` is the run's training configuration (model, data, test split, transform options). With
    ``cfg.export`` set, the inference checkpoint is written too.
    """
    from torch.utils.data import DataLoader

    from .clips import ClipDataset
    from .model import build_training_model

    states = [load_state(d) for d in checkpoints]
    visual = average_towers(states)
    last = states[-1]
    torch.manual_seed(seed)
    train_set, test_set, classes = load_sets(cfg)
    if tuple(classes) != tuple(last.classes):
        raise TrainStateError(f"the options' classes {list(classes)} are not the checkpoints' {last.classes}")
    tm = build_training_model(
        cfg.model, classes, cfg.descriptors_per_class, template=cfg.template, placeholder=cfg.placeholder,
        temperature=cfg.temperature, seed=cfg.seed, ctx_init=cfg.ctx_init,
    )
    if tm.text_fingerprint != last.text_fingerprint:
        raise TrainStateError("the options build another text tower than the checkpoints' (model or template differ)")
    with torch.no_grad():
        tm.prompts.ctx.copy_(last.ctx)
        tm.cliper.visual.load_state_dict(visual)
        tm.cliper.descriptors.copy_(last.descriptors)
    kwargs = dict(image_size=tm.cliper.image_size, mean=tm.cliper.mean, std=tm.cliper.std, num_frames=cfg.num_frames,
                  classes=classes, interpolation=tm.cliper.interpolation)
    train_ds = ClipDataset(train_set, train=True, augment=cfg.augment, grey=cfg.grey, **kwargs)
    test_ds = ClipDataset(test_set, train=False, grey=cfg.grey, **kwargs)
    loader_opts = dict(num_workers=cfg.loader_workers, persistent_workers=False)

    def encode(batch) -> None:
        clips = batch[0]
        b, t = clips.shape[:2]
        tm.cliper.encode_frames(clips.reshape(b * t, *clips.shape[2:]))

    t0 = time.perf_counter()
    used = recompute_batch_norm(
        tm.cliper.visual, DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, **loader_opts), encode,
        max_batches=bn_batches,
    )
    log.info("batch norm recomputed over %d training batches in %.0f s", used, time.perf_counter() - t0)
    device = torch.device("cpu")
    row = evaluate(tm, 2, DataLoader(test_ds, batch_size=cfg.eval_batch_size, shuffle=False, **loader_opts), device,
                   cfg, train_set.has_soft_labels)
    row.update({"epoch": last.epoch, "stage": 2, "averaged_from": [str(c) for c in checkpoints],
                "bn_batches": used, "classes": list(classes),
                "train_loss": last.history[-1].get("train_loss") if last.history else None})
    history = [*last.history, row]
    save_state(TrainState(
        epoch=last.epoch, stage=2, global_step=last.global_step, model_spec=last.model_spec,
        classes=list(last.classes), descriptors_per_class=last.descriptors_per_class, template=last.template,
        text_fingerprint=last.text_fingerprint, ctx=last.ctx.clone(),
        visual={k: v.detach().cpu().clone() for k, v in tm.cliper.visual.state_dict().items()},
        descriptors=last.descriptors.clone(), optimizer=last.optimizer, scheduler=last.scheduler, history=history,
    ), out_dir)
    log.info("average of %d checkpoints: WAR %.4f, UAR %.4f on %s (%d samples); written to %s", len(states),
             row["war"], row["uar"], cfg.test_split, row["test_samples"], out_dir)
    if cfg.export:
        export_model(tm, cfg, history, 2)
    return row


def build_average_parser() -> argparse.ArgumentParser:
    p = build_parser()
    p.prog = "python -m cliper_batch.training.average"
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--checkpoints", nargs="+", required=True,
                   help="training-checkpoint directories of one run (e.g. the ends of its cosine cycles)")
    p.add_argument("--out", required=True, help="directory for the averaged training checkpoint")
    p.add_argument("--bn-batches", type=int, default=None,
                   help="training batches for the batch-norm statistics (default: one pass over the training set)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_average_parser().parse_args(argv)
    own = {k: getattr(args, k) for k in ("checkpoints", "out", "bn_batches")}
    cfg = config_from_args(argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in own}))
    torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.cpus_per_worker)))
    try:
        row = average(cfg, own["checkpoints"], own["out"], bn_batches=own["bn_batches"], seed=cfg.seed)
    except TrainStateError as exc:
        print(f"average: error: {exc}", file=sys.stderr)
        return 2
    print(f"averaged {len(own['checkpoints'])} checkpoints: WAR {row['war']:.4f} UAR {row['uar']:.4f} "
          f"on {cfg.test_split} -> {own['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
