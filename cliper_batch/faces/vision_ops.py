"""torchvision's two compiled kernels the detector needs (``roi_align``, ``nms``), without importing torchvision.

The face detector uses two of torchvision's C++ kernels and nothing else of it. Importing the
package for them costs a worker 1.2 s of single-threaded start-up on the 2-core laptop
(``torchvision/__init__`` imports its models, datasets and transforms, and
``torchvision.ops.roi_align`` imports ``torch._dynamo``, 1.05 s of it): the decode worker of
the staged layout paid it for nothing else, and it delayed the first detection of every worker.

The kernels live in torchvision's extension library (``_C_stable`` in current releases, ``_C``
in older ones), next to its ``__init__.py``. Loading that file with :func:`torch.ops.load_library`
registers ``torch.ops.torchvision.roi_align`` and ``torch.ops.torchvision.nms`` (their schemas:
``roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)``,
``nms(dets, scores, iou_threshold)``) - the same call torchvision's own ``extension.py`` makes when
it is imported, so the results are those of ``torchvision.ops`` bit for bit (tested), and a later
``import torchvision`` in the same process (open_clip's, in a fused worker) loads the same file
again, which the dynamic loader treats as already loaded.

If the file cannot be found or loaded (torchvision missing or built another way), the package is
imported instead, as before, with one log line saying why.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import threading

import torch

log = logging.getLogger(__name__)

LIBRARY_NAMES = ("_C_stable", "_C")  # torchvision's extension library, newest name first
_lock = threading.Lock()
_source: str | None = None  # how the kernels were registered in this process, once they are


def _registered() -> bool:
    ops = torch.ops.torchvision
    try:
        ops.roi_align, ops.nms  # noqa: B018 - attribute lookup is the registration check
    except (AttributeError, RuntimeError):
        return False
    return True


def find_library(package_dir: str, names: tuple[str, ...] = LIBRARY_NAMES) -> str | None:
    """The first ``name + extension-suffix`` file of ``names`` in ``package_dir`` (None if there is none)."""
    for name in names:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(package_dir, name + suffix)
            if os.path.isfile(path):
                return path
    return None


def _package_dir() -> str | None:
    spec = importlib.util.find_spec("torchvision")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def load_kernels(names: tuple[str, ...] = LIBRARY_NAMES) -> str:
    """Register ``torch.ops.torchvision.{roi_align,nms}`` in this process; how: ``'library'``, ``'torchvision'`` or ``'present'``.

    ``'present'``: they already were (torchvision imported, or an earlier call);
    ``'library'``: from torchvision's extension file, without importing the package;
    ``'torchvision'``: by importing ``torchvision.ops``, because the file was not found
    or did not register them (logged). Raises ImportError if torchvision is not installed.
    Thread-safe; cheap after the first call.
    """
    global _source
    if _source is not None:
        return "present"
    with _lock:
        if _source is not None:
            return "present"
        if _registered():
            _source = "present"
            return "present"
        package = _package_dir()
        if package is None:
            raise ImportError("torchvision is not installed: the face detector needs its roi_align and nms kernels")
        path = find_library(package, names)
        why = f"no extension library {'/'.join(names)} in {package}"
        if path is not None:
            try:
                torch.ops.load_library(path)
            except OSError as exc:
                why = f"loading {path} failed ({exc})"
            else:
                if _registered():
                    _source = "library"
                    return "library"
                why = f"{path} did not register torchvision::roi_align and nms"
        log.info("face detector: importing torchvision for its kernels (%s)", why)
        import torchvision.ops  # noqa: F401 - registers the kernels

        if not _registered():
            raise ImportError("torchvision is installed but its C++ kernels (roi_align, nms) are not available")
        _source = "torchvision"
        return "torchvision"


def roi_align(
    images: torch.Tensor, rois: torch.Tensor, size: int, spatial_scale: float = 1.0, sampling_ratio: int = -1,
    aligned: bool = True,
) -> torch.Tensor:
    """``torchvision.ops.roi_align(images, rois, (size, size), ...)`` for ``rois`` ``[K, 5]`` (frame index, x0, y0, x1, y1)."""
    load_kernels()
    return torch.ops.torchvision.roi_align(images, rois, spatial_scale, size, size, sampling_ratio, aligned)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms``: indices of the kept boxes (``[N, 4]`` x0, y0, x1, y1), best score first."""
    load_kernels()
    return torch.ops.torchvision.nms(boxes, scores, float(iou_threshold))


__all__ = ["LIBRARY_NAMES", "find_library", "load_kernels", "nms", "roi_align"]
