"""Command line of the annotate job (``jobs/annotate.py`` and ``cliper-annotate``)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .types import DEFAULT_DETECT_STRIDE, AnnotateConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="annotate",
        description="Annotate a video corpus with per-segment facial-expression timelines (Parquet).",
        epilog=(
            "Model specs: a CLIPER checkpoint (path or fsspec URL to .safetensors), or "
            "'openclip:ARCH[@PRETRAINED]' for zero-shot descriptors (PRETRAINED = open_clip tag or weights file). "
            "Runs on an embedded local Ray unless RAY_ADDRESS is set (as under `ray job submit`) or --ray-address is given."
        ),
    )
    p.add_argument("--input", required=True, help="directory, glob, or .txt/.parquet manifest of video URIs (local or fsspec URL)")
    p.add_argument("--output", required=True, help="output folder (local or fsspec URL); must not lie inside --input")
    p.add_argument("--model", required=True, help="model spec (see below)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument(
        "--faces",
        default="detect",
        choices=["detect", "none"],
        help="detect (default): find, track and crop every face, one timeline per track; "
        "none: clips are already face-centred (DFEW/FERV39k style), each frame is centre-cropped",
    )
    p.add_argument(
        "--detect-stride",
        type=int,
        default=DEFAULT_DETECT_STRIDE,
        help=f"--faces detect: run the face detector on every Nth sampled frame, every shot cut and wherever "
        f"tracking is unsure, interpolating boxes in between; 1 = every frame (default {DEFAULT_DETECT_STRIDE})",
    )
    p.add_argument("--segment-seconds", type=float, default=2.0, help="segment length in seconds (default 2.0)")
    p.add_argument("--frames-per-segment", type=int, default=8, help="frames sampled per segment (default 8)")
    p.add_argument("--batch-size", type=int, default=None, help="segments per scoring batch (default: 128 on GPU, 8 on CPU)")
    p.add_argument("--decoder", default="auto", choices=["auto", "pyav", "dali"], help="frame decoder (default: auto per device and codec)")
    p.add_argument("--compile", default="eager", choices=["eager", "torch.compile", "tensorrt"], help="scoring backend; falls back (logged) when unavailable")
    p.add_argument("--engine-cache", default="~/.cache/cliper_batch/tensorrt", help="folder for compiled TensorRT engines (built once per model, GPU, versions and batch profile)")
    p.add_argument(
        "--worker",
        default="auto",
        choices=["auto", "fused", "staged"],
        help="fused: one actor per GPU (or --gpu-fraction of one) decodes, frames faces, crops and scores with "
        "frames and crops kept on its device, batching across videos; staged: CPU decode actors feed scoring "
        "actors through the object store; auto (default): fused on CUDA, staged on CPU",
    )
    p.add_argument(
        "--gpu-fraction",
        type=float,
        default=1.0,
        help="fused worker on CUDA: GPUs per actor, in (0, 1]; 0.5 runs two fused actors per GPU so one decodes "
        "while the other scores (default 1.0)",
    )
    p.add_argument(
        "--videos-per-task",
        type=int,
        default=8,
        help="fused worker: videos per Ray task; model batches span them (default 8); a task that still crashes after its retries records all of them as WorkerLost",
    )
    p.add_argument("--decode-workers", type=int, default=None, help="staged: decode actors (default: CPUs left after scoring)")
    p.add_argument(
        "--score-workers",
        type=int,
        default=None,
        help="scoring actors (staged: default one per GPU, or 1 on CPU); fused actors (default GPUs / --gpu-fraction, or 1 on CPU)",
    )
    p.add_argument("--video-timeout", type=float, default=1800.0, help="seconds one video may take before it is recorded as failed (default 1800)")
    p.add_argument("--force", action="store_true", help="re-annotate videos already done with this model and config")
    p.add_argument("--since", type=_parse_since, default=None, help="only videos modified at/after this time (ISO date/time, or POSIX seconds)")
    p.add_argument("--limit", type=int, default=None, help="annotate at most N videos this run (the rest next time)")
    p.add_argument("--commit-every", type=int, default=2000, help="commit output every N finished videos (default 2000; also every 120 s)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def _parse_since(text: str) -> float:
    import datetime as dt

    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--since wants an ISO date/time or POSIX seconds, got {text!r}") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def _init_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    # Quieter progress output for batch logs.
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("cliper_batch.annotate")

    from .compile import select_device
    from .listing import CorpusNotFound, list_videos
    from .model.checkpoint import CheckpointError
    from .model.factory import ModelSpecError
    from .pipeline.run import RunOptions, annotate, check_locations, describe_model
    from .writer import OutputBusy
    from .uris import InvalidURI

    try:
        device = select_device(args.device)
        batch_size = args.batch_size or (128 if device.type == "cuda" else 8)
        config = AnnotateConfig(
            segment_seconds=args.segment_seconds,
            frames_per_segment=args.frames_per_segment,
            faces=args.faces,
            detect_stride=args.detect_stride,
            decoder=args.decoder,
            device=args.device,
            compile=args.compile,
            batch_size=batch_size,
            video_timeout_s=args.video_timeout,
            engine_cache=args.engine_cache,
        )
        # Fail fast, before starting Ray: corpus, output location, model spec.
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be >= 1")
        if args.commit_every < 1:
            raise ValueError("--commit-every must be >= 1")
        options = RunOptions(
            force=args.force,
            since=args.since,
            limit=args.limit,
            videos_per_part=args.commit_every,
            worker=args.worker,
            gpu_fraction=args.gpu_fraction,
            videos_per_task=args.videos_per_task,
        )
        list_videos(args.input)
        check_locations(args.input, args.output)
        model_info = describe_model(args.model)
    except (ValueError, CorpusNotFound, InvalidURI, ModelSpecError, CheckpointError, RuntimeError) as exc:
        print(f"annotate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    _init_ray(args.ray_address)
    try:
        summary = annotate(
            args.input,
            args.output,
            args.model,
            config,
            decode_workers=args.decode_workers,
            score_workers=args.score_workers,
            model_info=model_info,
            options=options,
        )
    except (CorpusNotFound, InvalidURI, OutputBusy) as exc:
        print(f"annotate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        log.exception("annotation run failed")
        return EXIT_FAILED
    print(summary.line(), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
