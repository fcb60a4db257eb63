"""Our real-face model and peer FER2013 classifiers, side by side, on the same FER2013 images.

    bench/setup_fer.sh && bench/setup_pyemotion.sh      # once: each peer in its own venv
    .venv/bin/python -m bench.fer2013_peers --data /work/data/fer2013 --model builtin:fer2013 \\
        [--split test] [--limit N] [--json OUT.json] [--peers fer,fer-box,pyemotion]

Images: every original image of the split, as :func:`cliper_batch.training.datasets.load_dataset`
(``fer2013:DIR``) lists them (augmented ``*.jpgN.jpg`` copies left out; PrivateTest =
3,589 images), or ``--limit N`` of them (a fixed random draw, seed 0). They are
48x48 grey face crops, so nobody runs a face detector.

Systems:

* CLIPER: in this process, through the engine's scoring path
  (:func:`cliper_batch.training.evaluate.load_crops` then ``score_split``), softmax of
  the class logits at the checkpoint's own calibration temperature.
* fer (PyPI ``fer``, bench/.fer-venv), two rows: ``crop`` = the image is the face
  crop, fer's own crop steps and classifier; ``box`` = fer's public
  ``detect_emotions`` told that the face box is the whole image (fer then pads and
  widens the box). See bench/peers/fer_peer.py.
* PyEmotion 1.0.0 (bench/.pyemotion-venv): its ``DetectFace`` transform and network
  on the crop. Its scores are not probabilities (per-class sigmoid), so it has no
  calibration error. See bench/peers/pyemotion_peer.py.

Each peer runs in its own venv through ``bench/peers/<peer>_peer.py`` (image list
in, JSON scores out). Class names are mapped by name (fer's ``angry`` and
PyEmotion's ``Angry`` are our ``anger``; :data:`CLASS_ALIASES`).

Reported per system: accuracy, mean per-class recall, per-class recall, ECE (15
bins, :func:`cliper_batch.training.evaluate.reliability`; only for systems whose
scores are probabilities), images/s = images / wall seconds of the classifier calls
only (no decoding or resizing; one process; after a warm-up call) and images/CPU-s
(the same over the process's CPU seconds, all threads: steadier than wall time on a
loaded machine); and the top-1 agreement between every pair of systems.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Sequence
from unittest import mock

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from cliper_batch.training import datasets as _datasets
from bench.peers.peer_io import timed
from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.training.metrics import confusion_matrix, scores_from_confusion

canonical_name = _datasets.canonical_name
load_dataset = _datasets.load_dataset


@dataclass(frozen=True)
class Peer:
    """A peer classifier: the script that runs it and the venv it runs in."""

    key: str
    label: str  # {version}: the version the peer script reports
    script: str  # relative to ROOT
    venv: str  # relative to ROOT
    setup: str  # the script that makes the venv
    args: tuple[str, ...] = ()

    def python(self, override: str | None = None) -> str:
        return override or os.path.join(ROOT, self.venv, "bin", "python")


PEERS: dict[str, Peer] = {
    p.key: p
    for p in (
        Peer("fer", "fer {version} (crop)", "bench/peers/fer_peer.py", "bench/.fer-venv", "bench/setup_fer.sh", ("--mode", "crop")),
        Peer("fer-box", "fer {version} (detect_emotions, box = image)", "bench/peers/fer_peer.py", "bench/.fer-venv",
             "bench/setup_fer.sh", ("--mode", "box")),
        Peer("pyemotion", "PyEmotion {version}", "bench/peers/pyemotion_peer.py", "bench/.pyemotion-venv", "bench/setup_pyemotion.sh"),
    )
}


@dataclass
class SystemScores:
    """One system's scores on the images, columns in ``classes`` (canonical names) order."""

    name: str
    classes: tuple[str, ...]
    scores: np.ndarray  # [N, C]
    probabilities: bool  # rows are a probability distribution: ECE is defined
    classifier_s: float
    classifier_cpu_s: float | None = None
    preprocess_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def predictions(self) -> list[str]:
        return [self.classes[i] for i in np.asarray(self.scores).argmax(axis=1)]


def canonical_classes(native: Sequence[str], where: str) -> tuple[str, ...]:
    """A system's own class names as ours (``angry`` -> ``anger``, ``Happy`` -> ``happy``); must stay distinct."""
    out = tuple(canonical_name(c, where) for c in native)
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: classes {list(native)} map to duplicate names {list(out)}")
    return out


def from_peer_json(name: str, result: dict[str, Any]) -> SystemScores:
    """A peer script's output (bench/peers/peer_io.py) as :class:`SystemScores`."""
    taken = ("scores", "classes", "probabilities", "classifier_s", "classifier_cpu_s", "preprocess_s")
    info = {k: v for k, v in result.items() if k not in taken}
    info["native_classes"] = list(result["classes"])
    return SystemScores(
        name=name,
        classes=canonical_classes(result["classes"], name),
        scores=np.asarray(result["scores"], dtype=np.float64),
        probabilities=bool(result["probabilities"]),
        classifier_s=float(result["classifier_s"]),
        classifier_cpu_s=result.get("classifier_cpu_s"),
        preprocess_s=result.get("preprocess_s"),
        info=info,
    )


def system_row(system: SystemScores, truth: Sequence[str], order: Sequence[str] = CANONICAL_CLASSES) -> dict[str, Any]:
    """Accuracy, mean per-class recall (over ``order``'s classes that have images), per-class recall, ECE, images/s."""
    from cliper_batch.training.evaluate import reliability

    n = len(truth)
    if system.scores.shape[0] != n:
        raise ValueError(f"{system.name}: {system.scores.shape[0]} score rows for {n} images")
    unknown = sorted(set(truth) - set(order))
    if unknown:
        raise ValueError(f"true labels {unknown} are not in the class order {list(order)}")
    pred = system.predictions()
    names = list(order) + sorted(set(pred) - set(order))  # a system may predict a class the data has not
    index = {c: i for i, c in enumerate(names)}
    cm = confusion_matrix(torch.tensor([index[p] for p in pred]), torch.tensor([index[t] for t in truth]), len(names))
    s = scores_from_confusion(cm)
    row: dict[str, Any] = {
        "system": system.name,
        "images": n,
        "accuracy": round(s.war, 4),
        "mean_class_recall": round(s.uar, 4),
        "per_class_recall": {c: (None if r is None else round(r, 4)) for c, r in zip(names, s.per_class_recall) if c in order},
        "confusion_classes": names,
        "confusion": s.confusion,  # rows: true class, columns: predicted
        "ece": None,
        "probabilities": system.probabilities,
        "classifier_s": round(system.classifier_s, 4),
        "images_per_s": round(n / system.classifier_s, 1) if system.classifier_s > 0 else None,
        "classifier_cpu_s": None if system.classifier_cpu_s is None else round(float(system.classifier_cpu_s), 4),
        "images_per_cpu_s": round(n / system.classifier_cpu_s, 1) if system.classifier_cpu_s else None,
        "preprocess_s": None if system.preprocess_s is None else round(float(system.preprocess_s), 4),
        **system.info,
    }
    if system.probabilities:
        col = {c: i for i, c in enumerate(system.classes)}
        labels = torch.tensor([col.get(t, -1) for t in truth])  # -1: a class the system lacks, never a hit
        row["ece"], row["reliability"] = reliability(torch.as_tensor(system.scores, dtype=torch.float64).float(), labels)
    return row


def agreement(systems: Sequence[SystemScores]) -> dict[str, dict[str, float]]:
    """Fraction of images on which two systems predict the same class, for every pair (symmetric, 1 on the diagonal)."""
    preds = {s.name: s.predictions() for s in systems}
    out: dict[str, dict[str, float]] = {}
    for a, pa in preds.items():
        out[a] = {}
        for b, pb in preds.items():
            if len(pa) != len(pb):
                raise ValueError(f"{a} and {b} scored different numbers of images")
            out[a][b] = round(sum(x == y for x, y in zip(pa, pb)) / len(pa), 4) if pa else 0.0
    return out


def _num(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_table(rows: Sequence[dict[str, Any]], agree: dict[str, dict[str, float]], order: Sequence[str] = CANONICAL_CLASSES) -> str:
    """The result as Markdown: one table of scores, one of pairwise agreement."""
    head = ["system", "accuracy", "mean class recall", *order, "ECE", "images/s", "images/CPU-s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rec = [_num(r["per_class_recall"].get(c)) for c in order]
        ips = ["n/a" if r.get(k) is None else f"{r[k]:,.0f}" for k in ("images_per_s", "images_per_cpu_s")]
        lines.append("| " + " | ".join([r["system"], _num(r["accuracy"]), _num(r["mean_class_recall"]), *rec,
                                         _num(r["ece"]), *ips]) + " |")
    names = list(agree)
    lines += ["", "| top-1 agreement | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for a in names:
        lines.append(f"| {a} | " + " | ".join(_num(agree[a][b]) for b in names) + " |")
    return "\n".join(lines)


def select(labeled, limit: int | None, seed: int = 0):
    """``limit`` images of ``labeled`` drawn at random (fixed seed), in their listed order; all when ``limit`` is None."""
    if limit is None or limit >= len(labeled.samples):
        return labeled
    if limit < 1:
        raise ValueError("--limit must be >= 1")
    keep = sorted(random.Random(seed).sample(range(len(labeled.samples)), limit))
    return replace(labeled, samples=[labeled.samples[i] for i in keep])


def run_peer(peer: Peer, paths: Sequence[str], workdir: str, python: str | None = None) -> SystemScores:
    """Run ``peer``'s script in its venv on ``paths`` and read its scores."""
    exe = peer.python(python)
    if not os.path.exists(exe):
        raise SystemExit(f"{exe} not found: run {peer.setup} first (or leave {peer.key} out of --peers)")
    list_file = os.path.join(workdir, "paths.txt")
    with open(list_file, "w", encoding="utf-8") as fh:
        fh.write("".join(p + "\n" for p in paths))
    out = os.path.join(workdir, f"{peer.key}.json")
    p = subprocess.run([exe, os.path.join(ROOT, peer.script), list_file, out, *peer.args], capture_output=True, text=True,
                       cwd=workdir)
    if p.returncode != 0:
        raise SystemExit(f"{peer.key} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    with open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    return from_peer_json(peer.label.format(version=result.get("version", "?")), result)


def run_cliper(spec: str, labeled, batch: int = 512) -> SystemScores:
    """Our model in this process: ``load_crops`` (timed as preprocessing), then ``score_split`` on those crops (timed)."""
    from cliper_batch.model.factory import load_model
    from cliper_batch.training import evaluate

    loaded = load_model(spec)
    model = loaded.model.eval()
    crops, prep_s, _ = timed(lambda: evaluate.load_crops(labeled, model.image_size))
    # score_split decodes through load_crops; hand it the crops decoded above so that only the classifier is timed
    with mock.patch.object(evaluate, "load_crops", lambda subset, _size: crops[:len(subset.samples)]):
        evaluate.score_split(model, replace(labeled, samples=labeled.samples[:min(batch, 64)]), batch)  # warm-up
        scores, clf_s, clf_cpu = timed(lambda: evaluate.score_split(model, labeled, batch))
    probs = (scores.logits / model.calibration).softmax(-1)
    return SystemScores(
        name=f"CLIPER ({os.path.basename(loaded.spec)})",
        classes=canonical_classes(model.classes, "CLIPER"),
        scores=probs.double().numpy(),
        probabilities=True,
        classifier_s=clf_s,
        classifier_cpu_s=clf_cpu,
        preprocess_s=prep_s,
        info={"model": loaded.spec, "model_id": loaded.model_id, "calibration_temperature": float(model.calibration),
              "flip": getattr(model, "flip", None), "batch": batch, "input": f"{model.image_size}x{model.image_size}",
              "torch_threads": torch.get_num_threads(), "score_kind": "softmax(logits / checkpoint temperature)"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fer2013_peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="FER2013 class-folder root (train/validation/test/<class>/*.jpg)")
    p.add_argument("--model", default="builtin:fer2013", help="our checkpoint (.safetensors) or model spec")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="score N images (fixed random draw) instead of the whole split")
    p.add_argument("--peers", default="fer,fer-box,pyemotion", help=f"comma list of {', '.join(PEERS)}; empty: none")
    p.add_argument("--fer-python", default=None, help="fer's venv python (default bench/.fer-venv/bin/python)")
    p.add_argument("--pyemotion-python", default=None, help="PyEmotion's venv python (default bench/.pyemotion-venv/bin/python)")
    p.add_argument("--batch", type=int, default=512, help="our model's batch size")
    p.add_argument("--json", default=None, help="write the full result here")
    a = p.parse_args(argv)
    keys = [k.strip() for k in a.peers.split(",") if k.strip()]
    bad = [k for k in keys if k not in PEERS]
    if bad:
        p.error(f"unknown peers {bad}; choose from {', '.join(PEERS)}")

    labeled = select(load_dataset(f"fer2013:{a.data}", a.split), a.limit)
    truth = [s.label for s in labeled.samples]
    paths = [os.path.abspath(s.path) for s in labeled.samples]
    print(f"{len(paths)} images of fer2013 {a.split} ({a.data})", file=sys.stderr)
    systems = [run_cliper(a.model, labeled, a.batch)]
    overrides = {"fer": a.fer_python, "fer-box": a.fer_python, "pyemotion": a.pyemotion_python}
    with tempfile.TemporaryDirectory(prefix="fer2013peers") as tmp:
        for k in keys:
            print(f"running {k} ...", file=sys.stderr)
            systems.append(run_peer(PEERS[k], paths, tmp, overrides[k]))
    rows = [system_row(s, truth) for s in systems]
    agree = agreement(systems)
    table = format_table(rows, agree)
    print(table)
    if a.json:
        from bench.common import machine

        result = {"data": a.data, "split": a.split, "images": len(paths), "limit": a.limit, "classes": list(CANONICAL_CLASSES),
                  "class_counts": {c: truth.count(c) for c in CANONICAL_CLASSES}, "systems": rows, "agreement": agree,
                  "table": table, "command": [os.path.basename(sys.executable), "-m", "bench.fer2013_peers", *(argv or sys.argv[1:])],
                  **machine()}
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
