"""``<output>/_lock.json``: one writer (annotate run or compaction) per output folder, across hosts.

* **Create** is conditional: ``open(path, "xb")``, which is ``O_CREAT|O_EXCL`` on
  local and POSIX shared filesystems (NFSv3+ honours it) and ``PutObject`` with
  ``If-None-Match: *`` on S3 (s3fs's ``"xb"``; tested against moto's S3 server,
  which answers 412 like AWS). Of two drivers racing, exactly one creates the
  file; the other sees it.
* **Lease**: the holder rewrites ``heartbeat_at`` every ``lease_s / 4`` seconds from a
  background thread. A lock is *alive* while its process runs (same host) or its
  heartbeat is younger than ``lease_s`` (another host). A dead one is taken over;
  the caller then runs :func:`~.recovery.recover_output` before writing.
* **Takeover** of a dead lock is itself a race for an exclusive create: the drivers
  that found the same dead lock race for a claim file named after its content; the
  one that creates it removes the dead lock (if it is still that one) and then races
  for the lock like any driver. No store needs an atomic rename or conditional
  delete (S3 has neither: ``mv`` is copy + delete), so one code path serves local,
  POSIX shared and object stores.

On stores without exclusive create (an fsspec filesystem without ``"x"`` mode, or an
S3-compatible store that answers ``501 NotImplemented`` to ``If-None-Match``) the lock falls
back to write-then-read-back after a settle delay, which narrows but cannot close the race:
use one scheduler per output there. :attr:`OutputLock.branch` says which branch the last
create took (``"conditional"`` or ``"fallback"``). A store that silently *ignores*
``If-None-Match`` cannot be told apart from one that honours it: the lock is not safe there.

A conditional create whose answer was lost (a connection dropped after the store wrote the
lock) is sent again by the client and refused: the lock found is then this run's own
(same run id, host and process) and is held, not reported busy.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import threading
import time

from ..uris import filesystem_for, join
from .layout import LOCK

log = logging.getLogger(__name__)

CONDITIONAL, FALLBACK = "conditional", "fallback"  # OutputLock.branch


class OutputBusy(RuntimeError):
    """Another live run holds the output folder."""


class OutputLock:
    """Hold ``<output>/_lock.json`` for the duration of a ``with`` block (or :meth:`acquire` / :meth:`release`)."""

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        *,
        lease_s: float = 120.0,
        settle_s: float = 2.0,
        storage_options: dict | None = None,
    ):
        self.fs, self.root = filesystem_for(output_uri, **(storage_options or {}))
        self.path = join(self.root, LOCK)
        self.run_id = run_id
        self.lease_s = lease_s
        self.settle_s = settle_s
        self.previous: dict | None = None  # the dead lock this one took over
        self.branch: str | None = None  # how the last exclusive create was done: CONDITIONAL or FALLBACK
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._started = time.time()

    # -- the lock file ----------------------------------------------------------
    def _content(self) -> bytes:
        return json.dumps(
            {
                "run_id": self.run_id,
                "host": self._host,
                "pid": self._pid,
                "started_at": self._started,
                "heartbeat_at": time.time(),
                "lease_s": self.lease_s,
            }
        ).encode()

    def _read(self, path: str | None = None) -> dict | None:
        """The lock's content; None when there is no lock file; {} when it is unreadable (half-written)."""
        try:
            with self.fs.open(path or self.path, "rb") as f:
                return json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _create(self) -> bool:
        """Create the lock file only if there is none; False when one exists."""
        self.fs.makedirs(self.root, exist_ok=True)
        return self._create_exclusive(self.path)

    def _create_exclusive(self, path: str) -> bool:
        """Write this run's lock content to ``path`` only if nothing is there; False when something is."""
        try:
            with self.fs.open(path, "xb") as f:
                f.write(self._content())
            self.branch = CONDITIONAL
            return True
        except FileExistsError:
            self.branch = CONDITIONAL
            return False
        except (ValueError, NotImplementedError):  # no "x" mode in this filesystem
            return self._create_read_back(path)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # s3fs: the store answered 501 NotImplemented to If-None-Match
                raise
            log.warning("%s: the store refuses conditional writes (%s); falling back to write, wait, read back",
                        path, exc)
            return self._create_read_back(path)

    def _create_read_back(self, path: str) -> bool:
        """The fallback: write unless something is there, wait ``settle_s``, and check the content is still ours."""
        self.branch = FALLBACK
        if self.fs.exists(path):
            return False
        with self.fs.open(path, "wb") as f:
            f.write(self._content())
        time.sleep(self.settle_s)
        return (self._read(path) or {}).get("run_id") == self.run_id

    def _own(self, held: dict) -> bool:
        """Whether ``held`` was written by this very lock (a create whose answer was lost, sent again)."""
        return (held.get("run_id"), held.get("host"), held.get("pid")) == (self.run_id, self._host, self._pid)

    def alive(self, held: dict) -> bool:
        """Whether the run that wrote ``held`` may still be writing."""
        if not held:
            # unreadable: a lock being written right now (alive), or garbage; garbage older than the lease is dead
            return self._age_s() < self.lease_s
        if held.get("host") == self._host:
            try:
                os.kill(int(held.get("pid", -1)), 0)
            except (ProcessLookupError, ValueError, TypeError):
                return False
            except PermissionError:
                return True
            return True
        beat = float(held.get("heartbeat_at", held.get("started_at", 0)))
        return time.time() - beat < float(held.get("lease_s", self.lease_s))

    def _age_s(self, path: str | None = None) -> float:
        """Seconds since the file (the lock) was last written (0 when the store cannot say: assume fresh)."""
        try:
            modified = self.fs.modified(path or self.path)
        except FileNotFoundError:
            return float("inf")
        except (OSError, NotImplementedError, ValueError):
            return 0.0
        return time.time() - modified.timestamp()

    def _take_over_claim(self, held: dict) -> str:
        """The claim file for taking over the dead lock ``held`` (named after its content)."""
        return f"{self.path}.takeover-{hashlib.sha256(json.dumps(held, sort_keys=True).encode()).hexdigest()[:16]}"

    def _take_over(self, held: dict) -> None:
        """Remove the dead lock ``held``; raise OutputBusy if another driver is taking it over.

        Removal is the one dangerous step (a driver that removes a *fresh* lock lets two
        runs write), and neither rename nor delete is conditional on every store (on S3
        ``mv`` is copy + delete). So the drivers that found the same dead lock first race
        for a claim file named after it, with the same exclusive create as the lock: the
        one that creates it checks the lock is still that dead one, removes it and races
        for the create as usual; the others back off. A claim whose driver died is stale
        after one lease and removed by the next driver.
        """
        claim = self._take_over_claim(held)
        if not self._create_exclusive(claim) and not self._own(self._read(claim) or {}):
            if self._age_s(claim) > self.lease_s:
                log.warning("removing the stale takeover claim %s", claim)
                self._remove(claim)
                return
            claimant = self._read(claim) or {}
            raise OutputBusy(f"output is being taken over by run {claimant.get('run_id')} "
                             f"(host {claimant.get('host')}); if that run is gone, delete {claim}")
        try:
            if self._read() == held:  # still the dead lock we read: nobody took it over before our claim
                self._remove(self.path)
        finally:
            self._remove(claim)

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except FileNotFoundError:
            pass  # removed by another driver already

    # -- public -----------------------------------------------------------------
    def acquire(self) -> "OutputLock":
        for _ in range(10):
            if self._create():
                self._start_heartbeat()
                return self
            held = self._read()
            if held is None:
                continue  # released between our create and read: try again
            if self._own(held):
                log.info("%s: the create went through though its answer was lost: this run holds the lock", self.path)
                self._start_heartbeat()
                return self
            if self.alive(held):
                raise OutputBusy(
                    f"output is in use by run {held.get('run_id')} (host {held.get('host')}, pid {held.get('pid')}, "
                    f"heartbeat {time.time() - float(held.get('heartbeat_at', held.get('started_at', 0))):.0f} s ago); "
                    f"wait for it, or delete {self.path} if that run is gone"
                )
            log.warning("taking over the lock of run %s, which did not finish", held.get("run_id"))
            self.previous = held
            self._take_over(held)
        raise OutputBusy(f"could not take {self.path}: other drivers keep racing for it")

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="output-lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if (self._read() or {}).get("run_id") != self.run_id:
                    log.error("lost the output lock %s to another run", self.path)
                    return
                tmp = f"{self.path}.beat-{self.run_id}"
                with self.fs.open(tmp, "wb") as f:
                    f.write(self._content())
                self.fs.mv(tmp, self.path)
            except OSError as exc:  # a flaky store: try again next beat, the lease is 4 beats long
                log.warning("lock heartbeat failed: %s", exc)

    def holds(self) -> bool:
        return (self._read() or {}).get("run_id") == self.run_id

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
            self._beat = None
        try:
            if self.holds():
                self.fs.rm(self.path)
        except OSError:
            pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["CONDITIONAL", "FALLBACK", "OutputBusy", "OutputLock"]
