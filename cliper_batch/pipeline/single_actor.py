"""A short run on one fused actor, driven without Ray Data: the same actor, the same blocks, less start-up.

When the layout is one :class:`~cliper_batch.pipeline.fused_stage.FusedStage` actor
and the work list is short (at most :data:`MAX_VIDEOS`: a laptop annotating a video or
a few), Ray Data's streaming executor only adds fixed costs to a run of seconds. For
every execution it starts three internal actors of its own (``_StatsActor``,
``_AutoscalingCoordinatorActor``, ``ActorLocationTracker``: two more worker processes,
~2.8 CPU s), and the fused actor's worker imports Ray Data (~0.8 s) before it can even
unpickle its constructor. On the 2-core laptop all of that lands while the actor imports
torch and open_clip, on the one path the run waits for (docs/benchmarks.md: the default
job on one 60 s video, 4 of 4 alternating runs 1.0-1.7 s faster, median 11.3 -> 10.0 s).

Here the driver creates that one actor itself (``ray.remote``, with the resources and
the crash retries (:data:`~cliper_batch.pipeline.executors.CRASH_RETRIES`) Ray Data's
actors) and calls it once per block of ``videos_per_task`` videos, as a streaming
generator (what Ray Data's actors run too), the next block queued while one runs. What
comes back is the blocks ``Dataset.iter_batches`` would give, to the same writer, the
same :func:`~cliper_batch.pipeline.driver.drive` (stall watchdog, stop signals), the
same ``WorkerLost`` accounting:

* a video that fails is a failed row, from the actor, as before;
* an actor that crashes is restarted and its block retried (``max_restarts`` /
  ``max_task_retries``: Ray replays the generator and skips what was delivered);
* a block that still fails is dropped, as Ray Data's ``max_errored_blocks`` drops it:
  its videos are left unfinished and the writer records them ``WorkerLost``; if the
  actor is gone for good, a new one takes the next block (at most
  :data:`MAX_REPLACEMENTS` times; after that the rest are left unfinished too).

Larger runs, and layouts with more than one actor, keep Ray Data (sharding, backpressure
across actors, its dashboard view); a test runs both on the same inputs and compares
the Parquet.
"""
from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator

import numpy as np
import ray

log = logging.getLogger(__name__)

MAX_VIDEOS = 64  # at most this many videos to annotate for a run to use one actor without Ray Data
MAX_REPLACEMENTS = 2  # actors that may die for good (restarts spent) before the rest of the blocks are left
IN_FLIGHT = 2  # blocks queued on the actor at once (as Ray Data's max_tasks_in_flight_per_actor)


def applies(worker: str, actors: int, videos: int) -> bool:
    """Whether a run of ``videos`` on ``actors`` actors of layout ``worker`` goes through :func:`stream`."""
    return worker == "fused" and actors == 1 and 0 < videos <= MAX_VIDEOS


def blocks(table, videos_per_task: int) -> Iterator[dict[str, np.ndarray]]:
    """The work list (``video_id``, ``ref`` columns) as the numpy batches a map_batches UDF gets."""
    step = max(1, int(videos_per_task))
    for start in range(0, table.num_rows, step):
        part = table.slice(start, step)
        yield {name: np.array(part.column(name).to_pylist(), dtype=object) for name in part.column_names}


def stream(actor_class, actor_kwargs: dict, actor_options: dict, table, videos_per_task: int) -> Iterator[dict]:
    """Scored blocks from one ``actor_class`` actor over ``table``'s videos (see the module docstring).

    The actor is killed when the iteration ends (or the generator is closed).
    """
    remote_class = ray.remote(actor_class).options(**actor_options)
    work = blocks(table, videos_per_task)
    requeued: deque = deque()  # blocks that were queued on an actor that died before running them
    pending: deque = deque()  # (output generator, block) per block queued on the actor
    actor = remote_class.remote(**actor_kwargs)
    replaced = 0

    def submit() -> None:
        while len(pending) < IN_FLIGHT:
            block = requeued.popleft() if requeued else next(work, None)
            if block is None:
                return
            pending.append((actor.__call__.options(num_returns="streaming").remote(block), block))

    try:
        submit()
        while pending:
            outputs, block = pending.popleft()
            try:
                for ref in outputs:
                    yield ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # restarts and retries spent: the actor is gone
                log.warning("a block of %d videos is lost: its actor died (%s); they are recorded WorkerLost",
                            len(block["ref"]), _first_line(exc))
                requeued.extend(b for _, b in pending)  # not run yet: the next actor runs them
                pending.clear()
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                if replaced == MAX_REPLACEMENTS:
                    actor = None
                    log.error("the fused actor died %d times; the videos not annotated yet are recorded WorkerLost",
                              replaced + 1)
                    return
                replaced += 1
                actor = remote_class.remote(**actor_kwargs)
            except ray.exceptions.RayError as exc:  # the actor lives: only this block failed (e.g. a scoring error)
                log.warning("a block of %d videos is lost: %s; they are recorded WorkerLost",
                            len(block["ref"]), _first_line(exc))
            submit()
    finally:
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


__all__ = ["IN_FLIGHT", "MAX_REPLACEMENTS", "MAX_VIDEOS", "applies", "blocks", "stream"]
