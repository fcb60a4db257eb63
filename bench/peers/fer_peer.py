"""fer (PyPI ``fer``) on a list of face-crop images; runs in bench/.fer-venv (bench/setup_fer.sh).

    bench/.fer-venv/bin/python bench/peers/fer_peer.py PATHS.txt OUT.json [--mode crop|box]

fer's classifier is its mini-Xception ``emotion_model_quantized.tflite`` (fer's
default, ``use_tflite=True``): 64x64 grey in, softmax over angry, disgust, fear,
happy, sad, surprise, neutral out, one face per invoke (the .tflite input is
fixed at batch 1; fer loops over faces the same way).

``--mode crop`` (default): the image *is* the face crop, and it goes through
exactly the steps ``FER.detect_emotions`` applies to a face crop once it has one:
``fer.utils.load_image`` (OpenCV, BGR), ``cv2.cvtColor(BGR2GRAY)``,
``cv2.resize`` to the classifier's target size (64x64, OpenCV's default
bilinear), ``float32 / 255``, ``(x - 0.5) * 2``, then ``FER._classify_emotions``.
No detector runs.

``--mode box``: fer's public API with the face box given, i.e.
``FER().detect_emotions(img, face_rectangles=[(0, 0, w, h)])``: fer then also
pads the image by 40 px (the mean grey of its bottom two rows) and widens the
box by its default ``offsets=(10, 10)`` before resizing, so the classifier sees
the 48 px face inside a 68 px frame. Scores are taken from ``_classify_emotions``
itself (``detect_emotions`` rounds them to 2 decimals).
"""
from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_io  # noqa: E402


def main() -> int:
    paths_file, out, rest = peer_io.args()
    mode = rest[rest.index("--mode") + 1] if "--mode" in rest else "crop"
    if mode not in ("crop", "box"):
        raise SystemExit(f"--mode must be crop or box, got {mode!r}")
    paths = peer_io.read_paths(paths_file)

    import cv2
    import numpy as np
    from importlib.metadata import version

    from fer.fer import FER
    from fer.utils import load_image

    logging.getLogger("fer").setLevel(logging.WARNING)
    fer = FER()  # builds the Haar cascade too; it is never run (detect_emotions gets the box)
    labels = fer._get_labels()
    classes = [labels[i] for i in range(len(labels))]
    size = fer._FER__emotion_target_size  # (64, 64) with the tflite model
    classify = fer._classify_emotions
    classify(np.zeros((1, *size), dtype=np.float32))  # warm-up (interpreter, XNNPACK delegate)

    if mode == "crop":
        def prepare() -> np.ndarray:
            faces = [cv2.resize(cv2.cvtColor(load_image(p), cv2.COLOR_BGR2GRAY), size) for p in paths]
            faces = np.array(faces, dtype="float32") / 255.0
            return (faces - 0.5) * 2.0

        faces, prep_s, _ = peer_io.timed(prepare)
        scores, clf_s, clf_cpu = peer_io.timed(lambda: classify(faces))
        notes = "image = face crop; fer's crop steps (gray, cv2.resize 64x64, (x/255-0.5)*2), then FER._classify_emotions"
    else:
        seen: list = []
        clf = [0.0, 0.0]

        def recording(gray_faces):
            out, wall, cpu = peer_io.timed(lambda: classify(gray_faces))
            clf[0] += wall
            clf[1] += cpu
            seen.extend(out)
            return out

        fer._classify_emotions = recording

        def run() -> None:
            for p in paths:
                img = load_image(p)
                h, w = img.shape[:2]
                if len(fer.detect_emotions(img, face_rectangles=[(0, 0, w, h)])) != 1:
                    raise SystemExit(f"fer returned no face for {p}")

        _, total_s, _ = peer_io.timed(run)
        scores, clf_s, clf_cpu, prep_s = np.array(seen), clf[0], clf[1], total_s - clf[0]
        notes = "FER().detect_emotions(img, face_rectangles=[(0, 0, w, h)]): 40 px mean-grey pad, offsets (10, 10)"
    if len(scores) != len(paths):
        raise SystemExit(f"fer scored {len(scores)} of {len(paths)} images")
    peer_io.write_result(out, {
        "peer": "fer", "version": version("fer"), "mode": mode, "classes": classes,
        "scores": peer_io.rows(scores), "probabilities": True, "score_kind": "softmax",
        "preprocess_s": prep_s, "classifier_s": clf_s, "classifier_cpu_s": clf_cpu, "batch": 1, "input": f"{size[0]}x{size[1]} grey",
        "notes": notes,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
