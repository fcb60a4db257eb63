"""Still images as one-frame items: probe, decode to RGB uint8, plan, decoder choice, and the per-item algorithm (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cliper_batch import failures
from cliper_batch.crops.primitives import uint8_crops
from cliper_batch.decode.select import choose_decoder
from cliper_batch.decode.images import ImageError, read_image, to_rgb8
from cliper_batch.corpus.listing import list_videos
from cliper_batch.decode.probe import ProbeError, probe
from cliper_batch.decode.sampling import plan_for
from cliper_batch.types import AnnotateConfig, VideoRef
from cliper_batch.uris import media_kind, normalize_uri
from cliper_batch.video_annotation import FramePrimitives, VideoAnnotator

from stillimages import png_bytes, sixteen_bit_grey, write_image_zoo

PHOTO = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # small: the unit tests stay fast


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    return folder, write_image_zoo(str(folder), PHOTO)


def test_every_zoo_image_is_read_or_refused_with_an_image_error(zoo):
    folder, expected = zoo
    for name, (status, error_type) in expected.items():
        path = str(folder / name)
        if status == "ok":
            info = probe(path)
            frame = read_image(path)
            assert (info.kind, info.n_frames, info.duration_s) == ("image", 1, 0.0), name
            assert frame.dtype == np.uint8 and frame.shape == (info.height, info.width, 3), name
            assert frame.flags.c_contiguous, name
        else:
            with pytest.raises(ImageError) as got:
                probe(path)
                read_image(path)
            assert path in str(got.value) and type(got.value).__name__ == error_type, name
            assert failures.classify(error_type) == failures.DATA


def test_refusals_say_what_is_wrong(zoo):
    folder, _ = zoo
    with pytest.raises(ImageError, match="decompression bomb"):
        probe(str(folder / "bomb.png"))  # from the header: no pixel is decoded
    with pytest.raises(ImageError, match="truncated"):
        read_image(str(folder / "truncated.png"))
    with pytest.raises(ImageError, match="not a JPEG, PNG, WebP or BMP image"):
        probe(str(folder / "text.png"))


def test_the_bomb_limit_is_pillows_setting(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(PHOTO).save(path)
    assert probe(str(path)).width == 64
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(str(path))


def test_missing_and_empty_images_fail_like_videos(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ProbeError, match="empty"):
        probe(str(tmp_path / "empty.jpg"))
    with pytest.raises(ProbeError, match="not found"):
        probe(str(tmp_path / "missing.png"))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    ramp = sixteen_bit_grey()
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    frame = read_image(str(path))
    want = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(frame[:, :, 0], want) and np.array_equal(frame[:, :, 1], want) and np.array_equal(frame[:, :, 2], want)
    assert frame.min() == 0 and frame.max() == 255 and 100 < frame.mean() < 155  # a clip at 255 would be ~all white


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 10, 30)
    rgba[0, :, 3] = 255  # opaque row: the colour itself
    rgba[1, 0, 3] = 0  # transparent: white, whatever colour lies under it
    rgba[1, 1, 3] = 128
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    frame = read_image(str(path))
    assert frame[0].tolist() == [[200, 10, 30]] * 3
    assert frame[1, 0].tolist() == [255, 255, 255]
    assert frame[1, 1].tolist() == [round((200 * 128 + 255 * 127) / 255), round((10 * 128 + 255 * 127) / 255),
                                    round((30 * 128 + 255 * 127) / 255)]
    pal = Image.fromarray(rgba[..., :3]).convert("P")  # palette image with a transparent index
    pal.info["transparency"] = 0
    assert to_rgb8(pal).dtype == np.uint8


def test_grey_and_cmyk_jpegs_become_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 77, np.uint8), "L").save(tmp_path / "g.jpg")
    g = read_image(str(tmp_path / "g.jpg"))
    assert g.shape == (8, 8, 3) and np.all(np.abs(g.astype(int) - 77) <= 1)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    c = read_image(str(tmp_path / "c.jpg"))
    assert c.shape == (8, 8, 3) and c[..., 0].min() > 240 and c[..., 1:].max() < 15


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(PHOTO)  # 64 wide, 48 high
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: display rotated 90 degrees clockwise
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    info = probe(str(tmp_path / "o.jpg"))
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    assert read_image(str(tmp_path / "o.jpg")).shape == (64, 48, 3)


def test_a_still_image_is_one_segment_at_time_zero_read_by_pillow(tmp_path):
    path = tmp_path / "x.webp"
    Image.fromarray(PHOTO).save(path)
    info = probe(str(path))
    segs = plan_for(info, 2.0, 8)
    assert [(s.index, s.start_s, s.end_s, s.timestamps) for s in segs] == [(0, 0.0, 0.0, (0.0,) * 8)]
    for pref in ("auto", "pyav", "dali"):
        assert choose_decoder(pref, info, "cpu").backend == "pillow"
    assert media_kind(str(path)) == "image" and media_kind("s3://b/v.MP4") == "video" and media_kind("a.JPEG") == "image"


def test_listing_picks_up_images(tmp_path):
    for n in ("a.jpg", "b.PNG", "c.webp", "d.bmp", "e.jpeg", "v.mp4", "notes.txt", "f.gif"):
        (tmp_path / n).write_bytes(b"x")
    assert [r.uri.rsplit("/", 1)[1] for r in list_videos(str(tmp_path))] == [
        "a.jpg", "b.PNG", "c.webp", "d.bmp", "e.jpeg", "v.mp4"]


CPU = torch.device("cpu")


def _annotate(path: str, faces: str = "none", size: int = 32):
    cfg = AnnotateConfig(faces=faces, frames_per_segment=4, decoder="auto")
    ann = VideoAnnotator(cfg, size, FramePrimitives(CPU, "cpu", uint8_crops(size), "torch", CPU))
    return list(ann.annotate(VideoRef(video_id="i", uri=normalize_uri(path))))


def test_the_per_item_algorithm_annotates_an_image_as_one_segment(tmp_path):
    """--faces none: the centre square, as for a video frame; T copies of the one frame."""
    path = tmp_path / "wide.png"
    Image.fromarray(PHOTO).save(path)
    *pieces, outcome = _annotate(str(path))
    assert outcome.status == "ok" and outcome.n_segments == 1 and outcome.extra["decoder"] == "pillow"
    (piece,) = pieces
    assert piece.rows["segment_index"].tolist() == [0]
    assert piece.rows["start_s"].tolist() == [0.0] and piece.rows["end_s"].tolist() == [0.0]
    crops = piece.crops.numpy()
    assert crops.shape == (1, 4, 32, 32, 3) and all(np.array_equal(crops[0, 0], crops[0, k]) for k in range(4))
    # the centre square of the image scaled to short side 32 (48x64 -> 32x43, x0 = 5)
    want = np.asarray(Image.fromarray(PHOTO).resize((43, 32), Image.Resampling.BOX))[:, 5:37]
    assert np.array_equal(crops[0, 0], want)


def test_bad_images_become_failed_outcomes_and_odd_ones_are_annotated(zoo):
    folder, expected = zoo
    for name, (status, error_type) in expected.items():
        *pieces, outcome = _annotate(str(folder / name))
        assert (outcome.status, outcome.error_type) == (status, error_type), (name, outcome.error)
        assert len(pieces) == (1 if status == "ok" else 0), name
        if status == "failed":
            assert "traceback" not in outcome.extra and str(folder / name) in outcome.error


def test_a_sixteen_bit_png_in_memory_is_an_image_error_when_it_is_cut(tmp_path):
    data = png_bytes(Image.fromarray(sixteen_bit_grey(200, 300)))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    *_, outcome = _annotate(str(tmp_path / "cut.png"))
    assert outcome.error_type == "ImageError" and "truncated" in outcome.error
