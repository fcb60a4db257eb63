"""Procedurally rendered, labelled facial-expression images and videos (nothing is downloaded).

Why: no expression dataset can be fetched in this environment, yet the engine
needs inputs whose *true* labels are known (end-to-end correctness checks, a
small demo CLIPER model trained on CPU). This module draws cartoon-realistic
faces with Pillow (2x supersampled, so edges are anti-aliased) and numpy:

* the 7 canonical classes are drawn from FACS action units (see the cue table
  in ``cliper-method.md``): brows (raise, inner raise, pull down/together),
  eyelids (wide / narrow / tense lower lid), mouth (smile, frown, open "O",
  stretched, pressed thin, curled upper lip), raised cheeks, nose wrinkle,
  forehead / glabella / chin creases;
* nuisance variation: identity (face shape, skin tone, hair style and colour,
  eye spacing, ...), pose (roll, yaw, translation, scale), lighting
  (brightness, contrast, colour cast, gradient), background clutter, noise and
  blur; expressions have an ``intensity`` in 0..1 and per-sample style jitter.

Everything is a pure function of its seed: the same seed gives byte-identical
images, rendered video frames and ground truth.

Layout: :mod:`.person` (identity, pose, lighting, expressions as action
units), :mod:`.render` (drawing a face crop or a scene), :mod:`.images` (the
labelled image set), :mod:`.videos` (scripted videos and corpora with ground
truth), :mod:`.cli` (``python -m cliper_batch.synthetic``).

Outputs:

* :func:`write_image_dataset` – PNG crops + ``labels.parquet``
  (``path`` relative to the parquet's folder, ``label``, ``split`` by held-out
  identity, ``identity``, ``intensity``); :func:`read_image_dataset` resolves
  the paths.
* :func:`write_video_corpus` – H.264 / VP9 videos of one person whose
  expression changes only at segment boundaries, plus ``ground_truth.parquet``
  (one row per segment: ``video_id``, ``video_uri``, ``segment_index``,
  ``start_s``, ``end_s``, ``label``) and ``face_boxes.parquet`` (the drawn face
  box of every frame, for face detection / tracking checks).
"""
from .cli import main, parse_size
from .images import LABEL_COLUMNS, dataset_identities, read_image_dataset, write_image_dataset, write_labels
from .person import (
    ActionUnits,
    Lighting,
    PersonParams,
    Pose,
    SyntheticError,
    expression_units,
    sample_identity,
    sample_pose_lighting,
    vary_shot,
)
from .render import CROP_REGIONS, SUPERSAMPLE, face_to_crop, render_face, render_scene
from .videos import ScriptedVideo, write_expression_video, write_video_corpus

__all__ = [
    "CROP_REGIONS",
    "LABEL_COLUMNS",
    "SUPERSAMPLE",
    "ActionUnits",
    "Lighting",
    "PersonParams",
    "Pose",
    "ScriptedVideo",
    "SyntheticError",
    "dataset_identities",
    "expression_units",
    "face_to_crop",
    "main",
    "parse_size",
    "read_image_dataset",
    "render_face",
    "render_scene",
    "sample_identity",
    "sample_pose_lighting",
    "vary_shot",
    "write_expression_video",
    "write_image_dataset",
    "write_labels",
    "write_video_corpus",
]
