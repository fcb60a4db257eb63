"""One run, as a page: plan, lock, lay out the workers, execute, commit, record."""
from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator

from .. import store_retries
from ..corpus.incremental import PlanTotals, done_state, plan_chunks
from ..corpus.listing import iter_videos
from ..model.spec import ModelInfo, describe_model
from ..output import run_record
from ..output.lock import OutputLock
from ..output.recovery import recover_output
from ..output.writer import OutputUnwritable, OutputWriter
from ..types import AnnotateConfig, RunOptions, VideoRef
from ..uris import check_locations
from . import executors, single_actor
from .driver import RunStopped, StopSignals, drive
from .executors import Executor, Job, Stages
from .metrics import RunMetrics
from .progress import RunProgress
from .sizing import Resources, plan_resources
from .summary import RunSummary
from .worklist import WorkList

log = logging.getLogger(__name__)


def config_hash(config: AnnotateConfig) -> str:
    return hashlib.sha256(json.dumps(config.semantic_dict(), sort_keys=True).encode()).hexdigest()[:12]


def annotate(
    input_uri: str,
    output_uri: str,
    model_spec: str,
    config: AnnotateConfig,
    *,
    options: RunOptions | None = None,
    storage_options: dict | None = None,
    run_id: str | None = None,
    model_info: ModelInfo | None = None,
    listing: Iterable[list[VideoRef]] | None = None,
    stages: Stages | None = None,
) -> RunSummary:
    """Annotate the videos under ``input_uri`` that still need it into ``output_uri``. Ray must be initialised.

    Plan (the listing diffed against the output's done set, streamed: :func:`_plan`), lock the output,
    lay out the workers (:func:`.sizing.plan_resources`), execute (:mod:`.executors`, driven by
    :func:`.driver.drive`), commit (the writer's close), record (``runs/<run_id>.json``).

    ``listing`` replaces the listing of ``input_uri`` (chunks of ``VideoRef``, as :func:`iter_videos`
    gives: a benchmark's synthetic corpus); ``stages`` replaces actor classes (:class:`.executors.Stages`:
    a test's fault injection). Raises :class:`RunStopped` (with the summary) unless the run finished.
    """
    options = options or RunOptions()
    t0, started = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc)
    store_retries.take()  # this process's retries from before the run are not the run's
    output_uri = check_locations(input_uri, output_uri)
    chunks = _peeked(listing if listing is not None else iter_videos(input_uri, **(storage_options or {})))
    info = model_info or describe_model(model_spec, storage_options)
    run_id = run_id or run_record.new_run_id()
    chash = config_hash(config)
    with OutputLock(output_uri, run_id, storage_options=storage_options), StopSignals() as signals:
        recovery = recover_output(output_uri, current_run_id=run_id, storage_options=storage_options)
        plan, work = _plan(chunks, output_uri, run_id, info.model_id, chash, options, storage_options)
        del chunks
        res = _lay_out(config, options, info, work.total, run_id)
        executor = executors.choose(Job(model_spec, config, info, res, storage_options, stages or Stages()), work.total)
        metrics = RunMetrics(run_id, videos_total=work.total, batch_size=config.batch_size,
                             frames_per_segment=config.frames_per_segment, device=res.device,
                             score_workers=res.score_workers)  # Ray's metrics system (docs/operations.md)
        with OutputWriter(
            output_uri, info.classes, run_id=run_id, model_id=info.model_id, config_hash=chash,
            on_commit=metrics.committed, videos_per_part=options.videos_per_part,
            seconds_per_part=options.seconds_per_part, storage_options=storage_options, expected=work,
            attempts=work.attempts,
        ) as writer:
            status, why, error = _execute(executor, work, writer, metrics, options, signals, run_id)
            stats = _commit(writer, status, why)
        if writer.unwritable is not None:  # refused while closing: nothing more was written (output/writer.py)
            status, why, error = "failed", str(writer.unwritable), writer.unwritable
        metrics.finish(stats, status)
        retries = run_record.retries_record(store_retries.take(), stats.store_retries)
        summary = RunSummary.of(run_id, output_uri, info.model_id, config, res, plan, work.total, stats,
                                wall_s=time.perf_counter() - t0, status=status, store_retries=retries["total"],
                                storage_options=storage_options)
        writer.write_record(run_id, run_record.build(
            summary=summary, status=status, stopped_because=why, started=started, input_uri=input_uri,
            model_spec=model_spec, config=config, config_hash=chash, options=options, resources=res,
            executor=executor.name, plan=plan, recovery=recovery, retired=writer.retired, retries=retries,
            stats=stats, stage_seconds=metrics.stage_seconds,
        ))
    if writer.unwritable is not None and error is not writer.unwritable:  # the run record itself was refused
        summary.status, status, why, error = "failed", "failed", str(writer.unwritable), writer.unwritable
    if status != run_record.FINISHED:
        raise RunStopped(summary, why, signals.signum) from error
    return summary


def _peeked(listing: Iterable[list[VideoRef]]) -> Iterator[list[VideoRef]]:
    """The listing's chunks, the first one already read: a missing or empty corpus fails here, before the
    output is locked."""
    chunks = iter(listing)
    return itertools.chain([next(chunks, [])], chunks)


def _plan(chunks, output_uri: str, run_id: str, model_id: str, chash: str, options: RunOptions,
          storage_options) -> tuple[PlanTotals, WorkList]:
    """The videos to do: each chunk of the listing diffed against the output's compact done set
    (:func:`done_state`), its videos to do added to the work list (:class:`WorkList`: in memory while
    short, else spilled to the run's staging folder and read back by Ray Data), so the driver's memory
    does not grow with the corpus. The done set is released when this returns."""
    state = done_state(output_uri, model_id, chash, storage_options)
    plan = PlanTotals()  # counted as the listing streams
    work = WorkList(output_uri, run_id, storage_options)
    for chunk_plan in plan_chunks(
        chunks, state, plan, force=options.force, since=options.since, limit=options.limit,
        max_attempts=options.max_attempts, retry_failed=options.retry_failed,
    ):
        work.add(chunk_plan)
    work.close()
    log.info(
        "run %s: %d listed, %d to do (%d changed, %d retried), %d already done, %d failed before and not retried "
        "(%d bad data, %d out of attempts), %d older than --since, %d deferred by --limit%s",
        run_id, plan.listed, work.total, plan.changed, plan.retried, plan.skipped_done, plan.skipped_failed,
        plan.skipped_data, plan.skipped_gave_up, plan.skipped_since, plan.deferred_limit,
        f"; work list in {len(work.files)} files under the run's staging folder" if work.spilled else "",
    )
    return plan, work


def _lay_out(config: AnnotateConfig, options: RunOptions, info: ModelInfo, videos: int, run_id: str) -> Resources:
    """The worker layout for this cluster and this much work (:func:`.sizing.plan_resources`), logged."""
    res = plan_resources(
        config.device, options.decode_workers, options.score_workers, options.worker, options.gpu_fraction,
        videos=videos, model_gflops=info.visual_gflops, videos_per_task=options.videos_per_task,
    )
    log.info(
        "run %s: %s worker on %s: %s (%s; %d torch threads each%s) because %s", run_id, res.worker, res.device,
        f"{res.score_workers} fused actors" if res.worker == "fused"
        else f"{res.decode_workers} decoders on {res.decode_device} -> {res.score_workers} scorers",
        f"{res.videos_per_task} videos per task" if res.worker == "fused" else f"{videos} videos",
        res.score_threads, f", {res.score_num_gpus:g} GPU" if res.score_num_gpus else "", res.why,
    )
    if res.worker == "staged" and res.device == "cuda":
        log.info("run %s: staged on CUDA: the %d decoders decode (PyAV) and detect faces on the CPU, no GPU share "
                 "each; only the scorers use the GPU (the fused layout decodes and detects on the GPU)",
                 run_id, res.decode_workers)
    return res


def _execute(executor: Executor, work: WorkList, writer: OutputWriter, metrics: RunMetrics, options: RunOptions,
             signals: StopSignals, run_id: str) -> tuple[str, str, BaseException | None]:
    """Feed ``executor``'s scored batches to the writer until the work is done, a stop signal comes or the
    cluster stalls: ``(status, why, error)``. A broken pipeline or an unwritable output ends the run as
    ``failed`` with what is done kept; one bad video never gets here (it is a failed row)."""
    if not work.total:
        return run_record.FINISHED, "", None
    if executor.name == "single_actor":
        log.info("run %s: %d videos <= %d on one fused actor: driven without Ray Data (less start-up)",
                 run_id, work.total, single_actor.MAX_VIDEOS)
    progress = RunProgress(work.total)

    def consume(batch) -> None:
        writer.add_batch(batch)
        st = writer.stats
        progress.update(st.videos_ok + st.videos_failed, st.videos_failed, st.video_seconds)
        metrics.after_batch(batch, writer)

    try:
        status, why = drive(executor.batches(work), consume, stall_timeout_s=options.stall_timeout_s,
                            stop=signals, tick=metrics.tick)
        return status, why, None
    except OutputUnwritable as exc:  # the output's disk is full or read-only: one line, not a traceback
        return "failed", str(exc), exc
    except Exception as exc:  # the pipeline itself broke (not one video): keep what is done
        log.exception("run %s: the pipeline failed", run_id)
        return "failed", f"the pipeline failed: {type(exc).__name__}: {exc}", exc


def _commit(writer: OutputWriter, status: str, why: str):
    """Close the writer the way the run ended: its closing stats."""
    if status == run_record.INTERRUPTED:  # unfinished videos stay unrecorded: the next run does them
        return writer.close(lost_error_type=None)
    if status == run_record.FINISHED:
        return writer.close()  # videos still incomplete become failed rows here
    return writer.close(lost_error_type="ClusterStalled" if status == run_record.STALLED else "WorkerLost",
                        lost_reason=why)


__all__ = ["RunStopped", "RunSummary", "Stages", "annotate", "config_hash"]
