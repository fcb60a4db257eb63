"""What the job must write for a --faces none run: each segment's class probabilities computed directly (PyAV
frames, the reference centre crop, the model), for end-to-end tests to compare the Parquet with."""
import numpy as np
import torch

from cliper_batch.crops.reference import center_crop_plan
from cliper_batch.decode.probe import probe
from cliper_batch.decode.pyav_backend import PyAVDecoder
from cliper_batch.decode.sampling import plan_segments
from cliper_batch.model.cliper import score_clips

SEG, T = 1.0, 4


def expected_probs(model, path, size):
    info = probe(path)
    segs = plan_segments(info.duration_s, SEG, T)
    (w, h), (x0, y0) = center_crop_plan(info.width, info.height, size)
    ts = [t for s in segs for t in s.timestamps]
    frames = np.stack(list(PyAVDecoder().iter_frames(path, info, ts, size=(w, h))))
    crops = torch.from_numpy(frames[:, y0 : y0 + size, x0 : x0 + size].reshape(len(segs), T, size, size, 3).copy())
    return segs, score_clips(model, crops).probs.numpy()
