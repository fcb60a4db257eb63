"""Wire the stages into one Ray Data streaming job and drive the writer."""
from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import logging
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import ray

from .. import store_retries
from ..failures import common_setup_failure
from ..corpus.incremental import PlanTotals, done_state, plan_chunks
from ..corpus.listing import iter_videos
from ..model.spec import ModelInfo, describe_model
from .progress import RunProgress
from ..types import AnnotateConfig, RunOptions, VideoRef
from ..uris import check_locations
from ..output import run_record
from ..output.lock import OutputLock
from ..output.recovery import recover_output
from ..output.writer import OutputUnwritable, OutputWriter
from . import ray_data_args, single_actor
from .driver import RunStopped, StopSignals, drive
from .metrics import RunMetrics
from .sizing import Resources, plan_resources
from .worklist import MAX_BLOCKS, WorkList, refs_table


log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_id: str
    output: str
    model_id: str
    videos_total: int
    videos_ok: int
    videos_failed: int
    segments: int
    crops: int
    video_seconds: float
    wall_s: float
    score_backend: str
    decode_workers: int
    score_workers: int
    videos_skipped: int = 0
    # set when no video succeeded and all failed for one non-data reason: the run itself is broken
    failure_reason: str | None = None
    status: str = run_record.FINISHED  # finished | interrupted | stalled | failed
    listed: int = 0
    skipped_done: int = 0
    not_retried_data: int = 0  # failed before as bad data, file unchanged
    not_retried_gave_up: int = 0  # failed --max-attempts times before, file unchanged
    retried: int = 0  # failed before, tried again
    failed_by_class: dict = field(default_factory=dict)
    videos_dropped: int = 0  # unfinished when interrupted: left for the next run
    store_retries: int = 0  # object-store requests retried (driver + workers; the run record's store_retries)

    @property
    def crops_per_s(self) -> float:
        return self.crops / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        not_retried = self.not_retried_data + self.not_retried_gave_up
        failed_before = (
            f"{not_retried} failed before and not retried ({self.not_retried_data} bad data, unchanged; "
            f"{self.not_retried_gave_up} out of attempts; --retry-failed tries them again)"
        )
        if self.videos_total == 0:
            return (
                f"run {self.run_id}: nothing to do: {self.listed} listed, {self.skipped_done} already done, "
                f"{failed_before}, {self.videos_skipped - self.skipped_done - not_retried} left out by --since/--limit; "
                f"output={self.output}"
            )
        status = "" if self.status == run_record.FINISHED else f"{self.status.upper()}: "
        classes = ", ".join(f"{k} {v}" for k, v in sorted(self.failed_by_class.items()))
        return (
            f"run {self.run_id}: {status}videos ok={self.videos_ok} failed={self.videos_failed} of {self.videos_total}"
            f"{f' (failed: {classes})' if classes else ''}"
            f"{f', {self.videos_dropped} unfinished left for the next run' if self.videos_dropped else ''} "
            f"(skipped {self.videos_skipped}: {self.skipped_done} done{f', {failed_before}' if not_retried else ''}"
            f"{f'; retried {self.retried} failed before' if self.retried else ''}); "
            f"{self.video_seconds:.1f} video-s in {self.wall_s:.1f} s "
            f"({self.video_seconds / max(self.wall_s, 1e-9):.2f} video-s/s, {self.crops_per_s:.1f} crops/s); "
            f"segments={self.segments}; "
            f"{f'{self.store_retries} object-store requests retried; ' if self.store_retries else ''}"
            f"output={self.output}"
        )


def config_hash(config: AnnotateConfig) -> str:
    return hashlib.sha256(json.dumps(config.semantic_dict(), sort_keys=True).encode()).hexdigest()[:12]


def annotate(
    input_uri: str,
    output_uri: str,
    model_spec: str,
    config: AnnotateConfig,
    *,
    options: RunOptions | None = None,
    decode_workers: int | None = None,
    score_workers: int | None = None,
    storage_options: dict | None = None,
    run_id: str | None = None,
    model_info: ModelInfo | None = None,
    decode_stage: type | None = None,
    fused_stage: type | None = None,
    listing: Iterable[list[VideoRef]] | None = None,
) -> RunSummary:
    """Annotate the videos under ``input_uri`` that still need it into ``output_uri``. Ray must be initialised.

    ``options.worker`` picks the layout (:func:`.sizing.resolve_worker`). ``decode_stage``
    replaces :class:`DecodeStage` and ``fused_stage`` :class:`FusedStage` (same
    constructors), e.g. to inject faults in tests. ``listing`` replaces the listing of
    ``input_uri`` (chunks of ``VideoRef``, as :func:`iter_videos` gives; a benchmark's synthetic corpus).

    The plan streams: the listing comes in chunks, each chunk is diffed against the output's
    compact done set (:func:`done_state`) and its videos to do go to the work list
    (:class:`WorkList`: in memory while short, else spilled to the run's staging folder and read
    back by Ray Data), so the driver's memory does not grow with the corpus.
    """
    options = options or RunOptions()
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc)
    store_retries.take()  # this process's retries from before the run are not the run's
    output_uri = check_locations(input_uri, output_uri)
    chunks = iter(listing if listing is not None else iter_videos(input_uri, **(storage_options or {})))
    first = next(chunks, [])  # a missing or empty corpus fails here, before the output is locked
    info = model_info or describe_model(model_spec, storage_options)
    model_id, classes, image_size = info.model_id, info.classes, info.image_size
    run_id = run_id or run_record.new_run_id()
    chash = config_hash(config)
    with OutputLock(output_uri, run_id, storage_options=storage_options), StopSignals() as signals:
        recovery = recover_output(output_uri, current_run_id=run_id, storage_options=storage_options)
        state = done_state(output_uri, model_id, chash, storage_options)
        plan = PlanTotals()  # counted as the listing streams
        work = WorkList(output_uri, run_id, storage_options)
        for chunk_plan in plan_chunks(
            itertools.chain([first], chunks), state, plan, force=options.force, since=options.since,
            limit=options.limit, max_attempts=options.max_attempts, retry_failed=options.retry_failed,
        ):
            work.add(chunk_plan)
        work.close()
        del state, first, chunks
        log.info(
            "run %s: %d listed, %d to do (%d changed, %d retried), %d already done, %d failed before and not retried "
            "(%d bad data, %d out of attempts), %d older than --since, %d deferred by --limit%s",
            run_id, plan.listed, work.total, plan.changed, plan.retried, plan.skipped_done, plan.skipped_failed,
            plan.skipped_data, plan.skipped_gave_up, plan.skipped_since, plan.deferred_limit,
            f"; work list in {len(work.files)} files under the run's staging folder" if work.spilled else "",
        )
        res = plan_resources(
            config.device, decode_workers, score_workers, options.worker, options.gpu_fraction,
            videos=work.total, model_gflops=info.visual_gflops, videos_per_task=options.videos_per_task,
        )
        if (decode_stage if res.worker == "fused" else fused_stage) is not None:  # would be silently unused
            raise ValueError(f"a replacement {'decode' if res.worker == 'fused' else 'fused'} stage was given but "
                             f"the layout is {res.worker} ({res.why}); pass RunOptions(worker=...) to match")
        log.info(
            "run %s: %s worker on %s: %s (%s; %d torch threads each%s) because %s", run_id, res.worker, res.device,
            f"{res.score_workers} fused actors" if res.worker == "fused"
            else f"{res.decode_workers} decoders on {res.decode_device} -> {res.score_workers} scorers",
            f"{res.videos_per_task} videos per task" if res.worker == "fused" else f"{work.total} videos",
            res.score_threads, f", {res.score_num_gpus:g} GPU" if res.score_num_gpus else "", res.why,
        )
        if res.worker == "staged" and res.device == "cuda":
            log.info("run %s: staged on CUDA: the %d decoders decode (PyAV) and detect faces on the CPU, no GPU share "
                     "each; only the scorers use the GPU (the fused layout decodes and detects on the GPU)",
                     run_id, res.decode_workers)
        status, why, error = run_record.FINISHED, "", None
        # which drives the actors: Ray Data, or for a short run on one fused actor the driver itself
        executor = "single_actor" if single_actor.applies(res.worker, res.score_workers, work.total) else "ray_data"
        metrics = RunMetrics(run_id, videos_total=work.total, batch_size=config.batch_size,
                             frames_per_segment=config.frames_per_segment, device=res.device,
                             score_workers=res.score_workers)  # Ray's metrics system (docs/operations.md)
        with OutputWriter(
            output_uri, classes, run_id=run_id, model_id=model_id, config_hash=chash, on_commit=metrics.committed,
            videos_per_part=options.videos_per_part, seconds_per_part=options.seconds_per_part,
            storage_options=storage_options, expected=work, attempts=work.attempts,
        ) as writer:
            if work.total:
                if executor == "single_actor":
                    log.info("run %s: %d videos <= %d on one fused actor: driven without Ray Data (less start-up)",
                             run_id, work.total, single_actor.MAX_VIDEOS)
                    batches = _stream_single_actor(work.refs, model_spec, config, res, storage_options, fused_stage)
                elif res.worker == "fused":
                    batches = _stream_fused(work, model_spec, config, res, options, storage_options, fused_stage)
                else:
                    batches = _stream(work, model_spec, config, image_size, res, storage_options, decode_stage,
                                      face_margin=info.face_margin)
                progress = RunProgress(work.total)

                def consume(batch) -> None:
                    writer.add_batch(batch)
                    st = writer.stats
                    progress.update(st.videos_ok + st.videos_failed, st.videos_failed, st.video_seconds)
                    metrics.after_batch(batch, writer)

                try:
                    status, why = drive(batches, consume, stall_timeout_s=options.stall_timeout_s, stop=signals,
                                         tick=metrics.tick)
                except OutputUnwritable as exc:  # the output's disk is full or read-only: one line, not a traceback
                    status, why, error = "failed", str(exc), exc
                except Exception as exc:  # the pipeline itself broke (not one video): keep what is done
                    log.exception("run %s: the pipeline failed", run_id)
                    status, why, error = "failed", f"the pipeline failed: {type(exc).__name__}: {exc}", exc
            if status == run_record.INTERRUPTED:  # unfinished videos stay unrecorded: the next run does them
                stats = writer.close(lost_error_type=None)
            elif status == run_record.FINISHED:
                stats = writer.close()  # videos still incomplete become failed rows here
            else:
                stats = writer.close(lost_error_type="ClusterStalled" if status == run_record.STALLED else "WorkerLost",
                                     lost_reason=why)
        if writer.unwritable is not None:  # refused while closing: nothing more was written (output/writer.py)
            status, why, error = "failed", str(writer.unwritable), writer.unwritable
        metrics.finish(stats, status)
        wall = time.perf_counter() - t0
        retries = _store_retries(store_retries.take(), stats.store_retries)
        summary = RunSummary(
            run_id=run_id,
            output=output_uri,
            model_id=model_id,
            videos_total=work.total,
            videos_ok=stats.videos_ok,
            videos_failed=stats.videos_failed,
            segments=stats.segments,
            crops=stats.segments * config.frames_per_segment,
            video_seconds=stats.video_seconds,
            wall_s=wall,
            score_backend=",".join(sorted(stats.score_backends)) or config.compile,
            decode_workers=res.decode_workers,
            score_workers=res.score_workers,
            videos_skipped=plan.skipped_done + plan.skipped_since + plan.deferred_limit + plan.skipped_failed,
            failure_reason=_run_failure(output_uri, run_id, stats, storage_options),
            status=status,
            listed=plan.listed,
            skipped_done=plan.skipped_done,
            not_retried_data=plan.skipped_data,
            not_retried_gave_up=plan.skipped_gave_up,
            retried=plan.retried,
            failed_by_class=dict(stats.failed_by_class),
            videos_dropped=stats.videos_dropped,
            store_retries=retries["total"],
        )
        writer.write_record(
            run_id,
            {
                "run_id": run_id,
                "status": status,
                "stopped_because": why or None,
                "started_at": started.isoformat(),
                "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "input": input_uri,
                "output": output_uri,
                "model_spec": model_spec,
                "model_id": model_id,
                "config": asdict(config),
                "config_hash": chash,
                "options": asdict(options),
                "resources": asdict(res),
                "executor": executor,
                "listed": plan.listed,
                "plan": plan.record(),
                "recovery": asdict(recovery),
                "retired": asdict(writer.retired) if writer.retired else None,
                "summary": asdict(summary),
                "video_seconds_per_s": summary.video_seconds / max(wall, 1e-9),
                "crops_per_s": summary.crops_per_s,
                "store_retries": retries,
                "scoring": {
                    "backends": sorted(stats.score_backends),  # what really ran (after any fallback)
                    "busy_s": stats.score_busy_s,
                    "window_s": stats.score_window_s,
                    "crops_per_busy_s": summary.crops / stats.score_busy_s if stats.score_busy_s else None,
                    "crops_per_window_s": summary.crops / stats.score_window_s if stats.score_window_s else None,
                    # busy / (window x actors): how much of the time the model had work
                    "busy_fraction": stats.score_busy_s / (stats.score_window_s * res.score_workers)
                    if stats.score_window_s
                    else None,
                },
            },
        )
    if writer.unwritable is not None and error is not writer.unwritable:  # the run record itself was refused
        summary.status, status, why, error = "failed", "failed", str(writer.unwritable), writer.unwritable
    if status != run_record.FINISHED:
        raise RunStopped(summary, why, signals.signum) from error
    return summary


def _store_retries(driver: dict[str, int], workers: int) -> dict:
    """The run record's ``store_retries``: object-store requests botocore sent again (store_retries.py)."""
    return {"total": sum(driver.values()) + workers, "driver": sum(driver.values()), "workers": workers,
            "driver_by_reason": dict(sorted(driver.items()))}


def _run_failure(output_uri: str, run_id: str, stats, storage_options) -> str | None:
    """Why the run as a whole failed, when no video succeeded and all failed for the same non-data reason."""
    if stats.videos_ok or not stats.videos_failed:
        return None
    import polars as pl

    from ..output.query import scan_videos

    failed = (
        scan_videos(output_uri, storage_options=storage_options)
        .filter((pl.col("run_id") == run_id) & (pl.col("status") == "failed"))
        .select("error_type", "error")
        .collect()
    )
    reason = common_setup_failure(failed["error_type"].to_list())
    if reason is None:
        return None
    example = next((e for e in failed["error"].to_list() if e), "")
    return (
        f"every video of this run ({stats.videos_failed}) failed with {reason}, a problem of the run's setup, "
        f"not of the videos; fix it and run again. First error: {example}"
    )


def _refs_dataset(work) -> "ray.data.Dataset":
    """``{video_id, ref}`` rows, one per video to annotate, in up to 10 000 blocks (one video per block for
    small corpora, as tasks retry per block). ``work``: a list of refs or a :class:`WorkList` (a spilled
    one is read back from its files by Ray Data's read tasks, not through the driver).

    A block whose task still fails after the actor restarts and retries is
    dropped (``max_errored_blocks``) instead of failing the whole run; the
    writer then records its videos as ``WorkerLost``.
    """
    refs = work if isinstance(work, list) else None
    ray.data.DataContext.get_current().max_errored_blocks = len(refs) if refs is not None else work.total
    if refs is None and work.spilled:
        return work.dataset()
    table = refs_table(refs if refs is not None else work.refs)
    step = -(-table.num_rows // max(1, min(table.num_rows, MAX_BLOCKS)))
    # from_blocks (a DeveloperAPI of the pinned Ray 2.60) computes each block's metadata here, where
    # from_arrow runs one remote task per block for it and waits: ~0.6 s before a one-video laptop run
    # starts, and 10 000 tasks for a large corpus. Same blocks, same MaterializedDataset.
    return ray.data.from_blocks([table.slice(i, step) for i in range(0, table.num_rows, step)])


def _stream(
    refs, model_spec: str, config: AnnotateConfig, image_size: int, res: Resources, storage_options, decode_stage=None,
    face_margin: float | None = None,
):
    """The staged pipeline: refs -> decode actors -> scoring actors -> scored batches on the driver."""
    from .decode_stage import DecodeStage  # the stage modules import torch only in the actors
    from .score_stage import ScoreStage

    ds = _refs_dataset(refs)
    ds = _map_batches(
        ds,
        decode_stage or DecodeStage,
        fn_constructor_kwargs=dict(
            config=config,
            image_size=image_size,
            face_margin=face_margin,
            device=res.decode_device,  # the host: these actors hold no GPU share (Resources.decode_device)
            storage_options=storage_options,
            decode_threads=1 if res.decode_workers > 1 else 0,
        ),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=res.decode_workers),
        num_cpus=1,
    )
    ds = _map_batches(
        ds,
        ScoreStage,
        fn_constructor_kwargs=dict(
            model_spec=model_spec,
            device=res.device,
            compile_backend=config.compile,
            example_batch=config.batch_size * config.frames_per_segment,
            engine_cache=config.engine_cache,
            num_threads=res.score_threads,
            storage_options=storage_options,
        ),
        batch_size=config.batch_size,
        **_model_actor_options(res),
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _model_actor_options(res: Resources) -> dict:
    """``map_batches`` settings of the actors that hold the model (ScoreStage or FusedStage).

    A fixed pool (the model loads once per actor) with its CPU/GPU share (crash
    retries: ``_CRASH_RETRIES``).
    """
    return dict(
        compute=ray.data.ActorPoolStrategy(size=res.score_workers, max_tasks_in_flight_per_actor=2),
        num_cpus=res.score_num_cpus,
        num_gpus=res.score_num_gpus,
    )


# An actor that crashes (a native fault on one file) is restarted and its task retried
# this often before the block's videos become WorkerLost rows. Ray 2.60's map_batches has
# no named parameter for these (its defaults, -1, retry forever: one video that kills its
# worker would stall the run); they pass only through the deprecated **ray_remote_args
# (removal announced for Ray 2.64; pyproject pins 2.60), so exactly that warning is muted.
_CRASH_RETRIES = dict(max_restarts=2, max_task_retries=2)


def _map_batches(ds, fn, **kwargs):
    """``ds.map_batches(fn, **kwargs)`` with bounded crash retries (see ``_CRASH_RETRIES``)."""
    ray_data_args.install()  # its actors' small constructor arguments inlined: restarts need no object store
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs, **_CRASH_RETRIES)


def _fused_kwargs(model_spec: str, config: AnnotateConfig, res: Resources, storage_options) -> dict:
    """The FusedStage constructor's arguments, for Ray Data's actors or the single actor."""
    return dict(model_spec=model_spec, config=config, device=res.device, num_threads=res.score_threads,
                storage_options=storage_options)


def _stream_single_actor(refs, model_spec: str, config: AnnotateConfig, res: Resources, storage_options, fused_stage=None):
    """One FusedStage actor, blocks of ``res.videos_per_task`` videos, without Ray Data (:mod:`.single_actor`)."""
    from .fused_stage import FusedStage

    options = dict(num_cpus=res.score_num_cpus, num_gpus=res.score_num_gpus, **_CRASH_RETRIES)
    yield from single_actor.stream(fused_stage or FusedStage, _fused_kwargs(model_spec, config, res, storage_options),
                                   options, refs_table(refs), res.videos_per_task)


def _stream_fused(
    refs, model_spec: str, config: AnnotateConfig, res: Resources, options: RunOptions, storage_options, fused_stage=None
):
    """The fused pipeline: refs -> FusedStage actors (decode, faces, crops and scores on one device) -> driver.

    Each task gets ``res.videos_per_task`` videos (:func:`.sizing.size_workers`), so model batches fill
    across videos; each actor holds ``res.score_num_gpus`` GPUs (``--gpu-fraction``)
    and one CPU. Crash handling is the staged one: restart, retry twice, then
    the block's videos become ``WorkerLost`` rows.
    """
    from .fused_stage import FusedStage  # imports torch: only fused runs (CUDA, or --worker fused) load it here

    ds = _refs_dataset(refs)
    ds = _map_batches(
        ds,
        fused_stage or FusedStage,
        fn_constructor_kwargs=_fused_kwargs(model_spec, config, res, storage_options),
        batch_size=res.videos_per_task,
        **_model_actor_options(res),
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
