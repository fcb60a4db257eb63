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
        from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector

        return FaceDetector(device="cpu", weights_path="/nonexistent/mtcnn.safetensors")


class CudaFaultFusedStage(FusedStage):
    """A fused stage whose first attempt at a ``cuda_fault`` video hits a sticky CUDA error (illegal address).

    The per-video algorithm turns it into a failed outcome, as it does any error; the stage must end the
    actor instead of recording it (the CUDA context would be broken for every later video). A marker file
    next to the video makes the fault happen once: the restarted actor annotates the video.
    """

    FAULT_ON = "cuda_fault"
    MESSAGE = ("CUDA error: an illegal memory access was encountered\n"
               "CUDA kernel errors might be asynchronously reported at some other API call")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        real = self.annotator.annotate

        def annotate(ref):
            marker = ref.uri.replace("file://", "") + ".faulted"
            if self.FAULT_ON in ref.uri and not os.path.exists(marker):
                from cliper_batch.types import VideoOutcome

                open(marker, "w").close()
                yield VideoOutcome(ref=ref, status="failed", error=self.MESSAGE, error_type="AcceleratorError")
                return
            yield from real(ref)

        self.annotator.annotate = annotate
