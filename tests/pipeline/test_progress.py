"""The driver's progress line: videos done / total and video-s/s, throttled, always shown at the end."""
import pytest

from cliper_batch.pipeline.progress import RunProgress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_reports_first_video_then_every_interval_and_the_end():
    clock, lines = Clock(), []
    p = RunProgress(4, interval_s=10.0, clock=clock, emit=lines.append)
    clock.t = 2.0
    assert p.update(1, 0, 6.0)  # the first finished video is shown at once
    clock.t = 5.0
    assert not p.update(2, 1, 12.0)  # too soon
    clock.t = 12.5
    assert p.update(2, 1, 12.0)
    clock.t = 13.0
    assert p.update(4, 1, 24.0)  # the end is always shown
    assert not p.update(4, 1, 24.0)  # ... once
    assert lines[0] == "progress: 1/4 videos (25%), 0 failed; 6.0 video-s in 2 s = 3.00 video-s/s; about 6 s left"
    assert lines[1].startswith("progress: 2/4 videos (50%), 1 failed; 12.0 video-s in 12 s = 0.96 video-s/s")
    assert lines[2].startswith("progress: 4/4 videos (100%), 1 failed;") and "left" not in lines[2]


def test_progress_rejects_nonsense():
    with pytest.raises(ValueError):
        RunProgress(-1)
    with pytest.raises(ValueError):
        RunProgress(3, interval_s=0)
