#!/usr/bin/env python
"""One prepared device check (issue 24): parity, throughput, detector, encoder; < 8 min on one GPU.

Run from the repository root on the GPU machine (torch + triton + torchvision/timm/numpy/pynvml, plus
the carried ``av``, ``open_clip_torch``, ``ftfy`` and ``wcwidth`` wheels; no Ray, DALI, polars or
TensorRT)::

    python -m bench.gpu.device_check --out $OUT/device_check.json
    python -m bench.gpu.device_check --smoke      # CPU, tiny sizes, < 1 min: every phase's CPU code path

Phases, most valuable first, each with its own budget (``Bench`` of :mod:`bench.gpu.harness`: a SIGALRM hard
limit, a failure or timeout recorded and the next phase run); the JSON is rewritten after every measured
point, so a timeout keeps what was measured:

1. ``parity``: the fused worker (:class:`~cliper_batch.pipeline.fused_stage.FusedStage`, driven directly,
   no Ray) over the same generated synthetic-face videos (H.264 + VP9), ``--faces detect`` and ``none``,
   with the shipped models, on path A and path B. Rows are matched by (video, segment, track): max
   ``|dp|``, argmax flips outside near-ties (top-2 gap < 0.02), face-box drift (normalised
   coordinates), and the crop primitive's own max error against the torch reference on the same frames.
   On a GPU: A = CPU (torch crop, fp32 eager), B = CUDA as shipped (Triton crop, fp16 encoder, MTCNN on
   CUDA), and B again in strict fp32 (fp32 crops and encoder, TF32 off). With ``--smoke``: A = CPU
   torch crop + eager encoder; B = CPU, the Triton kernel run by Triton's interpreter (loaded privately,
   as ``tests/test_kernels.py`` does) + the encoder through ``torch.compile`` (``aot_eager`` backend:
   dynamo graph capture and aten decomposition, no C++ build).
2. ``throughput``: the fused worker on the device over a generated 720p corpus (``--faces none``):
   sampled frames/s, crops/s, model-busy share, GPU busy % (pynvml, sampled), peak memory.
3. ``detector``: MTCNN frames/s and ms per 1/4/16-frame call, host syncs per call
   (``torch.cuda.set_sync_debug_mode``), faces vs the CPU detector (smoke: batched CPU vs frame by frame).
4. ``encoder``: open_clip ``ViT-B-16`` (random init) crops/s through ``score_images`` with the
   ``compile_encoder`` eager (fp16) and ``torch.compile`` encoders, recompiles after warm-up, cosine vs
   fp32, against a measured bf16 matmul ceiling of the card.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.gpu.harness import Bench, BenchConfig, SkipSection, sync, time_call
from bench.gpu.vit import analytic_flops_per_crop, peak_bf16_tflops

REPO_ROOT = Path(__file__).resolve().parents[2]
NEAR_TIE = 0.02  # top-2 probability gap below which an argmax flip is not counted
TARGETS = {"parity_none_max_abs_dp": 2e-2, "flips_outside_near_ties": 0, "detect_box_drift": 5e-3,
           "crop_max_abs_err": 2e-2, "vit_b16_fp16_crops_per_s_h100": 13500}
PHASES = ("parity", "throughput", "detector", "encoder")


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


# --------------------------------------------------------------------------- small helpers


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

    Loaded as ``tests/test_kernels.py`` loads it: ``kernels/crop_resize.py`` executed afresh with
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
        _restore_env("TRITON_INTERPRET", prev)
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(mod._crop_resize_normalize_kernel, InterpretedFunction):
        raise RuntimeError("the privately loaded crop kernel is not an interpreted Triton function")

    def crop(*args, **kwargs) -> torch.Tensor:
        prev = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            return mod.crop_resize_normalize_triton(*args, **kwargs)
        finally:
            _restore_env("TRITON_INTERPRET", prev)

    return crop


def _restore_env(name: str, value: str | None) -> None:
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


# --------------------------------------------------------------------------- the fused worker, retargeted


@dataclass
class PathSpec:
    """One side of a parity comparison: the fused worker on ``device``, optionally with its primitives replaced."""

    label: str
    device: str
    crop: str = "shipped"  # shipped | torch | triton-interpreted | triton-fp32
    encoder: str = "shipped"  # shipped | fp32-eager | torch.compile-aot_eager
    strict: bool = False


def build_worker(spec: str, faces: str, cfg: CheckConfig, path: PathSpec, crop_errors: list[float]):
    """A :class:`FusedStage` for ``path``; its crop primitive also reports its max error vs the torch reference."""
    from cliper_batch.compile import compile_encoder
    from cliper_batch.crop_primitives import normalized_crops
    from cliper_batch.pipeline.fused_stage import FusedStage, _in_inference_mode
    from cliper_batch.types import AnnotateConfig

    config = AnnotateConfig(segment_seconds=cfg.segment_seconds, frames_per_segment=cfg.frames_per_segment, faces=faces,
                            batch_size=cfg.batch_size, device=path.device, decoder="pyav", decode_chunk_segments=2,
                            engine_cache=None)
    stage = FusedStage(spec, config, device=path.device, num_threads=2 if cfg.smoke else None)
    sc = stage.scorer
    if path.encoder == "fp32-eager":
        sc.encoder = compile_encoder(sc.model, "eager", sc.device, dtype=torch.float32)
        sc.autocast_dtype = None
    elif path.encoder == "torch.compile-aot_eager":
        sc.encoder = compile_encoder(sc.model, "torch.compile", sc.device, dtype=torch.float32,
                                     example_batch=cfg.batch_size * cfg.frames_per_segment,
                                     compile_options={"backend": "aot_eager", "dynamic": True})
    sc.backend_label = f"{sc.encoder.backend}@{sc.device}"
    size, mean, std = sc.image_size, sc.mean, sc.std
    if path.crop == "shipped":
        crop, name = stage.annotator.prims.crop, stage.crop_backend
    elif path.crop == "torch":
        crop, name = _in_inference_mode(normalized_crops("torch", size, mean, std)), "torch"
    elif path.crop == "triton-interpreted":
        fn = load_interpreted_triton_crop()
        crop = _in_inference_mode(partial(fn, size=size, mean=tuple(mean), std=tuple(std), check_boxes=False))
        name = "triton-interpreted"
    elif path.crop == "triton-fp32":
        crop = _in_inference_mode(normalized_crops("triton", size, mean, std, device=sc.device, out_dtype=torch.float32))
        name = "triton"
    else:
        raise ValueError(path.crop)
    reference = normalized_crops("torch", size, mean, std)

    def checked(frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        out = crop(frames, boxes)
        want = reference(frames.cpu(), boxes.cpu())
        crop_errors.append(float((out.float().cpu() - want).abs().max()))
        return out

    stage.annotator.prims = dataclasses.replace(stage.annotator.prims, crop=checked, crop_name=name)
    stage.crop_backend = name
    info = {"label": path.label, "device": str(sc.device), "crop": name, "encoder": sc.encoder.backend,
            "encoder_reason": sc.encoder.reason[:300], "encoder_dtype": str(sc.encoder.dtype),
            "autocast": str(sc.autocast_dtype), "strict_fp32": path.strict}
    return stage, info


def run_worker(stage, batch: dict[str, np.ndarray], strict: bool) -> tuple[dict, dict, float]:
    """Segment rows keyed by (video, segment, track), outcomes by video, and the wall seconds."""
    from cliper_batch import rows

    seg: dict[tuple, dict] = {}
    outcomes: dict[str, dict] = {}
    t = time.perf_counter()
    with strict_fp32() if strict else contextlib.nullcontext():
        for block in stage(batch):
            for i in range(len(block["row_kind"])):
                vid = str(block["video_id"][i])
                if block["row_kind"][i] == rows.SEGMENT:
                    key = (vid, int(block["segment_index"][i]), int(block["track_id"][i]))
                    seg[key] = {"probs": np.asarray(block["probs"][i], dtype=np.float64),
                                "box": np.array([block[c][i] for c in ("face_x0", "face_y0", "face_x1", "face_y1")],
                                                dtype=np.float64)}
                else:
                    o = json.loads(block["outcome"][i])
                    outcomes[vid] = {"status": o.get("status"), "error": o.get("error"),
                                     "n_segments": o.get("n_segments")}
    return seg, outcomes, time.perf_counter() - t


def compare_rows(a: dict, b: dict) -> dict:
    """Rows of two runs matched by (video, segment, track): drift, flips outside near-ties, face-box drift."""
    common = sorted(set(a) & set(b))
    max_dp, flips, near_tie_flips, box = 0.0, [], 0, 0.0
    for k in common:
        pa, pb = a[k]["probs"], b[k]["probs"]
        max_dp = max(max_dp, float(np.abs(pa - pb).max()))
        if int(pa.argmax()) != int(pb.argmax()):
            gaps = [float(np.diff(np.sort(p)[-2:])[0]) for p in (pa, pb)]
            if min(gaps) < NEAR_TIE:
                near_tie_flips += 1
            else:
                flips.append({"key": list(k), "a": int(pa.argmax()), "b": int(pb.argmax()), "gap": round(min(gaps), 4)})
        ba, bb = a[k]["box"], b[k]["box"]
        if np.isfinite(ba).all() or np.isfinite(bb).all():
            d = np.abs(ba - bb)
            box = max(box, float(d.max()) if np.isfinite(d).all() else float("inf"))
    return {"rows_a": len(a), "rows_b": len(b), "matched": len(common),
            "only_a": [list(k) for k in sorted(set(a) - set(b))][:20],
            "only_b": [list(k) for k in sorted(set(b) - set(a))][:20],
            "max_abs_dp": max_dp, "flips_outside_near_ties": len(flips), "flips": flips[:10],
            "near_tie_flips": near_tie_flips, "max_box_drift": box}


def parity_verdict(cmp: dict, faces: str, crop_err: float | None) -> list[str]:
    """What breaks the issue's parity targets (empty: passes)."""
    bad = []
    if cmp["matched"] == 0:
        bad.append("no rows matched")
    if cmp["only_a"] or cmp["only_b"]:
        bad.append("different (video, segment, track) rows")
    if faces == "none" and cmp["max_abs_dp"] > TARGETS["parity_none_max_abs_dp"]:
        bad.append(f"max |dp| {cmp['max_abs_dp']:.3g} > {TARGETS['parity_none_max_abs_dp']}")
    if cmp["flips_outside_near_ties"] > 0:
        bad.append(f"{cmp['flips_outside_near_ties']} argmax flips outside near-ties")
    if faces == "detect" and cmp["max_box_drift"] > TARGETS["detect_box_drift"]:
        bad.append(f"face-box drift {cmp['max_box_drift']:.3g} > {TARGETS['detect_box_drift']}")
    if crop_err is None or not crop_err <= TARGETS["crop_max_abs_err"]:
        bad.append(f"crop max error vs torch reference {crop_err} > {TARGETS['crop_max_abs_err']}")
    return bad


def parity_paths(smoke: bool) -> tuple[PathSpec, list[PathSpec]]:
    if smoke:
        a = PathSpec("cpu: torch crop, eager encoder", "cpu", crop="torch")
        return a, [PathSpec("cpu: interpreted Triton crop, torch.compile(aot_eager) encoder", "cpu",
                            crop="triton-interpreted", encoder="torch.compile-aot_eager")]
    a = PathSpec("cpu: shipped (torch crop, fp32 eager)", "cpu")
    return a, [PathSpec("cuda: shipped (Triton crop, fp16 encoder, MTCNN on CUDA)", "cuda"),
               PathSpec("cuda: strict fp32 (Triton fp32 crops, fp32 encoder, TF32 off)", "cuda", crop="triton-fp32",
                        encoder="fp32-eager", strict=True)]


def parity_phase(cfg: CheckConfig, bench: Bench, budget: float) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"PyAV not installed ({e}): carry the av wheel") from None
    models, note = shipped_models(cfg.smoke)
    ref_path, others = parity_paths(cfg.smoke)
    out: dict = {"models": models, "model_note": note, "near_tie_gap": NEAR_TIE, "targets": TARGETS,
                 "path_a": dataclasses.asdict(ref_path), "paths_b": [dataclasses.asdict(p) for p in others]}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cliper_device_check_") as tmp:
        t = time.perf_counter()
        paths = make_face_videos(tmp, cfg)
        out["videos"] = {"files": [os.path.basename(p) for p in paths], "size": list(cfg.parity_size),
                         "seconds": cfg.parity_seconds, "fps": cfg.fps, "generate_s": round(time.perf_counter() - t, 2)}
        batch = refs_batch(paths)
        for spec in models:
            for faces in cfg.parity_faces:
                errs_a: list[float] = []
                stage_a, info_a = build_worker(spec, faces, cfg, ref_path, errs_a)
                rows_a, out_a, sec_a = run_worker(stage_a, batch, ref_path.strict)
                del stage_a
                for pb in others:
                    errs_b: list[float] = []
                    stage_b, info_b = build_worker(spec, faces, cfg, pb, errs_b)
                    rows_b, out_b, sec_b = run_worker(stage_b, batch, pb.strict)
                    del stage_b
                    cmp = compare_rows(rows_a, rows_b)
                    crop_err = max(errs_b) if errs_b else None
                    bad = parity_verdict(cmp, faces, crop_err)
                    bad += [f"{v}: {o['status']} ({o['error']})" for o in (out_a, out_b) for v, o in o.items()
                            if o["status"] != "ok"]
                    point = {"model": spec, "faces": faces, "a": info_a, "b": info_b, **cmp,
                             "crop_max_abs_err_a": max(errs_a) if errs_a else None, "crop_max_abs_err_b": crop_err,
                             "outcomes_a": out_a, "outcomes_b": out_b, "seconds_a": round(sec_a, 2),
                             "seconds_b": round(sec_b, 2), "ok": not bad, "problems": bad}
                    bench.record_point(point)
                    problems += [f"{spec} faces={faces} {pb.label}: {p}" for p in bad]
    out["points"] = bench._live.get("points", []) if bench._live else []
    out["parity_ok"] = not problems
    if problems:
        out.update(status="error", error="; ".join(problems)[:1500])
    return out


# --------------------------------------------------------------------------- throughput


class GpuBusySampler:
    """GPU utilisation (NVML, % of time a kernel ran) sampled every ``period`` s on a thread; None without pynvml."""

    def __init__(self, device: torch.device, period: float = 0.1) -> None:
        self.samples: list[int] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.type != "cuda":
            self.reason = "not a CUDA device"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._nvml = pynvml
        except Exception as e:  # noqa: BLE001
            self.reason = f"pynvml unusable: {type(e).__name__}: {e}"
            return
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            with contextlib.suppress(Exception):
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu))

    def __enter__(self) -> "GpuBusySampler":
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_busy_pct": None, "reason": self.reason or "no samples"}
        return {"gpu_busy_pct": round(float(np.mean(self.samples)), 1), "samples": len(self.samples)}


def throughput_phase(cfg: CheckConfig, device: torch.device, bench: Bench, budget: float) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"PyAV not installed ({e}): carry the av wheel") from None
    from cliper_batch.testvideos import make_corpus

    models, note = shipped_models(cfg.smoke)
    spec = models[0]
    w, h = cfg.throughput_size
    out: dict = {"model": spec, "model_note": note, "faces": "none", "decoder": "pyav (no NVDEC: DALI absent)",
                 "size": [w, h], "seconds_per_video": cfg.throughput_seconds}
    with tempfile.TemporaryDirectory(prefix="cliper_throughput_") as tmp:
        t = time.perf_counter()
        paths = make_corpus(tmp, cfg.throughput_videos, seed=5, duration_s=cfg.throughput_seconds, width=w, height=h)
        warm = make_corpus(os.path.join(tmp, "warm"), 1, seed=9, duration_s=2.0, width=w, height=h)
        out["generate_s"] = round(time.perf_counter() - t, 2)
        errs: list[float] = []
        stage, info = build_worker(spec, "none", cfg, PathSpec("throughput", str(device)), errs)
        out["worker"] = info
        run_worker(stage, refs_batch(warm), False)  # warm-up: kernels compiled, decoders built
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        busy0 = stage.scorer.busy_s
        with GpuBusySampler(device) as gpu:
            seg, outcomes, wall = run_worker(stage, refs_batch(paths), False)
        sync(device)
        clips = len(seg)
        frames = clips * cfg.frames_per_segment
        out.update({
            "videos": len(paths), "outcomes_ok": sum(o["status"] == "ok" for o in outcomes.values()),
            "clips": clips, "sampled_frames": frames, "wall_s": round(wall, 3),
            "sampled_frames_per_s": round(frames / wall, 1), "crops_per_s": round(frames / wall, 1),
            "model_busy_share": round((stage.scorer.busy_s - busy0) / wall, 3),
            "crop_max_abs_err_vs_torch": max(errs) if errs else None, **gpu.summary(),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        })
    return out


# --------------------------------------------------------------------------- detector


def decoded_face_frames(path: str, n: int) -> np.ndarray:
    import av

    frames = []
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return np.stack(frames)


@contextlib.contextmanager
def counted_syncs(device: torch.device) -> Iterator[list]:
    """Host syncs of CUDA ops inside the block (``torch.cuda.set_sync_debug_mode('warn')`` warnings)."""
    import warnings

    if device.type != "cuda":
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def detector_phase(cfg: CheckConfig, device: torch.device, bench: Bench, budget: float) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"PyAV not installed ({e}): carry the av wheel") from None
    from cliper_batch.faces.detectors.mtcnn.detector import CUDA_BATCH, FaceDetector

    with tempfile.TemporaryDirectory(prefix="cliper_detector_") as tmp:
        small = dataclasses.replace(cfg, parity_size=(640, 360) if not cfg.smoke else cfg.parity_size,
                                    parity_seconds=max(cfg.detector_frames / cfg.fps, 1.0))
        frames = decoded_face_frames(make_face_videos(tmp, small)[0], cfg.detector_frames)
    cpu = FaceDetector(device="cpu")
    if device.type == "cuda":
        dev = FaceDetector(device=device)
        label = f"MTCNN on {device}, batch {dev.batch}"
    else:  # smoke: the batched cascade (padding, several frames per call) vs frame by frame
        dev = FaceDetector(device="cpu", batch=4)
        label = "MTCNN on cpu, batch 4 (vs the CPU reference, batch 1)"
    out: dict = {"detector": label, "frames": list(frames.shape), "cuda_batch": CUDA_BATCH}
    want = cpu.detect(frames)
    got = dev.detect(frames)
    drift, count_diff = 0.0, 0
    h, w = frames.shape[1:3]
    for a, b in zip(want, got):
        if len(a) != len(b):
            count_diff += 1
            continue
        for da, db in zip(a, b):
            d = np.abs(np.array(da.box) - np.array(db.box)) / np.array([w, h, w, h])
            drift = max(drift, float(d.max()))
    out.update({"faces_cpu": sum(map(len, want)), "faces_device": sum(map(len, got)),
                "frames_with_different_face_count": count_diff, "max_box_drift_normalised": drift})
    bench.record_point({"what": "faces vs cpu", **{k: out[k] for k in ("faces_cpu", "faces_device", "max_box_drift_normalised")}})
    per = max(budget / 8, 0.05)
    for n in (1, 4, 16):
        x = frames[np.arange(n) % len(frames)]
        timing = time_call(lambda: dev.detect(x), device, 1, min(cfg.seconds_per_point, per), 30, min_iters=2)
        with counted_syncs(device) as caught:
            dev.detect(x)
        point = {"frames_per_call": n, "ms_per_call": round(timing["s_per_call"] * 1e3, 3),
                 "frames_per_s": round(n / timing["s_per_call"], 1), "iters": timing["iters"],
                 "host_syncs_per_call": len(caught) if device.type == "cuda" else None}
        bench.record_point(point)
    return {**out, "points": list(bench._live.get("points", []))}


# --------------------------------------------------------------------------- encoder


def matmul_ceiling(device: torch.device, n: int, seconds: float) -> dict:
    """Measured dense matmul TFLOP/s (bf16 on CUDA, fp32 on CPU) at n x n x n."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_call(lambda: a @ b, device, 2, seconds, 200)
    return {"dtype": str(dtype), "n": n, "tflops": round(2 * n**3 / t["s_per_call"] / 1e12, 4)}


def _dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001
        return -1


def encoder_phase(cfg: CheckConfig, device: torch.device, bench: Bench, budget: float) -> dict:
    try:
        import open_clip  # noqa: F401
    except ImportError as e:
        raise SkipSection(f"open_clip not installed ({e}): carry the open_clip_torch, ftfy, wcwidth wheels") from None
    import torch.nn.functional as F

    from cliper_batch.compile import compile_encoder
    from cliper_batch.model.cliper import score_images
    from cliper_batch.model.factory import load_model

    loaded = load_model(f"openclip:{cfg.encoder_arch}", device=device)
    model = loaded.model.eval()
    S, T = loaded.image_size, cfg.frames_per_segment
    half = torch.float16 if device.type == "cuda" else torch.float32  # fp16 on CPU is refused by select_dtype
    ceiling = matmul_ceiling(device, cfg.matmul_n, min(cfg.seconds_per_point, budget / 10))
    peak, peak_src = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else (None, "cpu")
    flops = None
    if cfg.encoder_arch == "ViT-B-16":
        flops = analytic_flops_per_crop(BenchConfig.full())["flops"]
    out: dict = {"arch": cfg.encoder_arch, "weights": "random init (no weights offline)", "image_size": S,
                 "dtype": str(half), "matmul_ceiling": ceiling, "spec_peak_bf16_tflops": peak, "peak_source": peak_src,
                 "flops_per_crop": flops}
    if flops:
        out["ceiling_crops_per_s"] = round(ceiling["tflops"] * 1e12 / flops, 0)
    gen = torch.Generator().manual_seed(0)
    n_check = 16
    with torch.inference_mode():
        probe = torch.randn(n_check, 3, S, S, generator=gen).to(device)
    ref32 = compile_encoder(model, "eager", device, dtype=torch.float32)(probe)
    compile_opts = {"backend": "aot_eager"} if cfg.smoke else {}
    for backend in ("eager", "torch.compile"):
        t0 = time.perf_counter()
        enc = compile_encoder(model, backend, device, dtype=half, example_batch=max(cfg.encoder_batches),
                              compile_options=compile_opts)
        build_s = time.perf_counter() - t0
        cos = float(F.cosine_similarity(enc(probe), ref32, dim=-1).min())
        for crops in cfg.encoder_batches:
            with torch.inference_mode():
                images = torch.randn(crops // T, T, 3, S, S, generator=gen).to(device)
            fn = partial(score_images, model, images, encoder=enc, autocast_dtype=half if device.type == "cuda" else None)
            fn()  # warm-up at this shape
            g0 = _dynamo_graphs()
            timing = time_call(fn, device, 1, min(cfg.seconds_per_point, budget / 8), 200)
            point = {"encoder": enc.backend, "requested": backend, "crops": crops, "build_s": round(build_s, 2),
                     "crops_per_s": round(crops / timing["s_per_call"], 1), "ms_per_call": round(timing["s_per_call"] * 1e3, 3),
                     "recompiles_after_warmup": (_dynamo_graphs() - g0) if backend == "torch.compile" else None,
                     "min_cosine_vs_fp32": round(cos, 6), "iters": timing["iters"],
                     "compile_options": compile_opts if backend == "torch.compile" else None}
            if flops:
                point["fraction_of_measured_ceiling"] = round(point["crops_per_s"] / out["ceiling_crops_per_s"], 3)
            bench.record_point(point)
        del enc
    return {**out, "points": list(bench._live.get("points", []))}


# --------------------------------------------------------------------------- driver


def _versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for mod in ("triton", "av", "open_clip", "timm", "torchvision", "pynvml", "ray", "polars"):
        try:
            v[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001
            v[mod] = f"missing ({type(e).__name__})"
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (< 1 min): every phase's CPU code path")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default $OUT/device_check.json, else bench/results/device_check[_smoke].json)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="seconds for all phases together (default 480)")
    ap.add_argument("--only", type=str, default=None, help="comma-separated phases: " + ",".join(PHASES))
    args = ap.parse_args(argv)

    has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.smoke:
        print("no CUDA device: the device check needs a GPU; use --smoke for the CPU check", file=sys.stderr)
        return 2
    cfg = CheckConfig.tiny(args.budget_s) if args.smoke else CheckConfig.full(args.budget_s)
    device = torch.device("cuda" if has_cuda and not args.smoke else "cpu")
    if args.out is not None:
        out_path = args.out
    elif os.environ.get("OUT"):
        out_path = Path(os.environ["OUT"]) / "device_check.json"
    else:
        out_path = REPO_ROOT / "bench" / "results" / ("device_check_smoke.json" if args.smoke else "device_check.json")
    bcfg = BenchConfig.tiny() if args.smoke else BenchConfig.full()
    bcfg.budgets, bcfg.total_budget_s = dict(cfg.budgets), cfg.budget_s
    only = {s.strip() for s in args.only.split(",") if s.strip()} if args.only else None
    bench = Bench(bcfg, out_path, only, set())
    bench.GRACE_S = 5.0 if args.smoke else 15.0
    bench.results["meta"].update({
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": cfg.smoke, "host": platform.node(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "versions": _versions(),
        "config": dataclasses.asdict(cfg), "argv": sys.argv[1:] if argv is None else argv,
    })
    bench.write()
    bench.run("parity", lambda b: parity_phase(cfg, bench, b))
    bench.run("throughput", lambda b: throughput_phase(cfg, device, bench, b))
    bench.run("detector", lambda b: detector_phase(cfg, device, bench, b))
    bench.run("encoder", lambda b: encoder_phase(cfg, device, bench, b))
    bench.write()
    for name, sec in bench.results["sections"].items():
        print(f"[device_check] {name}: {sec['status']} {sec.get('reason') or sec.get('error') or ''}"[:400])
    print(f"JSON: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
