"""Dataclasses that cross module boundaries (listing -> probe -> sampling -> decode -> score -> write)."""
from __future__ import annotations

import re

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class VideoRef:
    """One input video: a stable id, the fsspec URI it is read from, and what identifies its content.

    ``fingerprint`` (size plus mtime or ETag, from the listing) tells an
    incremental run whether a video changed since it was last annotated. Slotted: the
    driver holds one per listed video (no per-instance ``__dict__`` at a million).
    """

    video_id: str
    uri: str
    size_bytes: int | None = None
    mtime: float | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video stream (or a still image) before decoding.

    A still image (``kind == "image"``, :mod:`cliper_batch.decode.images`) is a one-frame item:
    ``duration_s == 0``, ``fps == 0``, ``n_frames == 1``; ``codec`` is its format
    (``jpeg``, ``png``, ``webp``, ``bmp``) and ``rotation`` the rotation part of its EXIF
    orientation. Its segment plan is one segment at time 0 (:func:`cliper_batch.decode.sampling.plan_for`).
    """

    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    rotation: int = 0  # degrees clockwise to display upright (0, 90, 180, 270)
    n_frames: int | None = None
    kind: str = "video"  # video | image (uris.media_kind)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    """A fixed-duration window of a video and the timestamps sampled inside it."""

    index: int
    start_s: float
    end_s: float
    timestamps: tuple[float, ...]


# --faces detect runs the detector on every 4th sampled frame, every shot cut and every gap the tracker is unsure
# about (1 = every frame). 4 cut detection CPU by 3x with the same tracks (docs/benchmarks.md, "Sparse face
# detection"). A stride other than 1 enters config_hash, so outputs written at stride 1 (every version before this
# default) are re-annotated by a default run (docs/faces.md; FACE_DETECTOR_VERSION below re-annotates them at any stride).
DEFAULT_DETECT_STRIDE = 4
# The choices of AnnotateConfig's string fields, written once (the command line, the checks and the decoder
# choice read them here). Face detectors are named by cliper_batch.faces.detectors.DETECTORS; the default is
# absent from config_hash (outputs written before the field existed keep their hash), any other name enters it.
FACES_MODES = ("detect", "none")
DECODERS = ("auto", "pyav", "dali")
COMPILE_BACKENDS = ("eager", "torch.compile", "tensorrt")
DEFAULT_FACE_DETECTOR = "mtcnn"
# What sparse detection does between scheduled frames (faces/sparse.py); hashed with a stride != 1, so a change
# re-annotates. 2: a gap whose ends pair under smooth motion is verified at its middle and interpolated. 3: a gap
# whose ends pair neither way is split at its middle and each half judged again, instead of detected in full.
SPARSE_TRACKING_VERSION = 3
# Version of the face detector's arithmetic (cliper_batch/faces/detectors/mtcnn/), in config_hash for --faces detect.
# Bumped by any change that moves a box, score or landmark at all - even by float rounding - so that a run
# re-annotates outputs of the older detector instead of mixing them with new ones. Unversioned (absent from the
# hash): the detector up to 2026-11-30. 2: pyramid levels as sparse area products, strided max pools (boxes
# within 0.001 px of version 1 on the benchmark frames; docs/benchmarks.md).
FACE_DETECTOR_VERSION = 2
# --faces detect: the smallest face side searched for, in pixels of the detection frame (the video's frame shrunk
# so its long side is at most 640: a 640x360 video's own pixels, a third of a 1080p video's). Crops are cut from
# that same frame, so a face under ~40 px there is under the 48 px of the faces the real-face model learnt from.
# P-Net's image pyramid starts at 12 / min_face, so its largest level and most of its cost come from this bound:
# 40 px costs ~0.6x of 20 px per frame. 40 by default since 2026-12-06: at stride 4 it is within 0.5 points of
# stride 1 at 20 px on both sections of bench/stride_quality.py (20 px at stride 4 was not: -0.7), see
# docs/benchmarks.md. Absent from config_hash means 20 (every output before): any other value enters it, the
# default 40 too, so a default run re-annotates older outputs instead of mixing them (--min-face 20 kept them until
# SPARSE_TRACKING_VERSION 3, which re-annotates every output of a stride other than 1).
DEFAULT_MIN_FACE = 40
HASHLESS_MIN_FACE = 20


@dataclass(frozen=True)
class AnnotateConfig:
    """Everything that changes what an annotation run computes (hashed into ``config_hash``)."""

    segment_seconds: float = 2.0
    frames_per_segment: int = 8
    faces: str = "detect"  # detect: one clip per (face track, segment) | none: centre crop (face-centred clips)
    # --faces detect: run the face detector on every Nth sampled frame, on every shot cut, and wherever the
    # tracker is not confident; boxes in between are interpolated (faces/sparse.py; 1 = every frame).
    detect_stride: int = DEFAULT_DETECT_STRIDE
    face_detector: str = DEFAULT_FACE_DETECTOR  # --faces detect: a name of faces.detectors.DETECTORS
    min_face: int = DEFAULT_MIN_FACE  # --faces detect: smallest face side searched, in detection-frame pixels
    decoder: str = "auto"  # auto | pyav | dali
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: str = "eager"  # eager | torch.compile | tensorrt
    batch_size: int = 64  # segments per scoring batch (each segment is T crops)
    decode_chunk_segments: int = 16  # segments per block emitted by the decoder
    video_timeout_s: float = 1800.0  # a video still decoding after this long is recorded as failed
    engine_cache: str | None = "~/.cache/cliper_batch/tensorrt"  # TensorRT engines, keyed by model/GPU/versions/batch profile

    def __post_init__(self) -> None:
        if not (self.segment_seconds > 0):
            raise ValueError(f"segment_seconds must be > 0, got {self.segment_seconds}")
        if self.frames_per_segment < 1:
            raise ValueError(f"frames_per_segment must be >= 1, got {self.frames_per_segment}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.faces not in FACES_MODES:
            raise ValueError(f"faces must be {'|'.join(FACES_MODES)}, got {self.faces!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be {'|'.join(DECODERS)}, got {self.decoder!r}")
        if self.compile not in COMPILE_BACKENDS:
            raise ValueError(f"compile must be {'|'.join(COMPILE_BACKENDS)}, got {self.compile!r}")
        if not isinstance(self.face_detector, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", self.face_detector):
            raise ValueError(f"face_detector must be a detector's name (lower case), got {self.face_detector!r}")
        if not (self.video_timeout_s > 0):
            raise ValueError(f"video_timeout_s must be > 0, got {self.video_timeout_s}")
        if self.decode_chunk_segments < 1:
            raise ValueError("decode_chunk_segments must be >= 1")
        if isinstance(self.detect_stride, bool) or not isinstance(self.detect_stride, int) or self.detect_stride < 1:
            raise ValueError(f"detect_stride must be an int >= 1, got {self.detect_stride!r}")
        if isinstance(self.min_face, bool) or not isinstance(self.min_face, int) or not 12 <= self.min_face <= 640:
            raise ValueError(f"min_face must be an int from 12 (the detector's smallest cell) to 640 pixels, got {self.min_face!r}")

    def semantic_dict(self) -> dict:
        """The fields that change results (not speed): used for the config hash."""
        d = {
            "segment_seconds": self.segment_seconds,
            "frames_per_segment": self.frames_per_segment,
            "faces": self.faces,
        }
        if self.faces == "detect" and self.detect_stride != 1:
            # boxes between detections are interpolated: another stride, other crops. Stride 1 (every frame)
            # has no sparse-tracking key; the detector's version below is hashed at any stride.
            d["detect_stride"] = self.detect_stride
            d["sparse_tracking"] = SPARSE_TRACKING_VERSION
        if self.faces == "detect":
            d["face_detector"] = FACE_DETECTOR_VERSION
            if self.face_detector != DEFAULT_FACE_DETECTOR:  # FACE_DETECTOR_VERSION versions the default one
                d["face_detector_name"] = self.face_detector
            if self.min_face != HASHLESS_MIN_FACE:  # other faces found: another hash
                d["min_face"] = self.min_face
        return d


@dataclass
class VideoOutcome:
    """Per-video result carried as data next to the samples (never raised through the pipeline)."""

    ref: VideoRef
    status: str  # ok | failed
    error: str | None = None
    error_type: str | None = None
    info: VideoInfo | None = None
    n_segments: int = 0
    extra: dict = field(default_factory=dict)


# How a run lays out its work on Ray (RunOptions.worker; pipeline.sizing.size_workers says what "auto" picks).
WORKERS = ("auto", "fused", "staged")


@dataclass(frozen=True)
class RunOptions:
    """What a run does beyond the semantic config: incremental selection, commit cadence, worker layout.

    None of these change results, so none is part of the config hash.
    """

    force: bool = False  # re-annotate videos already done with this model and config
    since: float | None = None  # only videos modified at/after this POSIX time
    limit: int | None = None  # at most this many videos this run
    videos_per_part: int = 2_000  # commit a part every N finished videos
    seconds_per_part: float = 120.0  # ... or every N seconds
    worker: str = "auto"  # auto (size_workers: fused on CUDA and for a light model on CPU) | fused | staged
    gpu_fraction: float = 1.0  # GPUs per fused actor (0.5 = two fused actors per GPU)
    decode_workers: int | None = None  # staged: decoder actors (None: sized to the cluster; given: implies staged)
    score_workers: int | None = None  # model actors, fused or scorers (None: sized to the cluster)
    videos_per_task: int = 8  # fused: at most this many videos per Ray task (size_workers spreads small corpora); batches span them; a task failing all retries makes them WorkerLost
    max_attempts: int = 3  # a transient/setup failure of an unchanged file is retried by later runs up to this many tries
    retry_failed: bool = False  # retry every failed video once more (data failures and exhausted ones included)
    stall_timeout_s: float = 600.0  # no batch for this long: commit what is done, record the rest ClusterStalled, stop

    def __post_init__(self) -> None:
        if self.worker not in WORKERS:
            raise ValueError(f"worker must be one of {'|'.join(WORKERS)}, got {self.worker!r}")
        if not (0.0 < self.gpu_fraction <= 1.0):
            raise ValueError(f"gpu_fraction must be in (0, 1], got {self.gpu_fraction}")
        for name in ("decode_workers", "score_workers"):
            n = getattr(self, name)
            if n is not None and n < 1:
                raise ValueError(f"{name} must be >= 1 (or None to size it), got {n}")
        if self.videos_per_task < 1:
            raise ValueError(f"videos_per_task must be >= 1, got {self.videos_per_task}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (self.stall_timeout_s > 0):
            raise ValueError(f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")
