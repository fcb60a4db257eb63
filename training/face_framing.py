"""How a face dataset's crops relate to the engine's detector crops, measured (``python -m cliper_batch.training.face_framing``).

The engine crops a face as the square around its MTCNN box grown by ``margin``
(the box's longer side times ``1 + 2 * margin``, :func:`cliper_batch.crops.reference.square_box_with_margin`).
A model trained on a dataset's own crops (FER2013: 48x48, tight, forehead to chin)
sees the same framing in the engine only if the margin matches. This tool

* ``measure``: puts each dataset image, enlarged ``--upscale`` times, in the middle
  of a larger frame (edges replicated, so the detector sees no artificial border),
  runs the engine's detector on it and reports the detection rate and the median
  margin ``(image side / box side - 1) / 2`` that reproduces the dataset's crop, plus
  the median offset of the box centre from the image centre (which a margin cannot
  express);
* ``evaluate``: with a model, scores the detector crops of the same frames through
  the engine's crop function (:func:`cliper_batch.crops.reference.crop_resize`) and the
  model's scoring rule at several margins, next to the dataset's own crops, so the
  effect of the framing on accuracy is a number (docs/models.md).

Both use the engine's code (detector, crop, scoring); only the frames are made here.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from .datasets import LabeledSet, load_dataset


@dataclass
class FramedFace:
    """One dataset image placed in a frame, with what the detector found there."""

    frame: np.ndarray  # [H, W, 3] uint8
    label: str
    image_box: tuple[float, float, float, float]  # where the dataset image lies in the frame (x0, y0, x1, y1)
    face_box: tuple[float, float, float, float] | None  # the detector's best box near the centre, or None


@dataclass
class FramingReport:
    images: int
    detected: int
    median_margin: float | None
    margin_iqr: tuple[float, float] | None
    median_center_offset: tuple[float, float] | None  # (dx, dy) of the box centre, in box sides
    accuracy: dict[str, float] = field(default_factory=dict)  # "dataset crop" / "margin=..." -> accuracy


def stratified(labeled: LabeledSet, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` (path, label) pairs, the same share of every class, seeded."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    for s in labeled.samples:
        by_class.setdefault(s.label, []).append(s.path)
    total = len(labeled.samples)
    out: list[tuple[str, str]] = []
    for label, paths in sorted(by_class.items()):
        k = max(1, round(n * len(paths) / total))
        for i in rng.permutation(len(paths))[:k]:
            out.append((paths[int(i)], label))
    return out


def frame_image(path: str, upscale: int, pad: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The image enlarged ``upscale`` times (bicubic) in a frame ``1 + 2 * pad`` times its size, edges replicated."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        big = im.resize((im.width * upscale, im.height * upscale), Image.Resampling.BICUBIC)
    a = np.asarray(big, dtype=np.uint8)
    p = int(round(max(a.shape[:2]) * pad))
    framed = np.pad(a, ((p, p), (p, p), (0, 0)), mode="edge")
    return framed, (float(p), float(p), float(p + a.shape[1]), float(p + a.shape[0]))


def detect_faces(samples: Sequence[tuple[str, str]], upscale: int = 4, pad: float = 0.5) -> list[FramedFace]:
    from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector

    detector = FaceDetector("cpu")
    out = []
    for path, label in samples:
        frame, ibox = frame_image(path, upscale, pad)
        cx, cy = (ibox[0] + ibox[2]) / 2, (ibox[1] + ibox[3]) / 2
        found = detector.detect(frame[None])[0]
        best = None
        for d in found:  # the face of the dataset image: the detection whose centre is nearest the image centre
            x0, y0, x1, y1 = d.box
            dist = abs((x0 + x1) / 2 - cx) + abs((y0 + y1) / 2 - cy)
            if (x0 + x1) / 2 > ibox[0] and (x0 + x1) / 2 < ibox[2] and (best is None or dist < best[0]):
                best = (dist, d.box)
        out.append(FramedFace(frame, label, ibox, None if best is None else tuple(best[1])))
    return out


def margin_of(face: FramedFace) -> float:
    """The margin that makes the engine's square crop around ``face_box`` as large as the dataset image."""
    x0, y0, x1, y1 = face.face_box  # type: ignore[misc]
    side = face.image_box[2] - face.image_box[0]
    return (side / max(x1 - x0, y1 - y0) - 1.0) / 2.0


def measure(faces: Sequence[FramedFace]) -> FramingReport:
    found = [f for f in faces if f.face_box is not None]
    if not found:
        return FramingReport(len(faces), 0, None, None, None)
    margins = [margin_of(f) for f in found]
    q = statistics.quantiles(margins, n=4) if len(margins) > 1 else [margins[0]] * 3
    offsets = []
    for f in found:
        x0, y0, x1, y1 = f.face_box  # type: ignore[misc]
        side = max(x1 - x0, y1 - y0)
        ix, iy = (f.image_box[0] + f.image_box[2]) / 2, (f.image_box[1] + f.image_box[3]) / 2
        offsets.append((((x0 + x1) / 2 - ix) / side, ((y0 + y1) / 2 - iy) / side))
    return FramingReport(
        images=len(faces), detected=len(found), median_margin=round(statistics.median(margins), 4),
        margin_iqr=(round(q[0], 4), round(q[2], 4)),
        median_center_offset=(round(statistics.median(o[0] for o in offsets), 4),
                              round(statistics.median(o[1] for o in offsets), 4)),
    )


def _accuracy(model, crops: torch.Tensor, labels: Sequence[str]) -> float:
    from cliper_batch.model.cliper import score_clips

    hits = 0
    for i in range(0, len(labels), 256):
        scores = score_clips(model, crops[i:i + 256, None])
        hits += sum(model.classes[int(k)] == y for k, y in zip(scores.label_index, labels[i:i + 256]))
    return hits / max(1, len(labels))


def evaluate(model, faces: Sequence[FramedFace], margins: Sequence[float]) -> dict[str, float]:
    """Accuracy on the dataset's own crops (the framed image's square) and on detector crops at each margin."""
    from cliper_batch.crops.reference import boxes_tensor, crop_resize, square_box_with_margin

    found = [f for f in faces if f.face_box is not None]
    labels = [f.label for f in found]
    s = model.image_size
    out: dict[str, float] = {}

    def crops_for(boxes: list[tuple[float, float, float, float]]) -> torch.Tensor:
        parts = []
        for f, b in zip(found, boxes):
            frame = torch.from_numpy(f.frame)[None]
            parts.append(crop_resize(frame, boxes_tensor([(0, b)]), s))
        return torch.cat(parts)

    out["dataset crop"] = round(_accuracy(model, crops_for([f.image_box for f in found]), labels), 4)
    for m in margins:
        boxes = []
        for f in found:
            h, w = f.frame.shape[:2]
            boxes.append(tuple(square_box_with_margin(f.face_box, m, w, h)))  # type: ignore[arg-type]
        out[f"margin={m:g}"] = round(_accuracy(model, crops_for(boxes), labels), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cliper_batch.training.face_framing", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset spec, e.g. fer2013:/data/fer2013")
    p.add_argument("--split", default="validation")
    p.add_argument("--n", type=int, default=400, help="images (stratified by class)")
    p.add_argument("--upscale", type=int, default=4, help="enlarge each image this many times before framing it")
    p.add_argument("--model", default=None, help="also evaluate this model's accuracy at --margins")
    p.add_argument("--margins", default="-0.1,-0.05,0,0.05,0.1,0.2", help="margins to evaluate (comma-separated)")
    p.add_argument("--json", default=None, help="write the report here")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    faces = detect_faces(stratified(load_dataset(a.data, a.split), a.n), a.upscale)
    report = measure(faces)
    if a.model:
        from cliper_batch.model.factory import load_model

        model = load_model(a.model).model.eval()
        report.accuracy = evaluate(model, faces, [float(x) for x in a.margins.split(",") if x.strip()])
    text = json.dumps(asdict(report), indent=2)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
