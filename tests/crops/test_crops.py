"""Reference crop/resize/normalise (cliper_batch.crops.reference) against hand-computed cases and torch's resamplers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliper_batch.crops.reference import (
    CLIP_MEAN,
    CLIP_STD,
    CropInputError,
    boxes_tensor,
    center_square_box,
    crop_resize,
    crop_resize_normalize,
    square_box_with_margin,
)

MEAN = torch.tensor(CLIP_MEAN)[None, :, None, None]
STD = torch.tensor(CLIP_STD)[None, :, None, None]


def _frames(f: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (f, h, w, 3), dtype=torch.uint8, generator=g)


def _normalise(x_255: torch.Tensor) -> torch.Tensor:
    """[N, 3, S, S] values in 0..255 -> CLIP-normalised."""
    return (x_255 / 255.0 - MEAN) / STD


def test_center_square_box_landscape_portrait_square():
    assert center_square_box(1920, 1080) == (420.0, 0.0, 1500.0, 1080.0)
    assert center_square_box(360, 640) == (0.0, 140.0, 360.0, 500.0)
    assert center_square_box(7, 7) == (0.0, 0.0, 7.0, 7.0)
    assert center_square_box(5, 4) == (0.5, 0.0, 4.5, 4.0)
    with pytest.raises(CropInputError):
        center_square_box(0, 10)


def test_square_box_with_margin_centres_and_grows():
    # 40x20 face centred at (120, 60): longer side 40, margin 0.25 each side -> side 60.
    assert square_box_with_margin((100, 50, 140, 70), 0.25, 640, 360) == (90.0, 30.0, 150.0, 90.0)
    # No margin: square of the longer side, same centre.
    assert square_box_with_margin((10, 10, 20, 40), 0.0, 640, 360) == (0.0, 10.0, 30.0, 40.0)
    # At the frame corner the square extends outside the frame (padding happens when sampling).
    x0, y0, x1, y1 = square_box_with_margin((0, 0, 30, 30), 0.5, 640, 360)
    assert (x0, y0, x1, y1) == (-15.0, -15.0, 45.0, 45.0)


@pytest.mark.parametrize(
    "box,margin,msg",
    [
        ((10, 10, 10, 20), 0.1, "empty box"),
        ((10, 30, 20, 20), 0.1, "empty box"),
        ((700, 10, 720, 30), 0.1, "does not overlap"),
        ((-30, 10, -10, 30), 0.1, "does not overlap"),
        ((10, 10, 20, 20), -0.5, "margin"),
        ((float("nan"), 10, 20, 20), 0.1, "non-finite"),
        ((1, 2, 3), 0.1, "must be"),
    ],
)
def test_square_box_with_margin_rejects_bad_boxes(box, margin, msg):
    with pytest.raises(CropInputError, match=msg):
        square_box_with_margin(box, margin, 640, 360)


def test_identity_box_returns_the_frame():
    frames = _frames(2, 24, 24)
    boxes = boxes_tensor([(1, (0, 0, 24, 24)), (0, (0, 0, 24, 24))])
    out = crop_resize(frames, boxes, 24)
    assert out.dtype == torch.uint8 and out.shape == (2, 24, 24, 3)
    assert torch.equal(out[0], frames[1])
    assert torch.equal(out[1], frames[0])
    norm = crop_resize_normalize(frames, boxes, 24)
    expect = _normalise(frames[[1, 0]].permute(0, 3, 1, 2).float())
    assert norm.shape == (2, 3, 24, 24) and norm.dtype == torch.float32
    assert torch.allclose(norm, expect, atol=1e-5)


def test_integer_subbox_at_native_size_is_a_slice():
    frames = _frames(1, 30, 40)
    out = crop_resize(frames, boxes_tensor([(0, (7, 5, 23, 21))]), 16)
    assert torch.equal(out[0], frames[0, 5:21, 7:23])


def test_constant_frame_stays_constant_for_any_inside_box():
    frames = torch.full((1, 50, 70, 3), 0, dtype=torch.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 10, 128, 250
    boxes = boxes_tensor([(0, (0.3, 1.7, 69.2, 48.9)), (0, (10.5, 10.25, 13.0, 12.0)), (0, (0, 0, 70, 50))])
    out = crop_resize(frames, boxes, 13)
    assert torch.equal(out, frames[0, :13, :13][None].expand(3, -1, -1, -1))
    norm = crop_resize_normalize(frames, boxes, 13)
    expect = _normalise(torch.tensor([10.0, 128.0, 250.0])[None, :, None, None]).expand(3, 3, 13, 13)
    assert torch.allclose(norm, expect, atol=1e-5)


def test_out_of_frame_pixels_normalise_to_zero():
    frames = _frames(1, 20, 20)
    # Fully outside: every tap reads the mean colour.
    far = crop_resize_normalize(frames, boxes_tensor([(0, (-100, -100, -50, -50)), (0, (30, 0, 60, 20))]), 8)
    assert torch.equal(far, torch.zeros_like(far))
    # Left half outside: box x from -20 to 20 at size 8 -> sample x = -20 + 5 j + 2; columns 0..3 are at
    # x <= -3, so both of their taps are outside (exactly 0); column 4 (x = 2) is fully inside.
    half = crop_resize_normalize(frames, boxes_tensor([(0, (-20, 0, 20, 20))]), 8)
    assert torch.equal(half[..., :4], torch.zeros_like(half[..., :4]))
    assert half[..., 4:].abs().sum() > 0
    # uint8 crop of the fully-outside box is the fill colour (CLIP mean in 0..255, rounded).
    fill = crop_resize(frames, boxes_tensor([(0, (-100, -100, -50, -50))]), 4)
    expect = torch.tensor([round(255 * m) for m in CLIP_MEAN], dtype=torch.uint8)
    assert torch.equal(fill, expect.expand(1, 4, 4, 3))
    custom = crop_resize(frames, boxes_tensor([(0, (-100, -100, -50, -50))]), 4, fill=(0, 0, 0))
    assert torch.equal(custom, torch.zeros_like(custom))


def test_edge_pixel_blends_towards_fill():
    # Box shifted half a pixel left: output column j samples x = j - 0.5, so column 0 sits on the frame edge.
    frames = torch.full((1, 4, 4, 3), 200, dtype=torch.uint8)
    out = crop_resize_normalize(frames, boxes_tensor([(0, (-0.5, 0, 3.5, 4))]), 4)
    inside = _normalise(torch.full((1, 3, 1, 1), 200.0))[0, :, 0, 0]
    # column 0 samples x = -0.5: half the weight on the (mean) padding -> half the normalised value.
    assert torch.allclose(out[0, :, :, 0], (inside / 2)[:, None].expand(3, 4), atol=1e-5)
    assert torch.allclose(out[0, :, :, 1], inside[:, None].expand(3, 4), atol=1e-5)


def test_matches_interpolate_align_corners_false_for_whole_frame_boxes():
    frames = _frames(1, 12, 16)
    img = frames[0].permute(2, 0, 1).float()[None]
    for size in (4, 8, 24, 32):  # down- and up-scaling
        # A non-square frame resized to a square: interpolate with per-axis scales, same convention.
        expect = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        # interpolate clamps at the border where we blend with the fill. When downscaling here no sample
        # falls outside the edge pixel centres, so all pixels agree; when upscaling compare the interior.
        got = crop_resize_normalize(frames, boxes_tensor([(0, (0, 0, 16, 12))]), size)
        if size <= 8:
            assert torch.allclose(got, _normalise(expect), atol=1e-4), size
        else:
            inner = slice(2, size - 2)
            assert torch.allclose(got[..., inner, inner], _normalise(expect)[..., inner, inner], atol=1e-4), size


def test_two_x_downscale_is_2x2_average_pooling():
    frames = _frames(1, 16, 16, seed=3)
    got = crop_resize_normalize(frames, boxes_tensor([(0, (0, 0, 16, 16))]), 8)
    pooled = F.avg_pool2d(frames[0].permute(2, 0, 1).float()[None], 2)
    assert torch.allclose(got, _normalise(pooled), atol=1e-4)


def test_half_pixel_shift_is_the_average_of_neighbours():
    # Box shifted by (+0.5, +0.5): sample points sit between pixel centres -> 2x2 mean.
    frames = _frames(1, 10, 10, seed=4)
    got = crop_resize_normalize(frames, boxes_tensor([(0, (0.5, 0.5, 9.5, 9.5))]), 9)
    pooled = F.avg_pool2d(frames[0].permute(2, 0, 1).float()[None], 2, stride=1)  # [1, 3, 9, 9]
    assert torch.allclose(got, _normalise(pooled), atol=1e-4)
    # Same check against grid_sample, the resampler the docstring's convention is named after.
    xs = (torch.arange(9) + 1.0) / 10 * 2 - 1  # continuous x = j + 1 (= 0.5 + (j + 0.5))
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1)[None]
    gs = F.grid_sample(frames[0].permute(2, 0, 1).float()[None], grid, mode="bilinear", align_corners=False)
    assert torch.allclose(got, _normalise(gs), atol=1e-4)


def test_boxes_across_frames_keep_their_order():
    frames = _frames(3, 20, 30, seed=5)
    spec = [(2, (0, 0, 10, 10)), (0, (5, 5, 15, 15)), (2, (10, 0, 20, 10)), (1, (20, 10, 30, 20))]
    out = crop_resize(frames, boxes_tensor(spec), 10)
    for k, (fi, (x0, y0, x1, y1)) in enumerate(spec):
        assert torch.equal(out[k], frames[fi, y0:y1, x0:x1]), k


def test_uint8_and_normalised_paths_agree():
    frames = _frames(2, 33, 41, seed=6)
    boxes = boxes_tensor([(0, (-5.5, 3.2, 30.1, 38.7)), (1, (2, 2, 9, 6)), (1, (20.3, -10, 60, 29))])
    u8 = crop_resize(frames, boxes, 20).permute(0, 3, 1, 2).float()
    norm = crop_resize_normalize(frames, boxes, 20)
    # uint8 rounding is at most 0.5 / 255 before dividing by std.
    assert (norm - _normalise(u8)).abs().max() <= 0.5 / 255 / min(CLIP_STD) + 1e-5


def test_custom_mean_std_and_empty_boxes():
    frames = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    out = crop_resize_normalize(frames, boxes_tensor([(0, (0, 0, 8, 8))]), 4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 2.0, 0.5]))
    empty = crop_resize_normalize(frames, torch.zeros((0, 5)), 4)
    assert empty.shape == (0, 3, 4, 4)
    assert crop_resize(frames, torch.zeros((0, 5)), 4).shape == (0, 4, 4, 3)


@pytest.mark.parametrize(
    "frames,boxes,size,msg",
    [
        (torch.zeros((1, 8, 8, 3), dtype=torch.float32), torch.zeros((1, 5)), 4, "uint8"),
        (torch.zeros((8, 8, 3), dtype=torch.uint8), torch.zeros((1, 5)), 4, r"\[F, H, W, 3\]"),
        (torch.zeros((1, 8, 8, 4), dtype=torch.uint8), torch.zeros((1, 5)), 4, r"\[F, H, W, 3\]"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.zeros((1, 4)), 4, r"\[N, 5\]"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.zeros((1, 5), dtype=torch.int64), 4, "floating"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.tensor([[0.0, 0, 0, 4, 4]]), 0, "size"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.tensor([[1.0, 0, 0, 4, 4]]), 4, "box 0"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.tensor([[0.5, 0, 0, 4, 4]]), 4, "integer frame index"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.tensor([[0.0, 0, 0, 4, 4], [0, 4, 0, 4, 4]]), 4, "box 1"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.tensor([[0.0, 0, 5, 4, 4]]), 4, "y1 > y0"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8), torch.tensor([[0.0, 0, 0, float("inf"), 4]]), 4, "finite"),
    ],
)
def test_bad_inputs_raise_crop_input_error(frames, boxes, size, msg):
    with pytest.raises(CropInputError, match=msg):
        crop_resize_normalize(frames, boxes, size)


def test_bad_stats_raise():
    frames = torch.zeros((1, 8, 8, 3), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0, 0, 8, 8]])
    with pytest.raises(CropInputError, match="std"):
        crop_resize_normalize(frames, boxes, 4, std=(0.2, 0.0, 0.2))
    with pytest.raises(CropInputError, match="3 values"):
        crop_resize_normalize(frames, boxes, 4, mean=(0.5, 0.5))
    with pytest.raises(CropInputError, match="fill"):
        crop_resize(frames, boxes, 4, fill=(1, 2))


def test_crops_read_only_the_window_of_their_taps_and_equal_full_frame_sampling():
    """Only each frame's tap window is converted to float: the crops equal grid_sample on whole frames bit for bit."""
    from cliper_batch.crops.reference import _sample_minus_fill

    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (160, 90, 160, 3), dtype=torch.uint8, generator=g)
    n = 300
    fi = (torch.arange(n) // 2).float()  # two boxes per frame: windows smaller than the frame
    fi[250:] = 150  # and one frame with 50
    fi[fi == 3] = 4  # a frame without boxes between frames with boxes
    fi = fi[torch.randperm(n, generator=g)]  # in any order
    x0 = torch.rand(n, generator=g) * 220 - 40
    y0 = torch.rand(n, generator=g) * 130 - 30
    side = torch.rand(n, generator=g) * 60 + 0.5
    boxes = torch.stack([fi, x0, y0, x0 + side, y0 + side * 0.8], 1)
    boxes[:20, 1:] = torch.round(boxes[:20, 1:])  # integer edges: taps of zero weight at a window's border
    boxes[20] = torch.tensor([155.0, -50.0, -40.0, -10.0, -5.0])  # off the frame: zero padding only
    boxes[21] = torch.tensor([2.0, 0.0, 0.0, 160.0, 90.0])  # the whole frame
    boxes[22] = torch.tensor([1.0, 150.0, 80.0, 170.0, 100.0])  # over the bottom-right corner
    fill = torch.tensor([122.5, 116.75, 104.1])
    for size in (8, 32):
        got = _sample_minus_fill(frames, boxes, size, fill)
        want = torch.empty_like(got)
        t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        for k in range(n):  # the whole frame as float, one box at a time
            f, bx0, by0, bx1, by1 = boxes[k].tolist()
            gx = (bx0 + t * (bx1 - bx0)) * (2.0 / 160) - 1.0
            gy = (by0 + t * (by1 - by0)) * (2.0 / 90) - 1.0
            grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
            img = frames[int(f)].permute(2, 0, 1).to(torch.float32) - fill[:, None, None]
            want[k] = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        assert torch.equal(got, want)
        assert torch.equal(got[20], torch.zeros_like(got[20]))
