"""The per-video algorithm both workers share: its timeout rule, its outcome, and the staged worker's crop primitive."""
import time

import numpy as np
import pytest
import torch

from cliper_batch.crop_primitives import normalized_crops, uint8_crops
from cliper_batch.crops import CLIP_MEAN, CLIP_STD, center_crop_plan, crop_resize
from cliper_batch.pipeline.decode_stage import DecodeStage
from cliper_batch import rows
from cliper_batch.types import AnnotateConfig, VideoOutcome, VideoRef
from cliper_batch.uris import normalize_uri
from cliper_batch.video_annotation import ClipPiece, FramePrimitives, VideoAnnotator

CPU = torch.device("cpu")
S = 32


def annotator(**config) -> VideoAnnotator:
    cfg = AnnotateConfig(**{**dict(segment_seconds=0.5, frames_per_segment=2, faces="none", decoder="pyav"), **config})
    return VideoAnnotator(cfg, S, FramePrimitives(CPU, "cpu", uint8_crops(S), "torch", CPU))


def ref_for(path: str) -> VideoRef:
    return VideoRef(video_id="v", uri=normalize_uri(path))


def test_time_the_consumer_spends_does_not_count_against_the_video(h264_video):
    """The clock runs only while the video's own work runs: a slow consumer (scoring, other videos) is not charged."""
    path, spec = h264_video  # 4 s: 8 segments, one piece each
    limit, pause = 3.0, 0.6
    items = []
    for item in annotator(decode_chunk_segments=1, video_timeout_s=limit).annotate(ref_for(path)):
        items.append(item)
        if isinstance(item, ClipPiece):
            time.sleep(pause)
    pieces, outcome = items[:-1], items[-1]
    assert len(pieces) * pause > limit, "the consumer must take longer than the limit for this test to mean anything"
    assert isinstance(outcome, VideoOutcome) and outcome.status == "ok", outcome.error
    assert outcome.n_segments == sum(p.n for p in pieces) == int(spec.duration_s / 0.5)
    assert outcome.extra["decode_s"] < limit and outcome.extra["crop_backend"] == "torch"
    assert all(p.crops.shape == (p.n, 2, S, S, 3) and p.crops.dtype == torch.uint8 for p in pieces)


def test_the_video_own_time_does_count(h264_video):
    outcome = list(annotator(video_timeout_s=1e-6).annotate(ref_for(h264_video[0])))[-1]
    assert (outcome.status, outcome.error_type, outcome.n_segments) == ("failed", "VideoTimeout", 0)
    assert "still decoding after" in outcome.error and "traceback" not in outcome.extra


def test_staged_worker_rows_and_failures(h264_video, truncated_vp9_video):
    """The staged shell: uint8 crops in its rows, and a failed video is one outcome row after what it already sent."""
    stage = DecodeStage(AnnotateConfig(segment_seconds=1.0, frames_per_segment=2, faces="none", decoder="pyav",
                                       decode_chunk_segments=1), image_size=S)
    blocks = list(stage(({"ref": np.array([rows.encode_ref(ref_for(truncated_vp9_video[0]))], dtype=object)})))
    *segment_blocks, last = blocks
    assert segment_blocks, "the truncated video decodes its first segments before it fails"
    assert all(b["crops"].shape[1:] == (2, S, S, 3) and b["crops"].dtype == np.uint8 for b in segment_blocks)
    o = rows.decode_outcome(str(last["outcome"][0]))
    assert (o.status, o.error_type, o.extra["worker"]) == ("failed", "DecodeError", "staged")
    assert o.error.startswith(normalize_uri(truncated_vp9_video[0]) + ": ")  # DecodeError(uri, reason)
    assert last["crops"].shape == (1, 2, S, S, 3)


@pytest.mark.parametrize("size", [(160, 120), (121, 67), (64, 64), (48, 200)])
def test_the_centre_crop_is_an_exact_pixel_copy(size):
    """Decoded at short side = S, the centre square is whole pixels: the staged primitive copies them unchanged,
    and the fused primitive gives their normalised values (to float rounding; one uint8 step is ~0.015)."""
    w, h = size
    (out_w, out_h), (x0, y0) = center_crop_plan(w, h, S)
    frames = torch.from_numpy(np.random.default_rng(w * h).integers(0, 256, (3, out_h, out_w, 3), dtype=np.uint8))
    boxes = torch.tensor([(float(i), x0, y0, x0 + S, y0 + S) for i in range(3)], dtype=torch.float32)
    expected = frames[:, y0 : y0 + S, x0 : x0 + S]
    assert torch.equal(crop_resize(frames, boxes, S), expected)  # the reference resampler agrees ...
    assert torch.equal(uint8_crops(S)(frames, boxes), expected)  # ... with the primitive's pixel copy
    # any other box (a face square: fractional, scaled, partly outside) is resampled by the reference
    faces = torch.tensor([(0.0, -3.5, 2.25, 40.0, 45.75), (2.0, 1.0, 1.0, 1.0 + S, 2.0 + S)], dtype=torch.float32)
    assert torch.equal(uint8_crops(S)(frames, faces), crop_resize(frames, faces, S))
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    want = ((expected.float() / 255 - mean) / std).permute(0, 3, 1, 2)
    torch.testing.assert_close(normalized_crops("torch", S, CLIP_MEAN, CLIP_STD)(frames, boxes), want, atol=1e-4, rtol=0)
