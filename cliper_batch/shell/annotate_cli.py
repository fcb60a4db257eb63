"""Command line of the annotate job (``jobs/annotate.py`` and ``cliper-annotate``)."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from . import ray_runtime
from .preflight import face_side, gpu_fraction, positive_float, positive_int
from ..model.spec import DEFAULT_MODEL
from ..faces.detectors import DETECTORS
from ..types import (COMPILE_BACKENDS, DECODERS, DEFAULT_DETECT_STRIDE, DEFAULT_FACE_DETECTOR, DEFAULT_MIN_FACE, FACES_MODES,
                     AnnotateConfig)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    """A logging level name, any case (argparse turns the ValueError into a one-line usage error)."""
    level = str(value).strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"invalid log level {value!r} (choose from {', '.join(LOG_LEVELS)})")
    return level


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="annotate",
        description="Annotate a video corpus with per-segment facial-expression timelines (Parquet).",
        epilog=(
            "Model specs: builtin:fer2013 (default, real faces) or builtin:demo (synthetic faces), a CLIPER "
            "checkpoint (path or fsspec URL to .safetensors), or "
            "'openclip:ARCH[@PRETRAINED]' for zero-shot descriptors (PRETRAINED = open_clip tag or weights file). "
            "Runs on an embedded local Ray unless RAY_ADDRESS is set (as under `ray job submit`) or --ray-address is given."
        ),
    )
    p.add_argument("--input", required=True, help="directory, glob, or .txt/.parquet manifest of video URIs (local or fsspec URL)")
    p.add_argument("--output", required=True, help="output folder (local or fsspec URL); must not lie inside --input")
    p.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f"model spec (see below; default {DEFAULT_MODEL}: the shipped real-face CLIPER, docs/models.md)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument(
        "--faces",
        default="detect",
        choices=FACES_MODES,
        help="detect (default): find, track and crop every face, one timeline per track; "
        "none: clips are already face-centred (DFEW/FERV39k style), each frame is centre-cropped",
    )
    p.add_argument(
        "--face-detector",
        default=DEFAULT_FACE_DETECTOR,
        choices=sorted(DETECTORS),
        help=f"--faces detect: the face detector (default {DEFAULT_FACE_DETECTOR}; another one enters config_hash)",
    )
    p.add_argument(
        "--detect-stride",
        type=positive_int,
        default=DEFAULT_DETECT_STRIDE,
        help=f"--faces detect: run the face detector on every Nth sampled frame, every shot cut and wherever "
        f"tracking is unsure, interpolating boxes in between; 1 = every frame (default {DEFAULT_DETECT_STRIDE})",
    )
    p.add_argument(
        "--min-face",
        type=face_side,
        default=DEFAULT_MIN_FACE,
        help=f"--faces detect: smallest face side searched for, in pixels of the detection frame (long side <= 640); "
        f"larger is faster and misses smaller faces (default {DEFAULT_MIN_FACE}; another value enters config_hash)",
    )
    p.add_argument("--segment-seconds", type=positive_float, default=2.0, help="segment length in seconds (default 2.0)")
    p.add_argument("--frames-per-segment", type=positive_int, default=8, help="frames sampled per segment (default 8)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="segments per scoring batch (default: 128 on GPU, 8 on CPU)")
    p.add_argument("--decoder", default="auto", choices=DECODERS, help="frame decoder (default: auto per device and codec)")
    p.add_argument("--compile", default="eager", choices=COMPILE_BACKENDS, help="scoring backend; falls back (logged) when unavailable")
    p.add_argument("--engine-cache", default="~/.cache/cliper_batch/tensorrt", help="folder for compiled TensorRT engines (built once per model, GPU, versions and batch profile)")
    p.add_argument(
        "--worker",
        default="auto",
        choices=["auto", "fused", "staged"],
        help="fused: one actor per GPU (or --gpu-fraction of one) decodes, frames faces, crops and scores with "
        "frames and crops kept on its device, batching across videos; staged: CPU decode actors feed scoring "
        "actors through the object store; auto (default): fused on CUDA; on CPU fused for a light model (one actor "
        "per video up to one per core), staged for a heavy one (docs/operations.md, 'Worker layout')",
    )
    p.add_argument(
        "--gpu-fraction",
        type=gpu_fraction,
        default=1.0,
        help="fused worker on CUDA: GPUs per actor, in (0, 1]; 0.5 runs two fused actors per GPU so one decodes "
        "while the other scores (default 1.0)",
    )
    p.add_argument(
        "--videos-per-task",
        type=positive_int,
        default=8,
        help="fused worker: at most N videos per Ray task, fewer when needed to spread a small corpus over the actors; model batches span them (default 8); a task that still crashes after its retries records all of them as WorkerLost",
    )
    p.add_argument("--decode-workers", type=positive_int, default=None, help="staged: decode actors (default: CPUs left after scoring)")
    p.add_argument(
        "--score-workers",
        type=positive_int,
        default=None,
        help="scoring actors (staged: default one per GPU, or 1 on CPU); fused actors (default GPUs / --gpu-fraction, or min(CPUs, videos) on CPU)",
    )
    p.add_argument("--video-timeout", type=positive_float, default=1800.0, help="seconds one video may take before it is recorded as failed (default 1800)")
    p.add_argument("--force", action="store_true", help="re-annotate videos already done with this model and config")
    p.add_argument("--since", type=_parse_since, default=None, help="only videos modified at/after this time (ISO date/time, or POSIX seconds)")
    p.add_argument("--limit", type=positive_int, default=None, help="annotate at most N videos this run (the rest next time)")
    p.add_argument(
        "--max-attempts",
        type=positive_int,
        default=3,
        help="a video that failed for a transient or setup reason (timeout, lost worker, I/O) is retried by later "
        "runs until it has been tried this many times (default 3); bad data (not a video, truncated) is not "
        "retried until the file changes",
    )
    p.add_argument("--retry-failed", action="store_true", help="retry every failed video once more, whatever its failure class")
    p.add_argument(
        "--stall-timeout",
        type=positive_float,
        default=600.0,
        help="seconds without any finished batch after which the run stops (e.g. a lost node): what is done is "
        "committed, unfinished videos are recorded as ClusterStalled (retried next run), exit 1 (default 600)",
    )
    p.add_argument("--commit-every", type=positive_int, default=2000, help="commit output every N finished videos (default 2000; also every 120 s)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--log-level", default="INFO", type=_log_level, help="DEBUG | INFO | WARNING | ERROR (default INFO)")
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


def _import_pipeline() -> None:
    """Import what the run needs once Ray is up (Ray Data, Polars, Arrow datasets, the pipeline: ~1 s).

    The embedded start does this while it waits for its raylet (``ray_runtime.quick_start``),
    so it no longer runs before ``ray.init``; :func:`_annotate` imports the same modules
    again (at no cost then) and reports any failure.
    """
    import ray.data  # noqa: F401

    from ..pipeline import run  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a refused option value (2, message already printed)
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("cliper_batch.annotate")
    ray_address = args.ray_address or os.environ.get("RAY_ADDRESS") or None
    if ray_address is None and "ray" not in sys.modules:
        # The embedded runtime gets Ray 2.60's default, token auth on (a token is created in
        # ~/.ray/auth_token if missing), said explicitly so Ray does not warn about it. Ray
        # reads this when it is imported, hence here, before anything imports it.
        os.environ.setdefault("RAY_AUTH_MODE", "token")

    from .preflight import PreflightError, check_run
    from ..types import RunOptions  # light: the pipeline (Polars, Arrow, Ray Data) is imported while Ray starts

    # Fail fast, before Ray starts: everything every video will need (see preflight.py).
    try:
        checked = check_run(
            args.input, args.output, args.model,
            device=args.device, decoder=args.decoder, faces=args.faces, local=ray_address is None,
            face_detector=args.face_detector,
        )
    except PreflightError as exc:
        print(f"annotate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    batch_size = args.batch_size or (128 if checked.device.startswith("cuda") else 8)
    config = AnnotateConfig(
        segment_seconds=args.segment_seconds,
        frames_per_segment=args.frames_per_segment,
        faces=args.faces,
        detect_stride=args.detect_stride,
        face_detector=args.face_detector,
        min_face=args.min_face,
        decoder=args.decoder,
        device=args.device,
        compile=args.compile,
        batch_size=batch_size,
        video_timeout_s=args.video_timeout,
        engine_cache=args.engine_cache,
    )
    options = RunOptions(
        force=args.force,
        since=args.since,
        limit=args.limit,
        videos_per_part=args.commit_every,
        worker=args.worker,
        gpu_fraction=args.gpu_fraction,
        decode_workers=args.decode_workers,
        score_workers=args.score_workers,
        videos_per_task=args.videos_per_task,
        max_attempts=args.max_attempts,
        retry_failed=args.retry_failed,
        stall_timeout_s=args.stall_timeout,
    )

    children_before = ray_runtime.child_pids()
    started = ray_runtime.start(args.ray_address, while_waiting=_import_pipeline)
    try:
        return _annotate(args, config, options, checked, log)
    finally:
        if started:
            ray_runtime.stop(started, children_before)


def _annotate(args: argparse.Namespace, config: AnnotateConfig, options, checked, log: logging.Logger) -> int:
    """Run :func:`~cliper_batch.pipeline.run.annotate` (Ray is up); print its summary; the exit status."""
    from ..corpus.listing import CorpusNotFound
    from ..output.lock import OutputBusy
    from ..pipeline.driver import RunStopped
    from ..pipeline.run import annotate
    from ..uris import InvalidURI

    try:
        summary = annotate(
            args.input,
            args.output,
            args.model,
            config,
            model_info=checked.model,
            options=options,
        )
    except (CorpusNotFound, InvalidURI, OutputBusy) as exc:
        print(f"annotate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as stopped:  # what was done is committed; the next run resumes
        print(stopped.summary.line(), flush=True)
        print(f"annotate: stopped: {stopped.why}; finished videos are committed, the next run resumes", file=sys.stderr)
        return 128 + stopped.signum if stopped.signum else EXIT_FAILED
    except Exception:
        log.exception("annotation run failed")
        return EXIT_FAILED
    print(summary.line(), flush=True)
    return finish(summary)


def finish(summary) -> int:
    """Exit status of a run that ran: 0, or 1 (with the reason) when every video failed for one setup reason."""
    if summary.failure_reason:
        print(f"annotate: error: {summary.failure_reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_process(argv: list[str] | None = None) -> int:
    """The job as a whole process (``jobs/annotate.py``, ``cliper-annotate``, ``python -m cliper_batch.shell.annotate_cli``).

    :func:`main`, then ``gc.freeze()`` just before the interpreter exits: its last
    garbage-collection passes over Ray's, Arrow's and pandas' module graph
    (~175 000 objects) took 0.5-3 s on the 2-core host, for memory the OS takes back
    anyway (docs/benchmarks.md, "Whole-process exit"). Files are closed and the
    output committed by then; atexit hooks and stdio flushing still run. In-process
    callers (tests) use :func:`main`, which leaves the collector alone.
    """
    code = main(argv)
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(run_process())
