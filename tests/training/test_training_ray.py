"""Two-stage CLIPER training on a real Ray Train cluster (2 CPU workers, DDP over gloo).

One run trains 1 stage-1 epoch; a rerun under the same name with more epochs
must resume at epoch 2 with the optimizer state restored, then switch to stage
2 and export. The per-epoch checkpoints are compared to check what each stage
may change, and the exported inference checkpoint is loaded the way the
annotate job does and must reproduce the trained model's predictions.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.training.state import METRICS_FILE, STATE_FILE, TrainState, TrainStateError, check_compatible, load_state
from cliper_batch.training.config import TrainConfig, TrainConfigError
from cliper_batch.training.train import build_parser, config_from_args

TINY = "openclip:Tiny-ViT-T-16"


# ------------------------------------------------------------------ no Ray needed


def test_config_validation_and_cli():
    base = dict(train_data="/d/labels.parquet")
    TrainConfig(**base).validate()
    with pytest.raises(TrainConfigError, match="test split equals the training split"):
        TrainConfig(**base, test_split="train").validate()
    with pytest.raises(TrainConfigError, match="at least one epoch"):
        TrainConfig(**base, stage1_epochs=0, stage2_epochs=0).validate()
    with pytest.raises(TrainConfigError, match="must end with .safetensors"):
        TrainConfig(**base, export="/x/model.pt").validate()
    with pytest.raises(TrainConfigError, match="batch_size"):
        TrainConfig(**base, batch_size=2, num_workers=4).validate()
    args = build_parser().parse_args([
        "--train-data", "dfew:/data/DFEW?fold=1", "--model", "openclip:ViT-B-16@openai", "--num-workers", "4",
        "--use-gpu", "--stage2-epochs", "10", "--classes", "neutral,happy", "--export", "s3://b/m.safetensors",
    ])
    cfg = config_from_args(args).validate()
    assert (cfg.num_workers, cfg.use_gpu, cfg.stage2_epochs, cfg.classes) == (4, True, 10, ["neutral", "happy"])
    # CLIPER's defaults
    assert (cfg.stage1_epochs, cfg.stage1_lr, cfg.stage1_weight_decay, cfg.adam_eps) == (2, 1e-2, 0.0, 1e-4)
    assert (cfg.stage2_lr, cfg.stage2_weight_decay, cfg.cosine_t0, cfg.cosine_t_mult) == (5e-6, 0.1, 10, 1)
    assert (cfg.batch_size, cfg.temperature, cfg.descriptors_per_class) == (128, 0.01, 5)
    assert cfg.template == "an ID photo of X X X X."
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_resume_refuses_another_setup():
    state = TrainState(
        epoch=1, stage=1, global_step=3, model_spec=TINY, classes=list(CANONICAL_CLASSES), descriptors_per_class=5,
        template="an ID photo of X X X X.", text_fingerprint="abc", ctx=torch.zeros(1), visual={},
        descriptors=torch.zeros(1), optimizer={}, scheduler={},
    )
    same = state.identity()
    check_compatible(state, same, "ckpt")
    with pytest.raises(TrainStateError, match="descriptors_per_class: checkpoint 5 vs now 3"):
        check_compatible(state, {**same, "descriptors_per_class": 3}, "ckpt")
    with pytest.raises(TrainStateError, match="text_fingerprint"):
        check_compatible(state, {**same, "text_fingerprint": "other"}, "ckpt")


# ------------------------------------------------------------------ Ray Train


@pytest.fixture(scope="module")
def ray_cluster(ray_runtime):
    """The session's embedded Ray (tests/conftest.py): one runtime per test process, 2 CPUs."""
    yield


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> str:
    from cliper_batch.synthetic import write_image_dataset

    return write_image_dataset(str(tmp_path_factory.mktemp("faces")), n_per_class=6, seed=0, size=64)


def _state(run_dir: str, epoch: int) -> TrainState:
    return load_state(os.path.join(run_dir, f"epoch_{epoch:04d}"))


def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_stage_training_resume_freeze_and_export(ray_cluster, faces, tmp_path):
    from cliper_batch.training.clips import ClipDataset
    from cliper_batch.training.datasets import load_manifest
    from cliper_batch.training.model import build_training_model
    from cliper_batch.training.train import run_training

    storage = str(tmp_path / "runs")
    export = str(tmp_path / "cliper.safetensors")
    common = dict(train_data=faces, model=TINY, batch_size=16, eval_batch_size=64, loader_workers=0, num_workers=2,
                  storage_path=storage, name="tiny", keep_checkpoints=10, stage2_lr=1e-4)
    train_set, test_set = load_manifest(faces, "train"), load_manifest(faces, "test")
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / 2) / 8)  # N over 2 workers, 16 / 2 per worker per step

    # ---- run 1: one stage-1 epoch
    first = run_training(TrainConfig(**common, stage1_epochs=1, stage2_epochs=0))
    run_dir = first.run_dir
    assert [r["epoch"] for r in first.history] == [1]
    assert os.path.isfile(os.path.join(run_dir, "epoch_0001", STATE_FILE))
    row1 = first.history[0]
    assert row1["stage"] == 1 and row1["world_size"] == 2 and row1["global_step"] == steps_per_epoch
    assert row1["train_samples"] in (len(train_set), len(train_set) + 1)  # DistributedSampler pads to even
    assert row1["test_samples"] == len(test_set) and sum(map(sum, row1["confusion"])) == len(test_set)
    assert 0.0 <= row1["uar"] <= 1.0 and 0.0 <= row1["war"] <= 1.0 and row1["train_loss"] > 0
    assert first.metrics["epoch"] == 1 and "war" in first.metrics  # what ray.train.report got
    s1 = _state(run_dir, 1)
    assert s1.stage == 1 and s1.epoch == 1
    assert max(int(v["step"]) for v in s1.optimizer["state"].values()) == steps_per_epoch

    # ---- run 2: same run, more epochs -> resumes at epoch 2 (stage 1), then stage 2 and export
    second = run_training(TrainConfig(**common, stage1_epochs=2, stage2_epochs=2, export=export))
    assert [r["epoch"] for r in second.history] == [1, 2, 3, 4]
    assert second.history[0] == row1  # epoch 1 was not run again
    assert [r["stage"] for r in second.history] == [1, 1, 2, 2]
    assert [r["global_step"] for r in second.history] == [steps_per_epoch * i for i in (1, 2, 3, 4)]
    with open(os.path.join(run_dir, METRICS_FILE), encoding="utf-8") as fh:
        logged = [json.loads(line) for line in fh]
    assert [r["epoch"] for r in logged] == [1, 2, 3, 4] and logged[-1]["confusion"] == second.history[-1]["confusion"]

    s2, s3, s4 = (_state(run_dir, e) for e in (2, 3, 4))
    # the stage-1 optimizer continued (AdamW step count from run 1 restored), at a constant LR
    assert max(int(v["step"]) for v in s2.optimizer["state"].values()) == 2 * steps_per_epoch
    assert second.history[1]["lr"] == pytest.approx(1e-2)
    # stage 1 changes only the prompt vectors
    assert not torch.equal(s1.ctx, s2.ctx)
    assert _tensors_equal(s1.visual, s2.visual)
    # stage 2 changes only the image tower; descriptors = the stage-1 prompts, fixed
    assert torch.equal(s2.ctx, s3.ctx) and torch.equal(s3.ctx, s4.ctx)
    assert not _tensors_equal(s2.visual, s3.visual) and not _tensors_equal(s3.visual, s4.visual)
    assert torch.equal(s3.descriptors, s4.descriptors)
    tm = build_training_model(TINY, CANONICAL_CLASSES, 5)
    assert tm.text_fingerprint == s2.text_fingerprint
    with torch.no_grad():
        tm.prompts.ctx.copy_(s2.ctx)
        torch.testing.assert_close(tm.prompt_descriptors(), s3.descriptors, rtol=0, atol=1e-6)
    # cosine schedule stepped once per stage-2 epoch, starting at the stage-2 LR
    assert second.history[2]["lr"] == pytest.approx(1e-4)
    assert s4.scheduler["last_epoch"] == 2 and second.history[3]["lr"] < 1e-4

    # ---- the export loads like the annotate job loads it, and predicts what the trained model predicts
    from cliper_batch.model.factory import load_model

    loaded = load_model(export)
    model = loaded.model
    assert loaded.classes == CANONICAL_CLASSES and model.descriptors_per_class == 5
    assert torch.equal(model.descriptors, s4.descriptors)
    assert _tensors_equal(model.visual.state_dict(), s4.visual)
    ds = ClipDataset(test_set, train=False, image_size=model.image_size, mean=model.mean, std=model.std)
    clips = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(clips)  # [N, C, K]
        tm.cliper.visual.load_state_dict(s4.visual)
        tm.cliper.descriptors.copy_(s4.descriptors)
        tm.cliper.eval()
        reference = tm.cliper(clips)
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-4)
    pred = logits.mean(dim=-1).argmax(dim=-1)
    confusion = torch.zeros(7, 7, dtype=torch.int64)
    for t, p in zip(labels.tolist(), pred.tolist()):
        confusion[t, p] += 1
    assert confusion.tolist() == second.history[-1]["confusion"]  # same predictions as the final evaluation

    # ---- a new run started from a given checkpoint directory (--resume-from)
    branch = run_training(TrainConfig(**{**common, "name": "branch"}, stage1_epochs=2, stage2_epochs=1,
                                      max_steps_per_epoch=1, resume_from=os.path.join(run_dir, "epoch_0002")))
    assert [r["epoch"] for r in branch.history] == [1, 2, 3] and branch.history[:2] == second.history[:2]
    assert branch.history[2]["global_step"] == 2 * steps_per_epoch + 1
    b3 = _state(branch.run_dir, 3)
    assert torch.equal(b3.ctx, s2.ctx) and not _tensors_equal(b3.visual, s2.visual)

    # ---- a warm restart (--restart-schedule): epoch 3's weights, a new optimizer and cosine cycle at a new lr
    warm = run_training(TrainConfig(**{**common, "name": "warm", "stage2_lr": 3e-4}, stage1_epochs=2,
                                    stage2_epochs=3, max_steps_per_epoch=1, cosine_t0=2, restart_schedule=True,
                                    resume_from=os.path.join(run_dir, "epoch_0003")))
    assert [r["epoch"] for r in warm.history] == [1, 2, 3, 4, 5] and warm.history[:3] == second.history[:3]
    assert warm.history[3]["lr"] == pytest.approx(3e-4)  # the new cycle's start, not epoch 4's scheduled 1e-4 cosine
    w4 = _state(warm.run_dir, 4)
    assert max(int(v["step"]) for v in w4.optimizer["state"].values()) == 1  # AdamW state new: one step
    assert torch.equal(w4.descriptors, s3.descriptors)  # the fixed descriptors carried over, not fixed again
    assert w4.scheduler["T_0"] == 2 and warm.history[4]["lr"] < 3e-4
    with pytest.raises(TrainConfigError, match="--restart-schedule needs --resume-from"):
        TrainConfig(**common, restart_schedule=True).validate()
