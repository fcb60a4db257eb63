"""The driver loop (cliper_batch/pipeline/driver.py) on plain generators: how it ends, and that it always
closes the pipeline's iterator on the pump thread before it returns (no thread left inside it at exit)."""
import threading
import time

import pytest

from cliper_batch.pipeline.driver import StopSignals, drive


class Pipeline:
    """A generator of numbered batches that records whether its ``finally`` ran (as Ray Data's iterator shuts its
    executor down there) and on which thread; ``delay_s`` between batches; ``hang_after``: block forever then."""

    def __init__(self, n=1000, delay_s=0.0, hang_after=None, fail_after=None):
        self.n, self.delay_s, self.hang_after, self.fail_after = n, delay_s, hang_after, fail_after
        self.closed_on = None
        self.release = threading.Event()

    def __iter__(self):
        try:
            for i in range(self.n):
                if self.hang_after is not None and i >= self.hang_after:
                    self.release.wait()  # a stalled cluster: nothing comes
                    return
                if self.fail_after is not None and i >= self.fail_after:
                    raise RuntimeError("the pipeline broke")
                time.sleep(self.delay_s)
                yield i
        finally:
            self.closed_on = threading.current_thread().name


def test_a_finished_pipeline_is_drained_in_order():
    got = []
    p = Pipeline(n=20)
    assert drive(iter(p), got.append, stall_timeout_s=5, poll_s=0.05) == ("finished", "")
    assert got == list(range(20)) and p.closed_on == "batch-pump"


def test_a_sink_that_raises_closes_the_pipeline_before_drive_raises():
    p = Pipeline(delay_s=0.01)

    def sink(b):
        if b == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        drive(iter(p), sink, stall_timeout_s=5, poll_s=0.05)
    assert p.closed_on == "batch-pump"  # closed, on the pump thread, before drive returned
    assert not [t for t in threading.enumerate() if t.name == "batch-pump"]


def test_a_stop_signal_closes_the_pipeline_before_drive_returns():
    p = Pipeline(delay_s=0.02)
    stop = StopSignals()
    got = []

    def sink(b):
        got.append(b)
        if b == 5:
            stop.event.set()

    status, why = drive(iter(p), sink, stall_timeout_s=5, stop=stop, poll_s=0.05)
    assert status == "interrupted" and why == "stop received"
    assert 6 <= len(got) < 1000 and p.closed_on == "batch-pump"
    assert not [t for t in threading.enumerate() if t.name == "batch-pump"]


def test_a_pipeline_error_is_raised_on_the_driver_thread():
    p = Pipeline(fail_after=4)
    got = []
    with pytest.raises(RuntimeError, match="the pipeline broke"):
        drive(iter(p), got.append, stall_timeout_s=5, poll_s=0.05)
    assert got == [0, 1, 2, 3] and p.closed_on == "batch-pump"


def test_a_stall_returns_after_the_timeout_and_waits_only_join_s_for_a_pump_that_cannot_stop():
    p = Pipeline(hang_after=2)
    t0 = time.monotonic()
    status, why = drive(iter(p), lambda b: None, stall_timeout_s=0.5, poll_s=0.05, join_s=0.3)
    took = time.monotonic() - t0
    assert status == "stalled" and "no progress for" in why
    assert took < 5, took  # the stall timeout plus join_s, not forever
    assert p.closed_on is None  # still blocked inside: left behind (a daemon)
    p.release.set()  # let it end; its own finally then runs on the pump thread
    for _ in range(100):
        if p.closed_on is not None:
            break
        time.sleep(0.02)
    assert p.closed_on == "batch-pump"
