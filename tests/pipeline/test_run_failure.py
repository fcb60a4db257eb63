"""A run whose every video failed for the same setup reason is a failed run (exit 1), not a success.

Real runs on the session's embedded Ray: a decode stage whose face detector
points at weights that are not there (a broken install on the workers, past
the driver's checks) fails every video with ``DetectorUnavailable``.
"""
from __future__ import annotations

import pytest

from cliper_batch.pipeline.run import RunOptions, Stages, annotate, describe_model
from cliper_batch.decode.testvideos import VideoSpec, write_video
from cliper_batch.types import AnnotateConfig


@pytest.fixture()
def broken_detector_stage():
    import ray.cloudpickle

    import faulty_stage

    ray.cloudpickle.register_pickle_by_value(faulty_stage)  # workers can't import tests/
    return faulty_stage.MissingWeightsDecodeStage


def _corpus(folder, bad_file: bool):
    folder.mkdir()
    for i in range(2):
        write_video(str(folder / f"v{i}.mp4"), VideoSpec(codec="h264", duration_s=1.0, width=64, height=48, seed=i))
    if bad_file:
        (folder / "notes.mp4").write_bytes(b"not a video at all\n" * 10)
    return str(folder)


CFG = AnnotateConfig(segment_seconds=1.0, frames_per_segment=2, batch_size=4, decoder="pyav", faces="detect")
STAGED = RunOptions(worker="staged")  # the injected stage is a staged decode stage


def test_every_video_failing_for_one_setup_reason_fails_the_run(ray_runtime, tiny_checkpoint, tmp_path, broken_detector_stage):
    corpus = _corpus(tmp_path / "corpus", bad_file=False)
    s = annotate(corpus, str(tmp_path / "out"), tiny_checkpoint, CFG, stages=Stages(decode=broken_detector_stage), options=STAGED,
                 model_info=describe_model(tiny_checkpoint))
    assert (s.videos_ok, s.videos_failed) == (0, 2)
    assert s.failure_reason is not None
    assert "every video of this run (2) failed with DetectorUnavailable" in s.failure_reason
    assert "/nonexistent/mtcnn.safetensors" in s.failure_reason  # the first error, so the user sees what to fix


def test_a_bad_file_among_them_is_data_not_a_broken_run(ray_runtime, tiny_checkpoint, tmp_path, broken_detector_stage):
    corpus = _corpus(tmp_path / "corpus", bad_file=True)
    s = annotate(corpus, str(tmp_path / "out"), tiny_checkpoint, CFG, stages=Stages(decode=broken_detector_stage), options=STAGED,
                 model_info=describe_model(tiny_checkpoint))
    assert (s.videos_ok, s.videos_failed) == (0, 3)
    assert s.failure_reason is None  # mixed reasons, one of them the data's: not provably a setup failure


def test_the_command_exits_1_with_the_reason_and_0_otherwise(capsys, tmp_path):
    from dataclasses import replace

    from cliper_batch.shell import annotate_cli as cli
    from cliper_batch.pipeline.summary import RunSummary

    ok = RunSummary("r", str(tmp_path), "m", 3, 2, 1, 5, 10, 10.0, 1.0, "eager@cpu", 1, 1)
    assert cli.finish(ok) == 0 and capsys.readouterr().err == ""
    broken = replace(ok, videos_ok=0, videos_failed=3, failure_reason="every video of this run (3) failed with X")
    assert cli.finish(broken) == 1
    assert capsys.readouterr().err == "annotate: error: every video of this run (3) failed with X\n"
