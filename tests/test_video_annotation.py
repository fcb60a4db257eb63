"""The per-video algorithm both workers share: its timeout rule, its outcome, and the staged worker's crop primitive;
--faces detect's one decode (bit-identical to two, within its memory budget) and its decode thread (always stopped)."""
import gc
import threading
import time

import numpy as np
import pytest
import torch

from cliper_batch.crops.primitives import normalized_crops, uint8_crops
from cliper_batch.crops.reference import CLIP_MEAN, CLIP_STD, center_crop_plan, crop_resize
from cliper_batch.pipeline.decode_stage import DecodeStage
from cliper_batch import rows
from cliper_batch.types import AnnotateConfig, VideoOutcome, VideoRef
from cliper_batch.uris import normalize_uri
from cliper_batch.faces.framing import FramingParams
from cliper_batch.video_annotation import ClipPiece, FramePrimitives, VideoAnnotator
from two_scene import write_two_scene_video

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


def test_unusable_nvdec_decodes_with_pyav_instead_of_failing_the_video(h264_video):
    """A worker on a CUDA device whose NVDEC cannot work (here: DALI installed, no GPU, so the real self-test fails)."""
    from cliper_batch.decode.dali_backend import dali_available
    from cliper_batch.decode.select import cuda_available

    if not dali_available() or cuda_available():
        pytest.skip("needs DALI installed on a host where NVDEC cannot work")
    path, spec = h264_video
    cfg = AnnotateConfig(segment_seconds=1.0, frames_per_segment=4, faces="none", decoder="auto")
    annotator = VideoAnnotator(cfg, S, FramePrimitives(CPU, "cuda:0", uint8_crops(S), "torch", CPU))
    items = list(annotator.annotate(VideoRef(video_id="v", uri=normalize_uri(path))))
    outcome = items[-1]
    assert isinstance(outcome, VideoOutcome) and outcome.status == "ok", outcome.error
    assert outcome.extra["decoder"] == "pyav" and sum(p.n for p in items[:-1]) == int(spec.duration_s)


# ----------------------------------------------------------------- --faces detect: one decode when it fits

def face_annotator(video_timeout_s: float = 300.0, **framing_kw) -> VideoAnnotator:
    """--faces detect on the two-scene video (320x240, 4 s at 10 fps): 16 sampled frames, 4 segments of T = 4."""
    cfg = AnnotateConfig(segment_seconds=1.0, frames_per_segment=4, faces="detect", decoder="pyav",
                         decode_chunk_segments=1, video_timeout_s=video_timeout_s)
    return VideoAnnotator(cfg, S, FramePrimitives(CPU, "cpu", uint8_crops(S), "torch", CPU),
                          framing_params=FramingParams(**framing_kw))


@pytest.fixture(scope="module")
def people_video(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("people") / "people.mp4")
    write_two_scene_video(path)
    return path


PEOPLE_FRAME_BYTES = 320 * 240 * 3  # detection size of a 320x240 video: unscaled
PEOPLE_FRAMES = 16


def run_video(annotator: VideoAnnotator, path: str, on_piece=None) -> tuple[list[ClipPiece], VideoOutcome]:
    items = []
    for item in annotator.annotate(ref_for(path)):
        if on_piece is not None and isinstance(item, ClipPiece):
            on_piece(item)
        items.append(item)
    return items[:-1], items[-1]


@pytest.mark.parametrize("chunk_frames,prefetch_chunks", [(64, 1), (3, 1), (5, 0)])
def test_one_decode_gives_the_two_decode_rows_and_crops_bit_for_bit(people_video, chunk_frames, prefetch_chunks):
    """Pass 2 from pass 1's frames == pass 2 from a second decode; with pass-1 chunks that straddle pass 2's (3, 5)."""
    once_pieces, once = run_video(face_annotator(chunk_frames=chunk_frames, prefetch_chunks=prefetch_chunks),
                                  people_video)
    twice_pieces, twice = run_video(face_annotator(chunk_frames=chunk_frames, prefetch_chunks=prefetch_chunks,
                                                   keep_frames_bytes=0), people_video)
    assert once.status == twice.status == "ok", (once.error, twice.error)
    assert (once.extra["decode_passes"], twice.extra["decode_passes"]) == (1, 2)
    assert once.extra["n_tracks"] == twice.extra["n_tracks"] == 3
    assert once.n_segments == twice.n_segments > 0
    assert len(once_pieces) == len(twice_pieces)
    for a, b in zip(once_pieces, twice_pieces):
        assert a.rows.keys() == b.rows.keys()
        for k in a.rows:
            np.testing.assert_array_equal(a.rows[k], b.rows[k], err_msg=k)
        assert a.crops.dtype == torch.uint8 and torch.equal(a.crops, b.crops)


def test_the_budget_decides_at_the_exact_size_of_the_sampled_frames(people_video):
    need = PEOPLE_FRAMES * PEOPLE_FRAME_BYTES
    assert run_video(face_annotator(keep_frames_bytes=need), people_video)[1].extra["decode_passes"] == 1
    _, over = run_video(face_annotator(keep_frames_bytes=need - 1), people_video)
    assert over.status == "ok" and over.extra["decode_passes"] == 2 and over.n_segments > 0


def frame_bytes_alive() -> int:
    """Bytes of every distinct storage behind a live uint8 tensor of detection-size frames (``[..., 240, 320, 3]``).

    Collected first, so garbage that only waits for the cycle collector does not count.
    """
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.dtype == torch.uint8 and tuple(obj.shape[-3:]) == (240, 320, 3):
            st = obj.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("over_budget", [False, True])
def test_frames_held_stay_within_the_budget(people_video, over_budget):
    """Measured at every piece: the frames alive are pass 1's (<= the budget) plus pass 2's chunk, or one chunk."""
    chunk_bytes = 4 * PEOPLE_FRAME_BYTES  # decode_chunk_segments=1 segment of T=4
    budget = PEOPLE_FRAMES * PEOPLE_FRAME_BYTES - (1 if over_budget else 0)
    seen: list[int] = []
    assert frame_bytes_alive() == 0
    pieces, outcome = run_video(face_annotator(keep_frames_bytes=budget, chunk_frames=6), people_video,
                                on_piece=lambda piece: seen.append(frame_bytes_alive()))
    assert outcome.status == "ok" and len(seen) == len(pieces) > 1
    if over_budget:
        assert outcome.extra["decode_passes"] == 2 and max(seen) <= chunk_bytes
    else:
        assert outcome.extra["decode_passes"] == 1 and max(seen) <= budget + chunk_bytes
        assert seen[-1] < seen[0], "kept frames are released as pass 2 uses them up"
    del pieces
    assert frame_bytes_alive() == 0


def pass1_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pass1-decode"]


def test_a_timeout_in_the_decode_thread_fails_the_video_and_stops_the_thread(people_video):
    _, outcome = run_video(face_annotator(video_timeout_s=1e-6), people_video)
    assert (outcome.status, outcome.error_type, outcome.n_segments) == ("failed", "VideoTimeout", 0)
    assert "still decoding after" in outcome.error
    assert not pass1_threads()


def test_a_decode_error_in_the_decode_thread_fails_the_video_and_stops_the_thread(truncated_vp9_video):
    _, outcome = run_video(face_annotator(chunk_frames=2), truncated_vp9_video[0])
    assert (outcome.status, outcome.error_type) == ("failed", "DecodeError"), outcome.error
    assert not pass1_threads()


def test_a_detector_error_stops_the_decode_thread_before_the_video_fails(people_video):
    """The consumer side fails (here the detector, on its second chunk): the thread decoding ahead is stopped."""
    annotator = face_annotator(chunk_frames=4)
    detector = annotator._face_detector()
    real, calls = detector.detect, []

    def failing_detect(frames, *args, **kw):
        calls.append(len(pass1_threads()))
        if len(calls) == 2:
            raise RuntimeError("detector failed")
        return real(frames, *args, **kw)

    detector.detect = failing_detect
    _, outcome = run_video(annotator, people_video)
    assert (outcome.status, outcome.error_type) == ("failed", "RuntimeError")
    assert calls[0] == 1, "the decode thread was running while the detector worked"
    assert not pass1_threads()


# ----------------------------------------------------------------- --faces none: decode ahead of the consumer

def center_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "center-decode"]


@pytest.mark.parametrize("prefetch_chunks", [1, 0])
def test_faces_none_decodes_the_next_chunk_while_the_consumer_works(h264_video, prefetch_chunks):
    """--faces none: a thread decodes ahead while a piece is scored (the same pieces as inline), and always stops."""
    path, spec = h264_video
    cfg = dict(segment_seconds=0.5, frames_per_segment=2, faces="none", decoder="pyav", decode_chunk_segments=1)
    inline = VideoAnnotator(AnnotateConfig(**cfg), S, FramePrimitives(CPU, "cpu", uint8_crops(S), "torch", CPU),
                            framing_params=FramingParams(prefetch_chunks=0))
    ahead = VideoAnnotator(AnnotateConfig(**cfg), S, FramePrimitives(CPU, "cpu", uint8_crops(S), "torch", CPU),
                           framing_params=FramingParams(prefetch_chunks=prefetch_chunks))
    want, _ = run_video(inline, path)
    alive: list[int] = []
    got, outcome = run_video(ahead, path, on_piece=lambda _p: alive.append(len(center_threads())))
    assert outcome.status == "ok" and len(got) == len(want) == int(spec.duration_s / 0.5)
    assert all(torch.equal(a.crops, b.crops) for a, b in zip(got, want))
    assert alive[0] == (1 if prefetch_chunks else 0), alive
    assert not center_threads()


def test_faces_none_a_consumer_that_stops_early_stops_the_decode_thread(h264_video):
    gen = annotator(decode_chunk_segments=1).annotate(ref_for(h264_video[0]))
    first = next(gen)
    assert isinstance(first, ClipPiece) and len(center_threads()) == 1
    gen.close()
    assert not center_threads()


def test_faces_none_a_decode_error_in_the_thread_fails_the_video(truncated_vp9_video):
    pieces, outcome = run_video(annotator(decode_chunk_segments=1), truncated_vp9_video[0])
    assert (outcome.status, outcome.error_type) == ("failed", "DecodeError") and pieces
    assert not center_threads()


def test_the_worker_time_is_split_into_detect_and_crop_seconds(people_video, h264_video):
    """extra: detect_s and crop_s are parts of decode_s; detect_s is 0 without face detection."""
    _, face = run_video(face_annotator(chunk_frames=4), people_video)
    _, none = run_video(annotator(), h264_video[0])
    for o in (face, none):
        assert o.status == "ok" and 0 < o.extra["crop_s"] < o.extra["decode_s"]
    assert 0 < face.extra["detect_s"] < face.extra["decode_s"] - face.extra["crop_s"] + 1e-3
    assert none.extra["detect_s"] == 0.0


class FixedBoxDetector:
    """A second face detector, registered by name only: one face, the same box, in every frame."""

    BOX = (8.0, 6.0, 40.0, 38.0)

    def __init__(self, device=None, workers=1, min_face_size=20):
        self.calls = 0
        self.min_face_size = min_face_size

    def detect(self, frames, frame_indices=None):
        from cliper_batch.faces.detectors.base import Detection

        idx = range(len(frames)) if frame_indices is None else frame_indices
        return [[Detection(int(i), self.BOX, 0.99)] for i in idx]


def test_a_detector_is_chosen_by_the_config_field_alone(h264_video, monkeypatch):
    """The seam: a detector in faces.detectors.DETECTORS, named by AnnotateConfig.face_detector (hashed when not
    the default), is what the per-video algorithm runs; nothing else names a detector class."""
    from cliper_batch.faces import detectors
    from cliper_batch.pipeline.run import config_hash

    monkeypatch.setitem(detectors.DETECTORS, "fixed", ("test_video_annotation", "FixedBoxDetector", None))
    detectors.check_detector("fixed")  # no weights to check
    with pytest.raises(ValueError, match="unknown face detector 'nope'"):
        detectors.check_detector("nope")
    with pytest.raises(ValueError, match="face_detector must be"):
        AnnotateConfig(face_detector="Not A Name")
    cfg = dict(segment_seconds=0.5, frames_per_segment=2, faces="detect", decoder="pyav", detect_stride=1)
    assert config_hash(AnnotateConfig(**cfg, face_detector="fixed")) != config_hash(AnnotateConfig(**cfg))
    assert config_hash(AnnotateConfig(**cfg, face_detector="mtcnn")) == config_hash(AnnotateConfig(**cfg))
    a = VideoAnnotator(AnnotateConfig(**cfg, face_detector="fixed", min_face=36), S,
                       FramePrimitives(CPU, "cpu", uint8_crops(S), "torch", CPU))
    items = list(a.annotate(ref_for(h264_video[0])))
    outcome = items[-1]
    assert isinstance(outcome, VideoOutcome) and outcome.status == "ok", outcome.error
    assert isinstance(a._face_detector(), FixedBoxDetector)
    assert a._face_detector().min_face_size == 36  # --min-face reaches the detector
    pieces = [p for p in items[:-1] if isinstance(p, ClipPiece)]
    n = int(h264_video[1].duration_s / 0.5)
    assert sum(p.n for p in pieces) == outcome.n_segments == n  # one track (the fixed box) in every segment
    assert len(set(np.concatenate([p.rows["track_id"] for p in pieces]).tolist())) == 1
    faces = {c: np.concatenate([p.rows[c] for p in pieces]) for c in ("face_x0", "face_y0", "face_x1", "face_y1", "face_score")}
    assert np.allclose(faces["face_score"], 0.99)
    assert all(np.ptp(faces[c]) < 1e-6 for c in ("face_x0", "face_y0", "face_x1", "face_y1"))  # the one fixed box


def test_min_face_is_checked_and_enters_the_hash_unless_it_is_the_20_px_of_older_outputs():
    from cliper_batch.pipeline.run import config_hash
    from cliper_batch.types import DEFAULT_MIN_FACE

    for bad in (11, 641, 20.0, True, "40"):
        with pytest.raises(ValueError, match="min_face must be"):
            AnnotateConfig(min_face=bad)
    cfg = dict(faces="detect")
    assert DEFAULT_MIN_FACE == 40
    assert config_hash(AnnotateConfig(**cfg, min_face=DEFAULT_MIN_FACE)) == config_hash(AnnotateConfig(**cfg))
    assert AnnotateConfig(**cfg).semantic_dict()["min_face"] == 40  # the default is hashed: it finds other faces ...
    assert "min_face" not in AnnotateConfig(**cfg, min_face=20).semantic_dict()  # ... than 20, the hash of older outputs
    assert config_hash(AnnotateConfig(**cfg, min_face=56)) != config_hash(AnnotateConfig(**cfg))
    assert "min_face" not in AnnotateConfig(faces="none", min_face=56).semantic_dict()  # no detector, no effect
