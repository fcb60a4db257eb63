"""Fused Triton crop kernel vs the torch reference (Triton interpreter on CPU), and the GPU bench's --smoke run."""
from __future__ import annotations

import os

# Must be set while the kernel module is imported (@triton.jit decides at decoration time whether a
# kernel compiles for a GPU or runs in the CPU interpreter) and while it runs (the interpreter checks
# again at launch): set here for the import, restored after it, and set per test by a fixture.
_PREV_INTERPRET = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from cliper_batch.crops.reference import CropInputError, boxes_tensor, crop_resize_normalize  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


PRIVATE_NAME = "_test_kernels_interpreted_crop_resize"


def _load_kernel_module():
    """The kernel module executed afresh in interpreter mode, under a private name and not left in sys.modules.

    Importing (or reloading) it as ``cliper_batch.kernels.crop_resize`` would leave the interpreted copy
    where the engine looks for the GPU kernel: a later test in the same session (``pytest -m gpu``) would
    find a CPU-only kernel, pick another crop backend and fail the fused GPU test.
    """
    import importlib.util

    path = REPO / "kernels" / "crop_resize.py"
    spec = importlib.util.spec_from_file_location(PRIVATE_NAME, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(mod._crop_resize_normalize_kernel, InterpretedFunction)
    return mod


try:
    kmod = _load_kernel_module()
finally:
    if _PREV_INTERPRET is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _PREV_INTERPRET
crop_resize_normalize_triton = kmod.crop_resize_normalize_triton
crop_resize_bytes_moved = kmod.crop_resize_bytes_moved


@pytest.fixture(autouse=True)
def _triton_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _frames(f: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (f, h, w, 3), dtype=torch.uint8, generator=g)


def _mixed_boxes(f: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Hand-picked edge cases plus random boxes of all sizes, some partly or fully outside the frame."""
    fixed = [
        (0, (0, 0, w, h)),  # whole frame
        (f - 1, (0, 0, 5, 5)),  # top-left corner
        (f - 1, (w - 7, h - 7, w, h)),  # bottom-right corner
        (0, (-10, -6, 12, 9)),  # partly outside, top-left
        (f - 1, (w - 5, h / 2, w + 15, h / 2 + 20)),  # partly outside, right
        (0, (-40, -40, -20, -20)),  # fully outside
        (f - 1, (w + 3, 0, w + 20, h)),  # fully outside, right
        (0, (3.3, 4.7, 3.9, 5.1)),  # tiny (sub-pixel): heavy upscaling
        (f - 1, (-w, -h, 2 * w, 2 * h)),  # larger than the frame: downscaling + padding all round
        (0, (1.25, 2.75, w - 0.5, h - 1.5)),  # fractional, nearly whole frame
    ]
    g = torch.Generator().manual_seed(seed)
    rand = []
    for _ in range(6):
        side = float(torch.empty(1).uniform_(2, 1.5 * max(h, w), generator=g))
        cx = float(torch.empty(1).uniform_(-0.2 * w, 1.2 * w, generator=g))
        cy = float(torch.empty(1).uniform_(-0.2 * h, 1.2 * h, generator=g))
        fi = int(torch.randint(0, f, (1,), generator=g))
        rand.append((fi, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
    return boxes_tensor(fixed + rand)


@pytest.mark.parametrize(
    "f,h,w,size,seed",
    [
        (3, 29, 47, 16, 0),  # landscape, several frames
        (2, 40, 23, 24, 1),  # portrait
        (1, 32, 32, 32, 2),  # square, identity-sized
    ],
)
def test_kernel_matches_reference_fp32(f, h, w, size, seed):
    frames = _frames(f, h, w, seed)
    boxes = _mixed_boxes(f, h, w, seed)
    got = crop_resize_normalize_triton(frames, boxes, size)
    ref = crop_resize_normalize(frames, boxes, size)
    assert got.shape == (boxes.shape[0], 3, size, size) and got.dtype == torch.float32
    assert (got - ref).abs().max().item() <= 1e-2
    # Fully-outside boxes (rows 5 and 6) normalise to exactly 0.
    assert got[5:7].abs().max().item() == 0.0


def test_kernel_half_precision_outputs():
    frames = _frames(2, 21, 30, 3)
    boxes = _mixed_boxes(2, 21, 30, 3)
    ref = crop_resize_normalize(frames, boxes, 16)
    h = crop_resize_normalize_triton(frames, boxes, 16, out_dtype=torch.float16)
    b = crop_resize_normalize_triton(frames, boxes, 16, out_dtype=torch.bfloat16)
    assert h.dtype == torch.float16 and b.dtype == torch.bfloat16
    assert (h.float() - ref).abs().max().item() <= 2e-2  # fp16: ~1e-3 relative on values up to ~2.2
    assert (b.float() - ref).abs().max().item() <= 3e-2  # bf16: 8-bit mantissa


def test_kernel_partial_tiles_non_contiguous_frames_and_out_buffer():
    frames = _frames(2, 26, 34, 4)
    view = frames.transpose(1, 2)  # [2, 34, 26, 3] view with non-standard strides
    boxes = _mixed_boxes(2, 34, 26, 4)
    ref = crop_resize_normalize(view.contiguous(), boxes, 20)
    out = torch.full((boxes.shape[0], 3, 20, 20), float("nan"))
    got = crop_resize_normalize_triton(view, boxes, 20, out=out, block=64)  # 400 px -> 7 tiles, last one partial
    assert got is out
    assert (got - ref).abs().max().item() <= 1e-2


def test_kernel_custom_stats_and_empty_boxes():
    frames = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    out = crop_resize_normalize_triton(frames, boxes_tensor([(0, (0, 0, 8, 8))]), 4, mean=(0.5, 0.5, 0.5),
                                       std=(0.5, 0.25, 1.0))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 2.0, 0.5]))
    empty = crop_resize_normalize_triton(frames, torch.zeros((0, 5)), 4)
    assert empty.shape == (0, 3, 4, 4)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"frames": torch.zeros((1, 8, 8, 3), dtype=torch.float32)}, "uint8"),
        ({"frames": torch.zeros((1, 8, 8), dtype=torch.uint8)}, r"\[F, H, W, 3\]"),
        ({"boxes": torch.zeros((2, 4))}, r"\[N, 5\]"),
        ({"boxes": torch.zeros((1, 5), dtype=torch.int32)}, "floating"),
        ({"boxes": torch.tensor([[2.0, 0, 0, 4, 4]])}, "box 0"),
        ({"boxes": torch.tensor([[0.0, 4, 0, 4, 4]])}, "x1 > x0"),
        ({"size": 0}, "size"),
        ({"out_dtype": torch.int8}, "out_dtype"),
        ({"std": (1.0, 0.0, 1.0)}, "std"),
        ({"out": torch.empty((1, 3, 4, 5))}, "out must be"),
        ({"block": 48}, "power of two"),
    ],
)
def test_kernel_rejects_bad_inputs(kwargs, msg):
    args = {"frames": torch.zeros((1, 8, 8, 3), dtype=torch.uint8), "boxes": torch.tensor([[0.0, 0, 0, 4, 4]]),
            "size": 4}
    args.update(kwargs)
    with pytest.raises(CropInputError, match=msg):
        crop_resize_normalize_triton(**args)


def test_kernel_module_runs_in_the_interpreter():
    assert kmod._interpreting()


def test_kernel_requires_cuda_outside_the_interpreter(monkeypatch):
    monkeypatch.setattr(kmod, "_interpreting", lambda: False)  # as if compiled for a GPU
    frames = torch.zeros((1, 8, 8, 3), dtype=torch.uint8)
    with pytest.raises(CropInputError, match="CUDA"):
        crop_resize_normalize_triton(frames, torch.tensor([[0.0, 0, 0, 4, 4]]), 4)


def test_bytes_moved_counts_distinct_taps():
    # Whole 32x32 frame at size 32: every pixel read once (the zero-weight tap past the edge is outside).
    ident = crop_resize_bytes_moved((1, 32, 32, 3), boxes_tensor([(0, (0, 0, 32, 32))]), 32)
    assert ident["read"] == 32 * 32 * 3 + 5 * 4
    assert ident["written"] == 3 * 32 * 32 * 4
    assert ident["total"] == ident["read"] + ident["written"]
    shape = (1, 32, 48, 3)
    # Same box in a wider frame: the zero-weight tap in column 32 is inside the frame and is loaded.
    wide = crop_resize_bytes_moved(shape, boxes_tensor([(0, (0, 0, 32, 32))]), 32)
    assert wide["read"] == 32 * 33 * 3 + 5 * 4
    # 2x downscale of a 32x32 box: taps 2j, 2j+1 -> all 32 rows and columns again.
    down = crop_resize_bytes_moved(shape, boxes_tensor([(0, (8, 0, 40, 32))]), 16, torch.float16)
    assert down["read"] == 32 * 32 * 3 + 20 and down["written"] == 3 * 16 * 16 * 2
    # Fully outside: no frame bytes read, output still written.
    out = crop_resize_bytes_moved(shape, boxes_tensor([(0, (100, 100, 140, 140))]), 8)
    assert out["read"] == 20 and out["written"] == 3 * 8 * 8 * 4
    assert crop_resize_bytes_moved(shape, torch.zeros((0, 5)), 8)["total"] == 0


def test_gpu_bench_smoke_runs_on_cpu(tmp_path):
    """python -m bench.gpu.run --smoke: every section ends ok or skipped with a reason; the kernel checks out."""
    out = tmp_path / "gpu_bench.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu.run", "--smoke", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    sections = res["sections"]
    for name, sec in sections.items():
        assert sec["status"] in ("ok", "skipped"), (name, sec)
        if sec["status"] == "skipped":
            assert sec["reason"], name
    assert sections["model.eager_fp32"]["status"] == "ok"
    assert all(p["crops_per_s"] > 0 for p in sections["model.eager_fp32"]["points"])
    assert sections["model.cudagraph_fp16"]["status"] == "skipped"
    k = sections["kernel"]
    assert k["interpreted"] and k["correct"] and k["max_abs_err_fp32"] <= 1e-2
    assert sections["flops"]["measured_flops"] == sections["flops"]["analytic_flops"]
    assert sections["decode"]["status"] in ("ok", "skipped")
    assert "| eager_fp32 |" in proc.stdout


# --------------------------------------------------------------------------- issue 24: items 2, 3, 6


def test_the_interpreted_kernel_module_stays_private():
    """Item 3: the interpreted copy is not where the engine imports the GPU kernel from."""
    assert PRIVATE_NAME not in sys.modules
    real = sys.modules.get("cliper_batch.kernels.crop_resize")
    assert real is None or real is not kmod
    if real is not None:  # imported by something else in this session: it must be the module built at import
        assert real._crop_resize_normalize_kernel is not kmod._crop_resize_normalize_kernel


def test_the_launch_runs_under_a_guard_for_the_frames_device(monkeypatch):
    """Item 6: the kernel is launched with the frames' device current (no-op context for CPU tensors)."""
    import contextlib

    entered = []

    @contextlib.contextmanager
    def recording(device):
        entered.append(device)
        yield

    monkeypatch.setattr(kmod, "_device_guard", recording)
    frames = _frames(1, 8, 8, 0)
    crop_resize_normalize_triton(frames, boxes_tensor([(0, (0, 0, 8, 8))]), 4)
    assert entered == [frames.device]


def test_the_device_guard_is_the_frames_cuda_device():
    import contextlib

    assert isinstance(kmod._device_guard(torch.device("cpu")), contextlib.nullcontext)
    guard = kmod._device_guard(torch.device("cuda:1"))  # built without touching CUDA; entering it makes device 1 current
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1


def test_triton_self_test_passes_with_the_kernel_and_names_a_failing_launch():
    """Item 2: the self-test compares a tiny launch with the torch crop; a launch that fails or is wrong is named."""
    from cliper_batch.crops import primitives as cp

    assert cp.triton_self_test("cpu", crop=crop_resize_normalize_triton) is None  # the interpreted kernel is right

    def no_compiler(frames, boxes, size):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    assert "C compiler" in cp.triton_self_test("cpu", crop=no_compiler)

    def off_by_one(frames, boxes, size):
        return crop_resize_normalize_triton(frames, boxes, size) + 0.5

    assert "differs from the torch reference" in cp.triton_self_test("cpu", crop=off_by_one)

    def sticky(frames, boxes, size):
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(torch.AcceleratorError):  # a broken CUDA context is not a fallback case: the actor must end
        cp.triton_self_test("cpu", crop=sticky)


def test_a_failed_self_test_falls_back_with_one_logged_reason(monkeypatch, caplog):
    from cliper_batch.crops import primitives as cp

    calls = []

    def failing(device, crop=None):
        calls.append(str(device))
        return "self-test launch failed: RuntimeError: Failed to find C compiler"

    monkeypatch.setattr(cp, "load_triton_crop", lambda: crop_resize_normalize_triton)  # "imports fine"
    monkeypatch.setattr(cp, "triton_self_test", failing)
    monkeypatch.setattr(cp, "_SELF_TESTS", {})
    with caplog.at_level("WARNING", logger="cliper_batch.crops.primitives"):
        first = cp.select_crop_backend("cuda:0", dali_installed=False)
        again = cp.select_crop_backend("cuda:0", dali_installed=False)
        dali = cp.select_crop_backend("cuda:0", dali_installed=True)
    assert first.name == again.name == "torch" and "C compiler" in first.reason
    assert dali.name == "dali" and "not usable" in dali.reason and "C compiler" in dali.reason
    assert calls == ["cuda:0"]  # once per process and device
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1

    monkeypatch.setattr(cp, "triton_self_test", lambda device, crop=None: None)
    assert cp.select_crop_backend("cuda:1", dali_installed=False).name == "triton"
