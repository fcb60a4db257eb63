"""Write annotate output without a pipeline: scored rows for synthetic videos, straight into an OutputWriter."""
from __future__ import annotations

import numpy as np

from cliper_batch.output.writer import OutputWriter
from cliper_batch import rows
from cliper_batch.decode.sampling import plan_segments
from cliper_batch.types import VideoInfo, VideoOutcome, VideoRef

CLASSES = ("neutral", "happy", "sad")


def scored(batch: dict, n_classes: int, probs=None) -> dict:
    out = {k: v for k, v in batch.items() if k != "crops"}
    n = len(out["row_kind"])
    out["probs"] = np.zeros((n, n_classes), np.float32) if probs is None else probs
    out["descriptor"] = np.zeros(n, np.int16)
    return out


def feed_video(w: OutputWriter, ref: VideoRef, rng, *, failed: str | None = None, n_segments: int = 2) -> None:
    """One video's rows into ``w``: ``n_segments`` scored segments and an ok outcome, or a failed outcome."""
    if failed is None:
        segs = plan_segments(2.0 * n_segments, 2.0, 1)
        seg = rows.segment_rows(ref, segs, np.zeros((len(segs), 1, 2, 2, 3), np.uint8))
        w.add_batch(scored(seg, len(CLASSES), rng.dirichlet(np.ones(len(CLASSES)), size=len(segs)).astype(np.float32)))
        o = VideoOutcome(ref, "ok", info=VideoInfo(2.0 * n_segments, 25.0, 8, 8, "h264"), n_segments=len(segs))
    else:
        o = VideoOutcome(ref, "failed", error=f"{ref.uri}: {failed}", error_type=failed)
    w.add_batch(scored(rows.outcome_row(o, (1, 2, 2, 3)), len(CLASSES)))


def write_run(out, run_id, n_videos, seed, *, failed: dict | None = None, videos_per_part: int = 1, close: bool = True):
    """Videos ``0..n_videos-1`` (fingerprint = seed) annotated by run ``run_id``; ``failed``: index -> error_type."""
    rng = np.random.default_rng(seed)
    w = OutputWriter(str(out), CLASSES, run_id=run_id, model_id="m", config_hash="c", videos_per_part=videos_per_part)
    for i in range(n_videos):
        feed_video(w, VideoRef(f"{i:016x}", f"/v/{i}.mp4", fingerprint=f"{seed}"), rng, failed=(failed or {}).get(i))
    if close:
        w.close()
    return w
