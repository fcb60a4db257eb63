"""The job's own Ray runtime: start it (embedded, or connected to a cluster) and stop it, with every shortcut into Ray's private API.

Only the annotate command line (``cli``) uses this module. Ray is pinned (``pyproject.toml``);
everything below that reaches into ``ray._private`` is a *shortcut*: the job works without it,
only slower. Each shortcut is kept because its gain was measured (docs/benchmarks.md), and each
one steps aside, with one DEBUG log line per process (``cliper_batch.shell.ray_runtime``), when Ray's
private symbol is missing, has another signature, or fails; :func:`shortcut_problems` lists what
would be skipped, and the test suite fails on any entry, so a Ray upgrade that moves one shows
up in CI, not as a slower start.

Shortcuts (names as :data:`SHORTCUTS` and the log say them):

* ``api_server`` - **no API server** for an embedded runtime. ``ray.init(include_dashboard=False)``
  still starts the dashboard head process, loading only its usage-stats module, and waits
  (polling every 0.1 s) until it has published its address: 1.1-1.6 s measured here, before the
  raylet is even started, plus ~0.9 CPU s for that process and ~0.4 s of the driver importing the
  dashboard's optional dependencies to check them. The job turns usage stats off
  (``RAY_USAGE_STATS_ENABLED=0`` unless the user set it), so the process would do nothing; it is
  not started (``services.start_api_server`` returns what Ray records when there is none). The
  only trace: the per-node dashboard agent logs, once a second in its own log file, that it found
  no dashboard address. If the user enabled usage stats, or asked for the dashboard, the API
  server starts as before.
* ``node_lookup`` - **a prompt node lookup.** After starting the raylet, ``ray.init`` fetches the
  node's record from the GCS (``services.get_node``) through a C++ call that, while the raylet
  has not registered yet, retries on a fixed 1 s sleep. The raylet registers once its metrics
  agent is up, 1-2 s after it starts here (traced: 2.0 s in 6 of 6 runs). The lookup now first
  polls the GCS's node table (``GlobalState``, ``services._get_gcs_client_options``) every
  :data:`NODE_POLL_S` until the node is there, then asks Ray's own lookup, which succeeds at once:
  0-1 s saved, ~0.5 s on average, never a loss. While it waits, it runs the caller's
  ``while_waiting`` once: the job imports there what it needs right after ``ray.init`` (Ray Data
  and its pipeline, ~1 s). Both measured together: embedded start-up 5.30 -> 3.42 s.
* ``monitor_kill`` - **the autoscaler monitor killed before** ``ray.shutdown()``. A one-node
  runtime has nothing to autoscale; on SIGTERM Ray's monitor reports "the autoscaler failed" to a
  GCS that ``ray.shutdown()`` already stopped, so shutdown waited its fixed 1 s grace and killed
  it anyway. Killed first (SIGKILL, reaped; Ray's process table,
  ``worker._global_node.all_processes``), it is gone when Ray's shutdown reaches it: the summary ->
  exit phase 2.20 -> 0.64 s (with zombies counted as exited, :func:`wait_exited`).

Not kept: making ``Node.start_monitor`` a no-op (no monitor started at all) measured 11.46 vs
11.44 s wall, within this host's noise; the kill above does the same job at exit.

All patches are made only for the duration of the job's embedded ``ray.init`` and put back when
it returns or raises. A connection to a running cluster (``--ray-address``, ``RAY_ADDRESS``,
``ray job submit``) goes through none of them.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

EMBEDDED, CONNECTED = "embedded", "connected"
SHORTCUTS = ("api_server", "node_lookup", "monitor_kill")

# How often, and how long at most, the lookup asks the GCS whether the raylet has registered
# (Ray's own limit for that wait is 30 s).
NODE_POLL_S = 0.02
NODE_WAIT_S = 30.0
# After ray.shutdown(), how long the embedded runtime's remaining processes (Ray's workers exit on
# their own once the raylet is gone) may take before they are killed: Ray's own grace per process.
REAP_GRACE_S = 1.0

_reported: set[str] = set()


def _skipped(shortcut: str, why: str) -> None:
    """Say once per process, at DEBUG, that ``shortcut`` did not apply (Ray's own path ran instead)."""
    if shortcut not in _reported:
        _reported.add(shortcut)
        log.debug("Ray shortcut %s skipped: %s (Ray's own, slower path runs instead)", shortcut, why)


def _leading_params(func, names: tuple[str, ...]) -> bool:
    """Whether ``func`` takes ``names`` as its first positional parameters (``*args`` takes any)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    for i, name in enumerate(names):
        if i < len(params) and params[i].kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if i >= len(params) or params[i].name != name:
            return False
    return True


def shortcut_problems() -> dict[str, str]:
    """Each shortcut that would be skipped with this Ray, and why (empty: every one applies)."""
    problems: dict[str, str] = {}
    try:
        from ray._private import ray_constants, services, state, worker
    except ImportError as exc:
        return {name: f"ray._private not importable ({exc})" for name in SHORTCUTS}
    if not _leading_params(getattr(services, "start_api_server", None), ("include_dashboard",)):
        problems["api_server"] = "ray._private.services.start_api_server(include_dashboard, ...) not found"
    if not _leading_params(getattr(services, "get_node", None), ("gcs_address", "node_id")):
        problems["node_lookup"] = "ray._private.services.get_node(gcs_address, node_id, ...) not found"
    elif not hasattr(services, "_get_gcs_client_options"):
        problems["node_lookup"] = "ray._private.services._get_gcs_client_options not found"
    else:
        owner = getattr(state, "GlobalState", None)
        missing = [a for a in ("_initialize_global_state", "_connect_and_get_accessor", "disconnect")
                   if not hasattr(owner, a)]
        if missing:
            problems["node_lookup"] = f"ray._private.state.GlobalState lacks {', '.join(missing)}"
    if not hasattr(ray_constants, "PROCESS_TYPE_MONITOR") or not hasattr(worker, "_global_node"):
        problems["monitor_kill"] = "ray._private.ray_constants.PROCESS_TYPE_MONITOR or worker._global_node not found"
    return problems


def usage_stats_off() -> bool:
    """Whether Ray's usage stats are off for this process (the job sets ``RAY_USAGE_STATS_ENABLED=0`` unless set)."""
    return os.environ.get("RAY_USAGE_STATS_ENABLED", "").strip().lower() in ("0", "false")


def start(address: str | None, while_waiting: Callable[[], None] | None = None) -> str | None:
    """Start an embedded local Ray (``'embedded'``), or connect to ``address`` / ``RAY_ADDRESS`` (``'connected'``).

    None when Ray was already initialised in this process (a test, a notebook): then it is
    not this run's to shut down. ``while_waiting``: see :func:`quick_start`.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # A cluster: token auth as the environment says (RAY_AUTH_MODE=token plus
        # ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN; see README).
        ray.init(address=address, log_to_driver=True)
    else:
        with quick_start(while_waiting=while_waiting):
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    # Progress is the driver's own line (cliper_batch.pipeline.progress), on any terminal or log;
    # Ray Data's bars are off, and so is its note saying how to turn them on.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return CONNECTED if address else EMBEDDED


@contextlib.contextmanager
def quick_start(while_waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Around the job's embedded ``ray.init(include_dashboard=False, ...)``: no API server, a prompt node lookup.

    ``while_waiting`` runs once while the lookup waits for the raylet (see
    :func:`wait_until_registered`); its exceptions are swallowed, so it should only do
    work the caller repeats afterwards anyway (imports), where a failure is reported.
    """
    try:
        from ray._private import services, state
    except ImportError as exc:
        for name in ("api_server", "node_lookup"):
            _skipped(name, f"ray._private not importable ({exc})")
        yield
        return
    problems = shortcut_problems()
    restore = []  # (owner, attribute, original)
    if "node_lookup" in problems:
        _skipped("node_lookup", problems["node_lookup"])
    else:
        original_lookup = services.get_node

        def get_node(gcs_address, node_id, *args, **kwargs):
            wait_until_registered(state, services, gcs_address, node_id, while_waiting=while_waiting)
            return original_lookup(gcs_address, node_id, *args, **kwargs)

        services.get_node = get_node
        restore.append((services, "get_node", original_lookup))
    if "api_server" in problems:
        _skipped("api_server", problems["api_server"])
    else:
        original_api = services.start_api_server

        def start_api_server(include_dashboard, *args, **kwargs):
            if include_dashboard is False and usage_stats_off():
                return "", None  # (dashboard URL, process): what Ray records when there is none
            return original_api(include_dashboard, *args, **kwargs)

        services.start_api_server = start_api_server
        restore.append((services, "start_api_server", original_api))
    try:
        yield
    finally:
        for owner, name, original in restore:
            setattr(owner, name, original)


def wait_until_registered(
    state, services, gcs_address: str, node_id: str, while_waiting: Callable[[], None] | None = None
) -> bool:
    """Poll the GCS's node table until ``node_id`` is in it; True if it appeared (False: gave up, any error).

    ``while_waiting`` runs once, in this thread, after the first poll that did not find the
    node: the raylet needs 1-2 s more here, so work the caller needs next anyway (the
    job's imports) costs no extra time there, and no second thread imports while
    ``ray.init`` does. An exception it raises is ignored (the poll goes on): the caller
    repeats that work after ``ray.init`` and reports the failure there.
    """
    deadline = time.monotonic() + NODE_WAIT_S
    owner = None
    try:
        owner = state.GlobalState()
        owner._initialize_global_state(services._get_gcs_client_options(gcs_address))
        accessor = owner._connect_and_get_accessor()
        while time.monotonic() < deadline:
            if any(node.get("NodeID") == node_id for node in accessor.get_node_table()):
                return True
            if while_waiting is not None:
                while_waiting, work = None, while_waiting
                with contextlib.suppress(Exception):
                    work()
                continue
            time.sleep(NODE_POLL_S)
        _skipped("node_lookup", f"the node was not in the GCS node table after {NODE_WAIT_S:.0f} s")
        return False
    except Exception as exc:  # noqa: BLE001 - only a shortcut: Ray's own lookup follows and reports real failures
        _skipped("node_lookup", f"polling the GCS node table failed: {exc!r}")
        return False
    finally:
        if owner is not None:
            with contextlib.suppress(Exception):
                owner.disconnect()


def child_pids() -> set[int]:
    """This process's children now (what :func:`stop` must not wait for: not the runtime's)."""
    import psutil

    return {p.pid for p in psutil.Process().children()}


def stop_autoscaler_monitor() -> None:
    """Kill the embedded runtime's autoscaler monitor (SIGKILL, reaped) before ``ray.shutdown()``, if it has one.

    The ``monitor_kill`` shortcut (module docstring). If Ray's process table is not there,
    nothing is killed and ``ray.shutdown()`` does what it always did.
    """
    try:
        from ray._private import ray_constants, worker

        infos = list(worker._global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, ()))
    except (ImportError, AttributeError) as exc:  # not an embedded head, or another Ray layout
        _skipped("monitor_kill", f"Ray's process table not readable ({exc!r})")
        return
    for info in infos:
        proc = getattr(info, "process", None)
        if not isinstance(proc, subprocess.Popen) or proc.poll() is not None:
            continue
        proc.kill()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # ray.shutdown() deals with it as before
            pass


def stop(how: str, children_before: set[int]) -> None:
    """``ray.shutdown()`` from the run itself, once its output is committed and its summary printed.

    Left to Ray's own exit hook, the same shutdown first sleeps 0.5 s (it runs "from the
    exiting interpreter" and waits for late log lines; ours are printed by then). A
    cluster connection is only closed. An embedded runtime's processes are stopped by
    Ray (SIGTERM, SIGKILL after 1 s, one after another); its workers are the raylet's
    children and exit by themselves once it is gone, so the runtime's whole process tree
    (this process's children that were not there before :func:`start`, ``children_before``,
    and all their descendants, :func:`runtime_tree`), listed before the shutdown, and any worker
    its raylet started that the listing missed (:func:`raylet_workers`, swept after it) are waited
    for (``REAP_GRACE_S``, then SIGKILL): no process of the job outlives it.
    """
    import psutil
    import ray

    t0 = time.perf_counter()
    tree: dict[psutil.Process, str] = runtime_tree(children_before) if how == EMBEDDED else {}
    if how == EMBEDDED:
        stop_autoscaler_monitor()
    ray.shutdown()
    t1 = time.perf_counter()
    if how == EMBEDDED:
        tree.update(raylet_workers({p.pid for p, name in tree.items() if "raylet" in name}, set(tree)))
    alive = wait_exited(tree, REAP_GRACE_S)
    for proc in alive:
        # a normal end (a worker that takes Ray's own exit grace): a detail, not a problem of the run
        log.debug("Ray process %d (%s) still running %.1f s after ray.shutdown(): killed",
                  proc.pid, tree[proc], REAP_GRACE_S)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    wait_exited(alive, 5.0)
    log.debug("ray.shutdown %.2f s, its processes gone %.2f s later", t1 - t0, time.perf_counter() - t1)


def runtime_tree(children_before: set[int]) -> dict:
    """The embedded runtime's processes now: this process's children that were not there before
    :func:`start` (``children_before``) and all their descendants, ``{process: command line}``.

    Each process is read on its own: one that exits or turns zombie while the tree is read (an
    actor Ray Data is stopping) is left out alone, never the rest of the tree with it.
    """
    import psutil

    tree: dict = {}
    for child in psutil.Process().children():
        if child.pid in children_before:
            continue
        try:
            procs = [child, *child.children(recursive=True)]
        except psutil.Error:  # the child itself is gone
            continue
        for proc in procs:
            try:
                tree[proc] = " ".join(proc.cmdline())[:80]
            except psutil.ZombieProcess:
                tree[proc] = "(zombie)"
            except psutil.Error:  # gone already, or unreadable: nothing to wait for
                pass
    return tree


def raylet_workers(raylet_pids: set[int], known: set) -> dict:
    """Processes started by one of ``raylet_pids`` (Ray sets ``RAY_RAYLET_PID`` in every worker it
    starts) that are not in ``known``: a worker the raylet started while the runtime was shutting
    down, or one re-parented before the tree was read. ``{process: command line}``."""
    import psutil

    if not raylet_pids:
        return {}
    wanted = {str(pid) for pid in raylet_pids}
    found: dict = {}
    known_pids = {p.pid for p in known}
    for proc in psutil.process_iter():
        if proc.pid in known_pids:
            continue
        try:
            if proc.environ().get("RAY_RAYLET_PID") in wanted:
                found[proc] = " ".join(proc.cmdline())[:80]
        except psutil.Error:  # another user's, gone, or a zombie: not a worker to wait for
            pass
    return found


def wait_exited(procs, timeout_s: float) -> list:
    """Wait until every process in ``procs`` has exited; those still running after ``timeout_s``.

    A zombie counts as exited. Ray's workers are the raylet's children: once it is
    gone they are re-parented to PID 1, and how soon an init reaps them varies
    (this host's took up to 1 s), while ``psutil.wait_procs`` waits for a
    non-child until it is reaped.
    """
    import psutil

    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        running = []
        for proc in alive:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    running.append(proc)
            except psutil.NoSuchProcess:
                pass
        alive = running
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


__all__ = [
    "CONNECTED", "EMBEDDED", "NODE_POLL_S", "NODE_WAIT_S", "REAP_GRACE_S", "SHORTCUTS", "child_pids", "quick_start",
    "shortcut_problems", "start", "stop", "stop_autoscaler_monitor", "usage_stats_off", "wait_exited",
    "wait_until_registered",
]
