"""A driver-side progress line for a run: videos done / total, video-seconds per second, ETA.

Ray Data's own progress bars are off (they only draw on a TTY and say nothing
about videos); the driver loop calls :meth:`RunProgress.update` after each
batch it hands to the writer, and a line is logged at most every
``interval_s`` seconds, plus once when the last video is done. It goes to the
``cliper_batch.pipeline.progress`` logger at INFO, which the annotate command shows by
default (``--log-level WARNING`` hides it).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("cliper_batch.pipeline.progress")


class RunProgress:
    """Throttled progress reports for one run of ``total`` videos."""

    def __init__(
        self,
        total: int,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.total = total
        self.interval_s = interval_s
        self._clock = clock
        self._emit = emit or log.info
        self._start = clock()
        self._last_emit: float | None = None
        self._last_done = -1

    def line(self, done: int, failed: int, video_seconds: float) -> str:
        """The progress text for ``done`` finished videos (``failed`` of them failed) and their video-seconds."""
        elapsed = max(self._clock() - self._start, 1e-9)
        pct = 100.0 * done / self.total if self.total else 100.0
        text = (
            f"progress: {done}/{self.total} videos ({pct:.0f}%), {failed} failed; "
            f"{video_seconds:.1f} video-s in {elapsed:.0f} s = {video_seconds / elapsed:.2f} video-s/s"
        )
        if 0 < done < self.total:
            text += f"; about {elapsed / done * (self.total - done):.0f} s left"
        return text

    def update(self, done: int, failed: int, video_seconds: float) -> bool:
        """Report if ``interval_s`` passed since the last report or the run just finished; True if it reported."""
        now = self._clock()
        finished = done >= self.total and done != self._last_done
        due = done != self._last_done and (self._last_emit is None or now - self._last_emit >= self.interval_s)
        if not (finished or due):
            return False
        self._emit(self.line(done, failed, video_seconds))
        self._last_emit, self._last_done = now, done
        return True


__all__ = ["RunProgress"]
