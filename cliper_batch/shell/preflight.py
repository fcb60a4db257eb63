"""Checks the annotate driver runs before Ray starts: a run that cannot work fails here, loudly, with no rows written.

Two layers, both ending in one clear message and exit status 2:

* **option values** - argparse ``type=`` converters (:func:`positive_int`,
  :func:`positive_float`, :func:`gpu_fraction`) so that ``--batch-size 0`` or
  ``--segment-seconds -1`` is refused the way argparse refuses any bad value;
* **what every video will need** - :func:`check_run`: the corpus lists, the
  output lies outside it and can be written, the model loads (checkpoint header
  and the layout it fixes; a truncated file is caught), the face detector's
  weights are the pinned file (``faces='detect'``), and the requested device and
  decoder exist.

Each failure raises :class:`PreflightError` whose message says what is wrong
and what to do. Nothing here starts Ray or decodes a video, and for a
checkpoint model nothing here imports torch or open_clip (the driver never
computes; its workers import them): ``tests/shell/test_startup.py`` holds that.
"""
from __future__ import annotations

import argparse
import re
import secrets
from dataclasses import dataclass

from ..types import DEFAULT_FACE_DETECTOR
from ..uris import InvalidURI, check_locations, filesystem_for, join, normalize_uri


class PreflightError(Exception):
    """The run cannot work as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- option values


def face_side(text: str) -> int:
    """argparse type: ``--min-face``, a whole number of pixels from 12 (the detector's smallest cell) to 640
    (the detection frame's long side)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if not 12 <= value <= 640:
        raise argparse.ArgumentTypeError(f"must be 12 to 640 pixels (of the detection frame), got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def gpu_fraction(text: str) -> float:
    """argparse type: a share of one GPU, in (0, 1]."""
    value = positive_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (a share of one GPU), got {text}")
    return value


# --------------------------------------------------------------------------- what every video needs


@dataclass(frozen=True)
class Checked:
    """What the checks learned and the run reuses."""

    output: str  # normalised output URI
    device: str  # the torch device the embedded run will use ('cpu', 'cuda:0'), or the request on a cluster
    model: object  # pipeline.run.ModelInfo


def check_device(device: str, *, local: bool) -> str:
    """The device a run will use. ``local``: this host runs the work, so CUDA must really be usable here.

    On a Ray cluster the driver may sit on a CPU-only head while the GPUs are on
    the workers, so only the spelling is checked (the cluster's GPUs are checked
    when the run sizes its actors). Locally, torch is imported only where a GPU
    driver exists (:func:`cliper_batch.model.devices.device_name`).
    """
    from ..model.devices import DeviceError, device_name

    if not local:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device.strip().lower()):
            raise PreflightError(f"--device: unknown device {device!r}: use auto, cpu, cuda or cuda:N")
        return device
    try:
        return device_name(device)
    except DeviceError as exc:
        raise PreflightError(f"--device: {exc}; use --device cpu (or auto) on this host") from exc


def check_decoder(decoder: str) -> None:
    """``--decoder dali`` needs ``nvidia.dali`` importable here (the workers run the same environment)."""
    from ..decode.dali_backend import dali_available

    if decoder == "dali" and not dali_available():
        raise PreflightError(
            "--decoder dali: nvidia.dali is not installed in this environment; "
            "install the engine's dependencies (pip install cliper-batch) or use --decoder auto|pyav"
        )


def check_model(model_spec: str, storage_options: dict | None = None):
    """The model's id, classes and input size, after checking the checkpoint will load.

    A checkpoint is checked from its header alone, without torch or open_clip
    (:func:`~cliper_batch.model.checkpoint.check_header`): the config, every
    tensor's dtype and place, the descriptor matrix's shape against the classes,
    and that the file is as long as its header says - so a truncated or
    mismatched file is caught for the cost of reading a few kB, even for a
    350 MB ViT-B/16. Each worker, which imports torch and open_clip anyway,
    rebuilds the architecture, checks every tensor's name and shape against it
    and verifies the full content hash when it loads the weights. A zero-shot
    (``openclip:``) spec imports open_clip here: its id depends on its encoded
    descriptors.
    """
    from ..model.checkpoint import CheckpointError, check_header
    from ..model.spec import ModelSpecError, describe_model, parse_spec

    try:
        parsed = parse_spec(model_spec)
        if parsed.kind == "checkpoint":
            check_header(parsed.uri, **(storage_options or {}))
        return describe_model(model_spec, storage_options)
    except (CheckpointError, ModelSpecError) as exc:
        raise PreflightError(f"--model: {exc}") from exc


def check_detector(name: str = DEFAULT_FACE_DETECTOR) -> None:
    """The face detector ``name`` can run here (MTCNN: its weights are the pinned file; sha256, no torch)."""
    from ..faces.detectors import check_detector as check
    from ..faces.detectors.base import DetectorUnavailable

    try:
        check(name)
    except ValueError as exc:
        raise PreflightError(f"--face-detector: {exc}") from exc
    except DetectorUnavailable as exc:
        raise PreflightError(f"--faces detect: face detector unavailable ({name}): {exc}") from exc


def check_output_writable(output_uri: str, storage_options: dict | None = None) -> None:
    """Create the output folder if needed and write (then delete) a probe file in it."""
    try:
        fs, path = filesystem_for(output_uri, **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        probe = join(path, f".write-check-{secrets.token_hex(4)}")
        with fs.open(probe, "wb") as fh:
            fh.write(b"")
        fs.rm(probe)
    except (OSError, ValueError, InvalidURI) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise PreflightError(f"--output {output_uri}: cannot write there ({why}); choose a writable folder") from exc


def check_run(
    input_uri: str,
    output_uri: str,
    model_spec: str,
    *,
    device: str,
    decoder: str,
    faces: str,
    local: bool,
    face_detector: str = DEFAULT_FACE_DETECTOR,
    storage_options: dict | None = None,
) -> Checked:
    """Every check a run needs before Ray starts, cheapest first; raises :class:`PreflightError`."""
    from ..corpus.listing import CorpusNotFound, list_videos

    used_device = check_device(device, local=local)
    check_decoder(decoder)
    try:
        list_videos(input_uri, **(storage_options or {}))
        output = check_locations(input_uri, output_uri)
    except (CorpusNotFound, InvalidURI) as exc:
        raise PreflightError(str(exc)) from exc
    info = check_model(model_spec, storage_options)
    if faces == "detect":
        check_detector(face_detector)
    check_output_writable(normalize_uri(output), storage_options)
    return Checked(output=output, device=used_device, model=info)


__all__ = [
    "Checked",
    "PreflightError",
    "check_decoder",
    "check_detector",
    "check_device",
    "check_model",
    "check_output_writable",
    "check_run",
    "face_side",
    "gpu_fraction",
    "positive_float",
    "positive_int",
]
