"""An annotate run whose input, output and model all live on S3 (moto's S3 API server on loopback).

The driver, the Ray workers and the query read and write through s3fs over HTTP with the
``storage_options`` passed to :func:`annotate`; the timelines are checked by content
against the model scoring the same frames of local copies.
"""
import json

import numpy as np
import pytest
import s3fs

from cliper_batch.output import query
from cliper_batch.model.factory import load_model
from cliper_batch.pipeline.run import RunOptions, annotate
from cliper_batch.types import AnnotateConfig
from cliper_batch.decode.testvideos import VideoSpec, write_video
from s3server import BUCKET, s3_server
from expected_scores import SEG, T, expected_probs

pytestmark = pytest.mark.slow


def test_annotate_reads_and_writes_s3(ray_runtime, tiny_checkpoint, tmp_path):
    local = {"a.mp4": VideoSpec(codec="h264", fps=25, duration_s=2.0, width=96, height=64, seed=1),
             "sub/b.webm": VideoSpec(codec="vp9", fps=24, duration_s=1.5, width=80, height=80, seed=2)}
    for name, spec in local.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(str(tmp_path / name), spec)
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    with s3_server() as options:
        fs = s3fs.S3FileSystem(**options)
        for name in [*local, "broken.mp4"]:
            fs.put_file(str(tmp_path / name), f"{BUCKET}/in/{name}")
        fs.put_file(tiny_checkpoint, f"{BUCKET}/models/tiny.safetensors")
        out = f"s3://{BUCKET}/ann"
        config = AnnotateConfig(segment_seconds=SEG, frames_per_segment=T, faces="none", decoder="pyav", batch_size=3)
        annotate(f"s3://{BUCKET}/in", out, f"s3://{BUCKET}/models/tiny.safetensors", config,
                 options=RunOptions(), storage_options=options)

        videos = query.scan_videos(out, storage_options=options).collect()
        status = dict(zip(videos["video_uri"], videos["status"]))
        assert status == {f"s3://{BUCKET}/in/a.mp4": "ok", f"s3://{BUCKET}/in/sub/b.webm": "ok",
                          f"s3://{BUCKET}/in/broken.mp4": "failed"}
        timelines = query.scan_timelines(out, storage_options=options).collect()
        loaded = load_model(tiny_checkpoint)
        for name in local:
            rows = timelines.filter(timelines["video_uri"] == f"s3://{BUCKET}/in/{name}").sort("segment_index")
            segs, probs = expected_probs(loaded.model, str(tmp_path / name), loaded.image_size)
            assert rows.height == len(segs), name
            np.testing.assert_allclose(rows.select([f"p_{c}" for c in loaded.classes]).to_numpy(), probs, atol=2e-4)
        records = fs.glob(f"{BUCKET}/ann/runs/*.json")
        assert len(records) == 1 and json.loads(fs.cat(records[0]))["status"] == "finished"
        assert not fs.exists(f"{BUCKET}/ann/_lock.json")  # released
