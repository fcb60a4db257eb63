"""The run's operator metrics, exported through Ray's metrics system (``ray.util.metrics``).

Every metric of the engine is defined here, once: :data:`DEFINITIONS` (name, type,
tag keys, description) is what ``docs/operations.md`` documents and what
``docs/grafana-cliper.json`` plots. They are all recorded in the driver process,
where everything they count already arrives (the scored blocks, the writer's
statistics, the commit of each part, the driver loop's queue and idle time):
:class:`RunMetrics` is the one object the driver calls. Workers record nothing.

Ray exports them on every node's metrics endpoint (``ray start
--metrics-export-port``, Prometheus text format) with its ``ray_`` namespace in
front and ``_total`` after a counter's name: ``cliper_videos_done`` is scraped as
``ray_cliper_videos_done_total``. Ray pushes a process's values to its node's
agent every ``metrics_report_interval_ms`` (10 s by default), so a dashboard
lags a run by up to that much.

Recording never affects the run: with Ray not initialised (a unit test, a
library caller), :class:`RunMetrics` records nothing; any error of Ray's metrics
API is logged once at DEBUG and that metric call is dropped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .. import rows

log = logging.getLogger(__name__)

PREFIX = "cliper_"
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

# the stages of ``cliper_stage_seconds``
STAGE_DECODE = "decode"  # a worker's own time on a video less detect and crop: probe, decode, waits, framing
STAGE_DETECT = "detect"  # face detection and tracking (--faces detect)
STAGE_CROP = "crop"  # cutting and resizing the crops
STAGE_SCORE = "score"  # the model's busy time on scored batches
STAGE_WRITE = "write"  # the driver committing parts (Parquet to staging, then moved into place)
# the queues of ``cliper_queue_depth``
STAGES = (STAGE_DECODE, STAGE_DETECT, STAGE_CROP, STAGE_SCORE, STAGE_WRITE)
QUEUE_DRIVER_INBOX = "driver_inbox"  # scored blocks fetched from Ray, not yet handed to the writer (at most 2)
QUEUE_WRITER_INCOMPLETE = "writer_incomplete"  # videos with some rows at the writer, waiting for the rest
QUEUE_WRITER_UNCOMMITTED = "writer_uncommitted"  # complete videos waiting for the next commit


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # COUNTER | GAUGE | HISTOGRAM
    tag_keys: tuple[str, ...]
    description: str
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        """The name as Ray's Prometheus endpoint shows it (histograms add ``_bucket``/``_sum``/``_count``)."""
        return f"ray_{self.name}_total" if self.kind == COUNTER else f"ray_{self.name}"


_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

DEFINITIONS: tuple[MetricDef, ...] = (
    MetricDef("cliper_videos_done", COUNTER, ("run_id", "status"),
              "Videos this run finished and recorded, by status (ok | failed)."),
    MetricDef("cliper_videos_failed", COUNTER, ("run_id", "error_class"),
              "Failed videos by failure class (data | setup | transient: cliper_batch/failures.py)."),
    MetricDef("cliper_video_seconds", COUNTER, ("run_id",),
              "Seconds of video annotated (ok videos' durations)."),
    MetricDef("cliper_crops", COUNTER, ("run_id",),
              "Face crops scored by the model (segments x frames per segment); rate() is crops/s."),
    MetricDef("cliper_stage_seconds", COUNTER, ("run_id", "stage"),
              "Seconds spent per stage, summed over workers: decode (a worker's time per video: probe, decode), "
              "detect (face detection and tracking), crop, score (model busy time), write (driver commits). "
              "rate() = busy workers."),
    MetricDef("cliper_video_decode_seconds", HISTOGRAM, ("run_id",),
              "A worker's own time on one video (probe, decode, faces, crops; what --video-timeout limits).",
              _SECONDS_BUCKETS),
    MetricDef("cliper_commit_seconds", HISTOGRAM, ("run_id",),
              "Driver commit latency: seconds to commit one part (timelines + manifest).", _SECONDS_BUCKETS),
    MetricDef("cliper_batch_fill", HISTOGRAM, ("run_id",),
              "Clips in one model batch / --batch-size (1 = full batches).",
              (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.999, 1.0)),
    MetricDef("cliper_queue_depth", GAUGE, ("run_id", "queue"),
              "Items waiting in the driver: driver_inbox (scored blocks fetched from Ray, not yet written), "
              "writer_incomplete (videos waiting for their remaining rows), writer_uncommitted (complete "
              "videos waiting for the next commit)."),
    MetricDef("cliper_videos_todo", GAUGE, ("run_id",), "Videos in this run's work list."),
    MetricDef("cliper_videos_remaining", GAUGE, ("run_id",), "Videos of the work list not finished yet."),
    MetricDef("cliper_seconds_since_progress", GAUGE, ("run_id",),
              "Seconds since the driver last received a scored block (the stall watchdog's clock)."),
    MetricDef("cliper_crops_per_second", GAUGE, ("run_id",), "Crops scored per wall-clock second since the run began."),
    MetricDef("cliper_score_busy_fraction", GAUGE, ("run_id", "device"),
              "Model busy time / (scoring window x scoring actors): below ~0.5 on GPU the model waits for input."),
    MetricDef("cliper_run_active", GAUGE, ("run_id", "status"),
              "1 while the run drives its pipeline (status running); at its end 0 for running and 1 for the "
              "final status (finished | interrupted | stalled | failed)."),
)
BY_NAME = {d.name: d for d in DEFINITIONS}

_created: dict[str, object] = {}  # one Ray metric object per name and process
_warned = False


def _ray_ready() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except Exception:  # noqa: BLE001 - no Ray, no metrics
        return False


def _metric(name: str):
    m = _created.get(name)
    if m is None:
        from ray.util import metrics as rm

        d = BY_NAME[name]
        if d.kind == COUNTER:
            m = rm.Counter(d.name, description=d.description, tag_keys=d.tag_keys)
        elif d.kind == GAUGE:
            m = rm.Gauge(d.name, description=d.description, tag_keys=d.tag_keys)
        else:
            m = rm.Histogram(d.name, description=d.description, boundaries=list(d.boundaries), tag_keys=d.tag_keys)
        _created[name] = m
    return m


class RunMetrics:
    """The metrics of one run, recorded from the driver. Every method is safe to call and never raises.

    ``enabled`` is False when Ray is not initialised: then every call returns at once.
    """

    def __init__(self, run_id: str, *, videos_total: int, batch_size: int, frames_per_segment: int,
                 device: str = "cpu", score_workers: int = 1, enabled: bool | None = None):
        self.run_id = str(run_id)
        self.enabled = _ray_ready() if enabled is None else enabled
        self.videos_total = int(videos_total)
        self.batch_size = max(1, int(batch_size))
        self.frames_per_segment = max(1, int(frames_per_segment))
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        self.score_workers = max(1, int(score_workers))
        self._t0 = time.monotonic()
        self._crops = 0
        self._seen = {"ok": 0, "failed": 0, "video_seconds": 0.0}
        self._failed_by_class: dict[str, int] = {}
        # seconds per stage (STAGES), summed over the run: what ``cliper_stage_seconds`` counts, kept for the run record
        self.stage_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._tags = {"run_id": self.run_id}
        self._set("cliper_videos_todo", self.videos_total)
        self._set("cliper_videos_remaining", self.videos_total)
        self._set("cliper_seconds_since_progress", 0.0)
        self._set("cliper_run_active", 1, status="running")

    # -- the one guarded entry to Ray ---------------------------------------------------------

    def _record(self, name: str, value: float, **tags: str) -> None:
        global _warned
        if not self.enabled:
            return
        d = BY_NAME[name]
        if d.kind == COUNTER and value <= 0:
            return
        try:
            m = _metric(name)
            t = {**self._tags, **tags}
            if d.kind == COUNTER:
                m.inc(float(value), tags=t)
            elif d.kind == GAUGE:
                m.set(float(value), tags=t)
            else:
                m.observe(float(value), tags=t)
        except Exception as exc:  # noqa: BLE001 - metrics must never break a run
            if not _warned:
                _warned = True
                log.debug("metric %s not recorded (%s: %s); further metric errors are not logged",
                          name, type(exc).__name__, exc)

    _set = _inc = _observe = _record

    def _stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] += seconds
        self._inc("cliper_stage_seconds", seconds, stage=stage)

    # -- what the driver calls ----------------------------------------------------------------

    def batch(self, batch: dict[str, np.ndarray]) -> None:
        """A scored block arrived at the driver: crops, per-video worker time, model busy time, batch fill.

        The stage seconds are summed also when Ray's metrics are off: the run record reports them."""
        try:
            kinds = batch["row_kind"]
            is_seg = kinds == rows.SEGMENT
            n_seg = int(np.count_nonzero(is_seg))
            if n_seg:
                self._crops += n_seg * self.frames_per_segment
                self._inc("cliper_crops", n_seg * self.frames_per_segment)
                self._set("cliper_crops_per_second", self._crops / max(time.monotonic() - self._t0, 1e-9))
            if "score_busy_s" in batch:
                self._stage(STAGE_SCORE, float(np.sum(batch["score_busy_s"])))
            if n_seg and "score_t0" in batch:  # rows of one model batch share its start time
                _, counts = np.unique(np.asarray(batch["score_t0"])[is_seg], return_counts=True)
                for c in counts:
                    self._observe("cliper_batch_fill", min(1.0, int(c) / self.batch_size))
            for i in np.flatnonzero(kinds == rows.VIDEO):
                text = str(batch["outcome"][i])
                times = _worker_seconds(text)
                s = times.get("decode_s")
                if s is not None and s > 0:
                    detect, crop = times.get("detect_s", 0.0), times.get("crop_s", 0.0)
                    self._stage(STAGE_DECODE, max(0.0, s - detect - crop))
                    self._stage(STAGE_DETECT, detect)
                    self._stage(STAGE_CROP, crop)
                    self._observe("cliper_video_decode_seconds", s)
        except Exception as exc:  # noqa: BLE001 - a block of an unexpected shape: skip its metrics
            log.debug("metrics of a block skipped: %s: %s", type(exc).__name__, exc)

    def written(self, stats, *, incomplete: int = 0, uncommitted: int = 0) -> None:
        """The writer's statistics after a block (or at the end): videos done, failed by class, video-seconds."""
        if not self.enabled:
            return
        ok, failed = int(stats.videos_ok), int(stats.videos_failed)
        self._inc("cliper_videos_done", ok - self._seen["ok"], status="ok")
        self._inc("cliper_videos_done", failed - self._seen["failed"], status="failed")
        self._inc("cliper_video_seconds", float(stats.video_seconds) - self._seen["video_seconds"])
        self._seen.update(ok=ok, failed=failed, video_seconds=float(stats.video_seconds))
        for cls, n in dict(stats.failed_by_class).items():
            self._inc("cliper_videos_failed", n - self._failed_by_class.get(cls, 0), error_class=str(cls))
            self._failed_by_class[cls] = n
        self._set("cliper_videos_remaining", max(0, self.videos_total - ok - failed))
        self._set("cliper_queue_depth", incomplete, queue=QUEUE_WRITER_INCOMPLETE)
        self._set("cliper_queue_depth", uncommitted, queue=QUEUE_WRITER_UNCOMMITTED)
        window = float(getattr(stats, "score_window_s", 0.0) or 0.0)
        if window > 0:
            busy = float(stats.score_busy_s) / (window * self.score_workers)
            self._set("cliper_score_busy_fraction", min(1.0, busy), device=self.device)

    def after_batch(self, batch: dict[str, np.ndarray], writer) -> None:
        """The driver handed ``batch`` to ``writer`` (an :class:`~cliper_batch.output.writer.OutputWriter`)."""
        self.batch(batch)
        if not self.enabled:
            return
        regroup = writer.regroup
        self.written(writer.stats, incomplete=len(getattr(regroup, "_pending", ())),
                     uncommitted=len(regroup.ready_videos))

    def committed(self, seconds: float, videos: int = 0) -> None:
        """One part committed by the writer, in ``seconds``."""
        self._observe("cliper_commit_seconds", max(float(seconds), 0.0))
        self._stage(STAGE_WRITE, float(seconds))

    def tick(self, idle_s: float, inbox: int) -> None:
        """The driver loop's heartbeat (every poll): seconds since the last block, blocks waiting for the writer."""
        self._set("cliper_seconds_since_progress", max(float(idle_s), 0.0))
        self._set("cliper_queue_depth", inbox, queue=QUEUE_DRIVER_INBOX)

    def finish(self, stats, status: str) -> None:
        """The run ended (``status``: finished | interrupted | stalled | failed): final counts and gauges."""
        if not self.enabled:
            return
        self.written(stats)
        self._set("cliper_queue_depth", 0, queue=QUEUE_DRIVER_INBOX)
        self._set("cliper_run_active", 0, status="running")
        self._set("cliper_run_active", 1, status=str(status))


def _worker_seconds(outcome_json: str) -> dict[str, float]:
    """``extra``'s ``decode_s`` (the worker's own time on the video), ``detect_s`` and ``crop_s`` (parts of it) of an
    outcome row, those present, without building the outcome."""
    import json

    try:
        extra = json.loads(outcome_json).get("extra") or {}
        return {k: float(v) for k in ("decode_s", "detect_s", "crop_s")
                if isinstance(v := extra.get(k), (int, float)) and v >= 0}
    except (ValueError, AttributeError):
        return {}


__all__ = ["BY_NAME", "DEFINITIONS", "MetricDef", "PREFIX", "RunMetrics", "STAGES"]
