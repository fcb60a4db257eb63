"""Expression dataset adapters -> one internal form (:class:`LabeledSet` of :class:`Sample`).

Every adapter reads one public dataset in its distributed on-disk layout (each
docstring spells it out) and maps its labels to the project's class *names*
(never by index):

* :mod:`.base` - the internal form (:class:`Sample`, :class:`LabeledSet`,
  :class:`DatasetError`), the class aliases and the helpers the adapters share;
* one module per dataset: :mod:`.rafdb`, :mod:`.affectnet`, :mod:`.ferplus`,
  :mod:`.fer2013` (images), :mod:`.dfew`, :mod:`.ferv39k`, :mod:`.mafw` (clips)
  and :mod:`.manifest` (generic CSV/Parquet lists of images, clips and videos);
* :mod:`.registry` - dataset specs ``KIND:PATH[?key=value&...]`` and the
  kind -> loader registry behind :func:`load_dataset`.

Import the names from this package (``cliper_batch.training.datasets``); the
modules import only :mod:`.base` (the registry imports the adapters).
"""
from __future__ import annotations

from .affectnet import AFFECTNET_DROPPED, AFFECTNET_LABELS, load_affectnet
from .base import (
    CLASS_ALIASES,
    EXTRA_CLASSES,
    IMAGE_EXTENSIONS,
    KNOWN_CLASSES,
    SAMPLE_KINDS,
    DatasetError,
    LabeledSet,
    Sample,
    canonical_name,
    classes_with,
    is_frame_file,
    remap_to,
)
from .dfew import DFEW_LABELS, load_dfew
from .fer2013 import FER2013_SPLITS, is_fer2013_copy, load_fer2013
from .ferplus import FERPLUS_SPLITS, FERPLUS_VOTE_COLUMNS, ferplus_label, load_ferplus
from .ferv39k import load_ferv39k
from .mafw import MAFW_ORDER, load_mafw
from .manifest import load_manifest
from .rafdb import RAFDB_LABELS, load_rafdb
from .registry import DATASET_KINDS, DatasetSpec, load_dataset, parse_dataset_spec

__all__ = [
    "AFFECTNET_DROPPED", "AFFECTNET_LABELS", "CLASS_ALIASES", "DATASET_KINDS", "DFEW_LABELS", "EXTRA_CLASSES",
    "FER2013_SPLITS", "FERPLUS_SPLITS", "FERPLUS_VOTE_COLUMNS", "IMAGE_EXTENSIONS", "KNOWN_CLASSES", "MAFW_ORDER",
    "RAFDB_LABELS", "SAMPLE_KINDS", "DatasetError", "DatasetSpec", "LabeledSet", "Sample", "canonical_name",
    "classes_with", "ferplus_label", "is_fer2013_copy", "is_frame_file", "load_affectnet", "load_dataset", "load_dfew",
    "load_fer2013", "load_ferplus", "load_ferv39k", "load_mafw", "load_manifest", "load_rafdb", "parse_dataset_spec",
    "remap_to",
]
