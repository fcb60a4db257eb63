"""GPU kernels. One import name: ``cliper_batch.kernels`` (``cliper_batch/kernels`` links to this folder).

* :mod:`.crop_resize`: one Triton launch that crops many boxes out of uint8
  frames, resizes them bilinearly and normalises them for the image encoder
  (same convention as :mod:`cliper_batch.crops.reference`).

Nothing is imported here on purpose: importing a kernel module imports
Triton and decides, from ``TRITON_INTERPRET``, whether the kernels compile
for the GPU or run in Triton's CPU interpreter.
"""
