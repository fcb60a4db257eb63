"""What the device check's phases share: its configuration and targets, strict fp32, the interpreted Triton crop, the shipped models, generated face videos."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

import numpy as np
import torch


NEAR_TIE = 0.02  # top-2 probability gap below which an argmax flip is not counted


TARGETS = {"parity_none_max_abs_dp": 2e-2, "flips_outside_near_ties": 0, "detect_box_drift": 5e-3,
           "crop_max_abs_err": 2e-2, "vit_b16_fp16_crops_per_s_h100": 13500}


@dataclass
class CheckConfig:
    """Sizes and budgets of one run (full on a GPU, or ``--smoke`` on a CPU)."""

    smoke: bool
    budget_s: float = 480.0
    budgets: dict[str, float] = field(default_factory=dict)
    parity_size: tuple[int, int] = (256, 192)
    parity_seconds: float = 4.0
    fps: float = 10.0
    segment_seconds: float = 1.0
    frames_per_segment: int = 8
    batch_size: int = 8
    parity_faces: tuple[str, ...] = ("none", "detect")
    throughput_size: tuple[int, int] = (1280, 720)
    throughput_seconds: float = 8.0
    throughput_videos: int = 4
    detector_frames: int = 16
    encoder_arch: str = "ViT-B-16"
    encoder_batches: tuple[int, ...] = (256, 512)
    matmul_n: int = 8192
    seconds_per_point: float = 2.0

    @staticmethod
    def full(budget_s: float) -> "CheckConfig":
        return CheckConfig(smoke=False, budget_s=budget_s,
                           budgets={"parity": 200, "throughput": 110, "detector": 50, "encoder": 110})

    @staticmethod
    def tiny(budget_s: float) -> "CheckConfig":
        return CheckConfig(
            smoke=True, budget_s=min(budget_s, 90.0),
            budgets={"parity": 45, "throughput": 15, "detector": 15, "encoder": 25},
            parity_size=(96, 72), parity_seconds=2.0, frames_per_segment=4, batch_size=3,
            throughput_size=(96, 72), throughput_seconds=2.0, throughput_videos=1, detector_frames=4,
            encoder_arch="Tiny-ViT-T-16", encoder_batches=(8,), matmul_n=256, seconds_per_point=0.1,
        )


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions (restored after)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def load_interpreted_triton_crop() -> Callable[..., torch.Tensor]:
    """The Triton crop kernel executed by Triton's CPU interpreter, under a private module name.

    Loaded as ``tests/crops/test_kernels.py`` loads it: ``kernels/crop_resize.py`` executed afresh with
    ``TRITON_INTERPRET=1`` and never put in ``sys.modules`` (the engine's own import of the kernel stays a
    GPU one). The interpreter checks the variable again at launch, so the returned function sets it per call.
    """
    prev = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("_device_check_interpreted_crop_resize",
                                                      REPO_ROOT / "kernels" / "crop_resize.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        restore_env("TRITON_INTERPRET", prev)
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(mod._crop_resize_normalize_kernel, InterpretedFunction):
        raise RuntimeError("the privately loaded crop kernel is not an interpreted Triton function")

    def crop(*args, **kwargs) -> torch.Tensor:
        prev = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            return mod.crop_resize_normalize_triton(*args, **kwargs)
        finally:
            restore_env("TRITON_INTERPRET", prev)

    return crop


def restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def shipped_models(smoke: bool) -> tuple[list[str], str | None]:
    """The shipped models to check (default real-face model first) and a note if it is missing here."""
    from cliper_batch.model.spec import DEFAULT_MODEL, builtin_model_path

    demo = "builtin:demo"
    if builtin_model_path(DEFAULT_MODEL.split(":", 1)[1]).exists():
        return ([demo] if smoke else [DEFAULT_MODEL, demo]), None
    return [demo], f"{DEFAULT_MODEL} is not in this checkout (no cliper-fer2013.safetensors): used builtin:demo only"


def make_face_videos(out_dir: str, cfg: CheckConfig) -> list[str]:
    """Two synthetic-face videos (H.264 .mp4, VP9 .webm) with the engine's own generator."""
    from cliper_batch.synthetic.videos import write_expression_video

    spans = [(0.0, cfg.parity_seconds / 2, "happy"), (cfg.parity_seconds / 2, cfg.parity_seconds, "sad")]
    paths = []
    for i, (codec, ext) in enumerate((("h264", ".mp4"), ("vp9", ".webm"))):
        p = os.path.join(out_dir, f"faces_{codec}{ext}")
        write_expression_video(p, spans, codec=codec, fps=cfg.fps, size=cfg.parity_size, seed=i + 1)
        paths.append(p)
    return paths


def refs_batch(paths: list[str]) -> dict[str, np.ndarray]:
    from cliper_batch import rows
    from cliper_batch.types import VideoRef
    from cliper_batch.uris import normalize_uri

    refs = [VideoRef(video_id=os.path.basename(p), uri=normalize_uri(p)) for p in paths]
    return {"ref": np.array([rows.encode_ref(r) for r in refs], dtype=object)}
