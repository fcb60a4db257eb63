"""The `ray` marker, held to the truth (a pytest plugin, registered by tests/conftest.py).

A test that runs Ray carries the `ray` marker (pyproject.toml), so `pytest -m "not ray"` is the fast unit suite.
Tests using the session's `ray_runtime` fixture and `slow` (end-to-end) tests are marked here; a test that starts
Ray otherwise (the CLI's embedded runtime, `ray start`, a job submission) says so itself. While a test without the
marker is set up, run and torn down, this process's descendants are watched, and a Ray node process (raylet, GCS)
appearing among them fails the test (tests/ray_marker.py; its own test: tests/test_ray_marker.py).
"""
import os
import threading

import psutil
import pytest

# the process names of a Ray node; the watch's own test runs it with other names (so the test running it is not
# itself caught starting a "raylet")
RAY_NODE_PROCESSES = frozenset(os.environ.get("RAY_MARKER_PROCESS_NAMES", "raylet,gcs_server").split(","))


def pytest_collection_modifyitems(config, items):
    for item in items:  # `slow` tests are end-to-end runs of the job: Ray, by definition
        if "ray_runtime" in item.fixturenames or item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.ray)


def _ray_node_descendants() -> set[int]:
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() in RAY_NODE_PROCESSES:
                found.add(proc.pid)
        except psutil.Error:
            pass
    return found


class RayWatch:
    """New Ray node processes among this process's descendants, polled on a thread until :meth:`stop`."""

    def __init__(self, period_s: float = 0.2):
        self.before = _ray_node_descendants()
        self.started: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), name="ray-marker-watch", daemon=True)
        self._thread.start()

    def _run(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            self.started |= _ray_node_descendants() - self.before

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        self.started |= _ray_node_descendants() - self.before
        return self.started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("ray") is None:
        item.stash[_WATCH] = RayWatch()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    watch = item.stash.get(_WATCH, None)
    if watch is not None and watch.stop():
        pytest.fail(f"{item.nodeid} started Ray (a raylet or GCS process) but has no `ray` marker: "
                    f"add @pytest.mark.ray (or use the ray_runtime fixture)", pytrace=False)
    return result


_WATCH = pytest.StashKey[RayWatch]()
