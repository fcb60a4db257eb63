"""The ``annotate`` section: the engine's shared per-video algorithm with frames uploaded to the GPU."""
from __future__ import annotations

import os
import tempfile
import time

import torch

from bench.gpu.harness import BenchConfig, SkipSection, sync


def annotate_section(cfg: BenchConfig, device: torch.device, budget: float) -> dict:
    """The engine's shared per-video algorithm (``VideoAnnotator``) with frames uploaded to ``device``.

    Real H.264 (with B-frames) and VP9 files written here, ``--faces none``,
    ``--decoder auto`` (PyAV where DALI is absent: the GPU box), the crop
    primitive the fused worker would pick on this device. Checks every video
    ends ok with the planned number of clips, crops on the device and finite,
    equal to the torch reference crop of the same frames; reports clips/s.
    """
    from cliper_batch.crops import primitives as crop_primitives
    from cliper_batch.crops.reference import CLIP_MEAN, CLIP_STD
    from cliper_batch.decode.testvideos import CODECS, VideoSpec, write_video
    from cliper_batch.types import AnnotateConfig, VideoRef
    from cliper_batch.uris import normalize_uri
    from cliper_batch.video_annotation import ClipPiece, FramePrimitives, VideoAnnotator

    try:
        import av  # noqa: F401 - the CPU decoder and the test-video writer
    except ImportError as e:
        raise SkipSection(f"PyAV not installed ({e}): carry the av wheel to run the per-video algorithm") from None
    size, T = cfg.image_size, 8
    w, h, secs = (128, 96, 2.0) if cfg.smoke else (1280, 720, 8.0)
    choice = crop_primitives.select_crop_backend(device)
    crop = crop_primitives.normalized_crops(choice.name, size, CLIP_MEAN, CLIP_STD, device=device)
    reference = crop_primitives.normalized_crops("torch", size, CLIP_MEAN, CLIP_STD)
    checked: list[float] = []

    def checked_crop(frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        out = crop(frames, boxes)
        if not checked:  # the first piece of each video: compare with the torch reference crop of the same frames
            checked.append(float((out - reference(frames, boxes)).abs().max()))
        return out

    prims = FramePrimitives(frames_device=device, decoder_device=f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu",
                            crop=checked_crop, crop_name=choice.name, detector_device=device)
    config = AnnotateConfig(segment_seconds=1.0, frames_per_segment=T, faces="none", decoder="auto",
                            device=str(device), decode_chunk_segments=4)
    annotator = VideoAnnotator(config, size, prims, None, 0)
    out: dict = {"crop_backend": choice.name, "crop_reason": choice.reason, "size": [w, h], "seconds": secs,
                 "frames_per_segment": T, "videos": {}}
    problems = []
    with tempfile.TemporaryDirectory(prefix="cliper_annotate_bench_") as tmp:
        for codec in ("h264", "vp9"):
            path = write_video(os.path.join(tmp, f"clip_{codec}{CODECS[codec][1]}"),
                               VideoSpec(codec=codec, duration_s=secs, width=w, height=h, seed=3))
            checked.clear()
            n, on_device, finite = 0, True, True
            t = time.perf_counter()
            for item in annotator.annotate(VideoRef(video_id=codec, uri=normalize_uri(path))):
                if isinstance(item, ClipPiece):
                    n += item.n
                    on_device &= item.crops.device.type == device.type
                    finite &= bool(torch.isfinite(item.crops).all())
                else:
                    outcome = item
            sync(device)
            el = time.perf_counter() - t
            rec = {"status": outcome.status, "error": outcome.error, "decoder": outcome.extra.get("decoder"),
                   "clips": n, "expected_clips": int(secs), "crops_on_device": on_device, "finite": finite,
                   "max_abs_err_vs_torch_crop": checked[0] if checked else None,
                   "seconds": round(el, 3), "clips_per_s": round(n / el, 2), "frames_per_s": round(n * T / el, 1)}
            out["videos"][codec] = rec
            if outcome.status != "ok" or n != int(secs) or not on_device or not finite or not checked or checked[0] > 2e-2:
                problems.append(f"{codec}: {rec}")
    if problems:
        out.update(status="error", error="; ".join(problems)[:1500])
    return out
