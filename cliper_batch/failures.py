"""What kind of failure a failed video is: the one table the driver, the retry policy and the docs share.

Every failed video becomes a manifest row with its ``error_type`` (the
exception's class name, or a name the writer gives: ``WorkerLost``,
``IncompleteVideo``). That name decides what the run and later runs do:

=============  ===========================================================  ===========================================
class          meaning                                                      consequence
=============  ===========================================================  ===========================================
``data``       the file itself is bad: not a video, empty, truncated,       retrying cannot help until the file changes
               undecodable, no video stream
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


__all__ = ["DATA", "ERROR_CLASSES", "FailureClass", "SETUP", "TRANSIENT", "classify", "common_setup_failure"]
