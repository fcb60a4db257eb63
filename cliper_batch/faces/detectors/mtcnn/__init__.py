"""MTCNN, the engine's face detector: batched, reproducible, in torch (CPU or GPU); the design notes.

Modules, one job each: :mod:`.weights` (the packaged file and its pinned sha256, no torch),
:mod:`.nets` (P/R/O-Net and their weights), :mod:`.pyramid` (the area-resized image pyramid),
:mod:`.nms` (non-maximum suppression, the same decisions on every device),
:mod:`.detector` (:class:`~.detector.FaceDetector`: the cascade). Importing this package
imports nothing (the driver's preflight reads :mod:`.weights` without torch).


Why MTCNN, and why our own code: no model hub is reachable, so the weights
must ship inside the installable package. They do: ``weights/mtcnn.safetensors``
(2 MB, next to a NOTICE stating origin, licences and checksums) holds the three
MTCNN nets of ``facenet-pytorch`` 2.6.0 (MIT), converted once from its plain
``state_dict`` files by ``scripts/convert_mtcnn_weights.py``. safetensors
loads without executing any code, and the file's sha256 is pinned here, so a
truncated or altered file is refused instead of silently giving different
detections. This package re-implements the P/R/O-Net architectures (same
parameter names, same flatten order) and the detection cascade:

* P-Net runs over every pyramid level of a batch of frames;
* the R-Net (24x24) and O-Net (48x48) crops of *all* candidates of the batch
  are cut and resampled in one ``roi_align`` call each (torchvision's kernel, loaded without
  importing torchvision: :mod:`.vision_ops`)
  (adaptive sampling, i.e. an area-style average, zero padding outside the
  frame like the original MTCNN) instead of a Python loop per box;
* non-maximum suppression is torchvision's ``nms`` kernel (CPU), run per frame (and per pyramid
  level for P-Net): on CUDA the candidates come to the host in one transfer for it, so the
  decisions are the CPU ones bit for bit (:func:`.nms.nms_groups` says why not a shifted batched NMS);
* host syncs per cascade call are a handful, not a few per pyramid level: one ``nonzero`` over
  every level's P-Net map, one index per stage for all its tensors, one transfer per NMS and
  one for the results;
* on CUDA the cascade runs with TF32 off (:func:`.detector._strict_fp32`: why).

Where the CPU goes, and what was cut (one thread, 640x360 frames; ``python -m bench.detector``):
ATen's adaptive average pool (``F.interpolate(mode="area")``) for the 9 pyramid levels and its
max-pool (which also computes argmax indices) were ~45 % of the detector. The levels are now
built by :class:`.pyramid.AreaPyramid` (the same area bins as two sparse matrix products per level, equal
to ATen's within float rounding) and the nets' ceil-mode max pools by :class:`.nets.CeilMaxPool`
(strided maxima, the same values); what is left is mostly P-Net's convolutions and the R/O-Net
crops. Any change that moves a result bumps :data:`cliper_batch.types.FACE_DETECTOR_VERSION`,
which is in ``config_hash``.

**A frame's faces are a function of that frame alone.** They were not when
frames were batched by whatever chunk came in: CPU convolution and matrix
kernels are chosen, and split across threads, by the batch size and the
thread count, and round differently (measured: P/R/O-Net outputs move by
1e-7..1e-6 between batch sizes 1, 2, 3 and 16, and between 1 and 2 threads).
That moved boxes by ~1e-4 px, so the staged worker (1-thread decode actor)
and the fused one (several threads) wrote different face columns, and a
borderline P-Net candidate could flip and move a box by a pixel, or a
threshold decision downstream. So there is one cascade, written for a batch
of ``B`` frames, and the only device-dependent choice is ``B``
(:attr:`.detector.FaceDetector.batch`):

* **CPU: B = 1**, every frame on :attr:`.detector.FaceDetector.threads` intra-op threads
  (1 by default, whatever the worker set), so every call has the same shapes
  and kernels for the same frame. Batching saves no work on one thread
  (24 frames 640x360: 1.26 CPU s batched, 1.02 CPU s frame by frame), and
  frame-by-frame calls on 2 threads cost 5.8 CPU s (threads synchronise on
  many tiny ops). The cores are used instead by running frames in parallel:
  a pool of :attr:`.detector.FaceDetector.workers` Python threads, each running whole
  frames on one intra-op thread (torch releases the GIL inside its ops).
  The result is bit-identical for any pool size.
* **CUDA: B up to 16** (:data:`.detector.CUDA_BATCH`): frame-at-a-time is dozens of tiny
  kernels and host syncs per frame. A call of ``n`` frames is padded with black
  frames (results dropped) to the next power of two (:func:`.detector.padded_batch`: the
  sparse tracker's 1-4-frame calls no longer pay for 16), so the P-Net
  convolutions see one of five shapes whatever the chunking. R-Net
  and O-Net see all candidates of the batch, so their row count still depends
  on the neighbours; GPU GEMMs compute each row independently of the row
  count in practice, but this is not a guarantee - and the CUDA path has only
  been exercised on CPU: there B = 8 finds the faces of B = 1, within 0.0013 px on the
  benchmark video and bit-identical on the test frames, and padding frames never leak.

Frames are first shrunk (area averaging) so their long side is at most
``max_side`` pixels; boxes and landmarks are mapped back to the original
frame. ``min_face_size`` is measured in that *detection* image (P-Net cannot
see faces below 12 px there), so a 1920x1080 frame with ``max_side=640`` and
``min_face_size=20`` finds faces of roughly 60 original pixels and up.

Box convention (shared with :mod:`cliper_batch.crops.reference`): continuous pixel
coordinates ``(x0, y0, x1, y1)``; pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``,
so ``(0, 0, W, H)`` is the whole frame. Returned boxes are clipped to the frame.
"""
