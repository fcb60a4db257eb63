"""The Ray wiring: the staged (decode stage -> score stage) or fused worker, and the driver-side writer loop.

``run.annotate`` is the entry point; the stages are thin shells around :mod:`cliper_batch.video_annotation`
(the per-video algorithm) and :mod:`.model_actor` (the model side); :mod:`cliper_batch.rows` is the row contract.
"""
