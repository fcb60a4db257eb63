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
from dataclasses import asdict

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


def retries_record(driver: dict[str, int], workers: int) -> dict:
    """The record's ``store_retries``: object-store requests botocore sent again (see the module docstring)."""
    return {"total": sum(driver.values()) + workers, "driver": sum(driver.values()), "workers": workers,
            "driver_by_reason": dict(sorted(driver.items()))}


def build(*, summary, status: str, stopped_because: str, started: _dt.datetime, input_uri: str, model_spec: str,
          config, config_hash: str, options, resources, executor: str, plan, recovery, retired, retries: dict,
          stats, stage_seconds: dict[str, float] | None = None) -> dict:
    """The run record of a run that ended (``runs/<run_id>.json``), from its parts (dataclasses: the summary,
    config, options, worker layout, plan totals, recovery, retired parts), the writer's closing ``stats`` and the
    seconds per stage summed over the run (``pipeline.metrics.RunMetrics.stage_seconds``: worker seconds of decode,
    detect and crop, the model's busy seconds, the driver's commit seconds)."""
    crops, wall = summary.crops, summary.wall_s
    busy, window = stats.score_busy_s, stats.score_window_s
    return {
        "run_id": summary.run_id,
        "status": status,
        "stopped_because": stopped_because or None,
        "started_at": started.isoformat(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "input": input_uri,
        "output": summary.output,
        "model_spec": model_spec,
        "model_id": summary.model_id,
        "config": asdict(config),
        "config_hash": config_hash,
        "options": asdict(options),
        "resources": asdict(resources),
        "executor": executor,
        "listed": plan.listed,
        "plan": plan.record(),
        "recovery": asdict(recovery),
        "retired": asdict(retired) if retired else None,
        "summary": asdict(summary),
        "video_seconds_per_s": summary.video_seconds / max(wall, 1e-9),
        "crops_per_s": summary.crops_per_s,
        "store_retries": retries,
        "stage_seconds": {k: round(v, 3) for k, v in (stage_seconds or {}).items()},
        "scoring": {
            "backends": sorted(stats.score_backends),  # what really ran (after any fallback)
            "busy_s": busy,
            "window_s": window,
            "crops_per_busy_s": crops / busy if busy else None,
            "crops_per_window_s": crops / window if window else None,
            # busy / (window x actors): how much of the time the model had work
            "busy_fraction": busy / (window * resources.score_workers) if window else None,
        },
    }


__all__ = ["FINISHED", "INTERRUPTED", "STALLED", "build", "has_record", "new_run_id", "record_path",
           "retries_record", "write_record"]
