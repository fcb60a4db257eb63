"""Worker sizing (``pipeline.sizing.size_workers``): a pure function of CPUs, GPUs, videos and model cost.

The model cost comes from a checkpoint header (``model.checkpoint.visual_gflops``); the
header estimates are checked against the shipped demo model and a real ViT-B/16 layout.
"""
from __future__ import annotations

import os

import pytest

from cliper_batch.model.checkpoint import read_checkpoint_header, visual_gflops
from cliper_batch.model.spec import inspect_model
from cliper_batch.pipeline.sizing import LIGHT_MODEL_GFLOPS, size_workers

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "models", "cliper-demo.safetensors")
LIGHT, HEAVY = 0.003, 34.0  # the demo model and ViT-B/16, GFLOPs per crop


def cpu(**kw):
    return size_workers(use_gpu=False, gpus=0, **kw)


def layout(r):
    return (r.worker, r.decode_workers, r.score_workers, r.score_threads, r.videos_per_task)


def test_light_model_one_video_gets_one_fused_actor_with_every_core():
    assert layout(cpu(cpus=2, videos=1, model_gflops=LIGHT)) == ("fused", 0, 1, 2, 1)
    assert layout(cpu(cpus=8, videos=1, model_gflops=LIGHT)) == ("fused", 0, 1, 8, 1)


def test_light_model_two_videos_run_one_core_each():
    assert layout(cpu(cpus=2, videos=2, model_gflops=LIGHT)) == ("fused", 0, 2, 1, 1)


def test_light_model_small_corpus_spreads_over_the_actors():
    # 6 videos, 2 actors: one video per task (8 per task would give one actor all six)
    r = cpu(cpus=2, videos=6, model_gflops=LIGHT, videos_per_task=8)
    assert layout(r) == ("fused", 0, 2, 1, 1)
    assert layout(cpu(cpus=4, videos=3, model_gflops=LIGHT)) == ("fused", 0, 3, 1, 1)  # 4 // 3 threads


def test_light_model_large_corpus_keeps_the_task_size_as_a_cap():
    assert cpu(cpus=2, videos=10_000, model_gflops=LIGHT, videos_per_task=8).videos_per_task == 8
    assert cpu(cpus=2, videos=40, model_gflops=LIGHT, videos_per_task=8).videos_per_task == 5  # 40 // (4 x 2)


def test_heavy_model_keeps_a_scorer_with_every_thread_fed_by_decoders():
    for videos in (1, 2, 100):
        assert layout(cpu(cpus=2, videos=videos, model_gflops=HEAVY)) == ("staged", 1, 1, 2, 8)
    assert layout(cpu(cpus=8, videos=100, model_gflops=HEAVY)) == ("staged", 7, 1, 8, 8)


def test_unknown_cost_is_treated_as_heavy():
    r = cpu(cpus=2, videos=4, model_gflops=None)
    assert layout(r) == ("staged", 1, 1, 2, 8)
    assert "unknown" in r.why


def test_the_threshold_is_inclusive_and_said_in_the_reason():
    assert cpu(cpus=2, videos=2, model_gflops=LIGHT_MODEL_GFLOPS).worker == "fused"
    r = cpu(cpus=2, videos=2, model_gflops=LIGHT_MODEL_GFLOPS * 1.01)
    assert r.worker == "staged" and f"{LIGHT_MODEL_GFLOPS}" in r.why


def test_explicit_choices_win():
    assert layout(cpu(cpus=2, videos=6, model_gflops=LIGHT, worker="staged")) == ("staged", 1, 1, 2, 8)
    assert cpu(cpus=2, videos=6, model_gflops=LIGHT, worker="staged").why == "--worker staged"
    assert layout(cpu(cpus=2, videos=6, model_gflops=HEAVY, worker="fused")) == ("fused", 0, 2, 1, 1)
    assert layout(cpu(cpus=2, videos=6, model_gflops=LIGHT, score_workers=1)) == ("fused", 0, 1, 2, 1)
    r = cpu(cpus=4, videos=6, model_gflops=LIGHT, decode_workers=2)  # only staged has decoders
    assert layout(r) == ("staged", 2, 1, 4, 8) and "--decode-workers" in r.why
    assert layout(cpu(cpus=4, videos=6, model_gflops=HEAVY, decode_workers=1, score_workers=2)) == ("staged", 1, 2, 2, 8)


def test_threads_never_span_nodes():
    # a 2-node cluster of 2 CPUs each, one video: one fused actor with its node's 2 cores, not 4
    assert layout(cpu(cpus=4, node_cpus=2, videos=1, model_gflops=LIGHT)) == ("fused", 0, 1, 2, 1)
    assert cpu(cpus=4, node_cpus=2, videos=100, model_gflops=HEAVY).score_threads == 2


def test_gpu_sizing_is_unchanged_and_spreads_small_corpora():
    r = size_workers(cpus=32, gpus=4, use_gpu=True, videos=1000, gpu_fraction=0.5)
    assert (r.worker, r.device, r.score_workers, r.score_num_gpus, r.decode_workers, r.videos_per_task) == (
        "fused", "cuda", 8, 0.5, 0, 8)
    assert size_workers(cpus=32, gpus=4, use_gpu=True, videos=12, gpu_fraction=0.5).videos_per_task == 2
    s = size_workers(cpus=32, gpus=4, use_gpu=True, videos=12, worker="staged")
    assert (s.worker, s.decode_workers, s.score_workers, s.score_num_gpus) == ("staged", 28, 4, 1.0)


def test_bad_gpu_fraction_and_worker_are_refused():
    with pytest.raises(ValueError, match="gpu_fraction"):
        cpu(cpus=2, gpu_fraction=0.0)
    with pytest.raises(ValueError, match="worker must be"):
        cpu(cpus=2, worker="both")


def vit_tensors(width: int, layers: int, patch: int, image: int) -> dict:
    """The visual tensor shapes of an open_clip ViT (no weights): what a checkpoint header lists."""
    tokens = (image // patch) ** 2 + 1
    t = {
        "visual.conv1.weight": ("F32", (width, 3, patch, patch)),
        "visual.class_embedding": ("F32", (width,)),
        "visual.positional_embedding": ("F32", (tokens, width)),
        "visual.proj": ("F32", (width, 512)),
        "descriptors": ("F32", (7, 5, 512)),  # not visual: not counted
    }
    for i in range(layers):
        b = f"visual.transformer.resblocks.{i}"
        t[f"{b}.attn.in_proj_weight"] = ("F32", (3 * width, width))
        t[f"{b}.attn.in_proj_bias"] = ("F32", (3 * width,))
        t[f"{b}.attn.out_proj.weight"] = ("F32", (width, width))
        t[f"{b}.mlp.c_fc.weight"] = ("F32", (4 * width, width))
        t[f"{b}.mlp.c_proj.weight"] = ("F32", (width, 4 * width))
    return t


def test_vit_b16_header_estimate_is_near_its_published_cost():
    g = visual_gflops(vit_tensors(768, 12, 16, 224), 224)
    assert 32.0 < g < 36.0  # published ~35 GFLOPs (17.6 GMACs) for ViT-B/16 at 224 px
    assert g > 100 * LIGHT_MODEL_GFLOPS  # far on the heavy side
    assert visual_gflops(vit_tensors(768, 12, 32, 224), 224) > 10 * LIGHT_MODEL_GFLOPS  # ViT-B/32: heavy too


def test_shipped_demo_model_is_light_from_its_header():
    header = read_checkpoint_header(DEMO)
    g = header.visual_gflops
    assert 0 < g < LIGHT_MODEL_GFLOPS / 10  # a small conv net at 64 px: no positional embedding
    assert inspect_model(DEMO).visual_gflops == g


def test_tiny_vit_checkpoint_is_light(tiny_checkpoint):
    g = inspect_model(tiny_checkpoint).visual_gflops
    assert 0 < g < LIGHT_MODEL_GFLOPS
    assert inspect_model("openclip:Tiny-ViT-T-16").visual_gflops is None  # no header: cost unknown


def test_staged_decoders_on_a_gpu_cluster_decode_and_detect_on_the_host(monkeypatch):
    """Issue 24, item 9: staged decode actors hold no GPU share, so they must not open CUDA contexts."""
    from cliper_batch.model.spec import ModelInfo
    from cliper_batch.pipeline import executors
    from cliper_batch.types import AnnotateConfig

    res = size_workers(cpus=16, gpus=2, use_gpu=True, worker="staged")
    assert (res.worker, res.device, res.decode_device, res.score_num_gpus) == ("staged", "cuda", "cpu", 1.0)
    seen = []
    monkeypatch.setattr(executors, "_refs_dataset", lambda work: "ds")
    monkeypatch.setattr(executors, "_map_batches", lambda ds, fn, **kw: seen.append((fn.__name__, kw)) or ds)
    info = ModelInfo(spec="spec", kind="test", classes=["a", "b"], descriptors_per_class=1, image_size=224, model_id="m")
    executor = executors.choose(executors.Job("spec", AnnotateConfig(), info, res), videos=3)
    assert isinstance(executor, executors.StagedRayData)
    gen = executor.batches(None)
    with pytest.raises(AttributeError):  # "ds" has no iter_batches: the stages were set up by then
        next(gen)
    decode = dict(seen)["DecodeStage"]
    assert decode["fn_constructor_kwargs"]["device"] == "cpu" and "num_gpus" not in decode
    assert dict(seen)["ScoreStage"]["fn_constructor_kwargs"]["device"] == "cuda"


def test_choose_picks_the_executor_from_the_layout_and_refuses_an_unused_replacement_stage():
    from cliper_batch.model.spec import ModelInfo
    from cliper_batch.pipeline import executors, single_actor
    from cliper_batch.types import AnnotateConfig

    info = ModelInfo(spec="spec", kind="test", classes=["a", "b"], descriptors_per_class=1, image_size=64, model_id="m")

    def job(res, **stages):
        return executors.Job("spec", AnnotateConfig(), info, res, stages=executors.Stages(**stages))

    staged = size_workers(cpus=4, gpus=0, use_gpu=False, worker="staged")
    fused_one = size_workers(cpus=4, gpus=0, use_gpu=False, worker="fused", videos=3, score_workers=1)
    fused_two = size_workers(cpus=4, gpus=0, use_gpu=False, worker="fused", videos=3, score_workers=2)
    assert isinstance(executors.choose(job(staged), 3), executors.StagedRayData)
    assert isinstance(executors.choose(job(fused_one), 3), executors.FusedSingleActor)
    assert isinstance(executors.choose(job(fused_one), single_actor.MAX_VIDEOS + 1), executors.FusedRayData)
    assert isinstance(executors.choose(job(fused_two), 3), executors.FusedRayData)
    assert {executors.choose(job(r), 3).name for r in (staged, fused_one, fused_two)} == {"ray_data", "single_actor"}

    class Replacement:
        pass

    with pytest.raises(ValueError, match="Replacement.*layout is fused"):
        executors.choose(job(fused_one, decode=Replacement), 3)
    with pytest.raises(ValueError, match="Replacement.*layout is fused"):
        executors.choose(job(fused_two, score=Replacement), 3)
    with pytest.raises(ValueError, match="Replacement.*layout is staged"):
        executors.choose(job(staged, fused=Replacement), 3)
    assert isinstance(executors.choose(job(staged, decode=Replacement), 3), executors.StagedRayData)


def test_run_options_hold_the_worker_counts():
    from cliper_batch.types import RunOptions

    assert (RunOptions().decode_workers, RunOptions().score_workers) == (None, None)
    assert RunOptions(decode_workers=2, score_workers=1).decode_workers == 2
    for name in ("decode_workers", "score_workers"):
        with pytest.raises(ValueError, match=name):
            RunOptions(**{name: 0})
