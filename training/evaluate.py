"""Evaluate a CLIPER checkpoint on a labelled image set, fit its calibration, and write the calibrated checkpoint.

``python -m cliper_batch.training.evaluate --model M.safetensors --data fer2013:DIR``

* scores every image of ``--calibration-split`` and ``--test-split`` through the
  engine's scoring path (:func:`cliper_batch.model.cliper.score_clips`: the
  model's own input adapter, descriptor rule and mean over K) on the crop the
  engine takes with ``--faces none`` (the centre square at short side = model
  input; a 48x48 FER2013 image is used as it is);
* fits the softmax temperature ``T`` of the class logits on the calibration split
  (minimum negative log-likelihood; model selection and calibration never see
  the test split);
* reports on the test split: accuracy (WAR), mean per-class recall (UAR), the
  confusion matrix, and the expected calibration error (ECE, 15 equal-width
  confidence bins) before and after calibration, with the reliability bins;
* ``--flip auto`` (default) turns on test-time flip (:func:`cliper_batch.model.cliper.encode_images`)
  when it raises accuracy on the calibration split (the test split is never used to choose);
* ``--write OUT.safetensors``: the same weights with ``calibration = T`` (and
  ``--face-margin``, the crop tightness measured by :mod:`.face_framing`) stored
  in the checkpoint, the report in its ``extra`` metadata; ``--plot`` draws the
  reliability diagram (SVG).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .datasets import LabeledSet, load_dataset
from .metrics import confusion_matrix, scores_from_confusion

ECE_BINS = 15


@dataclass
class SplitScores:
    """Class logits (before calibration) and labels of one split."""

    logits: torch.Tensor  # [N, C] float32
    labels: torch.Tensor  # [N] int64


def load_crops(labeled: LabeledSet, size: int) -> torch.Tensor:
    """Every image of ``labeled`` as the engine's ``--faces none`` crop: uint8 ``[N, size, size, 3]``."""
    from PIL import Image

    from cliper_batch.crops.reference import center_crop_plan

    out = np.empty((len(labeled.samples), size, size, 3), dtype=np.uint8)
    for i, s in enumerate(labeled.samples):
        with Image.open(s.path) as im:
            im = im.convert("RGB")
            (w, h), (x0, y0) = center_crop_plan(im.width, im.height, size)
            if (w, h) != im.size:
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            out[i] = np.asarray(im, dtype=np.uint8)[y0:y0 + size, x0:x0 + size]
    return torch.from_numpy(out)


def score_split(model, labeled: LabeledSet, batch: int = 512) -> SplitScores:
    from cliper_batch.model.cliper import score_clips

    index = {c: i for i, c in enumerate(model.classes)}
    crops = load_crops(labeled, model.image_size)
    parts = []
    for i in range(0, crops.shape[0], batch):
        parts.append(score_clips(model, crops[i:i + batch, None]).class_logits.float())
    labels = torch.tensor([index[s.label] for s in labeled.samples], dtype=torch.int64)
    return SplitScores(torch.cat(parts), labels)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits / temperature, labels))


def fit_temperature(scores: SplitScores, lo: float = 0.05, hi: float = 20.0) -> float:
    """The softmax temperature with the least NLL on ``scores`` (golden-section search on log T)."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(scores.logits, scores.labels, math.exp(c)), nll(scores.logits, scores.labels, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(scores.logits, scores.labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(scores.logits, scores.labels, math.exp(d))
    return round(math.exp((a + b) / 2), 4)


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error over ``bins`` equal-width confidence bins, and the bins (count, confidence, accuracy)."""
    conf, pred = probs.max(dim=-1)
    hit = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece, rows = 0.0, []
    for k in range(bins):
        upper = conf <= edges[k + 1] if k == bins - 1 else conf < edges[k + 1]
        mask = (conf >= edges[k]) & upper
        n = int(mask.sum())
        if n:
            c, a = float(conf[mask].mean()), float(hit[mask].mean())
            ece += n / len(labels) * abs(a - c)
            rows.append({"lo": round(float(edges[k]), 4), "hi": round(float(edges[k + 1]), 4), "n": n,
                         "confidence": round(c, 4), "accuracy": round(a, 4)})
    return round(ece, 4), rows


def report(model, calib: SplitScores, test: SplitScores, temperature: float) -> dict[str, Any]:
    n = len(model.classes)
    cm = confusion_matrix(test.logits.argmax(-1), test.labels, n)
    s = scores_from_confusion(cm)
    ece_raw, _ = reliability((test.logits / model.calibration).softmax(-1), test.labels)
    ece_cal, bins = reliability((test.logits / temperature).softmax(-1), test.labels)
    return {
        "classes": list(model.classes),
        "test_images": int(test.labels.numel()),
        "calibration_images": int(calib.labels.numel()),
        "accuracy": round(s.war, 4),
        "mean_class_recall": round(s.uar, 4),
        "per_class_recall": {c: round(float(r), 4) for c, r in zip(model.classes, s.per_class_recall)},
        "confusion": [[int(v) for v in row] for row in cm.tolist()],  # rows: true class, columns: predicted
        "calibration_accuracy": round(float((calib.logits.argmax(-1) == calib.labels).float().mean()), 4),
        "temperature": temperature,
        "nll_test_before": round(nll(test.logits, test.labels, model.calibration), 4),
        "nll_test_after": round(nll(test.logits, test.labels, temperature), 4),
        "ece_before": ece_raw,
        "ece_after": ece_cal,
        "ece_bins": ECE_BINS,
        "reliability": bins,
    }


def plot_reliability(rep: dict[str, Any], path: str) -> None:
    """The reliability diagram (accuracy vs confidence per bin, the diagonal = perfect calibration) as SVG."""
    import altair as alt
    import polars as pl
    import vl_convert as vlc

    df = pl.DataFrame(rep["reliability"])
    bars = alt.Chart(df).mark_bar(opacity=0.8).encode(
        x=alt.X("lo:Q", bin="binned", title="confidence (calibrated)", scale=alt.Scale(domain=[0, 1])),
        x2="hi:Q", y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        tooltip=["n", "confidence", "accuracy"],
    )
    diag = alt.Chart(pl.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(color="black", strokeDash=[4, 4]).encode(
        x="x:Q", y="y:Q"
    )
    chart = (bars + diag).properties(
        width=320, height=320,
        title=f"ECE {rep['ece_after']:.3f} (before calibration {rep['ece_before']:.3f}), T = {rep['temperature']}",
    )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(vlc.vegalite_to_svg(chart.to_json()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cliper_batch.training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint (.safetensors) or model spec")
    p.add_argument("--data", required=True, help="dataset spec, e.g. fer2013:/data/fer2013")
    p.add_argument("--calibration-split", default="validation", help="split the temperature is fitted on")
    p.add_argument("--test-split", default="test", help="split the report is computed on")
    p.add_argument("--no-calibrate", action="store_true", help="report with the checkpoint's own calibration")
    p.add_argument("--face-margin", type=float, default=None, help="store this crop margin in --write's checkpoint")
    p.add_argument("--grey", action=argparse.BooleanOptionalAction, default=None,
                   help="the model sees luma only (default: as the checkpoint says); stored in --write's checkpoint")
    p.add_argument("--flip", choices=("off", "on", "auto"), default="auto",
                   help="test-time flip: off, on, or auto = on when it raises accuracy on the calibration split")
    p.add_argument("--write", default=None, help="write the calibrated checkpoint here (.safetensors)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--plot", default=None, help="write the reliability diagram here (.svg)")
    a = p.parse_args(argv)

    from cliper_batch.model.checkpoint import read_checkpoint_header, save_checkpoint
    from cliper_batch.model.factory import load_model

    loaded = load_model(a.model)
    model = loaded.model.eval()
    model.set_preprocessing(grey=a.grey, face_margin=a.face_margin)  # measured as it will ship
    calib_set = load_dataset(a.data, a.calibration_split)
    flip_choice: dict[str, float] = {}
    if a.flip == "auto":
        for flip in (False, True):
            model.flip = flip
            s = score_split(model, calib_set)
            flip_choice[str(flip).lower()] = round(float((s.logits.argmax(-1) == s.labels).float().mean()), 4)
        model.flip = flip_choice["true"] > flip_choice["false"]
    else:
        model.flip = a.flip == "on"
    calib = score_split(model, calib_set)
    test = score_split(model, load_dataset(a.data, a.test_split))
    temperature = model.calibration if a.no_calibrate else fit_temperature(calib)
    rep = report(model, calib, test, temperature)
    rep.update({"data": a.data, "calibration_split": a.calibration_split, "test_split": a.test_split,
                "source_model_id": loaded.model_id, "flip": model.flip,
                "flip_calibration_accuracy": flip_choice or None})
    if a.write:
        model.calibration = float(temperature)
        extra = dict(read_checkpoint_header(loaded.spec).config.get("extra") or {}) if loaded.kind == "checkpoint" else {}
        extra["evaluation"] = {k: v for k, v in rep.items() if k != "reliability"}
        save_checkpoint(model, a.write, extra=extra)
        rep["model_id"] = read_checkpoint_header(a.write).model_id
    if a.plot:
        plot_reliability(rep, a.plot)
    text = json.dumps(rep, indent=2)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
