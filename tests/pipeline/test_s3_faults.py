"""An object store that throttles and drops: s3fs and the annotate job through a fault-injecting proxy.

The proxy (tests/faulty_s3_proxy.py) sits on loopback between s3fs and moto's S3 API server
and fails ~10 % of the requests it forwards (``503 SlowDown``; a connection reset part-way
through an upload) and delays a few more. The job must finish with every video annotated
exactly once, and the run record must count the retries (cliper_batch/store_retries.py).
"""
import json
import threading

import numpy as np
import pytest
import s3fs

from cliper_batch.output import query
from cliper_batch import store_retries
from cliper_batch.model.factory import load_model
from cliper_batch.pipeline.run import RunOptions, annotate
from cliper_batch.decode.testvideos import VideoSpec, write_video
from cliper_batch.types import AnnotateConfig
from cliper_batch.uris import filesystem_for
from faulty_s3_proxy import Faults, faulty_s3_proxy
from s3server import BUCKET, s3_server
from expected_scores import SEG, T, expected_probs


@pytest.fixture
def s3():
    with s3_server() as options:
        yield options


def test_retry_defaults_for_s3_leave_what_the_user_configured(monkeypatch):
    for var in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/cliper-test-aws-config")
    user = {"key": "k", "config_kwargs": {"connect_timeout": 3}}
    got = store_retries.with_defaults("s3", user)
    assert got["config_kwargs"] == {"connect_timeout": 3, "retries": store_retries.S3_RETRIES}
    assert user == {"key": "k", "config_kwargs": {"connect_timeout": 3}}  # not modified in place
    mine = {"config_kwargs": {"retries": {"mode": "legacy"}}}
    assert store_retries.with_defaults("s3", mine) is mine
    assert store_retries.with_defaults("gcs", {}) == {} and store_retries.with_defaults("file", {}) == {}
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")  # the environment decides
    assert store_retries.with_defaults("s3", user) is user


def test_every_throttled_request_is_retried_and_counted(s3):
    """Writes and reads through ~20 % failures: the data is intact and each 503 made exactly one counted retry."""
    store_retries.take()
    with faulty_s3_proxy(s3, Faults(rate=0.2, reset_share=0.8, slow_rate=0.1, delay_s=0.05, seed=3)) as proxy:
        fs, _ = filesystem_for(f"s3://{BUCKET}/x", **proxy.storage_options)
        assert fs.config_kwargs["retries"]["mode"] == "standard"
        blobs = {f"{BUCKET}/x/k{i}": bytes([i]) * (3000 + i) for i in range(25)}
        for path, data in blobs.items():
            with fs.open(path, "wb") as f:
                f.write(data)
        for path, data in blobs.items():
            assert fs.cat(path) == data
        counted = store_retries.take()
    print(f"requests {proxy.requests}, injected {dict(proxy.injected)}, counted {counted}")
    assert proxy.injected["slowdown"] > 0 and proxy.injected["reset"] > 0 and proxy.injected["slow"] > 0
    assert counted.get("throttled") == proxy.injected["slowdown"], (counted, proxy.injected)
    # a reset PUT/GET is sent again once by aiohttp itself, unseen by botocore: counted only when that one fails too
    assert counted.get("connection", 0) <= proxy.injected["reset"]
    assert set(counted) <= {"throttled", "connection"}


class _Forced:
    """The proxy's draws, plus one fault forced on the first request of each kind the test must see."""

    def __init__(self, run_prefix: str):
        self.prefix = run_prefix
        self.done: set[str] = set()
        self.lock = threading.Lock()

    def _once(self, name: str, action):
        with self.lock:
            if name in self.done:
                return None
            self.done.add(name)
        return action

    def __call__(self, req):
        path = req.path
        if req.method == "PUT" and path.endswith("/ann/_lock.json"):
            return self._once("lock", "reset")  # the conditional create dies mid-upload (the driver)
        if req.method == "PUT" and "/ann/timelines/" in path:
            return self._once("part", "reset")  # a Parquet part dies mid-upload (the driver's writer)
        if req.method == "GET" and "list-type" in req.target and "prefix=in" in req.target:
            return self._once("listing", "slowdown")  # the driver's listing is throttled
        if req.method == "GET" and path.startswith(f"/{BUCKET}/in/"):
            return self._once("video", "slowdown")  # a worker's read of a video is throttled
        return None


@pytest.mark.slow
def test_annotate_through_a_store_that_throttles_and_drops(ray_runtime, tiny_checkpoint, tmp_path, s3):
    local = {
        "a.mp4": VideoSpec(codec="h264", fps=25, duration_s=2.0, width=96, height=64, seed=1),
        "b.webm": VideoSpec(codec="vp9", fps=24, duration_s=1.5, width=80, height=80, seed=2),
        "sub/c.mp4": VideoSpec(codec="h264", fps=25, duration_s=1.2, width=64, height=64, seed=3),
    }
    direct = s3fs.S3FileSystem(**s3)  # set-up and checks bypass the proxy
    for name, spec in local.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(str(tmp_path / name), spec)
        direct.put_file(str(tmp_path / name), f"{BUCKET}/in/{name}")
    direct.put_file(tiny_checkpoint, f"{BUCKET}/models/tiny.safetensors")
    out = f"s3://{BUCKET}/ann"
    config = AnnotateConfig(segment_seconds=SEG, frames_per_segment=T, faces="none", decoder="pyav", batch_size=3)

    faults = Faults(rate=0.1, slow_rate=0.05, delay_s=0.2, seed=7)
    with faulty_s3_proxy(s3, faults, decide=_Forced(f"/{BUCKET}/ann")) as proxy:
        summary = annotate(f"s3://{BUCKET}/in", out, f"s3://{BUCKET}/models/tiny.safetensors", config,
                           options=RunOptions(), storage_options=proxy.storage_options)
    assert summary.status == "finished" and (summary.videos_ok, summary.videos_failed) == (3, 0), summary.line()
    failed = sum(proxy.injected[k] for k in ("slowdown", "reset"))
    assert proxy.injected["slowdown"] > 0 and proxy.injected["reset"] > 0 and proxy.injected["slow"] > 0
    assert 0.05 < failed / proxy.requests < 0.2, (proxy.injected, proxy.requests)

    # every video annotated exactly once, by content
    videos = query.scan_videos(out, storage_options=s3).collect()
    assert sorted(videos["video_uri"]) == sorted(f"s3://{BUCKET}/in/{n}" for n in local)  # one manifest row each
    assert set(videos["status"]) == {"ok"} and set(videos["run_id"]) == {summary.run_id}
    timelines = query.scan_timelines(out, storage_options=s3).collect()
    assert timelines.select("video_uri", "segment_index").is_duplicated().sum() == 0
    loaded = load_model(tiny_checkpoint)
    for name in local:
        rows = timelines.filter(timelines["video_uri"] == f"s3://{BUCKET}/in/{name}").sort("segment_index")
        segs, probs = expected_probs(loaded.model, str(tmp_path / name), loaded.image_size)
        assert rows["segment_index"].to_list() == [s.index for s in segs], name
        np.testing.assert_allclose(rows.select([f"p_{c}" for c in loaded.classes]).to_numpy(), probs, atol=2e-4)

    # the retries, in the run record: every 503 answered before the record was written made one retry (botocore
    # retries them all); a reset made one only when aiohttp's own one re-send of a PUT/GET failed as well
    [record_path] = direct.glob(f"{BUCKET}/ann/runs/*.json")
    record = json.loads(direct.cat(record_path))
    retries = record["store_retries"]
    assert record["status"] == "finished"
    assert retries["total"] == retries["driver"] + retries["workers"] == summary.store_retries
    assert retries["workers"] >= 1 and retries["driver_by_reason"].get("throttled", 0) >= 1, retries
    boundary = next(i for i, e in enumerate(proxy.log) if e.path.endswith(f"/_staging/{summary.run_id}.json"))
    before = proxy.log[:boundary]
    slowdowns = sum(e.action == "slowdown" for e in before)
    resets = sum(e.action == "reset" for e in before)
    print(f"requests {proxy.requests}, injected {dict(proxy.injected)}; before the record: {slowdowns} 503s, "
          f"{resets} resets; run record store_retries {retries}")
    assert slowdowns <= retries["total"] <= slowdowns + resets, (retries, slowdowns, resets)
    assert not direct.exists(f"{BUCKET}/ann/_lock.json")  # released
