import math

import pytest

from cliper_batch.decode.sampling import frame_indices, plan_segments


def test_segments_cover_duration_with_uniform_centre_samples():
    segs = plan_segments(6.0, 2.0, 4)
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert segs[1].timestamps == pytest.approx((2.25, 2.75, 3.25, 3.75))
    assert [s.index for s in segs] == [0, 1, 2]


def test_short_tail_merges_and_long_tail_stays():
    merged = plan_segments(4.3, 2.0, 2)  # 0.3 s tail < 25 % of a segment
    assert [(s.start_s, s.end_s) for s in merged] == [(0.0, 2.0), (2.0, 4.3)]
    kept = plan_segments(5.0, 2.0, 2)
    assert [(s.start_s, s.end_s) for s in kept] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert kept[-1].timestamps == pytest.approx((4.25, 4.75))


def test_video_shorter_than_a_segment_is_one_segment():
    segs = plan_segments(0.8, 2.0, 8)
    assert len(segs) == 1 and segs[0].end_s == 0.8
    assert all(0 < t < 0.8 for t in segs[0].timestamps)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        plan_segments(bad, 2.0, 8)


def test_frame_indices_pick_displayed_frame_and_clamp():
    assert frame_indices([0.0, 0.039, 0.04, 0.999], 25.0) == [0, 0, 1, 24]
    assert frame_indices([10.0], 25.0, n_frames=100) == [99]
    with pytest.raises(ValueError):
        frame_indices([0.1], 0)
