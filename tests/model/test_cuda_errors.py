"""A sticky CUDA error (illegal address, launch failure, ...) ends its actor instead of becoming a failed row.

No GPU here: the errors are injected with the type and message torch 2.14 raises for them
(``torch.AcceleratorError``, a RuntimeError subclass: c10's ``AcceleratorError`` crosses into
Python as it; its message is ``CUDA error: <cudaGetErrorString>`` plus hints).
"""
from __future__ import annotations

import os
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cliper_batch import rows
from cliper_batch.failures import classify, is_sticky_cuda_error, sticky_cuda_error
from cliper_batch.pipeline import scoring_model as model_actor
from cliper_batch.pipeline.decode_stage import DecodeStage
from cliper_batch.pipeline.fused_stage import FusedStage
from cliper_batch.pipeline.scoring_model import ScoringModel
from cliper_batch.types import AnnotateConfig, VideoOutcome, VideoRef

ILLEGAL = ("CUDA error: an illegal memory access was encountered\n"
           "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below "
           "might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1")


class _Exited(BaseException):
    """What the replaced ``os._exit`` raises: the actor process would be gone."""


@pytest.fixture
def exits(monkeypatch):
    codes: list[int] = []

    def fake_exit(code):
        codes.append(code)
        raise _Exited(code)

    monkeypatch.setattr(model_actor, "_exit_process", fake_exit)
    return codes


def test_torch_raises_accelerator_error_a_runtime_error():
    assert issubclass(torch.AcceleratorError, RuntimeError)
    assert sticky_cuda_error(torch.AcceleratorError(ILLEGAL))


@pytest.mark.parametrize("error_type,message,sticky", [
    ("AcceleratorError", ILLEGAL, True),
    ("RuntimeError", "CUDA error: unspecified launch failure", True),
    ("RuntimeError", "CUDA error: device-side assert triggered", True),
    ("RuntimeError", "Triton Error [CUDA]: an illegal memory access was encountered", True),
    ("DecodeError", "nvdec: CUDA_ERROR_ILLEGAL_ADDRESS while decoding", True),  # wrapped by a decoder: still sticky
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm", True),
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", False),
    ("AcceleratorError", "CUDA error: invalid argument", False),
    ("DecodeError", "truncated file: 3 of 8 frames", False),
    ("ProbeError", None, False),
    (None, None, False),
])
def test_the_sticky_predicate(error_type, message, sticky):
    assert is_sticky_cuda_error(error_type, message) is sticky


def test_a_sticky_error_as_the_cause_counts_and_a_recorded_one_is_transient():
    try:
        try:
            raise torch.AcceleratorError(ILLEGAL)
        except RuntimeError as inner:
            raise ValueError("crop failed") from inner
    except ValueError as exc:
        assert sticky_cuda_error(exc)
    assert classify("AcceleratorError") == "transient"


class _FakeAnnotator:
    def __init__(self, outcome_of):
        self.outcome_of = outcome_of

    def annotate(self, ref):
        yield self.outcome_of(ref)


def _refs(*names):
    return {"ref": np.array([rows.encode_ref(VideoRef(video_id=n, uri=f"/v/{n}")) for n in names], dtype=object)}


def _failed(error_type, error):
    return lambda ref: VideoOutcome(ref=ref, status="failed", error=error, error_type=error_type)


def _fused(outcome_of) -> FusedStage:
    """The fused stage's shell around a fake per-video algorithm (no model: nothing gets scored)."""
    stage = object.__new__(FusedStage)
    stage.config = AnnotateConfig(batch_size=2)
    stage.annotator = _FakeAnnotator(outcome_of)
    stage._queue, stage._queued_clips, stage.batches = deque(), 0, deque()
    stage._end_actor_if_cuda_broken = model_actor.end_actor_if_cuda_broken
    stage.scorer = SimpleNamespace(scored_block=lambda block, is_seg, clips, t: block)  # outcome rows only
    return stage


def _decode(outcome_of) -> DecodeStage:
    stage = object.__new__(DecodeStage)
    stage.crop_shape = (2, 4, 4, 3)
    stage.annotator = _FakeAnnotator(outcome_of)
    stage._end_actor_if_cuda_broken = model_actor.end_actor_if_cuda_broken
    return stage


@pytest.mark.parametrize("make", [_fused, _decode], ids=["fused", "staged-decode"])
def test_a_video_failed_by_a_sticky_cuda_error_ends_the_actor(make, exits):
    with pytest.raises(_Exited):
        list(make(_failed("AcceleratorError", ILLEGAL))(_refs("a.mp4")))
    assert exits == [model_actor.CUDA_BROKEN_EXIT]


@pytest.mark.parametrize("make", [_fused, _decode], ids=["fused", "staged-decode"])
def test_other_failures_stay_rows(make, exits):
    blocks = list(make(_failed("DecodeError", "truncated"))(_refs("a.mp4", "b.mp4")))
    assert exits == []
    kinds = [k for b in blocks for k in b["row_kind"]]
    assert kinds == [rows.VIDEO, rows.VIDEO]


def _scorer(error: BaseException) -> ScoringModel:
    m = object.__new__(ScoringModel)
    m.busy_s = 0.0

    def fail(clips):
        raise error

    m._score = fail
    return m


def test_a_sticky_cuda_error_while_scoring_ends_the_actor(exits):
    with pytest.raises(_Exited):
        _scorer(torch.AcceleratorError(ILLEGAL)).score(torch.zeros(1, 2, 3, 4, 4))
    assert exits == [model_actor.CUDA_BROKEN_EXIT]


def test_an_out_of_memory_error_while_scoring_fails_the_task_only(exits):
    with pytest.raises(torch.OutOfMemoryError):
        _scorer(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")).score(torch.zeros(1, 2, 3, 4, 4))
    assert exits == []


# --------------------------------------------------------------------------- fractional GPUs (issue 24, item 8)


def test_gpu_memory_fraction_from_the_actor_share():
    assert model_actor.gpu_memory_fraction(None) is None
    assert model_actor.gpu_memory_fraction(1.0) is None and model_actor.gpu_memory_fraction(2.0) is None
    assert model_actor.gpu_memory_fraction(0.0) is None
    assert model_actor.gpu_memory_fraction(0.5) == pytest.approx(0.475)
    assert model_actor.gpu_memory_fraction(0.25) == pytest.approx(0.2375)
    two = model_actor.gpu_memory_fraction(0.5)
    assert 2 * two < 1.0  # two actors on one card leave room for their CUDA contexts


def test_the_cap_is_set_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append((f, d)))
    assert model_actor.cap_gpu_memory(torch.device("cpu"), 0.5) is None
    assert model_actor.cap_gpu_memory(torch.device("cuda:1"), 1.0) is None
    assert model_actor.cap_gpu_memory(torch.device("cuda:1"), 0.5) == pytest.approx(0.475)
    assert calls == [(pytest.approx(0.475), torch.device("cuda:1"))]
    assert model_actor.actor_gpu_share() is None  # not in a Ray actor


def test_a_sticky_cuda_error_restarts_the_actor_and_the_video_is_annotated(ray_runtime, tiny_checkpoint, tmp_path):
    """Through Ray: the first attempt at one video breaks the actor's CUDA context; the actor ends, Ray restarts
    it and retries the block, and every video is annotated (nothing recorded as bad data)."""
    import ray.cloudpickle

    import faulty_stage
    from cliper_batch.output import query
    from cliper_batch.pipeline.run import RunOptions, Stages, annotate, describe_model
    from cliper_batch.synthetic import write_expression_video

    ray.cloudpickle.register_pickle_by_value(faulty_stage)  # workers can't import tests/
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = ["g0.mp4", "cuda_fault.mp4", "g1.mp4"]
    for seed, name in enumerate(names):
        write_expression_video(str(corpus / name), [(0, 1, "happy")], codec="h264", fps=10, size=(96, 72), seed=seed + 1)
    cfg = AnnotateConfig(segment_seconds=1.0, frames_per_segment=2, batch_size=4, decoder="pyav", faces="none")
    s = annotate(str(corpus), str(tmp_path / "out"), tiny_checkpoint, cfg, stages=Stages(fused=faulty_stage.CudaFaultFusedStage),
                 options=RunOptions(worker="fused", videos_per_task=1, score_workers=1),
                 model_info=describe_model(tiny_checkpoint))
    assert os.path.exists(str(corpus / "cuda_fault.mp4") + ".faulted")  # the fault did happen
    assert (s.videos_ok, s.videos_failed) == (3, 0)
    v = query.scan_videos(str(tmp_path / "out")).collect()
    assert sorted(v["status"].to_list()) == ["ok"] * 3
