"""A decode stage that kills its worker process on one video: a native crash, as a segfaulting decoder would."""
import os

from cliper_batch.pipeline.decode_stage import DecodeStage
from cliper_batch.pipeline.fused_stage import FusedStage


class CrashingDecodeStage(DecodeStage):
    CRASH_ON = "crash_me"

    def process(self, ref):
        if self.CRASH_ON in ref.uri:
            os._exit(139)  # no Python exception, no cleanup: the actor process just dies
        yield from super().process(ref)


class CrashingFusedStage(FusedStage):
    """A fused stage whose worker process dies on one video (its decoder segfaulting, say)."""

    CRASH_ON = "crash_me"

    def __call__(self, batch):
        if any(self.CRASH_ON in str(ref) for ref in batch["ref"]):
            os._exit(139)
        yield from super().__call__(batch)


class MissingWeightsDecodeStage(DecodeStage):
    """A decode stage whose face detector points at weights that are not there: a broken install on a worker.

    The detector is still built lazily, on the first video that needs it (as the shared per-video
    algorithm does), so every video fails with ``DetectorUnavailable`` instead of the actor failing to start.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.annotator._face_detector = self._missing_weights_detector

    @staticmethod
    def _missing_weights_detector():
        from cliper_batch.faces.detect import FaceDetector

        return FaceDetector(device="cpu", weights_path="/nonexistent/mtcnn.safetensors")
