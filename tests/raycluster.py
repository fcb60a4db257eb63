"""A real local Ray head for tests: loopback only, its own temp dir, free ports, stopped by PID.

Started the README's way, token authentication **on**: ``ray get-auth-token
--generate`` writes the token, then ``RAY_AUTH_MODE=token ray start --head``.
The head and every client the test runs get their own ``HOME`` (a temp dir),
so the token is ``<temp HOME>/.ray/auth_token`` and the real user's
``~/.ray`` is neither read nor written. :meth:`LocalRayHead.env` is the
environment of a client that has the token; :meth:`LocalRayHead.env_without_token`
one that does not.

``ray start --head --block`` runs in the foreground as our child, in a new
session; we stop it with SIGTERM (it tears down the processes it started)
and, if anything of that session is left, SIGKILL that process group only.
Never ``ray stop`` (which would stop every Ray on the machine).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing

VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n: int, taken: set[int] = frozenset()) -> int:
    """Start of ``n`` consecutive ports that are free right now and not in ``taken``."""
    for _ in range(200):
        start = free_port()
        if start + n > 65000 or any(p in taken for p in range(start, start + n)):
            continue
        ok = True
        for p in range(start, start + n):
            with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return start
    raise RuntimeError("no free port range")


class PortPicker:
    """Free ports for one cluster's processes, never the same one twice.

    Each port is free when picked but is bound only later by ``ray start``, so picks
    made one after another could coincide: a single port, or one inside a worker
    range (CI once saw the head's GCS port inside its own worker range). The picker
    remembers what it handed out.
    """

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def port(self) -> int:
        for _ in range(200):
            p = free_port()
            if p not in self.taken:
                self.taken.add(p)
                return p
        raise RuntimeError("no free port")

    def port_range(self, n: int) -> int:
        start = free_port_range(n, self.taken)
        self.taken.update(range(start, start + n))
        return start


class LocalRayHead:
    def __init__(self, num_cpus: int = 2, env: dict | None = None):
        self.num_cpus = num_cpus
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.home = os.path.join(self.temp_dir, "home")  # HOME of the head and its clients: holds .ray/auth_token
        os.makedirs(self.home)
        self.ports = PortPicker()  # the head's and its worker nodes' ports, all distinct
        self.port = self.ports.port()
        self.dashboard_port = self.ports.port()
        self.metrics_port = self.ports.port()  # the node's Prometheus endpoint (Ray's and the job's metrics)
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token_path(self) -> str:
        return os.path.join(self.home, ".ray", "auth_token")

    def env(self) -> dict:
        """Environment of the head and of a client on this machine, as the README sets it up."""
        env = dict(os.environ)
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        env.update(
            PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),  # `python` in a job entrypoint = this venv
            HOME=self.home,
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",
        )
        env.update(self.extra_env)
        return env

    def env_without_token(self) -> dict:
        """A client that asks for token auth but has no token (another HOME, nothing in it)."""
        env = self.env()
        env["HOME"] = os.path.join(self.temp_dir, "stranger")
        os.makedirs(env["HOME"], exist_ok=True)
        return env

    def start(self, timeout: float = 120.0) -> "LocalRayHead":
        worker_lo = self.ports.port_range(40)
        gen = subprocess.run(
            [os.path.join(VENV_BIN, "ray"), "get-auth-token", "--generate"],
            env=self.env(), capture_output=True, text=True, timeout=120,
        )
        if gen.returncode != 0 or not os.path.isfile(self.token_path):
            raise RuntimeError(f"ray get-auth-token --generate failed: {gen.stderr[-2000:]}")
        cmd = [
            os.path.join(VENV_BIN, "ray"), "start", "--head", "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.ports.port()}",
            f"--node-manager-port={self.ports.port()}",
            f"--object-manager-port={self.ports.port()}",
            f"--dashboard-agent-listen-port={self.ports.port()}",
            f"--dashboard-agent-grpc-port={self.ports.port()}",
            f"--metrics-export-port={self.metrics_port}",
            f"--runtime-env-agent-port={self.ports.port()}",
            f"--min-worker-port={worker_lo}", f"--max-worker-port={worker_lo + 39}",
            f"--temp-dir={self.temp_dir}",
            "--object-store-memory=500000000",
            "--disable-usage-stats",
        ]
        self.log = open(os.path.join(self.temp_dir, "ray-start.log"), "w")
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with open(self.token_path) as fh:
                    token = fh.read().strip()
                req = urllib.request.Request(
                    self.dashboard_url + "/api/version", headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"Ray head did not come up in {timeout:.0f} s: {self.read_log()}")

    def read_log(self) -> str:
        try:
            with open(os.path.join(self.temp_dir, "ray-start.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session=True: the group id is the child's pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # only what our own `ray start` session left behind
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self.log.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LocalRayWorkerNode:
    """A second Ray node on this machine joining a :class:`LocalRayHead`: its own CPUs, temp dir and ports.

    ``ray start --address=HEAD --block`` runs as our child in a new session, so
    :meth:`kill` (SIGKILL to that process group: the raylet, its object store and
    every worker it started) loses the node the way a crashed machine would, and
    :meth:`stop` cleans up whatever is left. Nothing else on the machine is touched.
    """

    def __init__(self, head: LocalRayHead, num_cpus: int = 2):
        self.head = head
        self.num_cpus = num_cpus
        self.proc: subprocess.Popen | None = None
        self.temp_dir = tempfile.mkdtemp(prefix="rayw", dir="/tmp")

    def start(self, timeout: float = 120.0) -> "LocalRayWorkerNode":
        worker_lo = self.head.ports.port_range(40)
        own_ports = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                     "runtime-env-agent")
        cmd = [
            os.path.join(VENV_BIN, "ray"), "start", "--block", f"--address={self.head.address}",
            "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            *(f"--{name}-port={self.head.ports.port()}" for name in own_ports),
            f"--min-worker-port={worker_lo}", f"--max-worker-port={worker_lo + 39}",
            f"--temp-dir={self.temp_dir}", "--object-store-memory=300000000", "--disable-usage-stats",
        ]
        self.log = open(os.path.join(self.temp_dir, "ray-start.log"), "w")
        before = max(alive_nodes(self.head), 1)  # the head itself, at least
        self.proc = subprocess.Popen(cmd, env=self.head.env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start (worker node) exited with {self.proc.returncode}")
            if alive_nodes(self.head) > before:
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"worker node did not join in {timeout:.0f} s")

    def kill(self) -> None:
        """Lose the node: SIGKILL every process of its ``ray start`` session at once."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.kill()
        self.log.close()
        self.proc = None


def alive_nodes(head: LocalRayHead) -> int:
    """Nodes the head's GCS reports alive (through the dashboard's state API)."""
    import json

    with open(head.token_path) as fh:  # the head runs with token auth on, as users start it
        token = fh.read().strip()
    request = urllib.request.Request(head.dashboard_url + "/api/v0/nodes?limit=100",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            data = json.load(r)
    except OSError:
        return 0
    rows = data.get("data", {}).get("result", {}).get("result", [])
    return sum(1 for n in rows if n.get("state") == "ALIVE")
