"""Run ids and run records: ``runs/<run_id>.json``, written last (its presence means the run ended).

``status`` is ``finished`` (the listing was worked through), ``interrupted``
(SIGINT/SIGTERM, or a run killed and found by the next one's recovery) or
``stalled`` (the cluster made no progress for ``--stall-timeout``).

``store_retries`` counts the object-store requests botocore sent again during the run
(:mod:`cliper_batch.store_retries`): ``{"total", "driver", "workers", "driver_by_reason"}``,
``total = driver + workers``; the driver's by reason (``throttled``, ``connection``,
``server_error``, ``other``), the workers' as reported in their rows. All zero off S3.
"""
from __future__ import annotations

import datetime as _dt
import json
import secrets

from ..uris import join
from .layout import RUNS, STAGING

FINISHED, INTERRUPTED, STALLED = "finished", "interrupted", "stalled"


def new_run_id() -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx``: UTC start time plus randomness, so the lexicographic maximum is the latest run."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def record_path(root: str, run_id: str) -> str:
    return join(root, RUNS, f"{run_id}.json")


def has_record(fs, root: str, run_id: str) -> bool:
    return fs.exists(record_path(root, run_id))


def write_record(fs, root: str, run_id: str, record: dict) -> str:
    """Write the run record atomically (staging, then a move)."""
    path = record_path(root, run_id)
    tmp = join(root, STAGING, f"{run_id}.json")
    fs.makedirs(join(root, RUNS), exist_ok=True)
    fs.makedirs(join(root, STAGING), exist_ok=True)
    with fs.open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True, default=str)
    fs.mv(tmp, path)
    return path


__all__ = ["FINISHED", "INTERRUPTED", "STALLED", "has_record", "new_run_id", "record_path", "write_record"]
