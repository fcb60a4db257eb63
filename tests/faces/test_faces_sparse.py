"""Detect sparsely, track densely: the real MTCNN detector on generated scenes whose face boxes are known.

Every test compares against the drawn boxes (``cliper_batch.synthetic.render_scene``)
and, where it matters, against detecting every frame (``track_video``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_batch import synthetic as S
from cliper_batch.faces.cuts import ShotCutDetector, detect_cuts
from cliper_batch.faces.detectors.base import Detection
from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector
from cliper_batch.faces.sparse import DetectionCounts, SparseFaceTracker, track_sparse
from cliper_batch.faces.track import FaceTracker, Track, TrackingError, fill_gaps, iou, track_video

W, H = 320, 180


def _face_box(p: S.FaceParams, x: float, y: float, height: float):
    return (x, y, x + height / p.face_aspect, y + height)


def _scene(faces_per_frame, bg_seed=7) -> np.ndarray:
    return np.stack([S.render_scene(f, W, H, np.random.default_rng(bg_seed)) for f in faces_per_frame])


class CountingDetector:
    """The real detector, counting the frames it is asked about."""

    def __init__(self, detector: FaceDetector):
        self.detector = detector
        self.frames: list[int] = []

    def __call__(self, frames, frame_indices=None):
        self.frames.extend(frame_indices)
        return self.detector.detect(frames, frame_indices=frame_indices)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    torch.set_num_threads(2)
    return FaceDetector(device="cpu")


@pytest.fixture(scope="module")
def people():
    rng = np.random.default_rng(3)
    return S.sample_identity(rng), S.sample_identity(rng)


def _chunks(frames, n):
    return [frames[i : i + n] for i in range(0, len(frames), n)]


def _assert_as_if_detected(track: Track, every: list, min_iou: float) -> None:
    """Every box of ``track`` (detected or interpolated) overlaps the detector's own box on that frame by >= ``min_iou``.

    ``every``: the detector run on every frame (frames where it finds nothing are not judged). What interpolating
    instead of detecting loses.
    """
    worst = min((max(iou(b, d.box) for d in every[f]), f) for f, b in zip(track.frame_indices, track.boxes) if every[f])
    assert worst[0] >= min_iou, (track.track_id, "worst (IoU, frame) against the detector's box", worst)


def _on_truth(track: Track, truth: list, min_iou: float) -> bool:
    return all(truth[f] is not None and iou(b, truth[f]) >= min_iou for f, b in zip(track.frame_indices, track.boxes))


def test_stride_one_is_exactly_dense_tracking(detector, people):
    pa, pb = people
    truth_a = [_face_box(pa, 10 + 22 * t, 40, 50 * pa.face_aspect) for t in range(12)]
    truth_b = [_face_box(pb, W - 60 - 22 * t, 70, 50 * pb.face_aspect) for t in range(12)]
    frames = _scene([[("happy", pa, 1.0, a), ("surprise", pb, 1.0, b)] for a, b in zip(truth_a, truth_b)], 103)
    dense = track_video(detector.detect(frames), detect_cuts(frames))
    sparse = track_sparse(_chunks(frames, 5), detector.detect, stride=1)
    assert [(t.track_id, t.frame_indices, t.interpolated) for t in sparse] == [
        (t.track_id, t.frame_indices, t.interpolated) for t in dense
    ]
    np.testing.assert_allclose([t.boxes for t in sparse], [t.boxes for t in dense])


def test_two_faces_then_a_cut_same_tracks_as_dense_with_a_third_of_the_detections(detector, people):
    pa, pb = people
    pc = S.sample_identity(np.random.default_rng(6))  # an identity the detector finds (see test_faces_e2e)
    truth, faces = [], []
    for t in range(40):  # two faces drifting slowly for 20 samples, then a hard cut to a third
        if t < 20:
            a, b = _face_box(pa, 30 + 2 * t, 40, 70), _face_box(pb, 200 - t, 60, 70)
            faces.append([("happy", pa, 1.0, a), ("sad", pb, 1.0, b)])
            truth.append([a, b])
        else:
            c = _face_box(pc, 120, 40, 80)
            faces.append([("neutral", pc, 1.0, c)])
            truth.append([c])
    frames = np.concatenate([_scene(faces[:20], 1), _scene(faces[20:], 2)])
    counting = CountingDetector(detector)
    sparse = track_sparse(_chunks(frames, 16), counting, stride=4)
    dense = track_video(detector.detect(frames), detect_cuts(frames))
    assert [(t.track_id, t.frame_indices, t.shot_index) for t in sparse] == [
        (t.track_id, t.frame_indices, t.shot_index) for t in dense
    ]
    assert [t.frame_indices for t in sparse] == [list(range(20)), list(range(20)), list(range(20, 40))]
    for t in sparse:  # every box, detected or interpolated, on the face drawn there
        for f, box in zip(t.frame_indices, t.boxes):
            assert max(iou(box, tb) for tb in truth[f]) > 0.6, (t.track_id, f, box, truth[f])
    assert len(counting.frames) <= 16, sorted(counting.frames)  # 40 frames, stride 4: 10 + cut + its predecessor + last
    assert {0, 19, 20, 39} <= set(counting.frames)


def test_fast_moving_face_keeps_one_track_on_the_face_where_it_starts_and_stops(detector, people):
    """35 px per sample (0.8 of the face's width): the start and the stop are found, the steady part interpolated."""
    pa, _ = people
    xs = [10, 10, 10, 10, 10, 40, 75, 110, 145, 180, 215, 250, 250, 250, 250, 250, 250]  # 35 px per sample
    truth = [_face_box(pa, x, 50, 60) for x in xs]
    frames = _scene([[("happy", pa, 1.0, b)] for b in truth])
    counting = CountingDetector(detector)
    driver = SparseFaceTracker(counting, ShotCutDetector(), stride=4)
    for chunk in _chunks(frames, 8):
        driver.feed(chunk)
    tracks = driver.finish()
    assert len(tracks) == 1, [(t.frame_indices, t.boxes) for t in tracks]
    (trk,) = tracks
    assert trk.frame_indices == list(range(len(xs)))
    assert _on_truth(trk, truth, 0.5), list(zip(trk.boxes, truth))
    _assert_as_if_detected(trk, detector.detect(frames), 0.8)
    assert {4, 5, 11, 12} <= set(counting.frames), sorted(counting.frames)  # where it starts and stops: looked at
    assert driver.counts.detected == len(set(counting.frames)) < len(xs)


def test_face_entering_mid_shot_starts_on_its_first_frame(detector, people):
    pa, pb = people
    stay = [_face_box(pa, 30 + t, 40, 70) for t in range(16)]
    enter = [None] * 6 + [_face_box(pb, 200, 60, 70)] * 10  # enters at sample 6, between scheduled frames 4 and 8
    frames = _scene([[("happy", pa, 1.0, a)] + ([("sad", pb, 1.0, b)] if b else []) for a, b in zip(stay, enter)])
    tracks = track_sparse([frames], detector.detect, stride=4)
    assert [(t.track_id, t.frame_indices[0], t.frame_indices[-1]) for t in tracks] == [(1, 0, 15), (2, 6, 15)]
    assert _on_truth(tracks[0], stay, 0.6) and _on_truth(tracks[1], enter, 0.6)


def test_gap_where_a_face_appears_is_split_not_detected_in_full(detector, people):
    """Ends 1 -> 2 faces: the middle is detected, then only the half where the face appears (version 3)."""
    pa, pb = people
    stay = [_face_box(pa, 30 + t, 40, 70) for t in range(16)]
    enter = [None] * 6 + [_face_box(pb, 200, 60, 70)] * 10  # between scheduled frames 4 and 8
    frames = _scene([[("happy", pa, 1.0, a)] + ([("sad", pb, 1.0, b)] if b else []) for a, b in zip(stay, enter)])
    counting, counts = CountingDetector(detector), DetectionCounts()
    tracks = track_sparse([frames], counting, stride=4, counts=counts)
    assert [(t.frame_indices[0], t.frame_indices[-1]) for t in tracks] == [(0, 15), (6, 15)]
    # the gap 4..8: its middle 6 (two faces), then the half 4..6 whose ends still differ (frame 5);
    # the half 6..8 pairs, so frame 7 is interpolated. Before, 5, 6 and 7 were all detected.
    assert {5, 6} <= set(counting.frames) and 7 not in counting.frames
    assert counts.refined == 2 and counts.detected == len(counting.frames)
    assert tracks[1].interpolated[tracks[1].frame_indices.index(7)]


def test_face_leaving_mid_shot_ends_on_its_last_frame(detector, people):
    pa, _ = people
    truth = [_face_box(pa, 100, 40, 70)] * 7 + [None] * 9  # gone after sample 6
    frames = _scene([[("happy", pa, 1.0, b)] if b else [] for b in truth])
    tracks = track_sparse(_chunks(frames, 3), detector.detect, stride=4)
    assert [t.frame_indices for t in tracks] == [list(range(7))]


def test_detector_is_called_in_batches_not_per_frame(detector, people):
    """Scheduled frames in one call per chunk, each bisection level of a chunk's gaps in one more: few calls, not one per frame."""
    pa, _ = people
    xs = [10] * 8 + [10 + 30 * k for k in range(1, 9)] + [250] * 8  # still, fast, still
    frames = _scene([[("happy", pa, 1.0, _face_box(pa, x, 50, 60))] for x in xs])
    calls: list[int] = []

    def detect(x, frame_indices):
        calls.append(len(frame_indices))
        return detector.detect(x, frame_indices=frame_indices)

    tracks = track_sparse([frames], detect, stride=4)
    assert len(tracks) == 1 and tracks[0].frame_indices == list(range(len(xs)))
    # schedule, two bisection levels (stride 4), the start and the stop (motion model), the last frame (off the schedule)
    assert len(calls) <= 6 and sum(calls) >= 2 * len(calls), calls


def test_confident_reads_state_and_flags_surprises():
    trk = FaceTracker()
    d = lambda box: Detection(0, box, 0.99)  # noqa: E731
    trk.update(0, [d((0, 0, 40, 40))])
    trk.update(4, [d((20, 0, 60, 40))])  # moving 5 px per index
    assert trk.confident(8, [d((40, 0, 80, 40))], 0.5)  # where the motion model expects it
    assert not trk.confident(8, [d((20, 0, 60, 40))], 0.5)  # stopped: against the model
    assert not trk.confident(8, [], 0.5)  # vanished
    assert not trk.confident(8, [d((40, 0, 80, 40)), d((200, 0, 240, 40))], 0.5)  # someone new
    assert [t.frame_indices for t in trk.finish()] == [[0, 4]]  # confident() changed nothing


def test_fill_gaps_interpolates_skipped_indices():
    t = Track(1, [0, 4, 5], [(0, 0, 10, 10), (40, 0, 50, 10), (50, 0, 60, 10)], [0.9, 0.8, 0.7], [False, False, False])
    f = fill_gaps(t)
    assert f.frame_indices == [0, 1, 2, 3, 4, 5]
    assert f.interpolated == [False, True, True, True, False, False]
    assert f.skipped == [False, True, True, True, False, False] and t.skipped == [False] * 3
    assert [f.present(k) for k in range(6)] == [True] * 6
    missed = Track(2, [0, 1, 2], [(0, 0, 10, 10)] * 3, [0.9, 0.0, 0.9], [False, True, False])  # a bridged detector miss
    assert [missed.present(k) for k in range(3)] == [True, False, True]
    assert f.scores[1:4] == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(f.boxes[2], (20, 0, 30, 10))
    assert fill_gaps(f) is f


def test_bad_stride_is_a_clear_error(detector):
    for bad in (0, -1, 1.5):
        with pytest.raises(TrackingError, match="stride"):
            track_sparse([], detector.detect, stride=bad)
    assert track_sparse([], detector.detect, stride=4) == []
    with pytest.raises(TrackingError, match="gap_rule"):
        track_sparse([], detector.detect, stride=4, gap_rule="bisect")
    for bad in (0.0, 1.5):
        with pytest.raises(TrackingError, match="verify_iou"):
            track_sparse([], detector.detect, stride=4, verify_iou=bad)


def test_detect_stride_is_a_validated_option_in_the_config_hash_for_detect_only():
    from cliper_batch.pipeline.run import config_hash
    from cliper_batch.types import DEFAULT_DETECT_STRIDE, SPARSE_TRACKING_VERSION, AnnotateConfig

    assert AnnotateConfig().detect_stride == DEFAULT_DETECT_STRIDE == 4
    assert config_hash(AnnotateConfig(detect_stride=1)) != config_hash(AnnotateConfig(detect_stride=4))
    # the default enters the hash like any stride != 1, and the hash is a pure function of the config
    assert config_hash(AnnotateConfig()) == config_hash(AnnotateConfig(detect_stride=4)) == "04a1924eae47"
    assert config_hash(AnnotateConfig(min_face=20)) == "4bb16c3a884c"
    assert AnnotateConfig().semantic_dict()["detect_stride"] == 4
    # what happens between scheduled frames is versioned with the stride: the smooth-motion check (version 2)
    # interpolates where version 1 (hash 62f4b0dd50ca) detected every frame, and version 3 splits a gap whose ends
    # pair neither way where version 2 (c46ae00c5f9f; 2a4678ea2a26 at 20 px) detected all of it, so those outputs
    # are annotated again
    assert AnnotateConfig().semantic_dict()["sparse_tracking"] == SPARSE_TRACKING_VERSION == 3
    # stride 1 leaves the stride and the sparse tracking out of the hash, as every version before the default
    # changed (which detected every frame); the face detector's version is in it (test_faces_detect.py)
    assert {"detect_stride", "sparse_tracking"}.isdisjoint(AnnotateConfig(detect_stride=1).semantic_dict())
    assert config_hash(AnnotateConfig(detect_stride=1, min_face=20)) == "5a7d71f2fba6"
    assert config_hash(AnnotateConfig(faces="none", detect_stride=1)) == config_hash(AnnotateConfig(faces="none", detect_stride=4))
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="detect_stride"):
            AnnotateConfig(detect_stride=bad)


def _exact(tracks: list[Track]) -> list[tuple]:
    return [(t.track_id, t.shot_index, t.frame_indices, t.boxes, t.scores, t.interpolated, t.skipped) for t in tracks]


def test_tracks_are_bit_identical_for_any_threads_chunking_frame_type_and_pool(detector, people):
    """The tracks of a video are a function of its frames only.

    The staged worker detects on a 1-thread actor with a pool of 1, the fused one with several torch
    threads and a pool as large, and the chunking decides which frames share a detector call. None
    of that may change a box by one bit: the Parquet of both layouts must be equal, and a borderline
    score must not flip a decision.
    """
    pa, pb = people
    xs = [20 + 2 * t for t in range(10)] + [38 + 20 * k for k in range(1, 4)] + [98] * 4  # slow, fast, still
    frames = _scene([[("happy", pa, 1.0, _face_box(pa, x, 40, 60)), ("sad", pb, 1.0, _face_box(pb, 240, 60, 55))]
                     for x in xs], 11)
    before, before_workers = torch.get_num_threads(), detector.workers
    runs = {}
    try:
        for threads, chunk, tensors, workers in ((1, len(frames), False, 1), (2, len(frames), False, 2),
                                                 (2, 5, False, 3), (2, 1, True, 2), (1, 7, True, 4), (3, 3, False, 1)):
            torch.set_num_threads(threads)
            detector.workers = workers
            counting = CountingDetector(detector)
            chunks = _chunks(frames, chunk)
            tracks = track_sparse([torch.from_numpy(c) for c in chunks] if tensors else chunks, counting, stride=4)
            runs[(threads, chunk, tensors, workers)] = (sorted(counting.frames), _exact(tracks))
    finally:
        torch.set_num_threads(before)
        detector.workers = before_workers
    (ref_key, ref), *others = runs.items()
    assert len(ref[1]) == 2 and ref[0] != list(range(len(frames)))  # both faces tracked, some frames skipped
    for key, got in others:
        assert got[0] == ref[0], (key, "detected frames differ")
        assert got[1] == ref[1], (key, "tracks differ from", ref_key)


# --------------------------------------------------------------------------- faces in motion
# 90 px/s at the job's 4 samples/s is ~22 px per sample: across a gap of 4 samples the boxes at the two ends
# overlap by IoU < 0.5, so detecting every frame of such a gap would detect every frame of the video.
MW, MH = 512, 288
MOVING_SIDE = 90.0  # face-oval height in pixels
# MTCNN's box runs from the brows to the chin, the drawn box around the whole oval: on these faces the detector's own
# boxes overlap the drawn ones by IoU 0.59-0.69, so a box "on the drawn face" is one with IoU >= 0.55
DRAWN_IOU = 0.55


def _moving_scene(person: S.FaceParams, centres, label="happy", seed=21):
    """Frames of one face whose oval is centred on each ``(cx, cy)``, and the drawn boxes."""
    w = MOVING_SIDE / person.face_aspect
    truth = [(cx - w / 2, cy - MOVING_SIDE / 2, cx + w / 2, cy + MOVING_SIDE / 2) for cx, cy in centres]
    frames = np.stack([S.render_scene([(label, person, 1.0, b)], MW, MH, np.random.default_rng(seed)) for b in truth])
    return frames, truth


def _track_moving(detector, frames, gap_rule="motion", chunk=7):
    counting = CountingDetector(detector)
    driver = SparseFaceTracker(counting, ShotCutDetector(), stride=4, gap_rule=gap_rule)
    for c in _chunks(frames, chunk):
        driver.feed(c)
    return driver.finish(), driver.counts, sorted(counting.frames)


PATHS = {
    # constant velocity, 21.8 px per sample (87 px/s at 4 samples/s), diagonal
    "constant_velocity": [(80 + 21 * t, 70 + 6 * t) for t in range(20)],
    # an elliptic arc at up to 24 px per sample, turning 0.16 rad per sample (a full turn in ~10 s at 4 samples/s)
    "curve": [(256 + 150 * np.cos(0.16 * t), 144 + 70 * np.sin(0.16 * t)) for t in range(24)],
    # accelerating from rest to 36 px per sample
    "accelerating": [(60 + 0.9 * t * t, 150 - 2 * t) for t in range(21)],
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_smoothly_moving_face_is_verified_not_detected_on_every_frame(detector, people, path):
    """Every box where the detector would have put it (IoU >= 0.8) and on the drawn face, detecting well under all frames.

    Detecting every frame of a gap whose ends disagree (``gap_rule="ends"``, what sparse detection did
    before the motion rule) detects (nearly) all of them here: the same frames show that.
    """
    pa, _ = people
    frames, truth = _moving_scene(pa, PATHS[path])
    tracks, counts, called = _track_moving(detector, frames)
    assert [t.frame_indices for t in tracks] == [list(range(len(frames)))], [t.frame_indices for t in tracks]
    (trk,) = tracks
    _assert_as_if_detected(trk, detector.detect(frames), 0.8)
    assert _on_truth(trk, truth, DRAWN_IOU), (path, min(iou(b, truth[f]) for f, b in zip(trk.frame_indices, trk.boxes)))
    assert counts.detected == len(set(called)) and counts.verified > 0
    assert len(called) <= 0.65 * len(frames), (path, called, counts)
    _, before, _ = _track_moving(detector, frames, gap_rule="ends")
    assert before.detected >= 0.9 * len(frames), before  # the old rule: (nearly) every frame


@pytest.mark.parametrize("turn", ["stops", "reverses"])
def test_face_that_moves_then_stops_or_reverses_keeps_its_track_and_boxes(detector, people, turn):
    pa, _ = people
    xs = [70 + 22 * t for t in range(10)]  # 22 px per sample for 10 samples, then ...
    xs += [xs[-1]] * 10 if turn == "stops" else [xs[-1] - 22 * k for k in range(1, 11)]
    frames, truth = _moving_scene(pa, [(x, 130) for x in xs], label="surprise")
    tracks, counts, called = _track_moving(detector, frames, chunk=5)
    assert [t.frame_indices for t in tracks] == [list(range(len(frames)))], [t.frame_indices for t in tracks]
    _assert_as_if_detected(tracks[0], detector.detect(frames), 0.8)
    assert _on_truth(tracks[0], truth, DRAWN_IOU)
    assert {9, 10} & set(called) and len(called) < len(frames), called  # the turn is looked at, not all frames


def test_faces_moving_in_opposite_directions_keep_their_ids(detector, people):
    """Two faces passing each other: the pairing at a gap's ends must not swap them (the middle would show it)."""
    pa, pb = people
    wa, wb = 70 / pa.face_aspect, 70 / pb.face_aspect
    ta = [(40 + 16 * t, 30, 40 + 16 * t + wa, 100) for t in range(16)]
    tb = [(MW - 100 - 16 * t, 170, MW - 100 - 16 * t + wb, 240) for t in range(16)]
    frames = np.stack([S.render_scene([("happy", pa, 1.0, a), ("sad", pb, 1.0, b)], MW, MH, np.random.default_rng(5))
                       for a, b in zip(ta, tb)])
    tracks, counts, called = _track_moving(detector, frames, chunk=16)
    assert [t.frame_indices for t in tracks] == [list(range(16))] * 2
    by_top = sorted(tracks, key=lambda t: t.boxes[0][1])
    every = detector.detect(frames)
    for trk, truth in zip(by_top, (ta, tb)):
        assert _on_truth(trk, truth, DRAWN_IOU), trk.track_id  # each id stays on its own face
        _assert_as_if_detected(trk, every, 0.8)
    assert len(called) < 16, called


@pytest.mark.parametrize("path", ["curve", "accelerating"])
def test_motion_rule_is_the_same_for_any_chunking(detector, people, path):
    """Anchors, bisection and the tracker check across chunk boundaries: same frames detected, same tracks, bit for bit."""
    pa, _ = people
    frames, _ = _moving_scene(pa, PATHS[path])
    runs = {}
    for chunk in (1, 3, 4, 7, len(frames)):
        counting = CountingDetector(detector)
        counts = DetectionCounts()
        tracks = track_sparse(_chunks(frames, chunk), counting, stride=4, counts=counts)
        runs[chunk] = (sorted(counting.frames), _exact(tracks), counts)
    (_, ref), *others = runs.items()
    assert ref[2].verified > 0 and ref[2].detected < len(frames), ref[2]
    for chunk, got in others:
        assert got == ref, chunk
