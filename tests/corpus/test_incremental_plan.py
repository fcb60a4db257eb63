"""The incremental work plan and retry policy: done/changed/since/limit, failure classes, attempts; --since parsing."""
import argparse

import polars as pl
import pytest

from cliper_batch.shell.annotate_cli import _parse_since
from cliper_batch.corpus.incremental import STATE_SCHEMA, plan_work
from cliper_batch.types import VideoRef


def ref(i, fp="s:1", mtime=100.0):
    return VideoRef(video_id=f"v{i}", uri=f"/c/{i}.mp4", size_bytes=1, mtime=mtime, fingerprint=fp)


def state(*rows):
    """rows: (video_id, ever_ok, ok_fingerprint, last_status, last_fingerprint, last_class, last_attempt)"""
    return pl.DataFrame([dict(zip(STATE_SCHEMA, r)) for r in rows], schema=STATE_SCHEMA)


def ok(vid, fp):
    return (vid, True, fp, "ok", fp, None, 1)


def failed(vid, fp, cls, attempt=1, ok_fp=None):
    return (vid, ok_fp is not None, ok_fp, "failed", fp, cls, attempt)


def test_done_unchanged_skipped_changed_and_new_done():
    refs = [ref(0), ref(1, fp="s:2"), ref(2), ref(3, fp=None)]
    st = state(ok("v0", "s:1"), ok("v1", "s:1"), ok("v3", None))
    plan = plan_work(refs, st)
    assert [r.video_id for r in plan.todo] == ["v1", "v2", "v3"]  # changed, new, unknown fingerprint
    assert (plan.skipped_done, plan.changed) == (1, 2)
    assert [r.video_id for r in plan_work(refs, st, force=True).todo] == ["v0", "v1", "v2", "v3"]
    assert plan_work(refs, None).todo == refs  # an empty output


def test_since_and_limit():
    refs = [ref(0, mtime=50.0), ref(1, mtime=150.0), ref(2, mtime=200.0), ref(3, mtime=None)]
    plan = plan_work(refs, None, since=100.0)
    assert [r.video_id for r in plan.todo] == ["v1", "v2", "v3"] and plan.skipped_since == 1
    plan = plan_work(refs, None, since=100.0, limit=2)
    assert [r.video_id for r in plan.todo] == ["v1", "v2"] and plan.deferred_limit == 1


def test_retry_policy_by_failure_class_and_attempts():
    refs = [ref(0), ref(1), ref(2), ref(3), ref(4, fp="s:new"), ref(5, fp=None), ref(6)]
    st = state(
        failed("v0", "s:1", "data"),  # bad file, unchanged: left alone
        failed("v1", "s:1", "transient", attempt=1),  # retried: attempt 2
        failed("v2", "s:1", "transient", attempt=3),  # out of attempts (3)
        failed("v3", "s:1", "setup", attempt=2),  # retried: attempt 3
        failed("v4", "s:old", "data"),  # the owner fixed the file: new fingerprint -> attempt 1
        failed("v5", None, "data"),  # missing file (no fingerprint), still missing: left alone
        failed("v6", "s:1", "transient", attempt=1, ok_fp="s:1"),  # a forced redo failed; the old result stands
    )
    plan = plan_work(refs, st, max_attempts=3)
    assert [r.video_id for r in plan.todo] == ["v1", "v3", "v4"]
    assert plan.attempts == {"v1": 2, "v3": 3}
    assert (plan.skipped_data, plan.skipped_gave_up, plan.retried, plan.skipped_done) == (2, 1, 2, 1)
    assert [r.video_id for r in plan_work(refs, st, max_attempts=4).todo] == ["v1", "v2", "v3", "v4"]
    every = plan_work(refs, st, retry_failed=True)
    assert [r.video_id for r in every.todo] == ["v0", "v1", "v2", "v3", "v4", "v5"]
    assert every.attempts == {"v0": 2, "v1": 2, "v2": 4, "v3": 3, "v5": 2}
    with pytest.raises(ValueError):
        plan_work(refs, st, max_attempts=0)


def test_parse_since():
    assert _parse_since("1700000000") == 1700000000.0
    assert _parse_since("2026-11-26T00:00:00Z") == _parse_since("2026-11-26") == 1795651200.0
    with pytest.raises(argparse.ArgumentTypeError):
        _parse_since("yesterday")
