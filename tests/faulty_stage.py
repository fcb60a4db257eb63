"""A decode stage that kills its worker process on one video: a native crash, as a segfaulting decoder would."""
import os

from cliper_batch.pipeline.decode_stage import DecodeStage


class CrashingDecodeStage(DecodeStage):
    CRASH_ON = "crash_me"

    def process(self, ref):
        if self.CRASH_ON in ref.uri:
            os._exit(139)  # no Python exception, no cleanup: the actor process just dies
        yield from super().process(ref)
