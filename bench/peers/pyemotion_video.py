"""PyEmotion 1.0.0 on whole videos, as its README uses it; runs in bench/.pyemotion-venv (bench/setup_pyemotion.sh).

    bench/.pyemotion-venv/bin/python bench/peers/pyemotion_video.py [--every N] VIDEO [VIDEO ...]

One process for every video given (PyEmotion's start-up - torch, its network, MTCNN -
is paid once, as the engine pays its own once per corpus). For each video, OpenCV
reads the frames in order; every Nth one (``--every``, default 1: every frame;
bench/vs_fer.py passes 6 at 25 fps, the engine's 4 frames/s) goes to PyEmotion's
own ``DetectFace(device="cpu").predict_emotion(frame)``, the frames between are
only ``grab()``-ed (decoded, not converted). ``predict_emotion`` runs
facenet-pytorch's ``MTCNN(keep_all=True).detect`` on the BGR frame as given, then for
each box crops the grey frame and runs ``_predict`` (48x48 transform, ``NetworkV2``,
``exp``, argmax; no ``torch.no_grad``), draws the box and label on the frame, and
returns ``(frame, emotion)``.

Does PyEmotion report more than one face per frame? It *detects* every face (MTCNN
with ``keep_all=True``) and classifies each, but it *returns* one label per frame:
``emotion`` is overwritten in its loop over the boxes, so the caller gets the last
face's label (or ``"NoFace"``); the other faces exist only as boxes drawn on the
returned image, and no box is returned. This script counts both: ``faces_per_frame``
is the number of MTCNN boxes PyEmotion classified in each analysed frame (read by
wrapping ``det.mtcnn.detect``, which changes nothing it computes), and ``labels`` counts
the one label per frame it returned.

A frame whose ``predict_emotion`` raises (e.g. a box partly outside the frame gives an
empty crop) counts as analysed, with the error recorded; the run goes on.

Prints one JSON line: ``{"videos": [{"path", "frames_read", "faces_per_frame": [...],
"labels": {label: frames}, "n_errors", "errors"}], "every", "version",
"torch_threads", "in_process_s"}``.
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402


def main(argv: list[str]) -> int:
    every = 1
    if argv[:1] == ["--every"]:
        every, argv = int(argv[1]), argv[2:]
    if every < 1 or not argv:
        raise SystemExit("usage: pyemotion_video.py [--every N>=1] VIDEO [VIDEO ...]")
    warnings.filterwarnings("ignore")

    import cv2 as cv
    import torch
    from importlib.metadata import version

    from PyEmotion.main import DetectFace

    det = DetectFace(device="cpu")
    boxes_seen: list[int] = []
    detect = det.mtcnn.detect

    def counting_detect(*args, **kwargs):
        boxes, probs = detect(*args, **kwargs)
        boxes_seen.append(0 if boxes is None else len(boxes))
        return boxes, probs

    det.mtcnn.detect = counting_detect
    videos = []
    for path in argv:
        cap = cv.VideoCapture(path)
        if not cap.isOpened():
            raise SystemExit(f"OpenCV cannot open {path}")
        faces: list[int] = []
        labels: dict[str, int] = {}
        errors: list[str] = []
        i = 0
        while True:
            if i % every:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read()
                if not ok:
                    break
                boxes_seen.clear()
                try:
                    _, emotion = det.predict_emotion(frame)
                except Exception as exc:  # PyEmotion's own failure on this frame: recorded, not hidden
                    emotion = "error"
                    errors.append(f"frame {i}: {type(exc).__name__}: {exc}")
                faces.append(boxes_seen[0] if boxes_seen else 0)
                labels[emotion] = labels.get(emotion, 0) + 1
            i += 1
        cap.release()
        videos.append({"path": path, "frames_read": i, "faces_per_frame": faces, "labels": labels,
                       "n_errors": len(errors), "errors": errors[:5]})
    print(json.dumps({
        "videos": videos, "every": every, "version": version("PyEmotion"), "torch_threads": torch.get_num_threads(),
        "in_process_s": time.perf_counter() - T0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
