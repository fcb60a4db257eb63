"""The demo model's recipe and its end-to-end score against synthetic ground truth.

Why: the repository ships no pretrained expression model, so the demo and the
end-to-end tests train a small CLIPER from random init on procedurally rendered
faces (:mod:`cliper_batch.synthetic`) with the real two-stage trainer
(:mod:`.train`, Ray Train), then annotate scripted synthetic videos of *other*
people and compare the per-segment labels with ``ground_truth.parquet``.

* :data:`DEMO_RECIPE` / :func:`demo_config` - the measured recipe (docs/training.md);
* :func:`score_annotations` - segment accuracy, coverage and located expression
  changes of an annotate output folder against the corpus ground truth.

CLI (used by ``scripts/build_demo_model.sh``)::

    python -m cliper_batch.training.demo score --output OUT --ground-truth CORPUS/ground_truth.parquet [--min-accuracy 0.95]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .config import TrainConfig

DEMO_ARCH = "Demo-ByobNet-T"  # cliper_batch/model/configs/Demo-ByobNet-T.json: timm test_byobnet, 64 px, embed 128

# The demo recipe (flags of ``python -m cliper_batch.training.train``); see docs/training.md for the measurements.
# CLIPER assumes a pretrained CLIP; the demo has none, so three settings differ from the paper's
# defaults, each measured (docs/training.md): a small CNN tower (a ViT from scratch needs thousands
# of steps), class-shared prompt init + centred anchors (a random text tower maps every prompt to
# nearly the same vector), temperature 0.07 (CLIP's initial value; 0.01 stalls a random-init tower).
DEMO_RECIPE: dict[str, Any] = {
    "model": f"openclip:{DEMO_ARCH}",
    "ctx_init": "class",
    "center_descriptors": True,
    "temperature": 0.07,
    "stage1_epochs": 1,
    "stage1_lr": 1e-3,
    "stage2_epochs": 30,
    "stage2_lr": 3e-3,
    "stage2_weight_decay": 0.05,
    "cosine_t0": 30,
    "adam_eps": 1e-8,
    "batch_size": 64,
    "eval_batch_size": 128,
    "loader_workers": 0,
    "num_frames": 1,
    "augment": "none",
    "cpus_per_worker": 2.0,
    "seed": 0,
}
DEMO_IMAGES_PER_CLASS = 600
DEMO_IMAGE_SEED = 1


class ScoreError(ValueError):
    """Annotation output or ground truth that cannot be scored (the message names the file and the problem)."""


def demo_config(train_data: str, **overrides: Any) -> TrainConfig:
    """The demo recipe as a :class:`TrainConfig` on ``train_data`` (a ``write_image_dataset`` labels.parquet)."""
    values = dict(DEMO_RECIPE, train_data=train_data, name="cliper-demo")
    values.update(overrides)
    return TrainConfig(**values).validate()


@dataclass
class SegmentScore:
    """How annotate output agrees with the scripted truth, segment by segment.

    ``accuracy`` is over the truth segments that got a prediction; ``coverage``
    is the share of truth segments that got one (``--faces detect`` yields no
    row where no face was tracked). A true expression change (label differs
    between segments k-1 and k of a video) is *located* when the predicted
    labels change at a boundary within one segment of it (k-1, k or k+1).
    """

    n_truth: int
    n_annotated: int
    n_correct: int
    changes: int
    changes_located: int
    confusions: dict[str, int] = field(default_factory=dict)  # "truth->predicted": count (errors only)

    @property
    def coverage(self) -> float:
        return self.n_annotated / self.n_truth if self.n_truth else 0.0

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_annotated if self.n_annotated else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "coverage": self.coverage, "accuracy": self.accuracy}


def _segment_predictions(output: str):
    """One predicted label per (video_id, segment_index): the track seen in most frames of the segment."""
    import polars as pl

    from cliper_batch.output import query

    tl = query.scan_timelines(output).collect()
    if tl.height == 0:
        raise ScoreError(f"{output}: the annotation output holds no timeline rows")
    frames = pl.col("frames_with_face").fill_null(0)
    return (
        tl.with_columns(frames.alias("_frames"))
        .sort(["video_id", "segment_index", "_frames", "track_id"], descending=[False, False, True, False])
        .group_by(["video_id", "segment_index"], maintain_order=True)
        .first()
        .select("video_id", "segment_index", pl.col("label").alias("predicted"))
    )


def score_segments(truth, predicted) -> SegmentScore:
    """Score per-segment predictions against truth (both Polars DataFrames).

    ``truth``: ``video_id``, ``segment_index``, ``label``; ``predicted``:
    ``video_id``, ``segment_index``, ``predicted`` (at most one row per segment).
    """
    import polars as pl

    joined = truth.select("video_id", "segment_index", "label").join(
        predicted.select("video_id", "segment_index", "predicted"), on=["video_id", "segment_index"], how="left"
    ).sort("video_id", "segment_index")
    got = joined.filter(pl.col("predicted").is_not_null())
    wrong = got.filter(pl.col("predicted") != pl.col("label"))
    confusions: dict[str, int] = {}
    for r in wrong.iter_rows(named=True):
        key = f"{r['label']}->{r['predicted']}"
        confusions[key] = confusions.get(key, 0) + 1

    changes = located = 0
    for _, g in joined.group_by(["video_id"], maintain_order=True):
        labels = g["label"].to_list()
        pred = g["predicted"].to_list()
        seg = g["segment_index"].to_list()
        pred_changes = {
            seg[i] for i in range(1, len(seg))
            if pred[i] is not None and pred[i - 1] is not None and pred[i] != pred[i - 1]
        }
        for i in range(1, len(seg)):
            if labels[i] != labels[i - 1]:
                changes += 1
                if any(b in pred_changes for b in (seg[i] - 1, seg[i], seg[i] + 1)):
                    located += 1
    return SegmentScore(
        n_truth=truth.height, n_annotated=got.height, n_correct=got.height - wrong.height,
        changes=changes, changes_located=located, confusions=confusions,
    )


def score_annotations(output: str, ground_truth: str) -> SegmentScore:
    """Score the annotate output folder ``output`` against ``ground_truth`` (``write_video_corpus``'s parquet)."""
    import polars as pl

    if not os.path.isfile(ground_truth):
        raise ScoreError(f"{ground_truth}: no such ground-truth file")
    truth = pl.read_parquet(ground_truth)
    missing = {"video_id", "segment_index", "label"} - set(truth.columns)
    if missing:
        raise ScoreError(f"{ground_truth}: missing columns {sorted(missing)}")
    return score_segments(truth, _segment_predictions(output))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cliper_batch.training.demo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="segment accuracy of annotate output against ground_truth.parquet")
    s.add_argument("--output", required=True, help="annotate output folder")
    s.add_argument("--ground-truth", required=True, help="ground_truth.parquet of the synthetic corpus")
    s.add_argument("--min-accuracy", type=float, default=None, help="exit 1 when the accuracy is below this")
    r = sub.add_parser("recipe", help="print the demo recipe as training CLI flags")
    r.add_argument("--train-data", required=True)
    a = p.parse_args(argv)
    if a.cmd == "recipe":
        flags = ["--train-data", a.train_data]
        for k, v in DEMO_RECIPE.items():
            name = k.replace("_", "-")
            if isinstance(v, bool):  # argparse.BooleanOptionalAction flags
                flags.append(f"--{name}" if v else f"--no-{name}")
            else:
                flags += [f"--{name}", str(v)]
        print(" ".join(flags))
        return 0
    try:
        score = score_annotations(a.output, a.ground_truth)
    except ScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(score.as_dict(), indent=2))
    if a.min_accuracy is not None and score.accuracy < a.min_accuracy:
        print(f"accuracy {score.accuracy:.4f} is below {a.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
