"""CLIPER fine-tuning on Ray Train (installed as ``cliper_batch.training``)."""
