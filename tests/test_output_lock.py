"""The output lock: exclusive create, a lease with heartbeat, takeover of a dead lock; real processes racing."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from cliper_batch.output.lock import OutputBusy, OutputLock

RACER = textwrap.dedent(
    """
    import sys, time
    from cliper_batch.output.lock import OutputBusy, OutputLock
    out, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))
    try:
        lock = OutputLock(out, name).acquire()
    except OutputBusy:
        print("busy")
        sys.exit(0)
    print("won")
    sys.stdout.flush()
    time.sleep(3.0)  # hold it while the others try
    lock.release()
    """
)


def race(out, n, names=None):
    start = time.time() + 2.0  # all processes are up and waiting by then
    names = names or [f"run-{i}" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(out), name, str(start)], stdout=subprocess.PIPE, text=True)
             for name in names]
    return [p.communicate(timeout=60)[0].strip() for p in procs]


def test_drivers_racing_for_one_output_exactly_one_wins(tmp_path):
    results = race(tmp_path / "out", 6)
    assert sorted(results) == ["busy"] * 5 + ["won"], results
    assert not (tmp_path / "out" / "_lock.json").exists()  # released by the winner


def foreign_lock(path, heartbeat_age_s, lease_s=60.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path.write_text(json.dumps({"run_id": "other", "host": "another-host", "pid": 1, "started_at": now - 3600,
                                "heartbeat_at": now - heartbeat_age_s, "lease_s": lease_s}))


def test_a_lock_held_from_another_host_lives_by_its_heartbeat(tmp_path):
    out = tmp_path / "out"
    foreign_lock(out / "_lock.json", heartbeat_age_s=5)  # fresh lease: busy, even though it started an hour ago
    with pytest.raises(OutputBusy, match="another-host"):
        OutputLock(str(out), "mine").acquire()
    foreign_lock(out / "_lock.json", heartbeat_age_s=61)  # lease expired: taken over
    lock = OutputLock(str(out), "mine").acquire()
    assert lock.previous["run_id"] == "other" and lock.holds()
    lock.release()
    assert not (out / "_lock.json").exists()


def test_dead_lock_taken_over_by_exactly_one_of_racing_drivers(tmp_path):
    out = tmp_path / "out"
    foreign_lock(out / "_lock.json", heartbeat_age_s=600)
    results = race(out, 5)
    assert sorted(results) == ["busy"] * 4 + ["won"], results


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    out = tmp_path / "out"
    with OutputLock(str(out), "mine", lease_s=0.4) as lock:
        first = json.loads((out / "_lock.json").read_text())["heartbeat_at"]
        time.sleep(0.6)
        held = json.loads((out / "_lock.json").read_text())
        assert held["run_id"] == "mine" and held["heartbeat_at"] > first
        assert lock.holds()
    assert not (out / "_lock.json").exists()


def test_a_dead_local_process_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out).mkdir()
    (out / "_lock.json").write_text(json.dumps({"run_id": "gone", "host": os.uname().nodename, "pid": int(p.stdout),
                                                 "started_at": time.time(), "heartbeat_at": time.time()}))
    with OutputLock(str(out), "mine") as lock:
        assert lock.previous["run_id"] == "gone"
