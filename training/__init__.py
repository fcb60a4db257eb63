"""CLIPER fine-tuning on Ray Train. One import name: ``cliper_batch.training`` (``cliper_batch/training`` links here)."""
