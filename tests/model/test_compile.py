"""Device/precision selection and frame-encoder backends (eager, torch.compile, tensorrt + fallbacks)."""
from __future__ import annotations

import logging

import types

import open_clip  # noqa: F401 - a hard dependency: a broken install must fail here, not skip the module
import pytest
import torch
import torch.nn.functional as F

from cliper_batch.model.backends import (
    DEFAULT_MAX_BATCH,
    DEFAULT_OPT_BATCH,
    CompiledEncoder,
    DeviceError,
    compile_encoder,
    load_tensorrt_program,
    select_device,
    select_dtype,
    tensorrt_compile_kwargs,
)
from cliper_batch.model import Scorer, score_clips
from cliper_batch.model.cliper import score_images
from cliper_batch.model.factory import load_model
from cliper_batch.model.spec import TINY_ARCH

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def tiny():
    return load_model(f"openclip:{TINY_ARCH}").model


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_select_device():
    expected = "cuda" if HAS_CUDA else "cpu"
    assert select_device("auto").type == expected
    assert select_device("CPU") == torch.device("cpu")
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(DeviceError, match="unknown device"):
            select_device(bad)
    if HAS_CUDA:
        assert select_device("cuda:0") == torch.device("cuda", 0)
        with pytest.raises(DeviceError, match="CUDA device"):
            select_device(f"cuda:{torch.cuda.device_count()}")
    else:
        for want in ("cuda", "cuda:0"):
            with pytest.raises(DeviceError, match="CUDA is not available"):
                select_device(want)


def test_select_dtype():
    cpu = torch.device("cpu")
    assert select_dtype(cpu) == torch.float32
    assert select_dtype(cpu, "auto") == torch.float32
    assert select_dtype("cuda", None) == torch.float16
    assert select_dtype(cpu, "bf16") == torch.bfloat16
    assert select_dtype(cpu, torch.float32) == torch.float32
    with pytest.raises(DeviceError, match="fp16 on CPU"):
        select_dtype(cpu, "fp16")
    with pytest.raises(DeviceError, match="unknown precision"):
        select_dtype(cpu, "int8")
    with pytest.raises(DeviceError, match="unsupported precision"):
        select_dtype(cpu, torch.float64)


def test_eager_encoder_and_chunking(tiny):
    enc = compile_encoder(tiny, "eager", "cpu", max_batch=4)
    assert isinstance(enc, CompiledEncoder)
    assert (enc.backend, enc.requested, enc.dtype) == ("eager", "eager", torch.float32)
    x = _images(10)
    with torch.no_grad():
        ref = tiny.encode_frames(x)
    torch.testing.assert_close(enc(x), ref, atol=1e-6, rtol=1e-6)  # 10 frames in chunks of 4


def test_default_batch_profile_tunes_below_its_limit(tiny):
    """opt < max: full fused-worker batches (1024 frames) run as opt-sized chunks, the shape TensorRT tunes for."""
    assert DEFAULT_OPT_BATCH < DEFAULT_MAX_BATCH < 1024
    enc = compile_encoder(tiny, "eager", "cpu", example_batch=1024)
    assert (enc.max_batch, enc.opt_batch) == (DEFAULT_MAX_BATCH, DEFAULT_OPT_BATCH)
    calls = []
    inner = enc.fn
    enc.fn = lambda x: calls.append(x.shape[0]) or inner(x)
    x = _images(DEFAULT_MAX_BATCH + 44)
    out = enc(x)
    assert calls == [DEFAULT_OPT_BATCH, DEFAULT_OPT_BATCH, 44]
    with torch.no_grad():
        torch.testing.assert_close(out, tiny.encode_frames(x), atol=1e-5, rtol=1e-5)
    assert compile_encoder(tiny, "eager", "cpu", example_batch=64).opt_batch == 64


def test_tensorrt_kwargs_follow_the_typing_mode():
    """Explicit typing (torch-tensorrt's newer default) refuses enabled_precisions != fp32; weak typing needs it."""
    explicit = types.SimpleNamespace(dynamo=types.SimpleNamespace(_defaults=types.SimpleNamespace(USE_EXPLICIT_TYPING=True)))
    weak = types.SimpleNamespace(dynamo=types.SimpleNamespace(_defaults=types.SimpleNamespace(USE_EXPLICIT_TYPING=False)))
    assert tensorrt_compile_kwargs(explicit, torch.float16) == {}
    assert tensorrt_compile_kwargs(weak, torch.float16) == {"enabled_precisions": {torch.float16}}
    assert tensorrt_compile_kwargs(types.SimpleNamespace(), torch.bfloat16) == {"enabled_precisions": {torch.bfloat16}}


def test_saved_program_loads_without_torch_tensorrt_load(tmp_path):
    """Releases without ``torch_tensorrt.load`` fall back to ``torch.export.load`` (a real saved program here)."""
    lin = torch.nn.Linear(4, 3).eval()
    x = torch.randn(5, 4)
    path = str(tmp_path / "prog.ep")
    torch.export.save(torch.export.export(lin, (x,)), path)
    module = load_tensorrt_program(types.SimpleNamespace(), path)
    with torch.no_grad():
        torch.testing.assert_close(module(x), lin(x))
    # With a ``load`` it is used (torch_tensorrt.load returns an ExportedProgram too).
    used = []
    module = load_tensorrt_program(types.SimpleNamespace(load=lambda p: used.append(p) or torch.export.load(p)), path)
    assert used == [path]
    with torch.no_grad():
        torch.testing.assert_close(module(x), lin(x))


def test_compiled_output_far_from_eager_is_rejected_with_the_measured_cosine(tiny, caplog):
    """A compiler that silently changes results is caught by the cosine check and logged with the figure."""

    def backend_flipping_signs(gm, example_inputs):
        def run(*args):
            out = gm.forward(*args)
            return tuple(-o for o in out) if isinstance(out, (tuple, list)) else -out
        return run

    with caplog.at_level(logging.WARNING, logger="cliper_batch.model.backends"):
        enc = compile_encoder(tiny, "torch.compile", "cpu", compile_options={"backend": backend_flipping_signs})
    assert (enc.backend, enc.requested) == ("eager", "torch.compile")
    assert "min cosine -1.0000 < 0.99" in enc.reason
    assert any(r.levelno == logging.WARNING and "min cosine -1.0000" in r.getMessage() for r in caplog.records)


def test_torch_compile_matches_eager(tiny):
    enc = compile_encoder(tiny, "torch.compile", "cpu", example_batch=8)
    assert enc.backend == "torch.compile", enc.reason
    assert "min cosine vs eager 1.0000" in enc.reason
    with torch.no_grad():
        for n in (1, 5, 16):  # dynamic batch, including the padded single frame
            x = _images(n, seed=n)
            torch.testing.assert_close(enc(x), tiny.encode_frames(x), atol=1e-4, rtol=1e-4)
    assert enc.backend == "torch.compile"  # no runtime fallback happened

    crops = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    compiled_scores = Scorer(tiny, enc)(crops)
    eager_scores = score_clips(tiny, crops)
    torch.testing.assert_close(compiled_scores.probs, eager_scores.probs, atol=1e-4, rtol=1e-4)


def test_tensorrt_on_cpu_falls_back_to_eager(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="cliper_batch.model.backends"):
        enc = compile_encoder(tiny, "tensorrt", "cpu")
    assert (enc.backend, enc.requested) == ("eager", "tensorrt")
    assert "no CUDA device" in enc.reason
    assert any("requested tensorrt, using eager" in r.getMessage() for r in caplog.records)
    x = _images(3)
    torch.testing.assert_close(enc(x), tiny.encode_frames(x))


def test_torch_compile_failure_falls_back_to_eager(tiny, caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("compiler exploded")

    with caplog.at_level(logging.WARNING, logger="cliper_batch.model.backends"):
        enc = compile_encoder(tiny, "torch.compile", "cpu", compile_options={"backend": broken_backend})
    assert (enc.backend, enc.requested) == ("eager", "torch.compile")
    assert "torch.compile failed at first call" in enc.reason and "compiler exploded" in enc.reason
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    x = _images(2)
    torch.testing.assert_close(enc(x), tiny.encode_frames(x))


def test_compiler_error_on_a_later_call_switches_to_eager(tiny, caplog):
    compiles = []

    def backend_failing_on_recompile(gm, example_inputs):
        compiles.append(len(example_inputs))
        if len(compiles) > 1:
            raise RuntimeError("recompile exploded")
        return gm.forward

    enc = compile_encoder(tiny, "torch.compile", "cpu", compile_options={"backend": backend_failing_on_recompile})
    assert enc.backend == "torch.compile", enc.reason
    held_fn = enc.fn
    x = _images(4).to(memory_format=torch.channels_last)  # new strides -> dynamo recompiles
    with caplog.at_level(logging.WARNING, logger="cliper_batch.model.backends"):
        out = enc(x)
    assert len(compiles) == 2
    assert enc.backend == "eager" and "recompile exploded" in enc.reason
    torch.testing.assert_close(out, tiny.encode_frames(x), atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(held_fn(x), tiny.encode_frames(x), atol=1e-5, rtol=1e-5)
    assert len(compiles) == 2  # the old function reference stays on eager too


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="unknown compile backend"):
        compile_encoder(tiny, "onnx", "cpu")
    with pytest.raises(ValueError, match="max_batch"):
        compile_encoder(tiny, "eager", "cpu", max_batch=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_fp16_backends_match_fp32_eager(tiny):
    device = select_device("cuda")
    model = load_model(f"openclip:{TINY_ARCH}", device).model
    x = _images(33).to(device)
    with torch.no_grad():
        ref = model.encode_frames(x)
    for backend in ("eager", "torch.compile"):
        enc = compile_encoder(model, backend, device, example_batch=32)
        assert enc.backend == backend and enc.dtype == torch.float16, enc.reason
        assert F.cosine_similarity(enc(x), ref).min() > 0.999
    try:
        import torch_tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken install: the fallback path is what we test
        enc = compile_encoder(model, "tensorrt", device, example_batch=32)
        assert (enc.backend, enc.requested) == ("torch.compile", "tensorrt"), enc.reason
        assert "torch_tensorrt not importable" in enc.reason
        assert F.cosine_similarity(enc(x), ref).min() > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_tensorrt_save_load_run_mixed_batches(tmp_path):
    pytest.importorskip(
        "torch_tensorrt", reason="torch-tensorrt not installable here (TensorRT libs come from pypi.nvidia.com)"
    )
    device = select_device("cuda")
    loaded = load_model(f"openclip:{TINY_ARCH}", device)
    model = loaded.model
    cache = tmp_path / "trt-cache"
    first = compile_encoder(model, "tensorrt", device, example_batch=16, max_batch=64, cache_dir=str(cache),
                            model_id=loaded.model_id)
    assert first.backend == "tensorrt", first.reason
    assert "saved to cache" in first.reason, first.reason
    assert len(list(cache.glob("*.ep"))) == 1

    second = compile_encoder(model, "tensorrt", device, example_batch=16, max_batch=64, cache_dir=str(cache),
                             model_id=loaded.model_id)
    assert second.backend == "tensorrt" and "loaded from cache" in second.reason, second.reason
    with torch.no_grad():
        for n in (1, 7, 16, 64, 100):  # 100 > max_batch: chunked
            x = _images(n, seed=n).to(device)
            ref = model.encode_frames(x)
            for enc in (first, second):
                out = enc(x)
                assert out.shape == ref.shape and out.dtype == torch.float32
                assert F.cosine_similarity(out, ref).min() > 0.99


class _ConvTower(torch.nn.Module):
    """A conv + BatchNorm tower torch.fx can trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.proj = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.bn(self.conv(x)).mean(dim=(2, 3)))


class _BranchyConvTower(_ConvTower):
    """The same tower with data-dependent control flow, which torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if y.mean() > 0:  # data-dependent branch: symbolic tracing raises
            y = y * 2
        return self.proj(y.mean(dim=(2, 3)))


def _conv_cliper(visual: torch.nn.Module):
    from cliper_batch.model.cliper import CLIPER

    torch.manual_seed(0)
    return CLIPER(visual, F.normalize(torch.randn(3, 2, 16), dim=-1), ("a", "b", "c"), open_clip_cfg={},
                  image_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()


def test_cpu_eager_folds_batchnorm_of_the_shipped_conv_tower_on_a_copy():
    """The real-face model's ResNet tower: BatchNorm folded, channels-last, same features; the model keeps its BatchNorm."""
    model = load_model("builtin:fer2013").model
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules())
    assert bns > 0
    enc = compile_encoder(model, "eager", "cpu")
    assert enc.backend == "eager" and "BatchNorm folded into convolutions, channels-last" in enc.reason
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules()) == bns  # not changed in place
    x = torch.randn(12, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(enc(x), model.encode_frames(x), atol=1e-5, rtol=1e-4)
        # and the clip scores the job writes
        clips = x.view(3, 4, *x.shape[1:])
        got, ref = score_images(model, clips, encoder=enc), score_images(model, clips)
    torch.testing.assert_close(got.probs, ref.probs, atol=1e-5, rtol=1e-4)
    assert torch.equal(got.descriptor, ref.descriptor)


def test_cpu_eager_leaves_a_tower_without_batchnorm_as_is(tiny):
    enc = compile_encoder(tiny, "eager", "cpu")
    assert enc.backend == "eager" and enc.reason.endswith("no BatchNorm to fold")


def test_cpu_eager_falls_back_to_plain_eager_when_the_tower_cannot_be_traced(caplog):
    model = _conv_cliper(_BranchyConvTower().eval())
    with caplog.at_level(logging.INFO, logger="cliper_batch.model.backends"):
        enc = compile_encoder(model, "eager", "cpu")
    assert enc.backend == "eager" and "BatchNorm not folded" in enc.reason
    assert any("BatchNorm not folded" in r.getMessage() for r in caplog.records)
    x = _images(4)
    with torch.inference_mode():
        torch.testing.assert_close(enc(x), model.encode_frames(x), atol=1e-6, rtol=1e-6)


def test_cpu_eager_rejects_a_folded_tower_that_disagrees(monkeypatch, caplog):
    """The fold is checked against plain eager like a compiled encoder: a wrong fold leaves plain eager."""
    import torch.fx.experimental.optimization as fx_opt

    model = _conv_cliper(_ConvTower().eval())
    with torch.no_grad():
        model.visual.bn.running_mean.uniform_(-1, 1)
    broken = _ConvTower().eval()  # other weights: what a wrong fold would give
    monkeypatch.setattr(fx_opt, "fuse", lambda module, *a, **k: broken)
    with caplog.at_level(logging.WARNING, logger="cliper_batch.model.backends"):
        enc = compile_encoder(model, "eager", "cpu")
    assert enc.backend == "eager" and "BatchNorm-folded tower rejected" in enc.reason
    x = _images(4)
    with torch.inference_mode():
        torch.testing.assert_close(enc(x), model.encode_frames(x), atol=1e-6, rtol=1e-6)
