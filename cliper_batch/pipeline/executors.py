"""How the work list reaches the actors: one interface, three implementations.

An :class:`Executor` turns the run's work list into the scored blocks the driver hands to the writer
(:func:`~cliper_batch.pipeline.driver.drive`). Which one runs follows from the worker layout
(:class:`~cliper_batch.pipeline.sizing.Resources`) and the size of the work, in :func:`choose`:

* :class:`StagedRayData` - Ray Data: refs -> ``DecodeStage`` actors (decode, faces, crops on the host) ->
  ``ScoreStage`` actors (the model) -> driver;
* :class:`FusedRayData` - Ray Data: refs -> ``FusedStage`` actors (decode, faces, crops and scores on one
  device, ``videos_per_task`` videos per task so model batches fill across videos) -> driver;
* :class:`FusedSingleActor` - a short run on one fused actor, driven without Ray Data (:mod:`.single_actor`).

All three are built from one :class:`Job` (what the actors are constructed with) and get the same crash
handling: an actor that crashes is restarted and its task retried twice (:data:`CRASH_RETRIES`), then
the block's videos are dropped and the writer records them ``WorkerLost``.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import ray

from ..model.spec import ModelInfo
from ..types import AnnotateConfig
from . import ray_data_args, single_actor
from .sizing import Resources
from .worklist import MAX_BLOCKS, WorkList, refs_table

# An actor that crashes (a native fault on one file) is restarted and its task retried
# this often before the block's videos become WorkerLost rows. Ray 2.60's map_batches has
# no named parameter for these (its defaults, -1, retry forever: one video that kills its
# worker would stall the run); they pass only through the deprecated **ray_remote_args
# (removal announced for Ray 2.64; pyproject pins 2.60), so exactly that warning is muted.
CRASH_RETRIES = dict(max_restarts=2, max_task_retries=2)


@dataclass(frozen=True)
class Stages:
    """The actor classes of a run; ``None`` is the engine's own. Same constructors as the engine's
    (:class:`~.decode_stage.DecodeStage`, :class:`~.score_stage.ScoreStage`,
    :class:`~.fused_stage.FusedStage`): a test replaces one to inject a fault into real actors."""

    decode: type | None = None
    score: type | None = None
    fused: type | None = None


@dataclass(frozen=True)
class Job:
    """What every executor builds its actors from."""

    model_spec: str
    config: AnnotateConfig
    model: ModelInfo
    res: Resources
    storage_options: dict | None = None
    stages: Stages = field(default_factory=Stages)


class Executor(Protocol):
    name: str  # recorded in the run record's ``executor``

    def batches(self, work: WorkList) -> Iterator[dict]:
        """The scored blocks (numpy columns, one row per segment or failed video) of ``work``'s videos."""
        ...


def choose(job: Job, videos: int) -> Executor:
    """The executor for ``job``'s layout and ``videos`` videos to do.

    A replacement stage the chosen layout does not run is an error (it would be silently unused).
    """
    res, stages = job.res, job.stages
    unused = (stages.decode or stages.score) if res.worker == "fused" else stages.fused
    if unused is not None:
        raise ValueError(f"a replacement stage {unused.__name__} was given but the layout is {res.worker} "
                         f"({res.why}); pass RunOptions(worker=...) to match")
    if res.worker == "staged":
        return StagedRayData(job)
    if single_actor.applies(res.worker, res.score_workers, videos):
        return FusedSingleActor(job)
    return FusedRayData(job)


class StagedRayData:
    """refs -> decode actors -> scoring actors -> scored batches on the driver (Ray Data)."""

    name = "ray_data"

    def __init__(self, job: Job):
        self.job = job

    def batches(self, work: WorkList) -> Iterator[dict]:
        from .decode_stage import DecodeStage  # the stage modules import torch only in the actors
        from .score_stage import ScoreStage

        job, res, config = self.job, self.job.res, self.job.config
        ds = _refs_dataset(work)
        ds = _map_batches(
            ds,
            job.stages.decode or DecodeStage,
            fn_constructor_kwargs=dict(
                config=config,
                image_size=job.model.image_size,
                face_margin=job.model.face_margin,
                device=res.decode_device,  # the host: these actors hold no GPU share (Resources.decode_device)
                storage_options=job.storage_options,
                decode_threads=1 if res.decode_workers > 1 else 0,
            ),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=res.decode_workers),
            num_cpus=1,
        )
        ds = _map_batches(
            ds,
            job.stages.score or ScoreStage,
            fn_constructor_kwargs=dict(
                model_spec=job.model_spec,
                device=res.device,
                compile_backend=config.compile,
                example_batch=config.batch_size * config.frames_per_segment,
                engine_cache=config.engine_cache,
                num_threads=res.score_threads,
                storage_options=job.storage_options,
            ),
            batch_size=config.batch_size,
            **_model_actor_options(res),
        )
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")


class FusedRayData:
    """refs -> FusedStage actors (decode, faces, crops and scores on one device) -> driver (Ray Data).

    Each task gets ``res.videos_per_task`` videos (:func:`.sizing.size_workers`), so model batches fill
    across videos; each actor holds ``res.score_num_gpus`` GPUs (``--gpu-fraction``) and one CPU.
    """

    name = "ray_data"

    def __init__(self, job: Job):
        self.job = job

    def batches(self, work: WorkList) -> Iterator[dict]:
        from .fused_stage import FusedStage  # imports torch: only fused runs load it in the driver

        ds = _map_batches(
            _refs_dataset(work),
            self.job.stages.fused or FusedStage,
            fn_constructor_kwargs=_fused_kwargs(self.job),
            batch_size=self.job.res.videos_per_task,
            **_model_actor_options(self.job.res),
        )
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")


class FusedSingleActor:
    """One FusedStage actor, blocks of ``res.videos_per_task`` videos, without Ray Data (:mod:`.single_actor`)."""

    name = "single_actor"

    def __init__(self, job: Job):
        self.job = job

    def batches(self, work: WorkList) -> Iterator[dict]:
        from .fused_stage import FusedStage

        res = self.job.res
        options = dict(num_cpus=res.score_num_cpus, num_gpus=res.score_num_gpus, **CRASH_RETRIES)
        yield from single_actor.stream(self.job.stages.fused or FusedStage, _fused_kwargs(self.job), options,
                                       refs_table(work.refs), res.videos_per_task)


def _fused_kwargs(job: Job) -> dict:
    """The FusedStage constructor's arguments, for Ray Data's actors or the single actor."""
    return dict(model_spec=job.model_spec, config=job.config, device=job.res.device,
                num_threads=job.res.score_threads, storage_options=job.storage_options)


def _refs_dataset(work: WorkList) -> "ray.data.Dataset":
    """``{video_id, ref}`` rows, one per video to annotate, in up to 10 000 blocks (one video per block for
    small corpora, as tasks retry per block). A spilled work list is read back from its files by Ray
    Data's read tasks, not through the driver.

    A block whose task still fails after the actor restarts and retries is dropped
    (``max_errored_blocks``) instead of failing the whole run; the writer then records its videos as
    ``WorkerLost``.
    """
    ray.data.DataContext.get_current().max_errored_blocks = work.total
    if work.spilled:
        return work.dataset()
    table = refs_table(work.refs)
    step = -(-table.num_rows // max(1, min(table.num_rows, MAX_BLOCKS)))
    # from_blocks (a DeveloperAPI of the pinned Ray 2.60) computes each block's metadata here, where
    # from_arrow runs one remote task per block for it and waits: ~0.6 s before a one-video laptop run
    # starts, and 10 000 tasks for a large corpus. Same blocks, same MaterializedDataset.
    return ray.data.from_blocks([table.slice(i, step) for i in range(0, table.num_rows, step)])


def _model_actor_options(res: Resources) -> dict:
    """``map_batches`` settings of the actors that hold the model (ScoreStage or FusedStage): a fixed pool
    (the model loads once per actor) with its CPU/GPU share."""
    return dict(
        compute=ray.data.ActorPoolStrategy(size=res.score_workers, max_tasks_in_flight_per_actor=2),
        num_cpus=res.score_num_cpus,
        num_gpus=res.score_num_gpus,
    )


def _map_batches(ds, fn, **kwargs):
    """``ds.map_batches(fn, **kwargs)`` with bounded crash retries (see :data:`CRASH_RETRIES`)."""
    ray_data_args.install()  # its actors' small constructor arguments inlined: restarts need no object store
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs, **CRASH_RETRIES)


__all__ = ["CRASH_RETRIES", "Executor", "FusedRayData", "FusedSingleActor", "Job", "StagedRayData", "Stages", "choose"]
