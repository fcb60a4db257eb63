"""What the embedded local Ray's start-up (``ray.init()`` with no address) skips: two waits and one process.

On the 2-core laptop the embedded start took 3-5 s, with the cores idle for much of it
(``bench.startup``'s busy-cores timeline) and then, once those waits were gone, both cores
busy with Ray's Python daemons starting. Three things serve nothing in this job's embedded
runtime; :func:`quick_start` removes them while the job's own ``ray.init`` runs:

* **The API server.** ``ray.init(include_dashboard=False)`` still starts the dashboard
  head process, loading only its usage-stats module, and waits (polling every 0.1 s)
  until it has published its address: 1.1-1.6 s measured here, before the raylet is even
  started, plus ~0.9 CPU s for that process and ~0.4 s of the driver importing the
  dashboard's optional dependencies to check them. The job turns usage stats off
  (``RAY_USAGE_STATS_ENABLED=0`` unless the user set it), so the process would do nothing;
  it is not started. The only trace: the per-node dashboard agent logs, once a second in
  its own log file, that it found no dashboard address to send events to (events only the
  dashboard would show, and there is none). If the user enabled usage stats, or asked for
  the dashboard, the API server starts as before.
* **The node lookup's 1 s retry.** After starting the raylet, ``ray.init`` fetches the
  node's record from the GCS (``services.get_node``) through a C++ call that, while the
  raylet has not registered yet, retries on a fixed 1 s sleep. The raylet registers once
  its metrics agent (a Python process) is up, 1-2 s after it starts here, so the lookup
  took 1 s or 2 s with the cores idle in between (traced: 2.0 s in 6 of 6 runs, the raylet
  having registered ~1.0 s after the first try). The lookup now first polls the GCS's node
  table every :data:`NODE_POLL_S` until the node is there, then asks Ray's own lookup,
  which succeeds at once: 0-1 s saved, ~0.5 s on average, never a loss. While it waits, it
  runs the caller's ``while_waiting`` once: the job imports there what it needs right after
  ``ray.init`` (Ray Data and its own pipeline, ~1 s), so those imports no longer delay
  Ray's start (they used to run before ``ray.init``, with one core idle).

* **The autoscaler monitor.** A head started by ``ray.init`` runs Ray's autoscaler monitor, a
  Python process (~0.6 CPU s to start, while ``ray.init`` is CPU-bound on 2 cores) that has
  nothing to scale on a one-node runtime without an autoscaling config; the job already
  killed it before ``ray.shutdown()`` (``cli._stop_autoscaler_monitor``). It is not started
  (``Node.start_monitor`` does nothing when there is no autoscaling config), as
  ``ray start --head --no-monitor`` does. Ray Data's autoscaling coordinator still runs; it
  sends its resource requests to the GCS, where nothing acts on them, as before.

All three are Ray's private functions (Ray is pinned, ``pyproject.toml``), replaced only for
the duration of the job's embedded ``ray.init`` and put back when it returns or raises.
If one is missing, that shortcut is skipped; if polling fails in any way, Ray's own
lookup runs as before. A connection to a running cluster (``--ray-address``,
``RAY_ADDRESS``, ``ray job submit``) goes through neither.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

# How often, and how long at most, the lookup asks the GCS whether the raylet has registered
# (Ray's own limit for that wait is 30 s).
NODE_POLL_S = 0.02
NODE_WAIT_S = 30.0


def usage_stats_off() -> bool:
    """Whether Ray's usage stats are off for this process (the job sets ``RAY_USAGE_STATS_ENABLED=0`` unless set)."""
    return os.environ.get("RAY_USAGE_STATS_ENABLED", "").strip().lower() in ("0", "false")


@contextlib.contextmanager
def quick_start(while_waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Around the job's embedded ``ray.init(include_dashboard=False, ...)``: no API server, a prompt node lookup, no autoscaler monitor.

    ``while_waiting`` runs once while the lookup waits for the raylet (see
    :func:`wait_until_registered`); its exceptions are swallowed, so it should only do
    work the caller repeats afterwards anyway (imports), where a failure is reported.
    """
    try:
        from ray._private import node, services, state
    except ImportError:
        yield
        return
    restore = []  # (owner, attribute, original)
    original_lookup = getattr(services, "get_node", None)
    if original_lookup is not None and hasattr(state, "GlobalState"):

        def get_node(gcs_address, node_id, *args, **kwargs):
            wait_until_registered(state, services, gcs_address, node_id, while_waiting=while_waiting)
            return original_lookup(gcs_address, node_id, *args, **kwargs)

        services.get_node = get_node
        restore.append((services, "get_node", original_lookup))
    original_api = getattr(services, "start_api_server", None)
    if original_api is not None:

        def start_api_server(include_dashboard, *args, **kwargs):
            if include_dashboard is False and usage_stats_off():
                return "", None  # (dashboard URL, process): what Ray records when there is none
            return original_api(include_dashboard, *args, **kwargs)

        services.start_api_server = start_api_server
        restore.append((services, "start_api_server", original_api))
    node_class = getattr(node, "Node", None)
    original_monitor = getattr(node_class, "start_monitor", None)
    if original_monitor is not None:

        def start_monitor(self, *args, **kwargs):
            if getattr(self._ray_params, "autoscaling_config", None) is None:
                return None  # a one-node runtime with nothing to autoscale: no monitor process
            return original_monitor(self, *args, **kwargs)

        node_class.start_monitor = start_monitor
        restore.append((node_class, "start_monitor", original_monitor))
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
        return False
    except Exception:  # noqa: BLE001 - only a shortcut: Ray's own lookup follows and reports real failures
        return False
    finally:
        if owner is not None:
            with contextlib.suppress(Exception):
                owner.disconnect()


__all__ = ["NODE_POLL_S", "NODE_WAIT_S", "quick_start", "usage_stats_off", "wait_until_registered"]
