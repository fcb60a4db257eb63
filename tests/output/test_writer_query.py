"""The writer regroups scored rows per video and commits Parquet; query reads it back with Polars."""
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cliper_batch.output import query, schema
from cliper_batch import rows
from cliper_batch.decode.sampling import plan_segments
from cliper_batch.types import VideoInfo, VideoOutcome, VideoRef
from cliper_batch.output.writer import OutputWriter

CLASSES = ("neutral", "happy", "sad")
INFO = VideoInfo(duration_s=6.0, fps=25.0, width=64, height=48, codec="h264")


def scored(rows_dict, probs):
    out = {k: v for k, v in rows_dict.items() if k != "crops"}
    out["probs"] = np.asarray(probs, np.float32).reshape(len(out["row_kind"]), len(CLASSES))
    out["descriptor"] = np.zeros(len(out["row_kind"]), np.int16)
    return out


def seg_batch(ref, segs, probs):
    return scored(rows.segment_rows(ref, segs, np.zeros((len(segs), 1, 2, 2, 3), np.uint8)), probs)


def outcome_batch(outcome):
    return scored(rows.outcome_row(outcome, (1, 2, 2, 3)), np.zeros(len(CLASSES)))


def make_writer(out, run_id="20260101T000000Z-aaaaaa", **kw):
    return OutputWriter(out, CLASSES, run_id=run_id, model_id="m1", config_hash="c1", **kw)


def test_rows_arrive_in_any_order_and_commit_per_video(tmp_path):
    out = str(tmp_path / "out")
    a, b = VideoRef("a" * 16, "/v/a.mp4"), VideoRef("b" * 16, "/v/b.mp4")
    segs = plan_segments(6.0, 2.0, 1)
    w = make_writer(out)
    # a's outcome arrives before its last segment; b fails after one segment was scored.
    w.add_batch(seg_batch(a, segs[:2], [[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]))
    w.add_batch(outcome_batch(VideoOutcome(a, "ok", info=INFO, n_segments=3)))
    w.add_batch(seg_batch(b, segs[:1], [[0.2, 0.2, 0.6]]))
    w.add_batch(outcome_batch(VideoOutcome(b, "failed", error="boom", error_type="DecodeError", info=INFO)))
    w.add_batch(seg_batch(b, segs[1:2], [[0.2, 0.2, 0.6]]))  # late row of a failed video: dropped
    assert w.stats.videos_ok == 0  # a is still missing a segment
    w.add_batch(seg_batch(a, segs[2:], [[0.1, 0.1, 0.8]]))
    stats = w.close()
    assert (stats.videos_ok, stats.videos_failed, stats.segments) == (1, 1, 3)

    tl = query.scan_timelines(out).sort("segment_index").collect()
    assert tl["video_id"].to_list() == [a.video_id] * 3
    assert tl["label"].to_list() == ["happy", "neutral", "sad"]
    assert tl["confidence"].to_list() == pytest.approx([0.8, 0.7, 0.8])
    assert tl["start_s"].to_list() == [0.0, 2.0, 4.0] and tl["end_s"].to_list() == [2.0, 4.0, 6.0]
    assert tl["run_id"].unique().to_list() == ["20260101T000000Z-aaaaaa"]
    vids = query.scan_videos(out).sort("video_uri").collect()
    assert vids["status"].to_list() == ["ok", "failed"]
    assert vids["n_segments"].to_list() == [3, 0]
    assert vids["error_type"].to_list() == [None, "DecodeError"]
    assert not (tmp_path / "out" / "_staging" / "20260101T000000Z-aaaaaa").exists()
    # every file carries the schema version
    f = next((tmp_path / "out" / "timelines").rglob("*.parquet"))
    assert pq.read_schema(f).metadata[schema.META_VERSION_KEY] == schema.SCHEMA_VERSION.encode()


def test_video_never_completed_becomes_failed_row(tmp_path):
    out = str(tmp_path / "out")
    a = VideoRef("c" * 16, "/v/c.mp4")
    w = make_writer(out)
    w.add_batch(seg_batch(a, plan_segments(2.0, 2.0, 1), [[1, 0, 0]]))
    w.close()
    vids = query.scan_videos(out).collect()
    assert vids["status"].to_list() == ["failed"] and vids["error_type"].to_list() == ["IncompleteVideo"]
    with pytest.raises(query.NoAnnotations):
        query.scan_timelines(out).collect()


def _one_video_run(out, run_id, probs):
    a = VideoRef("d" * 16, "/v/d.mp4")
    w = make_writer(out, run_id=run_id)
    w.add_batch(seg_batch(a, plan_segments(2.0, 2.0, 1), [probs]))
    w.add_batch(outcome_batch(VideoOutcome(a, "ok", info=VideoInfo(2.0, 25.0, 8, 8, "vp9"), n_segments=1)))
    w.close()


def test_current_only_keeps_latest_successful_run(tmp_path):
    out = str(tmp_path / "out")
    _one_video_run(out, "20260101T000000Z-000001", [1, 0, 0])
    _one_video_run(out, "20260102T000000Z-000002", [0, 1, 0])
    assert query.scan_timelines(out).collect()["label"].to_list() == ["happy"]
    assert query.scan_timelines(out, current_only=False).collect().height == 2


def test_memory_url_output_and_summary():
    out = "memory://ann-test"
    _one_video_run(out, "20260101T000000Z-000003", [0.2, 0.1, 0.7])
    tl = query.scan_timelines(out).collect()
    assert tl["label"].to_list() == ["sad"]
    s = query.summary(out)
    assert s["dominant"].to_list() == ["sad"] and s["dominant_share"].to_list() == [1.0]


def test_shares_and_find(tmp_path):
    lf = pl.LazyFrame(
        {
            "video_id": ["v", "v", "v"],
            "track_id": [0, 0, 0],
            "start_s": [0.0, 2.0, 4.0],
            "end_s": [2.0, 4.0, 5.0],
            "label": ["happy", "sad", "happy"],
            "confidence": [0.9, 0.5, 0.7],
            "p_happy": [0.9, 0.5, 0.7],
            "p_sad": [0.1, 0.5, 0.3],
        }
    )
    shares = query.expression_shares(lf).collect()
    assert shares["share_happy"].to_list() == pytest.approx([0.6])
    assert shares["share_sad"].to_list() == pytest.approx([0.4])
    found = query.find_segments(lf, label="happy", min_confidence=0.8).collect()
    assert found["start_s"].to_list() == [0.0]
    assert query.find_segments(lf, start_s=3.0, end_s=4.5).collect()["start_s"].to_list() == [2.0, 4.0]


def test_schema_version_mismatch_is_explained(tmp_path):
    d = tmp_path / "out" / "timelines" / "r1"
    d.mkdir(parents=True)
    sch = schema.timeline_schema(CLASSES).with_metadata({schema.META_VERSION_KEY: b"999"})
    pq.write_table(pa.Table.from_pylist([], schema=sch), d / "part-00000.parquet")
    with pytest.raises(schema.SchemaMismatch, match="v999"):
        query.scan_timelines(str(tmp_path / "out"), current_only=False)
    assert query.main(["summary", str(tmp_path / "nothing")]) == 2


def test_outcome_json_round_trip():
    o = VideoOutcome(VideoRef("e" * 16, "/x.mp4"), "ok", info=INFO, n_segments=3, extra={"decoder": "pyav"})
    assert rows.decode_outcome(rows.encode_outcome(o)) == o
    assert json.loads(rows.encode_outcome(o))["info"]["codec"] == "h264"


def test_file_url_output(tmp_path):
    out = "file://" + str(tmp_path / "furl")
    _one_video_run(out, "20260101T000000Z-000004", [0.1, 0.8, 0.1])
    assert (tmp_path / "furl" / "timelines" / "20260101T000000Z-000004").is_dir()
    assert query.scan_timelines(out).collect()["label"].to_list() == ["happy"]
    assert query.scan_timelines(str(tmp_path / "furl")).collect().height == 1


def test_in_sorted_is_isin_for_a_sorted_unique_array():
    """The writer's check for videos that never reported (a spilled work list against the sorted reported ids)."""
    import numpy as np

    from cliper_batch.output.regroup import in_sorted

    rng = np.random.default_rng(0)
    for n, m in ((0, 5), (1, 5), (1000, 300), (5, 0)):
        done = np.unique(rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True))
        keys = np.concatenate([rng.choice(done, size=min(m, len(done))) if len(done) else np.array([], np.uint64),
                               rng.integers(0, 2**64 - 1, size=m, dtype=np.uint64, endpoint=True),
                               np.array([0, 2**64 - 1], dtype=np.uint64)])
        np.testing.assert_array_equal(in_sorted(keys, done), np.isin(keys, done))
    top = np.array([2**64 - 1], dtype=np.uint64)  # the largest key, past every other: the last index is checked
    assert in_sorted(top, top).tolist() == [True] and in_sorted(np.array([5], np.uint64), top).tolist() == [False]
