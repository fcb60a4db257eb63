"""Faces in sampled video frames: MTCNN detection (frame by frame, reproducible), shot-cut detection and tracking.

Typical use for one video (``frames``: its sampled frames, ``[F, H, W, 3]`` uint8 RGB)::

    detector = FaceDetector(device="cuda")          # once per worker: loads the nets
    dets = detector.detect(frames)                  # list (per frame) of Detection
    cuts = detect_cuts(frames)                      # positions where a new shot starts
    tracks = track_video(dets, cuts)                # list of Track, ids 1.. per video

(``FaceDetector``: :mod:`.detectors.mtcnn.detector`, behind :func:`.detectors.make_detector`;
``detect_cuts``: :mod:`.cuts`; ``track_video``: :mod:`.track`.) Each name is imported from its
own module; importing this package imports nothing (no torch: the driver's preflight reads the
detector's pinned weights file without it).

Long videos can be fed in chunks: ``detector.detect(chunk, frame_indices=...)``,
``ShotCutDetector.update(chunk)`` and ``FaceTracker.update(i, dets_i, is_cut)``
give the same result as the one-call helpers. See ``docs/faces.md``.
"""
