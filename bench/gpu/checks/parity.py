"""The ``parity`` phase: the fused worker on path A and path B over the same videos, rows compared."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from bench.gpu.harness import Bench, SkipSection
from bench.gpu.checks.common import (
    CheckConfig,
    NEAR_TIE,
    TARGETS,
    load_interpreted_triton_crop,
    make_face_videos,
    refs_batch,
    shipped_models,
    strict_fp32,
)


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
    from cliper_batch.model.backends import compile_encoder
    from cliper_batch.crops.primitives import normalized_crops
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
