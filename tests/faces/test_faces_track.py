"""Shot cuts and face tracking: pure box-level rules, then detector + cuts + tracker on generated videos.

Generated videos: procedural cartoon faces (``cliper_batch.synthetic.render_scene``,
whose face boxes are the truth) and the real ``astronaut`` photo panned and
zoomed (truth = the reference face box mapped through the known pan/zoom).
"""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage import io as skio

from cliper_batch import synthetic as S
from cliper_batch.faces.cuts import CutInputError, CutParams, ShotCutDetector, cut_scores, detect_cuts
from cliper_batch.faces.detectors.base import Detection
from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector
from cliper_batch.faces.track import FaceTracker, TrackingError, assign, iou, track_video

ASTRONAUT_FACE = (181.05, 62.16, 267.75, 172.05)  # facenet-pytorch's MTCNN on the still photo
W, H = 320, 180


def _det(box, frame=0, score=0.99) -> Detection:
    return Detection(frame, tuple(float(v) for v in box), score)


def _box(x, y, w=40.0, h=40.0):
    return (x, y, x + w, y + h)


def _photo(name: str) -> np.ndarray:
    im = skio.imread(os.path.join(skdata.data_dir, name))
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    return np.ascontiguousarray(im[..., :3])


def _window(im: np.ndarray, x0: float, y0: float, ww: float, out=(W, H)) -> np.ndarray:
    """The region of ``im`` at (x0, y0) of width ``ww`` (aspect of ``out``), resampled to ``out``."""
    wh = ww * out[1] / out[0]
    return np.asarray(Image.fromarray(im).resize(out, Image.BILINEAR, box=(x0, y0, x0 + ww, y0 + wh)))


def _pan(im: np.ndarray, n: int, step: float = 0.08, zoom: float = 1.0, out=(W, H)) -> np.ndarray:
    h, w = im.shape[:2]
    ww = w * 0.5
    frames = []
    for i in range(n):
        z = ww / zoom**i
        cx = min(w - ww / 2 - 1, ww / 2 + 1 + i * step * ww)
        frames.append(_window(im, cx - z / 2, h / 2 - z * out[1] / out[0] / 2, z, out))
    return np.stack(frames)


def _face_box(params: S.PersonParams, x: float, y: float, height: float):
    return (x, y, x + height / params.face_aspect, y + height)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    torch.set_num_threads(2)
    return FaceDetector(device="cpu")


# --------------------------------------------------------------------------- assignment


def test_assign_is_optimal():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = (int(v) for v in rng.integers(1, 6, 2))
        cost = rng.random((n, m))
        cost[rng.random((n, m)) < 0.3] = 1e6
        pairs = assign(cost)
        assert len(pairs) == min(n, m)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        if n <= m:
            best = min(sum(cost[r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(m), n))
        else:
            best = min(sum(cost[r, c] for c, r in enumerate(p)) for p in itertools.permutations(range(n), m))
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(best)


# --------------------------------------------------------------------------- tracker rules (boxes)


def test_crossing_faces_keep_ids_thanks_to_motion_prediction():
    # 40 px faces: A moves right, B moves left, 16 px per frame, 4 px apart vertically; they cross near frame 5
    a = [_box(16.0 * t, 100) for t in range(10)]
    b = [_box(152.0 - 16.0 * t, 104) for t in range(10)]
    # the scenario is a trap for matching by last position: A's last box overlaps B's next more than A's next
    assert iou(a[4], b[5]) > iou(a[4], a[5])
    tracks = track_video([[_det(a[t], t), _det(b[t], t)] for t in range(10)], iou_threshold=0.3)
    assert len(tracks) == 2
    for trk in tracks:
        xs = [bx[0] for bx in trk.boxes]
        steps = np.diff(xs)
        assert len(xs) == 10 and (np.all(steps > 0) or np.all(steps < 0)), xs  # never jumps to the other face


def test_short_gap_is_bridged_by_interpolation():
    frames = [[_det(_box(10.0 * t, 50), t)] if t not in (4, 5) else [] for t in range(10)]
    (trk,) = track_video(frames, max_gap=2)
    assert trk.track_id == 1 and trk.frame_indices == list(range(10))
    assert trk.interpolated == [t in (4, 5) for t in range(10)]
    assert trk.n_detections == 8 and trk.scores[4] == trk.scores[5] == 0.0
    assert trk.box_at(5) == pytest.approx(_box(50.0, 50))
    assert trk.box_at(12) is None


def test_long_gap_starts_a_new_track():
    frames = [[_det(_box(10.0 * t, 50), t)] if t not in (4, 5, 6) else [] for t in range(10)]
    tracks = track_video(frames, max_gap=2)
    assert [(t.track_id, t.frame_indices) for t in tracks] == [(1, [0, 1, 2, 3]), (2, [7, 8, 9])]
    assert not any(any(t.interpolated) for t in tracks)


def test_cut_resets_tracks_even_when_boxes_overlap():
    frames = [[_det(_box(100, 50), t)] for t in range(10)]
    tracks = track_video(frames, cuts=[5])
    assert [(t.track_id, t.frame_indices[0], t.frame_indices[-1], t.shot_index) for t in tracks] == [(1, 0, 4, 0), (2, 5, 9, 1)]


def test_short_tracks_dropped_and_ids_follow_first_appearance():
    frames = []
    for t in range(8):
        dets = [_det(_box(200, 20), t)]
        if t >= 3:
            dets.append(_det(_box(20, 100), t))
        if t == 1:
            dets.append(_det(_box(100, 100), t))  # a one-frame false positive
        frames.append(dets)
    tracks = track_video(frames, min_track_length=2)
    assert [(t.track_id, t.frame_indices[0], len(t.frame_indices)) for t in tracks] == [(1, 0, 8), (2, 3, 5)]


def test_max_faces_keeps_the_largest():
    sizes = [10, 50, 20, 60, 30, 70, 40, 80, 15, 25]
    frames = [[_det(_box(90.0 * k, 10, s, s), t) for k, s in enumerate(sizes)] for t in range(3)]
    tracks = track_video(frames, max_faces=8)
    kept = sorted(round(t.boxes[0][2] - t.boxes[0][0]) for t in tracks)
    assert kept == sorted(sizes)[2:]
    assert [t.track_id for t in tracks] == list(range(1, 9))


def test_young_track_follows_a_far_jump_between_sparse_samples():
    # 40 px face moving 24 px per sample: IoU with the last box is only 0.25
    frames = [[_det(_box(24.0 * t, 50), t)] for t in range(4)]
    assert iou(_box(0, 50), _box(24, 50)) < 0.3
    assert [t.frame_indices for t in track_video(frames)] == [[0, 1, 2, 3]]
    # without the centre-distance gate every sample would start a new (one-frame) track
    assert [t.frame_indices for t in track_video(frames, max_center_distance=0.0, min_track_length=1)] == [[0], [1], [2], [3]]
    assert track_video(frames, max_center_distance=0.0) == []


def test_links_says_whether_an_update_would_keep_every_track_and_start_none():
    trk = FaceTracker()
    trk.update(0, [_det(_box(0, 50), 0)])
    trk.update(4, [_det(_box(20, 50), 4)])  # 40 px face moving 5 px per index: expected at x=80 by index 16
    assert trk.links(16, [_det(_box(80, 50), 16)]) and trk.confident(16, [_det(_box(80, 50), 16)], 0.5)
    assert trk.links(16, [_det(_box(55, 50), 16)])  # slowed down: off the prediction, within the centre gate
    assert not trk.confident(16, [_det(_box(55, 50), 16)], 0.5)  # ... which confident() does flag
    assert not trk.links(16, [_det(_box(20, 50), 16)])  # stopped dead: 1.5 sides from the prediction, the track would miss
    assert not trk.links(16, [])  # vanished
    assert not trk.links(16, [_det(_box(80, 50), 16), _det(_box(400, 50), 16)])  # someone new
    assert FaceTracker().links(0, []) and not FaceTracker().links(0, [_det(_box(0, 50), 0)])
    assert [t.frame_indices for t in trk.finish()] == [[0, 4]]  # links() changed nothing


def test_tracker_rejects_bad_input():
    tr = FaceTracker()
    tr.update(3, [])
    with pytest.raises(TrackingError, match="strictly increase"):
        tr.update(3, [])
    with pytest.raises(TrackingError, match="x1 > x0"):
        tr.update(4, [_det((10, 10, 5, 20))])
    tr.finish()
    with pytest.raises(TrackingError, match="after finish"):
        tr.update(9, [])
    with pytest.raises(TrackingError, match="not among the frame indices"):
        track_video([[], []], cuts=[7])
    with pytest.raises(TrackingError, match="frame_indices"):
        track_video([[], []], frame_indices=[0])
    with pytest.raises(TrackingError, match="max_gap"):
        FaceTracker(max_gap=-1)
    assert track_video([[], []], frame_indices=[10, 20]) == []


# --------------------------------------------------------------------------- shot cuts


def test_pans_zooms_and_lighting_drift_are_not_cuts():
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "brick.png"]:
        im = _photo(name)
        assert detect_cuts(_pan(im, 10, step=0.12)) == [], name
        assert detect_cuts(_pan(im, 10, step=0.0, zoom=1.08)) == [], name
        slow = _pan(im, 10, step=0.02).astype(np.float32)
        gain = (0.95 ** np.arange(10))[:, None, None, None] * np.array([1.0, 0.99, 0.98]) ** np.arange(10)[:, None, None, None]
        assert detect_cuts(np.clip(slow * gain, 0, 255).astype(np.uint8)) == [], name


def test_hard_cuts_between_scenes_are_found_batch_and_streaming():
    shots = [_pan(_photo("astronaut.png"), 6), _pan(_photo("coffee.png"), 5), _pan(_photo("chelsea.png"), 7), _pan(_photo("rocket.jpg"), 4)]
    video = np.concatenate(shots)
    assert detect_cuts(video) == [6, 11, 18]
    assert detect_cuts(torch.from_numpy(video)) == [6, 11, 18]
    s = cut_scores(video)
    assert s[0] == 0.0 and min(s[[6, 11, 18]]) > 2 * np.delete(s, [6, 11, 18]).max()
    stream = ShotCutDetector()
    found = []
    for start in range(0, len(video), 4):  # chunks that split shots anywhere
        found += stream.update(video[start : start + 4])
    assert found == [6, 11, 18]


def test_moving_synthetic_face_is_not_a_cut_but_a_scene_change_is():
    rng = np.random.default_rng(5)
    pa, pb = S.sample_identity(rng), S.sample_identity(rng)
    shot_a = [S.render_scene([("happy", pa, 1.0, _face_box(pa, 20 + 12 * t, 40, 70))], W, H, np.random.default_rng(1)) for t in range(6)]
    shot_b = [S.render_scene([("sad", pb, 1.0, _face_box(pb, 150 - 12 * t, 50, 70))], W, H, np.random.default_rng(2)) for t in range(4)]
    assert detect_cuts(np.stack(shot_a)) == []
    assert detect_cuts(np.stack(shot_a + shot_b)) == [6]


@pytest.mark.parametrize("shape", [(3, 360, 640), (2, 1080, 1920), (2, 720, 1280), (4, 97, 131), (2, 7, 5), (2, 5, 300), (1, 2160, 3840)])
def test_thumbnails_are_the_float32_block_means_bit_for_bit(shape):
    """The integer-sum thumbnails give exactly what the float32 block mean they replaced gave."""
    from cliper_batch.faces.cuts import _THUMB_SIDE, _thumbnails

    frames = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    frames[0, : shape[1] // 2] = 255  # saturated blocks: the largest sums
    f, h, w = shape
    stride = max(1, max(h, w) // (4 * _THUMB_SIDE))
    x = frames[:, ::stride, ::stride]
    k = max(1, int(np.ceil(max(x.shape[1], x.shape[2]) / _THUMB_SIDE)))
    th, tw = max(1, x.shape[1] // k), max(1, x.shape[2] // k)
    old = x[:, : th * k, : tw * k].reshape(f, th, k, tw, k, 3).astype(np.float32).mean(axis=(2, 4)) / 255.0
    got = _thumbnails(frames)
    assert got.dtype == np.float32 and got.shape == old.shape
    assert np.array_equal(got, old)
    assert max(got.shape[1:3]) <= _THUMB_SIDE


@pytest.mark.parametrize("shape", [(300, 2), (2, 300), (2, 2), (3, 641)])
def test_frames_thinner_than_a_thumbnail_block_still_get_signatures_and_cuts(shape):
    """A 300x2 video used to fail its cut detection (a reshape error); its blocks are now as thin as it is."""
    from cliper_batch.faces.cuts import _thumbnails, frame_signatures

    h, w = shape
    frames = np.zeros((6, h, w, 3), np.uint8)
    frames[:3, ..., 0] = 200  # a red shot, then a blue one
    frames[3:, ..., 2] = 200
    thumbs = _thumbnails(frames)
    assert thumbs.shape[0] == 6 and min(thumbs.shape[1:3]) >= 1 and max(thumbs.shape[1:3]) <= 64
    assert np.allclose(thumbs[0, ..., 0], 200 / 255) and np.allclose(thumbs[5, ..., 2], 200 / 255)
    assert np.allclose(frame_signatures(frames).sum(axis=-1), 1.0)
    assert detect_cuts(frames, CutParams(min_shot_length=1)) == [3]


def test_cut_input_errors():
    with pytest.raises(CutInputError, match="uint8"):
        detect_cuts(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(CutInputError, match=r"\[F, H, W, 3\]"):
        detect_cuts(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(CutInputError, match="ratio"):
        CutParams(ratio=0.5)
    assert detect_cuts(np.zeros((0, 8, 8, 3), np.uint8)) == []
    assert detect_cuts(np.zeros((1, 8, 8, 3), np.uint8)) == []


# --------------------------------------------------------------------------- detector + cuts + tracker on videos


def _run(detector: FaceDetector, frames: np.ndarray, **params):
    dets = detector.detect(frames)
    return dets, track_video(dets, detect_cuts(frames), **params)


def _follows(track, truth: list, min_iou: float = 0.3) -> bool:
    """Every detected box of ``track`` overlaps the truth box of its frame."""
    return all(truth[f] is not None and iou(b, truth[f]) >= min_iou for f, b, i in zip(track.frame_indices, track.boxes, track.interpolated) if not i)


def test_two_synthetic_faces_crossing_keep_their_ids(detector):
    rng = np.random.default_rng(3)
    pa, pb = S.sample_identity(rng), S.sample_identity(rng)
    frames, ta, tb = [], [], []
    for t in range(12):
        a = _face_box(pa, 10 + 22 * t, 40, 50 * pa.face_aspect)
        b = _face_box(pb, W - 60 - 22 * t, 70, 50 * pb.face_aspect)
        frames.append(S.render_scene([("happy", pa, 1.0, a), ("surprise", pb, 1.0, b)], W, H, np.random.default_rng(103)))
        ta.append(a)
        tb.append(b)
    dets, tracks = _run(detector, np.stack(frames))
    assert len(tracks) == 2, [(t.frame_indices, t.boxes) for t in tracks]
    owners = sorted(("a" if _follows(t, ta) else "b" if _follows(t, tb) else "?") for t in tracks)
    assert owners == ["a", "b"]
    assert all(t.n_detections >= 10 for t in tracks)


def test_face_leaving_and_returning(detector):
    """Gone for 5 samples (> max_gap): a new id. Hidden for 2 samples (<= max_gap): same id, bridged."""
    rng = np.random.default_rng(3)
    p = S.sample_identity(rng)
    size = 60 * p.face_aspect
    xs = [120, 160, 200, 240, None, None, None, None, None, 240, 200, 160]  # exits right, comes back
    truth = [None if x is None else _face_box(p, x, 50, size) for x in xs]
    frames = np.stack([S.render_scene([("neutral", p, 1.0, b)] if b else [], W, H, np.random.default_rng(7)) for b in truth])
    dets, tracks = _run(detector, frames)
    assert [t.frame_indices for t in tracks] == [[0, 1, 2, 3], [9, 10, 11]]
    assert [t.track_id for t in tracks] == [1, 2]
    # hidden twice in the middle of the frame: one track, two interpolated boxes close to the truth
    xs = [100, 110, 120, 130, 140, 150, 160, 170]
    truth = [_face_box(p, x, 50, size) for x in xs]
    frames = np.stack([S.render_scene([("neutral", p, 1.0, b)] if k not in (3, 4) else [], W, H, np.random.default_rng(7)) for k, b in enumerate(truth)])
    dets, tracks = _run(detector, frames, max_gap=2)
    assert len(tracks) == 1
    (trk,) = tracks
    assert trk.frame_indices == list(range(8)) and trk.interpolated == [k in (3, 4) for k in range(8)]
    assert all(iou(trk.box_at(k), truth[k]) > 0.5 for k in (3, 4))


def test_hard_cut_between_two_scenes_resets_tracks(detector):
    rng = np.random.default_rng(3)
    pa, pb = S.sample_identity(rng), S.sample_identity(rng)
    box_a = _face_box(pa, 130, 40, 90)
    box_b = _face_box(pb, 132, 42, 90)  # the next shot's face sits where the last one was
    frames = np.stack(
        [S.render_scene([("happy", pa, 1.0, box_a)], W, H, np.random.default_rng(11)) for _ in range(5)]
        + [S.render_scene([("anger", pb, 1.0, box_b)], W, H, np.random.default_rng(12)) for _ in range(5)]
    )
    assert detect_cuts(frames) == [5]
    dets, tracks = _run(detector, frames)
    assert [(t.frame_indices, t.shot_index) for t in tracks] == [([0, 1, 2, 3, 4], 0), ([5, 6, 7, 8, 9], 1)]
    # without the cut the two people would have been merged into one track
    assert len(track_video(dets)) == 1


def test_astronaut_panned_and_zoomed_is_one_track_on_the_true_face(detector):
    im = skdata.astronaut()
    frames, truth = [], []
    for t in range(10):
        ww = 400.0 / (1.06**t)  # zoom in ~6% per sample while panning right and down
        x0, y0 = 20.0 + 6 * t, 10.0 + 3 * t
        frames.append(_window(im, x0, y0, ww))
        s = W / ww
        a = ASTRONAUT_FACE
        truth.append(((a[0] - x0) * s, (a[1] - y0) * s, (a[2] - x0) * s, (a[3] - y0) * s))
    dets, tracks = _run(detector, np.stack(frames))
    assert detect_cuts(np.stack(frames)) == []
    assert len(tracks) == 1
    (trk,) = tracks
    assert trk.track_id == 1 and trk.frame_indices == list(range(10)) and not any(trk.interpolated)
    for f, b in zip(trk.frame_indices, trk.boxes):
        assert iou(b, truth[f]) > 0.7, (f, b, truth[f])
