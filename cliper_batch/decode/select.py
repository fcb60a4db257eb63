"""Pick a decoder backend for a video: codec x device x preference -> :class:`DecoderChoice`.

``choose_decoder`` is pure (only the codec, the device string and whether DALI
is installed matter), so the policy is testable without a GPU;
``choose_usable_decoder`` adds the one check that needs the device: a
``dali-gpu`` choice stands only if NVDEC passed its self-test in this process
(:func:`nvdec_self_test`), else ``auto`` falls back to PyAV with the reason
logged; ``build_decoder`` turns a choice into a (process-wide cached) decoder
object, and ``select_decoder`` does both.

A still image (``info.kind == "image"``) always gets the ``pillow`` decoder
(:mod:`cliper_batch.decode.image_backend`), whatever the preference.

Policy for ``preference='auto'``:

- CUDA device and a codec NVDEC decodes (h264, hevc, av1, vp8, vp9, mpeg4,
  mjpeg) and DALI installed -> ``dali-gpu`` (DALI 'mixed' operator).
- Otherwise ``pyav``. DALI's CPU decoder (VP8/VP9/MJPEG only) is *not* chosen
  automatically: on this project's 2-core dev host (640x360 VP9, 250 frames,
  three runs under varying load) PyAV decoded 420-900 frames/s to full-res RGB
  against 180-390 for DALI-CPU, 270-540 vs 150-165 at 224x224, and 40 sampled
  frames in 230-460 ms vs 350-440 ms; MJPEG 1150-1450 vs 330-500 frames/s.
  PyAV also streams, while DALI needs the whole encoded file in memory.
  DALI-CPU stays available with ``preference='dali'``.

NVDEC can be present on paper and unusable in practice: containers started
without the NVIDIA ``video`` driver capability have CUDA but no
``libnvcuvid``, and then every DALI 'mixed' decode fails. Without a check a
run would "succeed" with every video failed, so the first ``dali-gpu`` choice
per device runs :func:`nvdec_self_test` (decode a tiny in-memory H.264 clip,
frame-exactly) once per process; when it fails, ``auto`` uses PyAV (one
WARNING with the reason) and an explicit ``dali`` raises
:class:`DecoderUnavailable`, a setup error, instead of failing every row.
"""
from __future__ import annotations

import functools
import io
import logging
import os
from dataclasses import dataclass, replace

import numpy as np

from ..types import DECODERS, VideoInfo
from .base import DecodeError, DecoderUnavailable, FrameDecoder
from .dali_backend import DALI_CPU_CODECS, DALI_GPU_CODECS, dali_available

__all__ = [
    "DecoderChoice",
    "DecoderUnavailable",
    "cuda_available",
    "parse_device",
    "choose_decoder",
    "choose_usable_decoder",
    "nvdec_self_test",
    "build_decoder",
    "select_decoder",
    "CPU_POLICY_NOTE",
]

log = logging.getLogger(__name__)

CPU_POLICY_NOTE = (
    "PyAV preferred over DALI-CPU for VP8/VP9/MJPEG: measured 1.5-3x faster on the dev host (640x360 VP9/MJPEG), "
    "and it streams instead of holding the encoded file in memory"
)


@dataclass(frozen=True)
class DecoderChoice:
    """The backend picked for a video and why (logged; recorded by the pipeline if it likes)."""

    backend: str  # 'pyav' | 'dali-cpu' | 'dali-gpu' | 'pillow' (still images)
    device_id: int | None  # CUDA index for dali-gpu
    reason: str

    def build(self, threads: int = 0, storage_options: dict | None = None) -> FrameDecoder:
        """Same as :func:`build_decoder` for this choice."""
        return build_decoder(self, threads=threads, storage_options=storage_options)


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """Whether a CUDA device is usable in this process (torch if installed, else the driver API)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        pass
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


def parse_device(device: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None); 'cuda' / 'cuda:N' / 'gpu' -> ('cuda', N); 'auto' -> CUDA if available."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        return ("cuda", 0) if cuda_available() else ("cpu", None)
    if d == "cpu":
        return "cpu", None
    if d in ("cuda", "gpu"):
        return "cuda", 0
    if d.startswith("cuda:"):
        idx = d.split(":", 1)[1]
        if idx.isdigit():
            return "cuda", int(idx)
    raise ValueError(f"device must be auto|cpu|cuda|cuda:N, got {device!r}")


def choose_decoder(preference: str, info: VideoInfo, device: str, dali_installed: bool | None = None) -> DecoderChoice:
    """Decide the backend for ``info.codec`` on ``device`` (pure apart from probing for DALI/CUDA).

    Raises :class:`DecoderUnavailable` when ``preference='dali'`` cannot be
    honoured (codec unsupported on that device, or DALI not installed), and
    ``ValueError`` for an unknown preference/device.
    """
    pref = (preference or "auto").strip().lower()
    if pref not in DECODERS:
        raise ValueError(f"decoder preference must be {'|'.join(DECODERS)}, got {preference!r}")
    if info.kind == "image":  # a still image: one Pillow decode whatever the preference (PyAV/DALI decode videos)
        return DecoderChoice("pillow", None, f"still image ({info.codec}) -> Pillow")
    kind, index = parse_device(device)
    codec = (info.codec or "").lower()
    have_dali = dali_available() if dali_installed is None else dali_installed

    if pref == "pyav":
        return DecoderChoice("pyav", None, "requested pyav")
    if pref == "dali":
        if not have_dali:
            raise DecoderUnavailable(f"decoder 'dali' requested but nvidia.dali is not installed (codec {codec!r}, device {device!r})")
        if kind == "cuda":
            if codec in DALI_GPU_CODECS:
                return DecoderChoice("dali-gpu", index, f"requested dali; {codec} decodes on NVDEC (cuda:{index})")
            raise DecoderUnavailable(
                f"DALI cannot decode codec {codec!r} on device {device!r} (GPU codecs: {', '.join(sorted(DALI_GPU_CODECS))})"
            )
        if codec in DALI_CPU_CODECS:
            return DecoderChoice("dali-cpu", None, f"requested dali; {codec} is supported by DALI's CPU decoder")
        raise DecoderUnavailable(
            f"DALI cannot decode codec {codec!r} on device {device!r}: DALI's CPU decoder handles only "
            f"{', '.join(sorted(DALI_CPU_CODECS))} (use a CUDA device or decoder 'pyav')"
        )
    # auto
    if kind == "cuda":
        if codec in DALI_GPU_CODECS and have_dali:
            return DecoderChoice("dali-gpu", index, f"auto: {codec} on cuda:{index} -> NVDEC via DALI")
        if codec not in DALI_GPU_CODECS:
            return DecoderChoice("pyav", None, f"auto: {codec!r} has no NVDEC path in DALI -> PyAV on CPU")
        return DecoderChoice("pyav", None, "auto: nvidia.dali not installed -> PyAV on CPU")
    if codec in DALI_CPU_CODECS:
        return DecoderChoice("pyav", None, f"auto: {codec} on CPU -> PyAV ({CPU_POLICY_NOTE})")
    return DecoderChoice("pyav", None, f"auto: {codec!r} on CPU -> PyAV (DALI's CPU decoder lacks it)")


# The self-test clip: H.264 with B-frames (x264 'veryfast' uses 3), 12 frames, each carrying its index.
_SELF_TEST_FRAMES = 12
_NVCUVID = "libnvcuvid.so.1"


def _self_test_clip() -> bytes:
    """A tiny H.264 .mp4 (128x64, 12 frames with frame codes), encoded in memory with PyAV."""
    from .testvideos import VideoSpec, write_video

    buf = io.BytesIO()
    write_video(buf, VideoSpec(codec="h264", fps=25.0, duration_s=_SELF_TEST_FRAMES / 25.0, width=128, height=64))
    return buf.getvalue()


def _nvcuvid_note() -> str:
    """Why NVDEC may be missing, if the driver's video library cannot be loaded."""
    import ctypes

    try:
        ctypes.CDLL(_NVCUVID)
    except OSError as exc:
        return (f"; {_NVCUVID} cannot be loaded ({exc}): the NVIDIA driver's video decode library is absent "
                "(in a container, enable the 'video' driver capability, e.g. NVIDIA_DRIVER_CAPABILITIES=compute,utility,video)")
    return ""


@functools.lru_cache(maxsize=None)
def nvdec_self_test(device_id: int) -> str | None:
    """None if DALI's NVDEC decoder decodes a tiny H.264 clip exactly on ``cuda:device_id``, else why not.

    Runs once per process and device (cached): it builds a DALI 'mixed'
    pipeline, decodes every frame of a 12-frame clip with B-frames and checks
    each frame's embedded index, so a missing ``libnvcuvid``, a driver too old
    for DALI, no CUDA at all or a wrong frame order all make NVDEC unusable
    for this process. Logs the outcome once (WARNING on failure).
    """
    from .testvideos import read_frame_code
    from .dali_backend import DaliDecoder

    try:
        if not dali_available():
            raise DecoderUnavailable("nvidia.dali is not installed")
        decoder = DaliDecoder(device="gpu", device_id=device_id, num_threads=1)
        wanted = np.arange(_SELF_TEST_FRAMES, dtype=np.int32)
        frames = decoder._run("<nvdec self-test clip>", np.frombuffer(_self_test_clip(), np.uint8), wanted, None)
        got = [read_frame_code(f) for f in frames]
        if got != wanted.tolist():
            raise DecodeError(f"decoded frame order {got} != {wanted.tolist()}")
    except Exception as exc:  # noqa: BLE001 - whatever breaks, NVDEC is not usable in this process
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:400] + _nvcuvid_note()
        log.warning("NVDEC self-test on cuda:%d failed, DALI GPU decoding disabled in this process: %s", device_id, reason)
        return reason
    log.info("NVDEC self-test on cuda:%d passed (%d H.264 frames decoded exactly)", device_id, _SELF_TEST_FRAMES)
    return None


def choose_usable_decoder(preference: str, info: VideoInfo, device: str) -> DecoderChoice:
    """:func:`choose_decoder`, then, for a ``dali-gpu`` choice, NVDEC's once-per-process self-test.

    If NVDEC is unusable, ``auto`` returns PyAV with the self-test's reason
    (logged once, as a WARNING, by :func:`nvdec_self_test`), and ``dali``
    raises :class:`DecoderUnavailable` (an explicit request is not silently
    changed).
    """
    choice = choose_decoder(preference, info, device)
    if choice.backend != "dali-gpu":
        return choice
    problem = nvdec_self_test(int(choice.device_id or 0))
    if problem is None:
        return choice
    if (preference or "auto").strip().lower() == "dali":
        raise DecoderUnavailable(f"decoder 'dali' requested but NVDEC is unusable on cuda:{choice.device_id}: {problem}")
    return replace(choice, backend="pyav", device_id=None,
                   reason=f"auto: NVDEC unusable on cuda:{choice.device_id} ({problem}) -> PyAV on CPU")


def _make_decoder(backend: str, device_id: int | None, threads: int, storage_options: dict | None) -> FrameDecoder:
    if backend == "pillow":
        from .image_backend import ImageDecoder

        return ImageDecoder(storage_options=storage_options)
    if backend == "pyav":
        from .pyav_backend import PyAVDecoder

        return PyAVDecoder(threads=threads, storage_options=storage_options)
    if backend in ("dali-cpu", "dali-gpu"):
        from .dali_backend import DaliDecoder

        return DaliDecoder(
            device="gpu" if backend == "dali-gpu" else "cpu",
            device_id=device_id,
            num_threads=max(1, threads or 2),
            storage_options=storage_options,
        )
    raise ValueError(f"unknown decoder backend {backend!r}")


@functools.lru_cache(maxsize=None)
def _cached_decoder(backend: str, device_id: int | None, threads: int) -> FrameDecoder:
    return _make_decoder(backend, device_id, threads, None)


def build_decoder(choice: DecoderChoice, threads: int = 0, storage_options: dict | None = None) -> FrameDecoder:
    """The decoder object for ``choice``.

    Without ``storage_options`` the object is cached per process (per backend,
    device and thread count), so DALI pipelines are built once and reused across
    videos; with them, a new private decoder is returned. ``threads``: decoder
    threads (0 = library default).
    """
    if storage_options:
        return _make_decoder(choice.backend, choice.device_id, int(threads), dict(storage_options))
    return _cached_decoder(choice.backend, choice.device_id, int(threads))


def select_decoder(
    preference: str,
    info: VideoInfo,
    device: str,
    threads: int = 0,
    storage_options: dict | None = None,
) -> FrameDecoder:
    """``build_decoder(choose_usable_decoder(...))``, logging the choice and its reason."""
    choice = choose_usable_decoder(preference, info, device)
    log.debug("decoder for codec %s on %s: %s (%s)", info.codec, device, choice.backend, choice.reason)
    return build_decoder(choice, threads=threads, storage_options=storage_options)
