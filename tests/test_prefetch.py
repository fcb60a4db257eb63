"""prefetch(): order, the one-item-ahead bound, errors where they happened, and a thread that always stops."""
import threading
import time

import pytest

from cliper_batch.prefetch import prefetch


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


class Source:
    """A generator that records what it produced, on which thread, and whether its cleanup ran."""

    def __init__(self, n: int, fail_at: int | None = None, delay: float = 0.0):
        self.n, self.fail_at, self.delay = n, fail_at, delay
        self.produced: list[int] = []
        self.threads: set[str] = set()
        self.closed_on: str | None = None

    def __iter__(self):
        try:
            for i in range(self.n):
                self.threads.add(threading.current_thread().name)
                if self.delay:
                    time.sleep(self.delay)
                if i == self.fail_at:
                    raise KeyError(f"item {i}")
                self.produced.append(i)
                yield i
        finally:
            self.closed_on = threading.current_thread().name


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_items_in_the_same_order(depth):
    src = Source(50)
    assert list(prefetch(iter(src), depth, name="t-order")) == list(range(50))
    assert src.closed_on is not None and not _threads("t-order")
    assert src.threads == ({"t-order"} if depth else {threading.current_thread().name})


@pytest.mark.parametrize("depth", [1, 2])
def test_never_more_than_depth_items_ahead_of_the_consumer(depth):
    src = Source(20)
    seen = []
    for item in prefetch(iter(src), depth, name="t-bound"):
        time.sleep(0.01)  # a slow consumer: the producer would run far ahead if it could
        seen.append(item)
        # the consumer holds `item`; beyond it at most `depth` may exist
        assert len(src.produced) <= item + 1 + depth, (item, src.produced)
    assert seen == list(range(20))


def test_an_error_arrives_after_the_items_before_it_with_its_type():
    src = Source(10, fail_at=4)
    got = []
    with pytest.raises(KeyError, match="item 4"):
        for item in prefetch(iter(src), 1, name="t-error"):
            got.append(item)
    assert got == [0, 1, 2, 3]
    assert src.closed_on == "t-error" and not _threads("t-error")


@pytest.mark.parametrize("how", ["break", "consumer_error", "close"])
def test_the_thread_stops_and_the_source_is_closed_when_the_consumer_stops_early(how):
    src = Source(1000, delay=0.002)
    it = prefetch(iter(src), 1, name="t-stop")
    if how == "break":
        for item in it:
            if item == 3:
                break
        it.close()  # what leaving a `with closing(...)` block or dropping the generator does
    elif how == "consumer_error":
        with pytest.raises(RuntimeError):
            for item in it:
                if item == 3:
                    raise RuntimeError("the consumer failed")
        it.close()
    else:
        assert next(it) == 0
        it.close()
    # close() returned: the producer has been joined, and it closed the source on its own thread
    assert not _threads("t-stop")
    assert src.closed_on == "t-stop"
    assert len(src.produced) <= 6  # it stopped within one item of where the consumer was, not at the end


def test_a_generator_dropped_unfinished_stops_its_thread():
    src = Source(1000, delay=0.002)
    it = prefetch(iter(src), 1, name="t-drop")
    next(it)
    del it  # refcount drop closes the generator, whose finally joins the thread
    assert not _threads("t-drop") and src.closed_on == "t-drop"


def test_bad_depth_is_refused():
    with pytest.raises(ValueError, match="depth"):
        list(prefetch([1], -1))
