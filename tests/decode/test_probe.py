"""probe(): metadata of real generated files, rotation, fsspec URLs, and clear errors for bad input."""
from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest

from cliper_batch.decode.probe import ProbeError, clockwise_rotation, probe, rotate_upright
from cliper_batch.decode.testvideos import VideoSpec, write_video


@pytest.mark.parametrize(
    "fixture, codec, n_frames",
    [("h264_video", "h264", 100), ("vp9_video", "vp9", None), ("mjpeg_video", "mjpeg", 100), ("vp8_video", "vp8", None)],
)
def test_probe_reads_generated_videos(request, fixture, codec, n_frames):
    path, spec = request.getfixturevalue(fixture)
    info = probe(path)
    assert info.codec == codec
    assert (info.width, info.height) == (spec.width, spec.height)
    assert info.fps == pytest.approx(spec.fps)
    assert info.duration_s == pytest.approx(spec.duration_s, abs=1 / spec.fps)
    assert info.rotation == 0
    # .mp4/.avi store a frame count; Matroska/WebM does not.
    assert info.n_frames == n_frames


@pytest.mark.parametrize("fixture", ["rotated_h264_video", "rotated_vp9_video"])
def test_probe_reports_rotation_and_upright_size(request, fixture):
    path, spec = request.getfixturevalue(fixture)
    info = probe(path)
    # Written with a 90 degree counter-clockwise display matrix = 270 degrees clockwise.
    assert info.rotation == 270
    assert (info.width, info.height) == (spec.height, spec.width)


@pytest.mark.parametrize("encoder, codec", [("libx265", "hevc"), ("libsvtav1", "av1")])
def test_probe_names_codec_canonically(tmp_path, encoder, codec):
    """AV1 decodes with libdav1d, yet the codec is reported as 'av1' (the name the selector keys on)."""
    import av

    if encoder not in av.codecs_available:
        pytest.skip(f"{encoder} not in this FFmpeg build")
    spec = VideoSpec(duration_s=0.4)
    path = str(tmp_path / f"{codec}.mp4")
    from cliper_batch.decode.testvideos import render_frame

    with av.open(path, "w") as container:
        stream = container.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"preset": "ultrafast", "x265-params": "log-level=error"} if encoder == "libx265" else {"preset": "11"}
        for i in range(spec.n_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(render_frame(spec, i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe(path)
    assert info.codec == codec
    assert info.n_frames == spec.n_frames


def test_probe_through_fsspec_urls(h264_video):
    path, spec = h264_video
    assert probe("file://" + path) == probe(path)
    mem = fsspec.filesystem("memory")
    with open(path, "rb") as src, mem.open("/probe-test/clip.mp4", "wb") as dst:
        dst.write(src.read())
    try:
        info = probe("memory://probe-test/clip.mp4")
    finally:
        mem.rm("/probe-test", recursive=True)
    assert info.codec == "h264" and (info.width, info.height) == (spec.width, spec.height)


def test_probe_errors_are_clear(empty_video, corrupt_video, random_bytes_video, text_video, audio_only_video, video_dir):
    cases = {
        empty_video: "empty",
        corrupt_video[0]: "not a readable video",
        random_bytes_video: "not a readable video",
        text_video: "not a readable video",
        audio_only_video: "no video stream",
        os.path.join(video_dir, "does-not-exist.mp4"): "not found",
    }
    for path, needle in cases.items():
        with pytest.raises(ProbeError) as err:
            probe(path)
        msg = str(err.value)
        assert path in msg and needle in msg, msg
    assert issubclass(ProbeError, ValueError)


def test_probe_rejects_bad_uri():
    with pytest.raises(ProbeError, match="unsupported URL scheme"):
        probe("nosuchscheme://bucket/clip.mp4")


def test_probe_of_truncated_stream_still_succeeds(truncated_vp9_video):
    """The WebM header survives truncation; decoders (not probe) report the missing tail."""
    path, spec = truncated_vp9_video
    assert probe(path).duration_s == pytest.approx(spec.duration_s, abs=0.05)


def test_clockwise_rotation_mapping():
    # PyAV/FFmpeg report the display matrix angle counter-clockwise in [-180, 180].
    assert [clockwise_rotation(r) for r in (0, -90, 90, 180, -180, None, 89.7)] == [0, 90, 270, 180, 180, 0, 270]


def test_rotate_upright_directions():
    img = np.zeros((2, 3, 1), np.uint8)
    img[0, 0] = 1  # marker at the top-left corner
    cw90 = rotate_upright(img, 90)
    assert cw90.shape == (3, 2, 1) and cw90[0, -1, 0] == 1  # top-left goes to top-right
    assert rotate_upright(img, 180)[-1, -1, 0] == 1
    assert rotate_upright(img, 270)[-1, 0, 0] == 1  # top-left goes to bottom-left
    assert rotate_upright(img, 0) is img
    assert rotate_upright(img, 90).flags.c_contiguous
    with pytest.raises(ValueError):
        rotate_upright(img, 45)


def test_probe_generated_corpus_durations(tmp_path):
    """Non-default fps / odd duration: fps and duration come straight from the stream."""
    spec = VideoSpec(codec="h264", fps=30.0, duration_s=1.5, width=160, height=96)
    path = write_video(str(tmp_path / "clip.mp4"), spec)
    info = probe(path)
    assert info.fps == pytest.approx(30.0)
    assert info.duration_s == pytest.approx(1.5, abs=1 / 30)
    assert info.n_frames == 45
