"""Face detector (batched MTCNN, weights packaged with the engine) on real photos shipped in packages.

Real faces: scikit-image's ``astronaut`` (Eileen Collins) and the 100 LFW face
crops of ``lfw_subset``; face-free photos: scikit-image's coffee, chelsea (a
cat), rocket, ... . Expected astronaut box: what facenet-pytorch 2.6.0's own
MTCNN reports on the same image (181.1, 62.2, 267.7, 172.1), an independent
implementation using the same weights.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage import io as skio

from cliper_batch.faces.detectors.base import Detection, FaceInputError
from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector
from cliper_batch.faces.detectors.mtcnn.nets import CeilMaxPool, load_mtcnn_weights
from cliper_batch.faces.detectors.mtcnn.pyramid import AreaPyramid
from cliper_batch.faces.detectors.mtcnn.weights import MTCNN_SHA256, WEIGHTS_FILE, DetectorUnavailable
from cliper_batch.faces.track import iou

ASTRONAUT_FACE = (181.05, 62.16, 267.75, 172.05)
FACE_FREE = ["coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_right.png", "hubble_deep_field.jpg", "brick.png", "grass.png", "text.png", "coins.png"]


def _photo(name: str) -> np.ndarray:
    im = skio.imread(os.path.join(skdata.data_dir, name))
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    return np.ascontiguousarray(im[..., :3])


def _resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    torch.set_num_threads(2)
    return FaceDetector(device="cpu")


def test_packaged_weights_are_the_pinned_safetensors_file():
    import hashlib

    with open(WEIGHTS_FILE, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == MTCNN_SHA256
    assert os.path.isfile(os.path.join(os.path.dirname(WEIGHTS_FILE), "NOTICE"))
    weights = load_mtcnn_weights()
    assert set(weights) == {"pnet", "rnet", "onet"}
    for state in weights.values():
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert weights["onet"]["dense6_3.weight"].shape == (10, 256)  # the landmark head
    assert weights["pnet"]["conv1.weight"].shape == (10, 3, 3, 3)


def test_missing_truncated_or_altered_weights_are_refused(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(DetectorUnavailable, match="cannot be read.*reinstall cliper-batch"):
        FaceDetector(weights_path=str(missing))
    copy = tmp_path / "mtcnn.safetensors"
    shutil.copy(WEIGHTS_FILE, copy)
    FaceDetector(weights_path=str(copy))  # an exact copy is fine
    raw = copy.read_bytes()
    copy.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DetectorUnavailable, match="have sha256 .*truncated or altered"):
        FaceDetector(weights_path=str(copy))
    altered = bytearray(raw)
    altered[-100] ^= 0xFF
    copy.write_bytes(bytes(altered))
    with pytest.raises(DetectorUnavailable, match="have sha256"):
        load_mtcnn_weights(str(copy))


def test_astronaut_face_found_like_the_reference_mtcnn(detector):
    im = skdata.astronaut()
    (dets,) = detector.detect(im[None])
    assert len(dets) == 1
    d = dets[0]
    assert d.frame_index == 0 and d.score > 0.99
    assert iou(d.box, ASTRONAUT_FACE) > 0.85
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = d.landmarks
    x0, y0, x1, y1 = d.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in d.landmarks)
    assert lx < rx and mlx < mrx  # left/right as seen in the image
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above nose above mouth


def test_batch_of_large_frames_maps_boxes_back_to_original_pixels(detector):
    """1280x720 frames are detected at 640x360; boxes must come back in 1280x720 pixels."""
    bg = _resize(_photo("coffee.png"), 1280, 720)
    face = skdata.astronaut()
    frames, truth = [], []
    for ox, oy in [(600, 150), (100, 60)]:
        f = bg.copy()
        f[oy : oy + 512, ox : ox + 512] = face
        frames.append(f)
        a = ASTRONAUT_FACE
        truth.append((a[0] + ox, a[1] + oy, a[2] + ox, a[3] + oy))
    frames.append(bg)  # no face
    batch = np.stack(frames)
    out = detector.detect(batch, frame_indices=[10, 11, 12])
    assert [len(d) for d in out] == [1, 1, 0]
    for dets, t, idx in zip(out, truth, (10, 11)):
        assert dets[0].frame_index == idx
        assert iou(dets[0].box, t) > 0.75, (dets[0].box, t)
    # a frame's faces are a function of that frame alone: torch input, any batch it comes in and any
    # thread count of the caller give bit-identical detections (the staged and fused workers rely on it)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert detector.detect(torch.from_numpy(batch), frame_indices=[10, 11, 12]) == out
            assert [detector.detect(batch[k : k + 1], frame_indices=[10 + k])[0] for k in range(3)] == out
            wide = torch.zeros(batch.shape[:2] + (batch.shape[2] + 8, 3), dtype=torch.uint8)
            wide[:, :, : batch.shape[2]] = torch.from_numpy(batch)  # a non-contiguous view of the same pixels
            assert detector.detect(wide[:, :, : batch.shape[2]], frame_indices=[10, 11, 12]) == out
            assert torch.get_num_threads() == threads  # the caller's setting is restored
            for workers in (2, 3):  # any pool size: frames in parallel, each on one intra-op thread
                pooled = FaceDetector(device="cpu", workers=workers)
                assert pooled.detect(batch, frame_indices=[10, 11, 12]) == out
                assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def _framed_faces(n: int) -> np.ndarray:
    """``n`` 640x360 frames, each with the astronaut's face at a different place (and one without)."""
    bg = _resize(_photo("coffee.png"), 640, 360)
    face = _resize(skdata.astronaut(), 256, 256)
    frames = []
    for k in range(n):
        f = bg.copy()
        if k != 2:
            ox, oy = (37 * k) % 380, (23 * k) % 100
            f[oy : oy + 256, ox : ox + 256] = face
        frames.append(f)
    return np.stack(frames)


def test_pool_threads_run_frames_in_parallel_on_the_fixed_thread_count():
    """torch's thread count is process-wide, but a thread keeps the count it first ran an op with.

    The pool's threads are made in each call, so they run on ``threads`` intra-op threads whatever the
    caller set, and different frames really run on different Python threads.
    """
    import threading

    seen: list[tuple[int, int]] = []
    detector = FaceDetector(device="cpu", workers=2)
    forward = detector.pnet.forward

    def recording(x):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return forward(x)

    detector.pnet.forward = recording
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = detector.detect(_framed_faces(6))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert [len(d) for d in out] == [1, 1, 0, 1, 1, 1]
    assert {n for _, n in seen} == {1}
    assert len({t for t, _ in seen}) == 2 and threading.get_ident() not in {t for t, _ in seen}


def test_fixed_size_batches_find_the_faces_of_one_frame_calls_and_padding_never_leaks():
    """The CUDA layout (fixed batches, last one padded with black frames), run on CPU.

    Same cascade, B = 8 instead of 1: on CPU the kernels may round differently with the batch size,
    so equality is within a tight tolerance (measured: bit-identical on these frames).
    """
    frames = _framed_faces(11)  # one full batch of 8 and one of 3 real + 5 padding frames
    ref = FaceDetector(device="cpu").detect(frames, frame_indices=range(100, 111))
    batched = FaceDetector(device="cpu", batch=8, workers=2)
    assert batched.batch == 8 and FaceDetector(device="cpu").batch == 1
    got = batched.detect(frames, frame_indices=range(100, 111))
    assert [len(d) for d in got] == [len(d) for d in ref] == [1, 1, 0] + [1] * 8
    for a_dets, b_dets in zip(ref, got):
        for a, b in zip(a_dets, b_dets):
            assert a.frame_index == b.frame_index
            assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) < 1e-5
            assert np.allclose(a.landmarks, b.landmarks, atol=1e-3)
    # padding rows never leak: a batch whose rows past the real ones hold faces reports only the real ones
    chunk = torch.from_numpy(frames[3:11])  # 8 frames with a face each
    part = batched._detect_batch(chunk, [7, 8, 9])
    assert [[d.frame_index for d in dets] for dets in part] == [[7], [8], [9]]
    assert [d[0].box for d in part] == [d[0].box for d in batched._detect_batch(chunk, list(range(8)))[:3]]


def test_face_free_photos_give_no_detections(detector):
    # one batch of equal-sized frames, as video frames come (and one set of conv shapes to prepare)
    batch = np.stack([_resize(_photo(name), 480, 320) for name in FACE_FREE])
    out = detector.detect(batch)
    assert {name: dets for name, dets in zip(FACE_FREE, out) if dets} == {}


def test_lfw_faces_recall_and_non_faces_rejected():
    """scikit-image's LFW subset: 100 real face crops + 100 non-face crops (25x25 grey), shown 3x on a grey canvas."""
    detector = FaceDetector(min_face_size=40)  # faces are ~75 px here; fewer pyramid levels keep the test fast
    x = skdata.lfw_subset()
    canvas = np.full((len(x), 120, 120, 3), 128, np.uint8)
    for i, a in enumerate(x):
        up = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((75, 75), Image.BILINEAR))
        canvas[i, 22:97, 22:97] = up[..., None]
    out = detector.detect(canvas)
    found = np.array([len(d) > 0 for d in out])
    assert found[:100].mean() >= 0.95  # measured: 0.99
    assert found[100:].mean() <= 0.02  # measured: 0.00


def test_bad_input_is_rejected(detector):
    with pytest.raises(FaceInputError, match="uint8"):
        detector.detect(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(FaceInputError, match="add a leading axis"):
        detector.detect(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FaceInputError, match=r"\[F, H, W, 3\]"):
        detector.detect(np.zeros((1, 32, 32, 4), np.uint8))
    with pytest.raises(FaceInputError, match="frame_indices"):
        detector.detect(np.zeros((2, 32, 32, 3), np.uint8), frame_indices=[0])
    with pytest.raises(FaceInputError, match="min_face_size"):
        FaceDetector(min_face_size=8)
    with pytest.raises(FaceInputError, match="thresholds"):
        FaceDetector(thresholds=(0.6, 0.7))
    for bad in (0, 1.5, True):
        for name in ("threads", "workers", "batch"):
            with pytest.raises(FaceInputError, match=name):
                FaceDetector(**{name: bad})
    assert detector.detect(np.zeros((0, 32, 32, 3), np.uint8)) == []
    assert detector.detect(np.zeros((2, 32, 32, 3), np.uint8)) == [[], []]


def test_detection_is_a_frozen_record():
    d = Detection(3, (1.0, 2.0, 11.0, 22.0), 0.9)
    assert d.area == 200.0 and d.landmarks is None
    with pytest.raises(AttributeError):
        d.score = 1.0  # type: ignore[misc]


def test_area_pyramid_levels_equal_torch_area_interpolation():
    """The pyramid's sparse products give ``F.interpolate(mode="area")``'s bins, within float rounding, for any sizes."""
    gen = torch.Generator().manual_seed(0)
    for b, h, w in ((1, 360, 640), (3, 37, 53), (1, 12, 12), (2, 100, 7)):
        frames = torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=gen)
        images = frames.permute(0, 3, 1, 2).float()  # as the detector holds them (pixel-interleaved)
        mats: dict = {}
        pyramid = AreaPyramid(images, mats)
        for sh, sw in ((h, w), (max(1, h // 2), max(1, w // 3)), (int(h * 0.6 + 1), int(w * 0.6 + 1)), (5, 5), (1, 1)):
            sh, sw = min(sh, h), min(sw, w)
            level = pyramid.level(sh, sw)
            ref = torch.nn.functional.interpolate(images, size=(sh, sw), mode="area")
            assert level.shape == ref.shape and level.is_contiguous()
            assert torch.allclose(level, ref, rtol=0, atol=1e-4), (b, h, w, sh, sw)
        assert AreaPyramid(images.contiguous(), {}).level(h // 2 or 1, w // 2 or 1).equal(pyramid.level(h // 2 or 1, w // 2 or 1))
        assert (h, h // 2 or 1) in mats  # resize matrices are built once per size pair and kept by the caller


def test_ceil_max_pool_equals_torch_max_pool():
    gen = torch.Generator().manual_seed(1)
    for k, s in ((2, 2), (3, 2)):
        for h in range(1, 26):
            for w in (1, 2, 3, 22, 23, 47):
                if h < k and w < k:
                    continue
                x = torch.randn(2, 4, h, w, generator=gen)
                try:
                    ref = torch.nn.MaxPool2d(k, s, ceil_mode=True)(x)
                except RuntimeError:  # torch refuses maps smaller than the kernel
                    continue
                got = CeilMaxPool(k, s)(x)
                assert got.shape == ref.shape and torch.equal(got, ref), (k, s, h, w)
    with pytest.raises(ValueError, match="kernel >= stride"):
        CeilMaxPool(1, 2)


def test_the_detector_version_is_in_the_config_hash_of_face_runs_only(monkeypatch):
    """Outputs of another detector version (its boxes may differ, if only by float rounding) are re-annotated, not mixed."""
    import hashlib
    import json

    import cliper_batch.types as types
    from cliper_batch.pipeline.run import config_hash
    from cliper_batch.types import FACE_DETECTOR_VERSION, AnnotateConfig

    def unversioned_hash(cfg: AnnotateConfig) -> str:  # how config_hash was computed before detector versions
        d = {k: v for k, v in cfg.semantic_dict().items() if k != "face_detector"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    assert FACE_DETECTOR_VERSION == 2
    # at the 20 px minimum face of every output before 2026-12-06 (the one value left out of the hash)
    default, every_frame, none = AnnotateConfig(min_face=20), AnnotateConfig(detect_stride=1, min_face=20), AnnotateConfig(faces="none")
    for cfg in (default, every_frame):
        assert cfg.semantic_dict()["face_detector"] == FACE_DETECTOR_VERSION
    assert "face_detector" not in none.semantic_dict()
    # the hashes --faces detect outputs of the unversioned detector had (stride 1: b5f74221ebc9; the default stride
    # under sparse tracking version 2: 793eeae285ca) no longer match
    assert unversioned_hash(every_frame) == "b5f74221ebc9"
    assert (config_hash(default), config_hash(every_frame)) == ("4bb16c3a884c", "5a7d71f2fba6")
    assert config_hash(none) == unversioned_hash(none) == "367fb59d4042"  # no detector: outputs stay valid
    # today's default (40 px) is another configuration, so a default run annotates those outputs again
    assert (config_hash(AnnotateConfig()), config_hash(AnnotateConfig(detect_stride=1))) == ("04a1924eae47", "5310c24ef3d2")
    monkeypatch.setattr(types, "FACE_DETECTOR_VERSION", FACE_DETECTOR_VERSION + 1)  # the next detector change
    assert config_hash(default) != "4bb16c3a884c" and config_hash(none) == "367fb59d4042"
