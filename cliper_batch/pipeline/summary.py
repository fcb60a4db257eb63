"""What a run did, in one dataclass: the summary line the job prints and the run record's ``summary``."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..corpus.incremental import PlanTotals
from ..failures import common_setup_failure
from ..output import run_record
from ..types import AnnotateConfig
from .sizing import Resources


@dataclass
class RunSummary:
    run_id: str
    output: str
    model_id: str
    videos_total: int
    videos_ok: int
    videos_failed: int
    segments: int
    crops: int
    video_seconds: float
    wall_s: float
    score_backend: str
    decode_workers: int
    score_workers: int
    videos_skipped: int = 0
    # set when no video succeeded and all failed for one non-data reason: the run itself is broken
    failure_reason: str | None = None
    status: str = run_record.FINISHED  # finished | interrupted | stalled | failed
    listed: int = 0
    skipped_done: int = 0
    not_retried_data: int = 0  # failed before as bad data, file unchanged
    not_retried_gave_up: int = 0  # failed --max-attempts times before, file unchanged
    retried: int = 0  # failed before, tried again
    failed_by_class: dict = field(default_factory=dict)
    videos_dropped: int = 0  # unfinished when interrupted: left for the next run
    store_retries: int = 0  # object-store requests retried (driver + workers; the run record's store_retries)

    @classmethod
    def of(cls, run_id: str, output_uri: str, model_id: str, config: AnnotateConfig, res: Resources,
           plan: PlanTotals, videos_total: int, stats, *, wall_s: float, status: str, store_retries: int,
           storage_options=None) -> "RunSummary":
        """The summary of a run from its plan (:class:`PlanTotals`) and the writer's closing ``stats``."""
        return cls(
            run_id=run_id,
            output=output_uri,
            model_id=model_id,
            videos_total=videos_total,
            videos_ok=stats.videos_ok,
            videos_failed=stats.videos_failed,
            segments=stats.segments,
            crops=stats.segments * config.frames_per_segment,
            video_seconds=stats.video_seconds,
            wall_s=wall_s,
            score_backend=",".join(sorted(stats.score_backends)) or config.compile,
            decode_workers=res.decode_workers,
            score_workers=res.score_workers,
            videos_skipped=plan.skipped_done + plan.skipped_since + plan.deferred_limit + plan.skipped_failed,
            failure_reason=run_failure(output_uri, run_id, stats, storage_options),
            status=status,
            listed=plan.listed,
            skipped_done=plan.skipped_done,
            not_retried_data=plan.skipped_data,
            not_retried_gave_up=plan.skipped_gave_up,
            retried=plan.retried,
            failed_by_class=dict(stats.failed_by_class),
            videos_dropped=stats.videos_dropped,
            store_retries=store_retries,
        )

    @property
    def crops_per_s(self) -> float:
        return self.crops / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        not_retried = self.not_retried_data + self.not_retried_gave_up
        failed_before = (
            f"{not_retried} failed before and not retried ({self.not_retried_data} bad data, unchanged; "
            f"{self.not_retried_gave_up} out of attempts; --retry-failed tries them again)"
        )
        if self.videos_total == 0:
            return (
                f"run {self.run_id}: nothing to do: {self.listed} listed, {self.skipped_done} already done, "
                f"{failed_before}, {self.videos_skipped - self.skipped_done - not_retried} left out by --since/--limit; "
                f"output={self.output}"
            )
        status = "" if self.status == run_record.FINISHED else f"{self.status.upper()}: "
        classes = ", ".join(f"{k} {v}" for k, v in sorted(self.failed_by_class.items()))
        return (
            f"run {self.run_id}: {status}videos ok={self.videos_ok} failed={self.videos_failed} of {self.videos_total}"
            f"{f' (failed: {classes})' if classes else ''}"
            f"{f', {self.videos_dropped} unfinished left for the next run' if self.videos_dropped else ''} "
            f"(skipped {self.videos_skipped}: {self.skipped_done} done{f', {failed_before}' if not_retried else ''}"
            f"{f'; retried {self.retried} failed before' if self.retried else ''}); "
            f"{self.video_seconds:.1f} video-s in {self.wall_s:.1f} s "
            f"({self.video_seconds / max(self.wall_s, 1e-9):.2f} video-s/s, {self.crops_per_s:.1f} crops/s); "
            f"segments={self.segments}; "
            f"{f'{self.store_retries} object-store requests retried; ' if self.store_retries else ''}"
            f"output={self.output}"
        )


def run_failure(output_uri: str, run_id: str, stats, storage_options) -> str | None:
    """Why the run as a whole failed, when no video succeeded and all failed for the same non-data reason."""
    if stats.videos_ok or not stats.videos_failed:
        return None
    import polars as pl

    from ..output.query import scan_videos

    failed = (
        scan_videos(output_uri, storage_options=storage_options)
        .filter((pl.col("run_id") == run_id) & (pl.col("status") == "failed"))
        .select("error_type", "error")
        .collect()
    )
    reason = common_setup_failure(failed["error_type"].to_list())
    if reason is None:
        return None
    example = next((e for e in failed["error"].to_list() if e), "")
    return (
        f"every video of this run ({stats.videos_failed}) failed with {reason}, a problem of the run's setup, "
        f"not of the videos; fix it and run again. First error: {example}"
    )


__all__ = ["RunSummary", "run_failure"]
