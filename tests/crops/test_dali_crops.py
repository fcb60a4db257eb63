"""DALI crop primitives against the torch reference crop (CPU operators here; the GPU variants are marked gpu)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cliper_batch.crops.reference import CLIP_STD, center_square_box, crop_resize_normalize
from cliper_batch.decode.dali_backend import DaliDecoder, dali_available
from cliper_batch.crops.dali import PAD_TOLERANCE, CropSpec, DaliBoxCropper, DaliCenterCropDecoder, box_windows
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.decode.select import cuda_available
from cliper_batch.decode.probe import probe

pytestmark = pytest.mark.skipif(not dali_available(), reason="nvidia.dali not installed")
needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")

# In-frame boxes must match to float rounding; boxes leaving the frame differ only by the uint8-rounded pad colour.
IN_FRAME_TOL = 1e-4


def _boxes(w: int, h: int, n_frames: int, n: int, seed: int) -> torch.Tensor:
    """Face-like square boxes: 10-70 % of the height, some partly (or mostly) outside the frame, fractional corners."""
    g = torch.Generator().manual_seed(seed)
    side = h * (0.1 + 0.6 * torch.rand(n, generator=g))
    cx = w * (-0.1 + 1.2 * torch.rand(n, generator=g))
    cy = h * (-0.1 + 1.2 * torch.rand(n, generator=g))
    fi = torch.randint(0, n_frames, (n,), generator=g).float()
    return torch.stack([fi, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def _inside(boxes: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Boxes whose every bilinear tap lies in the frame."""
    return (boxes[:, 1] >= 0.5) & (boxes[:, 2] >= 0.5) & (boxes[:, 3] <= w - 0.5) & (boxes[:, 4] <= h - 0.5)


def test_box_windows_hold_every_bilinear_tap():
    boxes = np.array([[0, 10.3, 5.7, 60.2, 55.6], [0, -20.5, -10.2, 40.1, 50.5], [0, 3.0, 4.0, 13.0, 14.0]])
    anchor, shape, rs, re = box_windows(boxes)
    for b, a, s, r0, r1 in zip(boxes, anchor, shape, rs, re):
        x0, y0, x1, y1 = b[1:]
        assert a[1] <= np.floor(x0 - 0.5) and a[1] + s[1] >= np.floor(x1 - 0.5) + 2  # first and last taps inside
        assert a[0] <= np.floor(y0 - 0.5) and a[0] + s[0] >= np.floor(y1 - 0.5) + 2
        np.testing.assert_allclose([r0[1] + a[1], r0[0] + a[0], r1[1] + a[1], r1[0] + a[0]], [x0, y0, x1, y1], atol=1e-5)


@pytest.mark.parametrize("size", [32, 224])
def test_box_crops_match_the_torch_reference(size):
    frames = torch.randint(0, 256, (3, 120, 160, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(size))
    boxes = _boxes(160, 120, 3, 40, seed=size)
    inside = _inside(boxes, 160, 120)
    assert 5 <= int(inside.sum()) <= 35, "the case must mix in-frame and out-of-frame boxes"
    cropper = DaliBoxCropper(device="cpu", max_batch=16)  # 40 boxes: three runs
    got = cropper(frames, boxes, size)
    ref = crop_resize_normalize(frames, boxes, size)
    assert got.shape == ref.shape == (40, 3, size, size) and got.dtype == torch.float32
    err = (got - ref).abs().amax(dim=(1, 2, 3))
    assert float(err[inside].max()) < IN_FRAME_TOL, err[inside]
    assert float(err.max()) <= PAD_TOLERANCE, err.max()
    assert PAD_TOLERANCE < 0.5 / (255 * min(CLIP_STD)) + 2e-4


def test_box_cropper_rejects_bad_input():
    cropper = DaliBoxCropper(device="cpu")
    frames = torch.zeros((2, 16, 16, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="invalid"):
        cropper(frames, torch.tensor([[5.0, 0, 0, 8, 8]]), 8)  # frame 5 of 2
    assert cropper(frames, torch.zeros((0, 5)), 8).shape == (0, 3, 8, 8)


@pytest.mark.parametrize("fixture", ["vp9_video", "rotated_vp9_video"])
def test_center_crop_pipeline_matches_reference_on_dali_decoded_frames(request, fixture):
    """Decode + centre crop + resize + normalise in one DALI pipeline (VP9: DALI's CPU decoder) vs torch on the same frames."""
    path, _ = request.getfixturevalue(fixture)
    info = probe(path)
    ts = [0.0, 0.3, 0.3, 0.9, 0.5]
    spec = CropSpec(64)
    got = DaliCenterCropDecoder(device="cpu", max_chunk_frames=2).crops(path, info, ts, spec)
    frames = torch.from_numpy(np.stack(list(DaliDecoder(device="cpu").iter_frames(path, info, ts))))
    h, w = frames.shape[1:3]
    box = center_square_box(w, h)
    ref = crop_resize_normalize(frames, torch.tensor([[i, *box] for i in range(len(ts))], dtype=torch.float32), 64)
    assert got.shape == (len(ts), 3, 64, 64)
    assert float((got - ref).abs().max()) < IN_FRAME_TOL
    # And the content is the video's: close to the same crop of PyAV's decode (decoders differ by ~1 grey level).
    pyav = torch.from_numpy(np.stack(list(PyAVDecoder(threads=1).iter_frames(path, info, ts))))
    ref_pyav = crop_resize_normalize(pyav, torch.tensor([[i, *box] for i in range(len(ts))], dtype=torch.float32), 64)
    assert float((got - ref_pyav).abs().mean()) < 0.05


def test_center_crop_pipeline_reports_bad_videos(corrupt_video, h264_video, vp9_video):
    crop = DaliCenterCropDecoder(device="cpu")
    vp9_path, _ = vp9_video
    info = probe(vp9_path)
    from cliper_batch.decode import DecodeError

    for bad in (corrupt_video[0], h264_video[0]):  # unparseable; a codec the CPU decoder lacks
        with pytest.raises(DecodeError) as err:
            crop.crops(bad, info, [0.0], CropSpec(32))
        assert bad in str(err.value)
    assert crop.crops(vp9_path, info, [0.0, 1.0], CropSpec(32)).shape == (2, 3, 32, 32)


@pytest.mark.gpu
@needs_cuda
def test_gpu_box_and_center_crops_match_the_reference(h264_video):
    path, _ = h264_video
    info = probe(path)
    frames = torch.from_numpy(np.stack(list(PyAVDecoder(threads=1).iter_frames(path, info, [0.0, 0.5, 1.0])))).cuda()
    h, w = frames.shape[1:3]
    boxes = _boxes(w, h, 3, 64, seed=1).cuda()
    got = DaliBoxCropper(device="gpu")(frames, boxes, 224)
    ref = crop_resize_normalize(frames, boxes, 224)
    assert got.is_cuda and float((got - ref).abs().max()) <= PAD_TOLERANCE
    dec = DaliDecoder(device="gpu")
    ts = [0.0, 0.35, 1.2]
    decoded = torch.stack(list(dec.iter_frame_tensors(path, info, ts)))
    box = center_square_box(w, h)
    ref = crop_resize_normalize(decoded, torch.tensor([[i, *box] for i in range(3)], device="cuda"), 224)
    got = DaliCenterCropDecoder(device="gpu").crops(path, info, ts, CropSpec(224))
    assert got.is_cuda and float((got - ref).abs().max()) < IN_FRAME_TOL
