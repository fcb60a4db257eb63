"""Frame decoding: one interface (:class:`FrameDecoder`), PyAV and DALI backends, and backend selection.

Backends are imported lazily by :func:`select_decoder` / :func:`build_decoder`;
``nvidia.dali`` is only imported when a DALI decoder is built.
"""
from .base import DecodeError, DecoderUnavailable, FrameDecoder
from .select import DecoderChoice, build_decoder, choose_decoder, cuda_available, select_decoder

__all__ = [
    "DecodeError",
    "DecoderUnavailable",
    "FrameDecoder",
    "DecoderChoice",
    "build_decoder",
    "choose_decoder",
    "cuda_available",
    "select_decoder",
]
