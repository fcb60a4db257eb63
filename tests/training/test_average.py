"""Checkpoint averaging (cliper_batch/training/average.py): the mean of the image towers, batch-norm statistics
recomputed, the average evaluated, saved as a training checkpoint and exported as the annotate job loads it."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.training.average import average, average_towers, main, recompute_batch_norm
from cliper_batch.training.config import TrainConfig
from cliper_batch.training.state import TrainState, TrainStateError, load_state, save_state

MODEL = "openclip:FER-ResNet18-W32"  # the shipped real-face model's tower: it has batch norm


def test_recompute_batch_norm_is_the_cumulative_mean_over_the_batches():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(5.0)  # stale statistics from another set of weights
    bn.eval()
    batches = [torch.randn(8, 3) * s + m for s, m in ((1.0, 0.0), (2.0, 1.0), (0.5, -3.0))]
    used = recompute_batch_norm(bn, batches, bn)
    assert used == 3 and not bn.training and bn.momentum == 0.1  # mode and momentum restored
    torch.testing.assert_close(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0))
    assert int(bn.num_batches_tracked) == 3
    assert recompute_batch_norm(bn, batches, bn, max_batches=1) == 1
    torch.testing.assert_close(bn.running_mean, batches[0].mean(0))
    assert recompute_batch_norm(nn.Linear(3, 3), batches, lambda b: None) == 0  # no batch norm: nothing to do


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> str:
    from cliper_batch.synthetic import write_image_dataset

    return write_image_dataset(str(tmp_path_factory.mktemp("faces")), n_per_class=3, seed=0, size=64)


def _states(tmp_path, cfg: TrainConfig) -> list[str]:
    """Two stage-2 checkpoints of one 'run': same prompts and descriptors, towers that differ."""
    from cliper_batch.training.model import build_training_model

    tm = build_training_model(cfg.model, CANONICAL_CLASSES, cfg.descriptors_per_class, template=cfg.template,
                              temperature=cfg.temperature, seed=cfg.seed, ctx_init=cfg.ctx_init)
    tm.fix_descriptors(cfg.center_descriptors)
    base = {k: v.detach().clone() for k, v in tm.cliper.visual.state_dict().items()}
    dirs = []
    for i, shift in enumerate((0.01, -0.03)):
        g = torch.Generator().manual_seed(i)
        visual = {k: (v + shift * torch.randn(v.shape, generator=g) if v.is_floating_point() else v + i)
                  for k, v in base.items()}
        d = str(tmp_path / f"epoch_{i + 2:04d}")
        save_state(TrainState(
            epoch=i + 2, stage=2, global_step=10 * (i + 1), model_spec=cfg.model, classes=list(CANONICAL_CLASSES),
            descriptors_per_class=cfg.descriptors_per_class, template=cfg.template,
            text_fingerprint=tm.text_fingerprint, ctx=tm.prompts.ctx.detach().clone(), visual=visual,
            descriptors=tm.cliper.descriptors.detach().clone(), optimizer={}, scheduler={},
            history=[{"epoch": e, "war": 0.1, "train_loss": 1.0} for e in range(1, i + 3)],
        ), d)
        dirs.append(d)
    return dirs


def test_average_writes_a_checkpoint_and_an_export_the_job_loads(faces, tmp_path):
    from cliper_batch.model.checkpoint import read_checkpoint_header
    from cliper_batch.model.factory import load_model

    export = str(tmp_path / "avg.safetensors")
    cfg = TrainConfig(train_data=faces, model=MODEL, descriptors_per_class=2, batch_size=8, eval_batch_size=16,
                      loader_workers=0, grey=True, augment="face", export=export, name="avg")
    a, b = _states(tmp_path, cfg)
    sa, sb = load_state(a), load_state(b)
    out = str(tmp_path / "avg")
    row = average(cfg, [a, b], out, bn_batches=2)

    assert row["averaged_from"] == [a, b] and row["bn_batches"] == 2 and row["epoch"] == 3
    assert 0.0 <= row["war"] <= 1.0 and row["test_samples"] > 0 and sum(map(sum, row["confusion"])) == row["test_samples"]
    st = load_state(out)
    assert st.epoch == 3 and st.stage == 2 and st.history[-1]["averaged_from"] == [a, b] and len(st.history) == 4
    assert torch.equal(st.descriptors, sb.descriptors) and torch.equal(st.ctx, sb.ctx)
    norms = {k.rsplit(".", 1)[0] for k in st.visual if k.endswith("running_mean")}
    assert norms, "the tower has no batch norm: the test would not check the statistics"
    for key, value in st.visual.items():
        layer, name = key.rsplit(".", 1) if "." in key else ("", key)
        if layer in norms and name in ("running_mean", "running_var"):
            assert not torch.allclose(value, sa.visual[key]) and not torch.allclose(value, sb.visual[key]), key
        elif layer in norms and name == "num_batches_tracked":
            assert int(value) == 2, key  # recomputed over the 2 batches
        else:  # weights and biases: the mean of the two
            torch.testing.assert_close(value, (sa.visual[key] + sb.visual[key]) / 2, rtol=0, atol=1e-6)

    loaded = load_model(export)
    assert loaded.classes == CANONICAL_CLASSES
    for key, value in loaded.model.visual.state_dict().items():
        torch.testing.assert_close(value, st.visual[key], rtol=0, atol=0)
    training = read_checkpoint_header(export).config["extra"]["training"]
    assert training["averaged_from"] == [a, b] and training["final"]["epoch"] == 3


def test_checkpoints_that_do_not_belong_together_are_refused(faces, tmp_path, capsys):
    cfg = TrainConfig(train_data=faces, model=MODEL, descriptors_per_class=2, name="avg")
    a, b = _states(tmp_path, cfg)
    sa, sb = load_state(a), load_state(b)
    with pytest.raises(TrainStateError, match="at least two"):
        average_towers([sa])
    sb.descriptors = sb.descriptors + 0.1
    with pytest.raises(TrainStateError, match="different descriptors"):
        average_towers([sa, sb])
    sb = load_state(b)
    sb.stage = 1
    with pytest.raises(TrainStateError, match="stage-2"):
        average_towers([sa, sb])
    # the command line: an error line and exit 2, no traceback
    rc = main(["--train-data", faces, "--model", MODEL, "--descriptors-per-class", "2", "--checkpoints", a,
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "at least two" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")
