"""The incremental work plan: done/changed/since/limit, and --since parsing."""
import argparse

import pytest

from cliper_batch.cli import _parse_since
from cliper_batch.incremental import plan_work
from cliper_batch.types import VideoRef


def ref(i, fp="s:1", mtime=100.0):
    return VideoRef(video_id=f"v{i}", uri=f"/c/{i}.mp4", size_bytes=1, mtime=mtime, fingerprint=fp)


def test_done_unchanged_skipped_changed_and_new_done():
    refs = [ref(0), ref(1, fp="s:2"), ref(2), ref(3, fp=None)]
    done = {"v0": "s:1", "v1": "s:1", "v3": None}
    plan = plan_work(refs, done)
    assert [r.video_id for r in plan.todo] == ["v1", "v2", "v3"]  # changed, new, unknown fingerprint
    assert (plan.skipped_done, plan.changed) == (1, 2)
    assert [r.video_id for r in plan_work(refs, done, force=True).todo] == ["v0", "v1", "v2", "v3"]


def test_since_and_limit():
    refs = [ref(0, mtime=50.0), ref(1, mtime=150.0), ref(2, mtime=200.0), ref(3, mtime=None)]
    plan = plan_work(refs, {}, since=100.0)
    assert [r.video_id for r in plan.todo] == ["v1", "v2", "v3"] and plan.skipped_since == 1
    plan = plan_work(refs, {}, since=100.0, limit=2)
    assert [r.video_id for r in plan.todo] == ["v1", "v2"] and plan.deferred_limit == 1


def test_parse_since():
    assert _parse_since("1700000000") == 1700000000.0
    assert _parse_since("2026-11-26T00:00:00Z") == _parse_since("2026-11-26") == 1795651200.0
    with pytest.raises(argparse.ArgumentTypeError):
        _parse_since("yesterday")
