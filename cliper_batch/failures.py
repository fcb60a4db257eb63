"""What kind of failure a failed video is: the one table the driver, the retry policy and the docs share.

Every failed video becomes a manifest row with its ``error_type`` (the
exception's class name, or a name the writer gives: ``WorkerLost``,
``IncompleteVideo``). That name decides what the run and later runs do:

=============  ===========================================================  ===========================================
class          meaning                                                      consequence
=============  ===========================================================  ===========================================
``data``       the file itself is bad: not a video, empty, truncated,       retrying cannot help until the file changes
               undecodable, no video stream; an unreadable image
``setup``      the worker cannot do *any* video: detector weights, decoder  the run is broken, not the data: a run whose
               or device unusable; a bug in our own code                    every video failed this way exits non-zero
``transient``  this attempt failed, another may not: timeouts, lost         worth retrying on a later run
               workers, I/O and network errors, out of memory
=============  ===========================================================  ===========================================

An ``error_type`` not in the table counts as ``transient``: unknown failures are
retried (a bounded number of times), never silently given up on.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

FailureClass = Literal["data", "setup", "transient"]
DATA: FailureClass = "data"
SETUP: FailureClass = "setup"
TRANSIENT: FailureClass = "transient"

# error_type -> class. Names are exception class names as recorded in the manifest.
ERROR_CLASSES: dict[str, FailureClass] = {
    # the file is bad
    "ProbeError": DATA,
    "DecodeError": DATA,
    "EOFError": DATA,
    "ImageError": DATA,  # a still image that is not readable: corrupt, truncated, too many pixels, odd mode
    # the worker cannot work at all (environment or our own code)
    "DetectorUnavailable": SETUP,
    "DecoderUnavailable": SETUP,
    "DeviceError": SETUP,
    "CheckpointError": SETUP,
    "ModelSpecError": SETUP,
    "ImportError": SETUP,
    "ModuleNotFoundError": SETUP,
    "CropInputError": SETUP,
    "FaceInputError": SETUP,
    "TrackingError": SETUP,
    "CutInputError": SETUP,
    "AttributeError": SETUP,
    "TypeError": SETUP,
    "NameError": SETUP,
    # this attempt failed
    "VideoTimeout": TRANSIENT,
    "TimeoutError": TRANSIENT,
    "WorkerLost": TRANSIENT,
    "IncompleteVideo": TRANSIENT,
    "ClusterStalled": TRANSIENT,  # the run stopped: the cluster made no progress (e.g. a node was lost)
    "OSError": TRANSIENT,
    "ConnectionError": TRANSIENT,
    "MemoryError": TRANSIENT,
    "OutOfMemoryError": TRANSIENT,
    # a CUDA error torch raised (torch >= 2.8: torch.AcceleratorError). A sticky one ends its actor
    # (is_sticky_cuda_error) so the video is retried as WorkerLost; one that reaches a row is transient.
    "AcceleratorError": TRANSIENT,
}


def classify(error_type: str | None) -> FailureClass:
    """The class of a failed video's ``error_type`` (unknown names are ``transient``)."""
    return ERROR_CLASSES.get(error_type or "", TRANSIENT)


def common_setup_failure(error_types: Iterable[str | None]) -> str | None:
    """The one non-data ``error_type`` shared by *every* failed video, if that is what happened; else None.

    Used on a run where no video succeeded: when all of them failed for the same
    reason and that reason is not the files' fault, the run itself is broken and
    must not report success.
    """
    kinds = set(error_types)
    if len(kinds) != 1:
        return None
    (only,) = kinds
    return None if classify(only) == DATA else (only or "unknown error")


# What a CUDA error that leaves the process's CUDA context unusable says. After one of these every
# later CUDA call of the process fails ("sticky" errors: the CUDA runtime documents that the context
# must be destroyed), so a worker that hit one must end, not record the video as failed and go on.
# Matched in the message, whatever the exception type: torch raises torch.AcceleratorError (a
# RuntimeError; "CUDA error: an illegal memory access was encountered"), Triton a RuntimeError
# ("Triton Error [CUDA]: ..."), and driver-API users (DALI, NVDEC) name the CUresult
# ("CUDA_ERROR_ILLEGAL_ADDRESS"); a decoder may wrap any of them in its own error type.
STICKY_CUDA_MARKERS: tuple[str, ...] = (
    "an illegal memory access was encountered",  # cudaErrorIllegalAddress
    "unspecified launch failure",  # cudaErrorLaunchFailure
    "device-side assert triggered",  # cudaErrorAssert
    "misaligned address",  # cudaErrorMisalignedAddress
    "an illegal instruction was encountered",  # cudaErrorIllegalInstruction
    "invalid program counter",  # cudaErrorInvalidPc
    "the launch timed out and was terminated",  # cudaErrorLaunchTimeout
    "uncorrectable ecc error",  # cudaErrorECCUncorrectable
    "hardware stack error",  # cudaErrorHardwareStackError
    "cuda_error_illegal_address",
    "cuda_error_launch_failed",
    "cuda_error_assert",
    "cuda_error_misaligned_address",
    "cuda_error_illegal_instruction",
    "cuda_error_ecc_uncorrectable",
    "cublas_status_execution_failed",  # what cuBLAS reports for a kernel that faulted
    "cudnn_status_execution_failed",
)


def is_sticky_cuda_error(error_type: str | None, message: str | None) -> bool:
    """Whether a failure (its ``error_type`` and message) is a CUDA error that broke the process's CUDA context.

    The one predicate every actor shell uses (fused, staged decode, scoring): such an
    error is not the video's fault and every later video of the process would fail the
    same way, so the actor must end and Ray restart it (``max_restarts``); the video's
    block is retried there, and recorded ``WorkerLost`` if that keeps failing. An
    ordinary CUDA out-of-memory error (``OutOfMemoryError``) is not sticky.
    """
    if error_type == "OutOfMemoryError" or not message:
        return False
    text = str(message).lower()
    return any(m in text for m in STICKY_CUDA_MARKERS)


def sticky_cuda_error(exc: BaseException) -> bool:
    """:func:`is_sticky_cuda_error` of an exception (its type name and message, and those of its causes)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if is_sticky_cuda_error(type(e).__name__, str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


__all__ = [
    "DATA", "ERROR_CLASSES", "FailureClass", "SETUP", "STICKY_CUDA_MARKERS", "TRANSIENT", "classify",
    "common_setup_failure", "is_sticky_cuda_error", "sticky_cuda_error",
]
