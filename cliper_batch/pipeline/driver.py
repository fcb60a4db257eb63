"""The driver loop: consume scored batches until the pipeline ends, a stop signal comes, or progress stalls.

Ray Data's iterator blocks while it waits for the next block, for as long as it
takes: after a node is lost, a fixed actor pool can wait forever on a resource
demand no remaining node can meet, and a signal handler only runs between
Python bytecodes of the main thread. So the iterator runs in a pump thread that
hands batches over a short queue, and the main thread waits on that queue in
short slices, checking the stop flag (SIGINT/SIGTERM) and the time since the
last batch (the stall watchdog).
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable

from ..output import run_record

log = logging.getLogger(__name__)

_END = object()


class StopSignals:
    """While active (``with``), SIGINT and SIGTERM set :attr:`event` instead of killing the run.

    The first signal asks the run to stop at the next batch boundary (finished
    videos are committed, the run record says ``interrupted``); a second SIGINT
    raises ``KeyboardInterrupt`` at once. Outside the main thread it does
    nothing (Python only delivers signals there).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.event = threading.Event()
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        log.warning("%s received: stopping after the batches in hand (finished videos are kept)", signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}


class RunStopped(RuntimeError):
    """A run ended before its work list did (interrupted, stalled or failed); what was done is committed."""

    def __init__(self, summary, why: str, signum: int | None = None):
        self.summary, self.why, self.signum = summary, why, signum
        super().__init__(f"run {summary.run_id} {summary.status}: {why}")


def _cluster_state() -> str:
    try:
        import ray

        total, free = ray.cluster_resources(), ray.available_resources()
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        return f"{alive} node(s) alive, CPU {free.get('CPU', 0):g} free of {total.get('CPU', 0):g}, GPU {free.get('GPU', 0):g} free of {total.get('GPU', 0):g}"
    except Exception as exc:  # the cluster itself may be what is broken
        return f"cluster state unavailable ({type(exc).__name__})"


def drive(
    batches: Iterable,
    sink: Callable[[object], None],
    *,
    stall_timeout_s: float,
    stop: StopSignals | None = None,
    poll_s: float = 0.5,
    tick: Callable[[float, int], None] | None = None,
    join_s: float = 5.0,
) -> tuple[str, str]:
    """Feed ``batches`` to ``sink`` on this thread; return (status, why): ``finished``, ``interrupted`` or ``stalled``.

    An exception of the pipeline is raised here. However the loop ends, the pump thread is told to
    stop and ``batches`` is closed on it (a generator's ``close``: Ray Data's iterator shuts its
    streaming executor down), and this waits up to ``join_s`` for that: once the iterator hands over
    its next block, which a running pipeline does within a batch's time. Left to itself, the pump
    would still be inside Ray Data's iterator when the caller shuts Ray down and the interpreter
    exits, a daemon thread in native code: a crash at exit (SIGSEGV) or a late "core worker has
    already been shutdown" error was seen so, after the right message. Only where the pipeline
    delivers nothing more (a stall) is the pump left behind, blocked, after ``join_s``.

    ``tick(idle_s, waiting)``, if given, is called at every poll (at most every ``poll_s``) and
    before each batch: seconds since the last batch, and batches fetched but not yet sunk (the
    run's metrics: :mod:`.metrics`).
    """
    q: queue.Queue = queue.Queue(maxsize=2)
    quit_ = threading.Event()

    def hand_over(item) -> bool:
        """Put ``item`` on the queue unless told to quit first."""
        while not quit_.is_set():
            try:
                q.put(item, timeout=poll_s)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        it = iter(batches)
        try:
            for b in it:
                if not hand_over(b):
                    return
            hand_over(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver thread
            hand_over(exc)
        finally:
            _close(it)

    t = threading.Thread(target=pump, name="batch-pump", daemon=True)
    t.start()
    last = time.monotonic()
    try:
        while True:
            if tick is not None:
                tick(time.monotonic() - last, q.qsize())
            if stop is not None and stop.event.is_set():
                name = signal.Signals(stop.signum).name if stop.signum else "stop"
                return run_record.INTERRUPTED, f"{name} received"
            try:
                item = q.get(timeout=poll_s)
            except queue.Empty:
                idle = time.monotonic() - last
                if idle > stall_timeout_s:
                    why = (
                        f"no progress for {idle:.0f} s (--stall-timeout {stall_timeout_s:g}): {_cluster_state()}; "
                        "a lost node or a resource demand no node can meet stops the pipeline"
                    )
                    log.error("stalled: %s", why)
                    return run_record.STALLED, why
                continue
            last = time.monotonic()
            if item is _END:
                return run_record.FINISHED, ""
            if isinstance(item, BaseException):
                raise item
            sink(item)
            last = time.monotonic()  # the sink's own time (a commit) is not the cluster's idleness
    finally:
        quit_.set()
        t.join(join_s)
        if t.is_alive():
            log.debug("the batch pump is still waiting on the pipeline %.0f s after the run loop ended; left behind",
                      join_s)


def _close(it) -> None:
    """Close a generator (its ``finally`` blocks run now, on this thread); log what closing raised."""
    close = getattr(it, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # noqa: BLE001 - the run is ending either way; Ray Data's shutdown is its own business
        log.debug("closing the pipeline's iterator raised %s: %s", type(exc).__name__, exc)


__all__ = ["RunStopped", "StopSignals", "drive"]
