"""The output lock: exclusive create, a lease with heartbeat, takeover of a dead lock; real processes racing,
on a local folder and on S3 (moto's S3 API server on loopback, reached over HTTP by s3fs)."""
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import s3fs

from cliper_batch.output.lock import CONDITIONAL, OutputBusy, OutputLock
from faulty_s3_proxy import Faults, faulty_s3_proxy
from s3server import BUCKET, s3_server

RACER = textwrap.dedent(
    """
    import json, sys, time
    from cliper_batch.output.lock import OutputBusy, OutputLock
    out, name, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    lock = OutputLock(out, name, storage_options=options)  # the filesystem client is up before the start
    print("ready", flush=True)
    sys.stdin.readline()  # the start: every racer is up and waiting
    try:
        lock.acquire()
    except OutputBusy:
        print("busy")
        sys.exit(0)
    print("won")
    sys.stdout.flush()
    time.sleep(3.0)  # hold it while the others try
    lock.release()
    """
)


def race(out, n, names=None, storage_options=None):
    """Start ``n`` drivers, wait until each has its filesystem client up, then let them all go at once.

    (A barrier, not a start time: on a loaded host starting a racer has taken 50 s.)"""
    names = names or [f"run-{i}" for i in range(n)]
    options = json.dumps(storage_options or {})
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(out), name, options],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for name in names]
    ready = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        with contextlib.suppress(BrokenPipeError):  # a racer that died before it was ready: see the assert
            p.stdin.write("go\n")
            p.stdin.flush()
    results = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert ready == ["ready"] * len(procs), (ready, results)
    return results


def test_drivers_racing_for_one_output_exactly_one_wins(tmp_path):
    results = race(tmp_path / "out", 6)
    assert sorted(results) == ["busy"] * 5 + ["won"], results
    assert not (tmp_path / "out" / "_lock.json").exists()  # released by the winner


def foreign_content(heartbeat_age_s, lease_s=60.0):
    now = time.time()
    return json.dumps({"run_id": "other", "host": "another-host", "pid": 1, "started_at": now - 3600,
                       "heartbeat_at": now - heartbeat_age_s, "lease_s": lease_s})


def foreign_lock(path, heartbeat_age_s, lease_s=60.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(foreign_content(heartbeat_age_s, lease_s))


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


def test_a_takeover_claim_of_a_driver_that_died_goes_stale_after_one_lease(tmp_path):
    out = tmp_path / "out"
    foreign_lock(out / "_lock.json", heartbeat_age_s=600)
    dead = json.loads((out / "_lock.json").read_text())
    claimant = OutputLock(str(out), "claimant", lease_s=1.0)
    claim = claimant._take_over_claim(dead)
    assert claimant._create_exclusive(claim)  # it claimed the takeover, then died before removing the dead lock
    with pytest.raises(OutputBusy, match="being taken over by run claimant"):
        OutputLock(str(out), "mine", lease_s=1.0).acquire()
    time.sleep(1.2)
    with OutputLock(str(out), "mine", lease_s=1.0) as lock:
        assert lock.previous["run_id"] == "other" and lock.holds()
    assert sorted(p.name for p in out.iterdir()) == []


# -- on S3: the same races against a real S3 API server -----------------------------------------------------------

@pytest.fixture
def s3():
    with s3_server() as options:
        yield f"s3://{BUCKET}", options


def test_s3_drivers_racing_for_one_output_exactly_one_wins(s3):
    bucket, options = s3
    results = race(f"{bucket}/out", 6, storage_options=options)
    assert sorted(results) == ["busy"] * 5 + ["won"], results
    fs = s3fs.S3FileSystem(**options)
    assert not fs.exists(f"{bucket}/out/_lock.json")  # released by the winner


def test_s3_dead_lock_taken_over_by_exactly_one_of_racing_drivers(s3):
    bucket, options = s3
    fs = s3fs.S3FileSystem(**options)
    fs.pipe_file(f"{bucket}/out/_lock.json", foreign_content(heartbeat_age_s=600).encode())
    results = race(f"{bucket}/out", 5, storage_options=options)
    assert sorted(results) == ["busy"] * 4 + ["won"], results
    assert fs.find(f"{bucket}/out") == []  # no lock, no claim left behind


def test_s3_a_live_foreign_lock_is_busy_and_an_exclusive_create_is_refused(s3):
    bucket, options = s3
    fs = s3fs.S3FileSystem(**options)
    fs.pipe_file(f"{bucket}/out/_lock.json", foreign_content(heartbeat_age_s=5).encode())
    with pytest.raises(OutputBusy, match="another-host"):
        OutputLock(f"{bucket}/out", "mine", storage_options=options).acquire()
    assert json.loads(fs.cat(f"{bucket}/out/_lock.json"))["run_id"] == "other"  # untouched


# -- on S3: which branch of the lock ran, seen on the wire (tests/faulty_s3_proxy.py between s3fs and moto) ----------

def lock_puts(proxy, conditional: bool):
    """The PUTs of <output>/_lock.json the proxy saw, with or without ``If-None-Match``."""
    return [e for e in proxy.exchanges("PUT", "/out/_lock.json") if ("if-none-match" in e.headers) == conditional]


def test_s3_lock_is_won_by_the_conditional_create(s3):
    bucket, options = s3
    with faulty_s3_proxy(options, Faults(rate=0.0)) as proxy:
        opts = proxy.storage_options
        with OutputLock(f"{bucket}/out", "first", storage_options=opts) as lock:
            assert lock.branch == CONDITIONAL
            with pytest.raises(OutputBusy, match="in use by run first"):
                OutputLock(f"{bucket}/out", "second", storage_options=opts).acquire()
        puts = lock_puts(proxy, conditional=True)
    assert [(e.headers["if-none-match"], e.status) for e in puts] == [("*", 200), ("*", 412)]  # created; refused
    assert lock_puts(proxy, conditional=False) == []  # nothing was written without the condition


def test_s3_conditional_create_whose_answer_was_lost_holds_the_lock(s3):
    """The store wrote the lock, the answer never came, the client sent the create again and got 412: the lock
    found is this run's own, so the run holds it (it must not report itself busy)."""
    bucket, options = s3
    first = []

    def lose_first_answer(req):
        if req.method == "PUT" and req.path.endswith("/out/_lock.json") and not first:
            first.append(req)
            return "lost_answer"
        return None

    with faulty_s3_proxy(options, Faults(rate=0.0), decide=lose_first_answer) as proxy:
        with OutputLock(f"{bucket}/out", "mine", storage_options=proxy.storage_options) as lock:
            assert lock.holds() and lock.branch == CONDITIONAL
        puts = lock_puts(proxy, conditional=True)
    assert [(e.action, e.status) for e in puts] == [("lost_answer", None), ("forward", 412)]
    assert not s3fs.S3FileSystem(**options).exists(f"{bucket}/out/_lock.json")  # released


def test_s3_fallback_write_wait_read_lets_exactly_one_of_racing_drivers_win(s3):
    """A store that answers 501 NotImplemented to If-None-Match: the lock falls back to write, wait, read back.
    The proxy holds each plain write of the lock 1 s, so every driver has checked that there is no lock before
    any write lands: all of them write, and the read-back after the settle delay elects exactly one."""
    bucket, options = s3

    def no_conditional_writes(req):
        if req.method == "PUT" and req.path.endswith("/out/_lock.json"):
            return "not_implemented" if "if-none-match" in req.headers else ("slow", 1.0)
        return None

    n = 5
    with faulty_s3_proxy(options, Faults(rate=0.0), decide=no_conditional_writes) as proxy:
        results = race(f"{bucket}/out", n, storage_options=proxy.storage_options)
        refused, written = lock_puts(proxy, conditional=True), lock_puts(proxy, conditional=False)
    assert sorted(results) == ["busy"] * (n - 1) + ["won"], results
    assert [e.status for e in refused] == [501] * n  # every driver tried the conditional create first
    assert [e.status for e in written] == [200] * n  # ... then all of them wrote: the race was real
    assert not s3fs.S3FileSystem(**options).exists(f"{bucket}/out/_lock.json")  # released by the winner
