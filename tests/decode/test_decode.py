"""Frame decoders (PyAV, DALI-CPU) and backend selection, checked frame-exactly on generated videos."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import fsspec
import numpy as np
import pytest

from cliper_batch.decode import DecodeError, DecoderUnavailable, FrameDecoder
from cliper_batch.decode.base import choose_frame
from cliper_batch.decode.dali_backend import DaliDecoder, dali_available, frame_timeline
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.decode.select import (
    DecoderChoice,
    build_decoder,
    choose_decoder,
    choose_usable_decoder,
    cuda_available,
    nvdec_self_test,
    parse_device,
    select_decoder,
)
from cliper_batch.decode.probe import probe
from cliper_batch.decode.sampling import frame_indices, plan_segments
from cliper_batch.decode.testvideos import VideoSpec, read_frame_code, render_frame, write_video
from cliper_batch.types import VideoInfo

needs_dali = pytest.mark.skipif(not dali_available(), reason="nvidia.dali not installed")
needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device (NVDEC)")


def plan_timestamps(info: VideoInfo, seconds: float = 1.0, per_segment: int = 4) -> list[float]:
    return [t for seg in plan_segments(info.duration_s, seconds, per_segment) for t in seg.timestamps]


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def codes(frames) -> list[int]:
    return [read_frame_code(f) for f in frames]


@pytest.fixture(scope="module")
def dali_cpu():
    if not dali_available():
        pytest.skip("nvidia.dali not installed")
    return DaliDecoder(device="cpu", num_threads=2)


DECODE_CASES = [
    ("pyav", "h264_video"),
    ("pyav", "vp9_video"),
    ("pyav", "mjpeg_video"),
    ("pyav", "vp8_video"),
    pytest.param("dali-cpu", "vp9_video", marks=needs_dali),
    pytest.param("dali-cpu", "mjpeg_video", marks=needs_dali),
    pytest.param("dali-cpu", "vp8_video", marks=needs_dali),
]


def make_decoder(request, backend: str) -> FrameDecoder:
    return PyAVDecoder(threads=1) if backend == "pyav" else request.getfixturevalue("dali_cpu")


@pytest.mark.parametrize("backend, fixture", DECODE_CASES)
def test_frames_are_exactly_the_sampled_ones(request, backend, fixture):
    path, spec = request.getfixturevalue(fixture)
    info = probe(path)
    decoder = make_decoder(request, backend)
    assert isinstance(decoder, FrameDecoder) and decoder.name == backend
    # Segment-plan timestamps plus edge cases: start, last frame, exact frame boundaries
    # and just before one (must still pick the earlier frame), a repeat, and going backwards.
    ts = plan_timestamps(info) + [0.0, info.duration_s - 1e-3, 2 / spec.fps, 3 / spec.fps - 1e-7, 1.0, 1.0, 0.5]
    frames = list(decoder.iter_frames(path, info, ts))
    assert len(frames) == len(ts)
    for f in frames:
        assert f.dtype == np.uint8 and f.shape == (spec.height, spec.width, 3) and f.flags.c_contiguous
    assert codes(frames) == frame_indices(ts, info.fps, spec.n_frames)
    # Content, not just the code: close to the rendered source frame.
    ref = render_frame(spec, frame_indices([ts[0]], info.fps)[0])
    assert np.abs(frames[0].astype(np.int16) - ref).mean() < 4.0
    # A repeated timestamp gives an independent array.
    frames[-3][:] = 0
    assert read_frame_code(frames[-2]) == frame_indices([1.0], info.fps)[0]


@pytest.mark.parametrize("backend, fixture", DECODE_CASES[:2] + DECODE_CASES[4:5])
def test_size_scales_inside_decoder(request, backend, fixture):
    path, spec = request.getfixturevalue(fixture)
    info = probe(path)
    ts = plan_timestamps(info, 2.0, 3)
    frames = list(make_decoder(request, backend).iter_frames(path, info, ts, size=(96, 64)))
    assert {f.shape for f in frames} == {(64, 96, 3)}
    assert codes(frames) == frame_indices(ts, info.fps)
    # Scaled output matches a downscaled source frame.
    ref = render_frame(spec, frame_indices([ts[0]], info.fps)[0])[::2, ::2].astype(np.int16)
    assert np.abs(frames[0].astype(np.int16) - ref).mean() < 8.0


def test_pyav_seeks_over_gaps_and_stays_frame_exact(long_h264_video):
    path, spec = long_h264_video
    info = probe(path)
    ts = [0.5, 0.52, 9.3, 17.88, 26.0, 29.99, 3.0, 21.04]
    decoder = PyAVDecoder(threads=1)
    frames = list(decoder.iter_frames(path, info, ts))
    assert codes(frames) == frame_indices(ts, info.fps, spec.n_frames)
    stats = decoder.last_stats
    assert stats["seeks"] >= 4, stats
    assert stats["decoded"] < 0.4 * spec.n_frames, stats  # most of the 750 frames never decoded
    assert stats["converted"] == len(ts)

    # Same answer with seeking disabled (sequential decode of everything).
    sequential = PyAVDecoder(threads=1, seek_min_skip_s=1e9, seek_threshold_s=1e9, skip_nonref=False)
    assert codes(sequential.iter_frames(path, info, sorted(ts))) == frame_indices(sorted(ts), info.fps, spec.n_frames)
    assert sequential.last_stats["seeks"] == 0 and sequential.last_stats["decoded"] >= spec.n_frames - 2


def test_pyav_seeks_without_index_using_time_threshold(long_vp9_video):
    """WebM written here has (almost) no cues: the time threshold decides, result still exact."""
    path, spec = long_vp9_video
    info = probe(path)
    ts = [1.0, 12.5, 27.3]
    decoder = PyAVDecoder(threads=1, seek_threshold_s=3.0)
    assert codes(decoder.iter_frames(path, info, ts)) == frame_indices(ts, info.fps)
    assert decoder.last_stats["seeks"] >= 1


@needs_dali
def test_dali_sparse_frames_and_chunking(long_vp9_video):
    path, spec = long_vp9_video
    info = probe(path)
    ts = [0.5, 9.3, 9.3, 17.88, 29.99, 3.0, 21.04, 0.0]
    decoder = DaliDecoder(device="cpu", num_threads=1, max_chunk_frames=3)
    frames = list(decoder.iter_frames(path, info, ts, size=(64, 48)))
    assert codes(frames) == frame_indices(ts, info.fps)
    assert decoder.last_stats == {"runs": 3, "decoded": 7}
    # Memory bound by bytes: a 1-frame budget forces one frame per run.
    tiny = DaliDecoder(device="cpu", num_threads=1, chunk_bytes=1)
    assert codes(tiny.iter_frames(path, info, ts[:3])) == frame_indices(ts[:3], info.fps)
    assert tiny.last_stats["runs"] == 2


@needs_dali
def test_pyav_and_dali_agree_on_vp9(vp9_video, dali_cpu):
    path, spec = vp9_video
    info = probe(path)
    ts = plan_timestamps(info, 0.5, 4)
    for size in (None, (96, 64)):
        a = list(PyAVDecoder(threads=1).iter_frames(path, info, ts, size))
        b = list(dali_cpu.iter_frames(path, info, ts, size))
        assert codes(a) == codes(b) == frame_indices(ts, info.fps)
        mad = float(np.mean([np.abs(x.astype(np.int16) - y).mean() for x, y in zip(a, b)]))
        assert mad < 3.0, mad  # measured 1.1 full size, 1.5 at 96x64


@pytest.mark.parametrize("backend", ["pyav", pytest.param("dali-cpu", marks=needs_dali)])
def test_rotation_is_applied(request, backend, rotated_h264_video, rotated_vp9_video):
    path, spec = rotated_vp9_video if backend != "pyav" else rotated_h264_video
    info = probe(path)
    decoder = make_decoder(request, backend)
    ts = [0.0, 0.5]
    frames = list(decoder.iter_frames(path, info, ts))
    assert frames[0].shape == (spec.width, spec.height, 3)  # upright: taller than wide
    # The file says "show it turned 90 degrees counter-clockwise".
    expected = [np.rot90(render_frame(spec, i), 1) for i in frame_indices(ts, info.fps)]
    for f, e in zip(frames, expected):
        assert np.abs(f.astype(np.int16) - e).mean() < 4.0
    # size= is the upright output size.
    small = list(decoder.iter_frames(path, info, ts, size=(64, 96)))
    assert small[1].shape == (96, 64, 3)
    assert read_frame_code(np.rot90(small[1], -1)) == frame_indices([0.5], info.fps)[0]


@pytest.mark.parametrize("backend", ["pyav", pytest.param("dali-cpu", marks=needs_dali)])
def test_variable_frame_rate_selects_by_timestamp(request, backend, vfr_video):
    path, spec, starts = vfr_video
    info = probe(path)
    ts = list(np.arange(0.0, info.duration_s, 0.037))
    expected = [max(i for i, s in enumerate(starts) if s <= t + 1e-9) for t in ts]
    assert codes(make_decoder(request, backend).iter_frames(path, info, ts)) == expected


@pytest.mark.parametrize("backend", ["pyav", pytest.param("dali-cpu", marks=needs_dali)])
def test_truncated_file_gives_exact_frames_then_decode_error(request, backend, truncated_vp9_video):
    path, spec = truncated_vp9_video
    info = probe(path)
    ts = [0.1, 0.5, 1.0, 3.5]  # the tail (3.5 s) was cut off
    decoder = make_decoder(request, backend)
    got = []
    with pytest.raises(DecodeError) as err:
        for f in decoder.iter_frames(path, info, ts):
            got.append(read_frame_code(f))
    assert path in str(err.value) and "t=3.500s" in str(err.value) and err.value.uri == path
    if backend == "pyav":  # PyAV streams: the three frames that exist come first, exact
        assert got == frame_indices(ts[:3], info.fps)
    else:  # DALI validates every timestamp against the demuxed index before decoding anything
        assert got == []
    # Without the missing timestamp both decoders deliver the frames that exist, exactly.
    assert codes(decoder.iter_frames(path, info, ts[:3])) == frame_indices(ts[:3], info.fps)


def test_pyav_tolerates_damaged_packets(damaged_video):
    """600 garbage bytes mid-file: FFmpeg skips/conceals; frames away from the damage stay exact."""
    path, spec = damaged_video
    info = probe(path)
    ts = [i * 0.25 for i in range(16)]
    decoder = PyAVDecoder(threads=1)
    # Measured on this fixture: FFmpeg conceals the damage and every timestamp gets a frame;
    # a DecodeError here would mean the decoder gives up on a file it can read.
    frames = list(decoder.iter_frames(path, info, ts))
    assert len(frames) == len(ts)
    got, want = codes(frames), frame_indices(ts, info.fps)
    early = [i for i, t in enumerate(ts) if t < 1.2]  # damage sits at ~45% of the file (> 1.5 s)
    late = [i for i, t in enumerate(ts) if t >= 2.0]  # next GOP starts at 2.0 s
    assert [got[i] for i in early + late] == [want[i] for i in early + late]


@pytest.mark.parametrize("backend", ["pyav", pytest.param("dali-cpu", marks=needs_dali)])
def test_unreadable_files_raise_decode_error(request, backend, corrupt_video, random_bytes_video, vp9_video, mjpeg_video):
    decoder = make_decoder(request, backend)
    vp9_path, _ = vp9_video
    info = probe(vp9_path)
    for bad in (corrupt_video[0], random_bytes_video, vp9_path + ".missing"):
        with pytest.raises(DecodeError) as err:
            list(decoder.iter_frames(bad, info, [0.0]))
        assert bad in str(err.value)
    # The decoder is still usable afterwards.
    assert codes(decoder.iter_frames(vp9_path, info, [0.0, 1.0])) == [0, 25]


@needs_dali
def test_dali_pipeline_recovers_after_decoder_failure(dali_cpu, h264_video, vp9_video, mjpeg_video):
    """DALI#5155: a bad stream fails inside the pipeline; it is rebuilt and the next video decodes."""
    h264_path, _ = h264_video
    data = np.frombuffer(_read_bytes(h264_path), np.uint8)
    with pytest.raises(DecodeError, match="not supported|could not decode"):
        dali_cpu._run(h264_path, data, np.array([0], np.int32), None)  # H.264 into the CPU decoder
    for path, spec in (vp9_video, mjpeg_video):
        info = probe(path)
        assert codes(dali_cpu.iter_frames(path, info, [0.5, 2.0], size=(96, 64))) == [12, 50]
    # The public path refuses the codec before DALI sees it.
    with pytest.raises(DecodeError, match="codec 'h264' is not supported by dali-cpu"):
        list(dali_cpu.iter_frames(h264_path, probe(h264_path), [0.0]))


@pytest.mark.parametrize("backend", ["pyav", pytest.param("dali-cpu", marks=needs_dali)])
def test_decoders_read_through_fsspec(request, backend, vp9_video):
    path, spec = vp9_video
    mem = fsspec.filesystem("memory")
    with open(path, "rb") as src, mem.open(f"/decode-test-{backend}/clip.webm", "wb") as dst:
        dst.write(src.read())
    uri = f"memory://decode-test-{backend}/clip.webm"
    try:
        info = probe(uri)
        assert codes(make_decoder(request, backend).iter_frames(uri, info, [0.2, 3.0])) == [5, 75]
    finally:
        mem.rm(f"/decode-test-{backend}", recursive=True)


def test_request_validation(h264_video):
    path, _ = h264_video
    info = probe(path)
    decoder = PyAVDecoder()
    assert list(decoder.iter_frames(path, info, [])) == []
    with pytest.raises(ValueError, match="timestamps"):
        list(decoder.iter_frames(path, info, [-1.0]))
    with pytest.raises(ValueError, match="size"):
        list(decoder.iter_frames(path, info, [0.0], size=(0, 10)))


def test_decode_error_message_and_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(DecodeError("/v/a.mp4", "no frame at t=1.000s")))
    assert str(err) == "/v/a.mp4: no frame at t=1.000s" and err.uri == "/v/a.mp4" and err.reason == "no frame at t=1.000s"
    with pytest.raises(TypeError):
        DecodeError("/v/a.mp4: a message without its own uri")  # one calling convention: (uri, reason)


def test_choose_frame_rules():
    info = VideoInfo(duration_s=4.0, fps=25.0, width=8, height=8, codec="h264")
    # Inside the previous frame's interval.
    assert choose_frame(0.05, 0.04, 0.04, 0.08, info) == "prev"
    # A hole in the timeline without damage is variable frame rate: the player keeps showing prev.
    assert choose_frame(0.5, 0.04, 0.04, 1.0, info) == "prev"
    # Damaged hole: nearest frame within one period, else nothing.
    assert choose_frame(0.10, 0.04, 0.04, 0.12, info, damaged=True) == "next"
    assert choose_frame(0.09, 0.04, 0.04, 0.20, info, damaged=True) == "prev"
    assert choose_frame(0.5, 0.04, 0.04, 1.0, info, damaged=True) is None
    # End of stream: up to one period past the last frame's end.
    assert choose_frame(4.03, 3.96, 0.04, None, info) == "prev"
    assert choose_frame(4.2, 3.96, 0.04, None, info) is None
    # Before the first frame.
    assert choose_frame(0.0, None, None, 0.03, info) == "next"
    assert choose_frame(0.0, None, None, 0.5, info) is None


# ----- backend selection -------------------------------------------------------------------------

def _info(codec: str) -> VideoInfo:
    return VideoInfo(duration_s=10.0, fps=25.0, width=640, height=360, codec=codec)


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "vp8", "mjpeg", "av1", "prores"])
def test_auto_on_cpu_picks_pyav(codec):
    choice = choose_decoder("auto", _info(codec), "cpu", dali_installed=True)
    assert choice.backend == "pyav" and choice.reason


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "av1", "vp8", "mjpeg", "mpeg4"])
def test_auto_on_cuda_picks_dali_gpu_for_nvdec_codecs(codec):
    choice = choose_decoder("auto", _info(codec), "cuda", dali_installed=True)
    assert choice == DecoderChoice("dali-gpu", 0, choice.reason) and "NVDEC" in choice.reason
    assert choose_decoder("auto", _info(codec), "cuda:1", dali_installed=True).device_id == 1


def test_auto_on_cuda_falls_back_to_pyav():
    assert choose_decoder("auto", _info("prores"), "cuda", dali_installed=True).backend == "pyav"
    fallback = choose_decoder("auto", _info("h264"), "cuda", dali_installed=False)
    assert fallback.backend == "pyav" and "not installed" in fallback.reason


def test_forced_backends():
    assert choose_decoder("pyav", _info("h264"), "cuda", dali_installed=True).backend == "pyav"
    assert choose_decoder("dali", _info("vp9"), "cpu", dali_installed=True).backend == "dali-cpu"
    assert choose_decoder("dali", _info("h264"), "cuda:0", dali_installed=True).backend == "dali-gpu"
    with pytest.raises(DecoderUnavailable, match=r"codec 'h264' on device 'cpu'"):
        choose_decoder("dali", _info("h264"), "cpu", dali_installed=True)
    with pytest.raises(DecoderUnavailable, match="prores"):
        choose_decoder("dali", _info("prores"), "cuda", dali_installed=True)
    with pytest.raises(DecoderUnavailable, match="not installed"):
        choose_decoder("dali", _info("vp9"), "cpu", dali_installed=False)
    with pytest.raises(ValueError, match="preference"):
        choose_decoder("ffmpeg", _info("h264"), "cpu")
    with pytest.raises(ValueError, match="device"):
        choose_decoder("auto", _info("h264"), "tpu")


def test_parse_device():
    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("cuda") == ("cuda", 0)
    assert parse_device("cuda:3") == ("cuda", 3)
    assert parse_device("auto") == (("cuda", 0) if cuda_available() else ("cpu", None))


def test_select_decoder_builds_and_caches(vp9_video):
    path, _ = vp9_video
    info = probe(path)
    decoder = select_decoder("auto", info, "cpu")
    assert decoder.name == "pyav" and select_decoder("pyav", info, "cpu") is decoder
    assert choose_decoder("auto", info, "cpu").build() is decoder
    assert codes(decoder.iter_frames(path, info, [1.0])) == [25]
    if dali_available():
        dali = select_decoder("dali", info, "cpu")
        assert dali.name == "dali-cpu" and select_decoder("dali", info, "cpu") is dali
        assert codes(dali.iter_frames(path, info, [1.0])) == [25]
    # With storage options the decoder is private to the caller.
    own = build_decoder(DecoderChoice("pyav", None, "test"), storage_options={"skip_instance_cache": True})
    assert own is not decoder and own.storage_options == {"skip_instance_cache": True}


def test_modules_import_without_dali():
    """The decode package must import (and pick PyAV) where nvidia.dali is absent, e.g. on the GPU test host."""
    code = (
        "import sys; sys.modules['nvidia.dali'] = None\n"
        "from cliper_batch.decode.select import choose_decoder\n"
        "from cliper_batch.decode.dali_backend import DaliDecoder, dali_available\n"
        "from cliper_batch.decode import DecoderUnavailable\n"
        "from cliper_batch.types import VideoInfo\n"
        "assert not dali_available()\n"
        "info = VideoInfo(duration_s=1, fps=25, width=8, height=8, codec='h264')\n"
        "assert choose_decoder('auto', info, 'cuda').backend == 'pyav'\n"
        "try:\n    DaliDecoder()\nexcept DecoderUnavailable:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ----- NVDEC: a once-per-process self-test decides whether dali-gpu is used ---------------------------

def test_nvdec_self_test_clip_has_b_frames_and_frame_codes():
    """The self-test's clip can catch a wrong frame order: decode order differs from display order."""
    import io

    import av

    from cliper_batch.decode.select import _SELF_TEST_FRAMES, _self_test_clip

    data = _self_test_clip()
    with av.open(io.BytesIO(data)) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
    assert pts != sorted(pts), "no B-frames: the self-test could not see a reordering bug"
    with av.open(io.BytesIO(data)) as c:
        assert codes(f.to_ndarray(format="rgb24") for f in c.decode(video=0)) == list(range(_SELF_TEST_FRAMES))


@needs_dali
@pytest.mark.skipif(cuda_available(), reason="checks the failure path: needs a host where NVDEC cannot work")
def test_unusable_nvdec_falls_back_to_pyav_with_one_logged_reason(caplog, h264_video):
    """DALI installed, no CUDA: the real 'mixed' pipeline fails, so auto decodes with PyAV instead of failing rows."""
    path, _ = h264_video
    info = probe(path)
    nvdec_self_test.cache_clear()
    with caplog.at_level("WARNING", logger="cliper_batch.decode.select"):
        first = choose_usable_decoder("auto", info, "cuda")
        second = choose_usable_decoder("auto", info, "cuda")
    assert first == second and first.backend == "pyav" and first.device_id is None
    assert first.reason.startswith("auto: NVDEC unusable on cuda:0 (") and "-> PyAV" in first.reason
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "NVDEC self-test on cuda:0 failed" in warnings[0].getMessage()
    # The reason names DALI's own error, not a generic one.
    assert "DecodeError" in first.reason and "DALI dali-gpu could not decode" in first.reason
    # The fallback decodes the video: no failed rows.
    decoder = select_decoder("auto", info, "cuda")
    assert decoder.name == "pyav" and codes(decoder.iter_frames(path, info, [0.0, 1.0])) == [0, 25]
    # An explicit request is not silently changed: a setup error with the reason.
    with pytest.raises(DecoderUnavailable, match="NVDEC is unusable on cuda:0"):
        choose_usable_decoder("dali", info, "cuda")
    # Nothing changes where NVDEC is not involved.
    assert choose_usable_decoder("auto", info, "cpu") == choose_decoder("auto", info, "cpu")
    vp9 = VideoInfo(duration_s=1.0, fps=25.0, width=8, height=8, codec="vp9")
    assert choose_usable_decoder("dali", vp9, "cpu").backend == "dali-cpu"


@pytest.mark.gpu
@needs_cuda
@needs_dali
def test_nvdec_self_test_passes_on_a_gpu(h264_video):
    nvdec_self_test.cache_clear()
    assert nvdec_self_test(0) is None
    path, _ = h264_video
    assert choose_usable_decoder("auto", probe(path), "cuda").backend == "dali-gpu"


# ----- frame index: DALI's index (mirrored by frame_timeline) vs the display order ---------------------

def write_hidden_start_video(src: str, dst: str, n_hidden: int) -> str:
    """Remux ``src`` (.mp4) with every timestamp moved ``n_hidden`` frames earlier.

    The first ``n_hidden`` frames get negative times, so the .mp4 muxer writes
    an edit list that starts the presentation after them (what a trimmed clip
    looks like): the demuxer still returns them, flagged discard, when they are
    needed as references; no player shows them.
    """
    import av

    with av.open(src) as inp, av.open(dst, "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        shift = round(n_hidden / (float(ist.average_rate) * ist.time_base))
        for packet in inp.demux(ist):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = ost
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def index_videos(video_dir, h264_video, vfr_video):
    """name -> (path, display order of frame codes, display times in s); every case checked against PyAV decoding."""
    from conftest import write_vfr_video

    import av

    h264_path, h264_spec = h264_video
    vfr_path, vfr_spec, vfr_starts = vfr_video
    vfr_h264 = os.path.join(video_dir, "vfr_h264.mp4")
    if not os.path.exists(vfr_h264):
        write_vfr_video(vfr_h264, "libx264", [round(s * 1000) for s in vfr_starts], vfr_spec)
    vp9_mp4 = os.path.join(video_dir, "vp9_in.mp4")
    if not os.path.exists(vp9_mp4):  # VP9 in .mp4: DALI's CPU decoder can check the edit-list case here
        with open(vp9_mp4, "wb") as fh:
            buf = io.BytesIO()
            write_video(buf, VideoSpec(codec="vp9", duration_s=2.0, seed=9))
            # write_video picks .webm for VP9; remux into .mp4 (edit lists are an .mp4/.mov feature)
            buf.seek(0)
            with av.open(buf) as inp, av.open(fh, "w", format="mp4") as out:
                ist = inp.streams.video[0]
                ost = out.add_stream_from_template(ist)
                for packet in inp.demux(ist):
                    if packet.dts is not None:
                        packet.stream = ost
                        out.mux(packet)
    hidden_h264 = write_hidden_start_video(h264_path, os.path.join(video_dir, "hidden_start_h264.mp4"), 5)
    hidden_vp9 = write_hidden_start_video(vp9_mp4, os.path.join(video_dir, "hidden_start_vp9.mp4"), 5)
    n = h264_spec.n_frames
    return {
        "h264-bframes": (h264_path, list(range(n)), [i / h264_spec.fps for i in range(n)]),
        "h264-bframes-vfr": (vfr_h264, list(range(len(vfr_starts))), list(vfr_starts)),
        "vp9-vfr": (vfr_path, list(range(len(vfr_starts))), list(vfr_starts)),
        "h264-edit-list-hides-5": (hidden_h264, list(range(5, n)), [i / h264_spec.fps for i in range(n - 5)]),
        "vp9-edit-list-hides-5": (hidden_vp9, list(range(5, 50)), [i / 25.0 for i in range(45)]),
    }


def _pyav_display_order(path: str) -> tuple[list[int], list[float]]:
    import av

    with av.open(path) as c:
        frames = [(f.time, read_frame_code(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)]
    return [code for _, code in frames], [t - frames[0][0] for t, _ in frames]


@pytest.mark.parametrize(
    "case", ["h264-bframes", "h264-bframes-vfr", "vp9-vfr", "h264-edit-list-hides-5", "vp9-edit-list-hides-5"]
)
def test_frame_timeline_is_the_display_order(index_videos, case):
    """Index i of the demux-side timeline is the i-th frame FFmpeg displays: B-frames, VFR, edit lists."""
    import av

    path, want_codes, want_times = index_videos[case]
    if case.startswith("h264-bframes"):
        with av.open(path) as c:
            pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
        assert pts != sorted(pts), "fixture has no B-frames"
    got_codes, got_times = _pyav_display_order(path)
    assert got_codes == want_codes
    np.testing.assert_allclose(got_times, want_times, atol=1e-3)
    timeline = frame_timeline(path, _read_bytes(path))
    assert len(timeline) == len(want_codes)
    np.testing.assert_allclose(timeline.times, want_times, atol=1e-3)


@needs_dali
def test_dali_cpu_frame_index_skips_frames_an_edit_list_hides(dali_cpu, index_videos):
    """DALI's own index leaves out the hidden frames too (VP9 in .mp4, CPU decoder): the mapping stays exact."""
    path, want_codes, want_times = index_videos["vp9-edit-list-hides-5"]
    info = probe(path)
    ts = [want_times[0], want_times[7], want_times[-1], 0.5, 1.0]
    want = [want_codes[0], want_codes[7], want_codes[-1], want_codes[12], want_codes[25]]
    assert codes(dali_cpu.iter_frames(path, info, ts)) == want
    assert codes(PyAVDecoder(threads=1).iter_frames(path, info, ts)) == want


@pytest.mark.gpu
@needs_cuda
@needs_dali
@pytest.mark.parametrize(
    "case", ["h264-bframes", "h264-bframes-vfr", "vp9-vfr", "h264-edit-list-hides-5", "vp9-edit-list-hides-5"]
)
def test_dali_gpu_decodes_the_frame_displayed_at_each_time(index_videos, case):
    """NVDEC through DALI: frame codes at sampled times equal the display order (PyAV's), on host and device paths."""
    path, want_codes, want_times = index_videos[case]
    info = probe(path)
    dec = DaliDecoder(device="gpu", device_id=0)
    picks = sorted({0, 1, 2, 3, len(want_times) // 3, len(want_times) // 2, len(want_times) - 2, len(want_times) - 1})
    ts = [want_times[i] + 1e-4 for i in picks]
    want = [want_codes[i] for i in picks]
    assert codes(dec.iter_frames(path, info, ts)) == want
    assert codes(t.cpu().numpy() for t in dec.iter_frame_tensors(path, info, ts)) == want
    if case == "h264-bframes":  # uniform fps: the engine's own rule for which frame a time selects
        spec_ts = plan_timestamps(info)
        assert codes(dec.iter_frames(path, info, spec_ts)) == frame_indices(spec_ts, info.fps)
