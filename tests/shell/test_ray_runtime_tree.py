"""The embedded runtime's process tree as ``ray_runtime.stop`` reads it, on real processes this
test starts (no Ray needed): a process that turns zombie while the tree is read costs only
itself, and a worker the listing missed is found by the raylet PID Ray sets in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from cliper_batch.shell import ray_runtime

# A parent that starts a child which exits at once (left a zombie: never waited for) and a child
# that sleeps, then prints their PIDs and sleeps itself.
PARENT = """
import subprocess, sys, time
gone = subprocess.Popen([sys.executable, "-c", "pass"])
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
time.sleep(0.5)
print(gone.pid, sleeper.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def started():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:  # exactly what the test started, by PID
        for child in psutil.Process(proc.pid).children(recursive=True) if psutil.pid_exists(proc.pid) else []:
            child.kill()
        proc.kill()
        proc.wait()


def test_a_zombie_in_the_tree_leaves_the_rest_of_the_tree_listed(started):
    before = ray_runtime.child_pids()
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    started.append(parent)
    gone, sleeper = map(int, parent.stdout.readline().split())
    deadline = time.monotonic() + 10
    while psutil.Process(gone).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert psutil.Process(gone).status() == psutil.STATUS_ZOMBIE

    tree = {proc.pid: name for proc, name in ray_runtime.runtime_tree(before).items()}
    assert parent.pid in tree and sleeper in tree, tree
    assert tree[gone] == "(zombie)"
    assert "time.sleep(60)" in tree[sleeper]
    # the runtime's processes only: nothing that was a child before
    assert not set(tree) & before


def test_a_worker_missed_by_the_listing_is_found_by_its_raylet_pid(started):
    fake_raylet = os.getpid()  # any PID: only the environment variable is matched
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, "RAY_RAYLET_PID": str(fake_raylet)})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, "RAY_RAYLET_PID": "1"})
    started.extend([worker, other])
    time.sleep(0.2)

    found = {proc.pid for proc in ray_runtime.raylet_workers({fake_raylet}, set())}
    assert worker.pid in found and other.pid not in found
    known = {psutil.Process(worker.pid)}
    assert worker.pid not in {p.pid for p in ray_runtime.raylet_workers({fake_raylet}, known)}
    assert ray_runtime.raylet_workers(set(), set()) == {}
    # stop()'s wait: both exit once killed, a zombie counts as exited
    worker.kill()
    worker.wait()
    assert ray_runtime.wait_exited([psutil.Process(other.pid)], 0.2) != []
