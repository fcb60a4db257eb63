"""PyEmotion 1.0.0 (PyPI ``PyEmotion``) on a list of face-crop images; runs in bench/.pyemotion-venv.

    bench/.pyemotion-venv/bin/python bench/peers/pyemotion_peer.py PATHS.txt OUT.json [--batch 256]

PyEmotion's ``DetectFace(device="cpu")`` is built as its README says (its own
``NetworkV2`` with the weights of ``PyEmotion/model/main_model.pkl``, a pickle
that is loaded only here, in PyEmotion's venv; its own ``transform``). For each
face box, ``DetectFace.predict_emotion`` reads the frame with OpenCV (BGR),
converts it to grey (``cv.cvtColor(frame, cv.COLOR_BGR2GRAY)``), crops the box and
calls ``_predict``: ``self.transform`` (ToPILImage, Resize((48, 48)), ToTensor,
Normalize(0.5, 0.5)), ``self.network``, ``torch.exp`` of its output, argmax. Here
the image is the face crop (box = whole image, no MTCNN), and the same
``transform`` and ``network`` run on a batch of crops at a time instead of one by
one (the network is in eval mode: BatchNorm uses its running statistics, so a
crop's output does not depend on its batch).

PyEmotion's network ends in a per-class sigmoid, and ``_predict`` takes ``exp`` of
it: the 7 scores are not a probability distribution, and PyEmotion itself returns
only the class name. The scores written are those ``exp(sigmoid)`` values
(``probabilities: false``); no calibration error is computed from them.
"""
from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_io  # noqa: E402


def main() -> int:
    paths_file, out, rest = peer_io.args()
    batch = int(rest[rest.index("--batch") + 1]) if "--batch" in rest else 256
    paths = peer_io.read_paths(paths_file)
    warnings.filterwarnings("ignore")

    import cv2 as cv
    import torch
    from importlib.metadata import version

    from PyEmotion.main import DetectFace

    det = DetectFace(device="cpu")
    classes = [det.emotions[i] for i in range(len(det.emotions))]

    def prepare() -> torch.Tensor:
        return torch.stack([det.transform(cv.cvtColor(cv.imread(p), cv.COLOR_BGR2GRAY)) for p in paths])

    def classify(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([torch.exp(det.network(x[i:i + batch].to(det.device))) for i in range(0, len(x), batch)])

    tensors, prep_s, _ = peer_io.timed(prepare)
    classify(tensors[:batch])  # warm-up
    scores, clf_s, clf_cpu = peer_io.timed(lambda: classify(tensors))
    peer_io.write_result(out, {
        "peer": "PyEmotion", "version": version("PyEmotion"), "mode": "crop", "classes": classes,
        "scores": peer_io.rows(scores.cpu().numpy()), "probabilities": False,
        "score_kind": "exp(sigmoid) per class, as DetectFace._predict computes before its argmax",
        "preprocess_s": prep_s, "classifier_s": clf_s, "classifier_cpu_s": clf_cpu, "batch": batch, "input": "48x48 grey",
        "torch_threads": torch.get_num_threads(),
        "notes": "image = face crop; DetectFace.transform + DetectFace.network, batched; no MTCNN",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
