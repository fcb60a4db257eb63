"""Still images through the real job on the embedded Ray: rows per image, the kind column, bad images as data, incremental."""
from __future__ import annotations

import os
import time

import numpy as np
import polars as pl
import pytest
from PIL import Image

from cliper_batch.output import query
from cliper_batch.pipeline.run import RunOptions, annotate
from cliper_batch.report.build import ReportOptions, build_report
from cliper_batch.decode.testvideos import VideoSpec, write_video
from cliper_batch.types import AnnotateConfig

from stillimages import face_photo, write_image_zoo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "models", "cliper-demo.safetensors")


def _run(corpus, out, faces: str):
    cfg = AnnotateConfig(segment_seconds=1.0, frames_per_segment=2, faces=faces, batch_size=4)
    return annotate(str(corpus), str(out), DEMO, cfg, options=RunOptions())


def _by_name(df: pl.DataFrame, root) -> dict:
    return {os.path.relpath(r["video_uri"], root): r for r in df.iter_rows(named=True)}


@pytest.mark.slow
def test_an_image_zoo_and_a_video_in_one_run_then_only_changed_images_again(ray_runtime, tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    expected = write_image_zoo(str(corpus))
    write_video(str(corpus / "clip.mp4"), VideoSpec(codec="h264", duration_s=2.0, width=64, height=48, seed=1))
    expected["clip.mp4"] = ("ok", None)

    s = _run(corpus, out, "none")
    assert (s.videos_ok, s.videos_failed) == (9, 4)
    man = _by_name(query.scan_videos(str(out)).collect(), corpus)
    assert {k: (r["status"], r["error_type"]) for k, r in man.items()} == expected
    for name, row in man.items():
        image = name != "clip.mp4"
        assert row["kind"] == ("image" if image else "video"), name
        if row["status"] == "failed":
            assert row["error_class"] == "data" and str(corpus / name) in row["error"] and row["n_segments"] == 0, name
        elif image:
            assert (row["n_segments"], row["duration_s"], row["fps"], row["decoder"]) == (1, 0.0, None, "pillow"), name
    assert (man["sixteen.png"]["width"], man["sixteen.png"]["height"], man["sixteen.png"]["codec"]) == (60, 40, "png")
    assert "decompression bomb" in man["bomb.png"]["error"] and "truncated" in man["truncated.png"]["error"]

    tl = query.scan_timelines(str(out)).collect()
    images = tl.filter(pl.col("kind") == "image")
    assert sorted(os.path.basename(u) for u in images["video_uri"]) == sorted(n for n, (st, _) in expected.items()
                                                                            if st == "ok" and n != "clip.mp4")
    assert images.select("segment_index", "start_s", "end_s", "track_id").unique().rows() == [(0, 0.0, 0.0, 0)]
    assert images["face_x0"].null_count() == images.height  # --faces none: no boxes
    assert tl.filter(pl.col("kind") == "video")["video_uri"].unique().to_list() == [str(corpus / "clip.mp4")]
    p_cols = [c for c in tl.columns if c.startswith("p_")]
    assert np.allclose(images.select(p_cols).to_numpy().sum(axis=1), 1.0, atol=1e-4)
    shares = query.expression_shares(tl.lazy(), by=["video_id"]).collect()  # images share by rows, not seconds
    assert np.allclose(shares.select([c for c in shares.columns if c.startswith("share_")]).to_numpy().sum(axis=1), 1.0)
    page = build_report(str(out), ReportOptions(limit=20))
    assert 'id="n-videos">13<' in page and 'id="n-images">12<' in page and page.count("<td>image</td>") == 12
    assert "image · 60×40 · 1 face(s)" in page and "refused as a possible decompression bomb" in page

    # unchanged: nothing again (bad images are bad data: not retried until they change)
    s2 = _run(corpus, out, "none")
    assert (s2.videos_ok, s2.videos_failed, s2.skipped_done, s2.not_retried_data) == (0, 0, 9, 4)
    # one changed good image, one repaired bad one: exactly those two again
    time.sleep(0.05)
    Image.fromarray(np.full((3, 5, 3), 10, np.uint8)).save(corpus / "tiny.png")
    Image.fromarray(face_photo()).save(corpus / "truncated.png")
    s3 = _run(corpus, out, "none")
    assert (s3.videos_ok, s3.videos_failed) == (2, 0)
    now = _by_name(query.scan_videos(str(out), current_only=True).collect(), corpus)
    assert (now["tiny.png"]["width"], now["truncated.png"]["status"]) == (5, "ok")
    assert query.scan_timelines(str(out)).collect().filter(pl.col("kind") == "image").height == 9


@pytest.mark.slow
def test_faces_detected_in_photos_give_one_row_per_face(ray_runtime, tmp_path):
    corpus, out = tmp_path / "photos", tmp_path / "out"
    corpus.mkdir()
    photo = face_photo()
    Image.fromarray(photo).save(corpus / "astronaut.jpg", quality=92)
    two = np.full((512, 1100, 3), 90, np.uint8)  # the same face twice, side by side: two rows
    two[:, :512], two[:, 588:] = photo, photo
    Image.fromarray(two).save(corpus / "twins.png")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(corpus / "blank.bmp")  # no face: ok, no row

    s = _run(corpus, out, "detect")
    assert (s.videos_ok, s.videos_failed) == (3, 0)
    man = _by_name(query.scan_videos(str(out)).collect(), corpus)
    assert {k: (r["n_segments"], r["n_tracks"]) for k, r in man.items()} == {
        "astronaut.jpg": (1, 1), "twins.png": (2, 2), "blank.bmp": (0, 0)}
    tl = query.scan_timelines(str(out)).collect().sort("video_uri", "face_x0")
    assert tl["kind"].to_list() == ["image"] * 3
    assert tl.select("segment_index", "start_s", "end_s").unique().rows() == [(0, 0.0, 0.0)]
    assert tl["face_x0"].null_count() == 0 and (tl["face_x1"] > tl["face_x0"]).all()
    twins = tl.filter(pl.col("video_uri").str.ends_with("twins.png"))
    assert twins["face_x1"][0] < 0.5 < twins["face_x0"][1]  # one face on each side

    page = build_report(str(out), ReportOptions())  # every image in detail: a face thumbnail and bars per face
    assert 'id="n-images">3<' in page and "image · 1100×512 · 2 face(s)" in page and "image · 64×64 · 0 face(s)" in page
    assert page.count('class="thumb"') == 3 and page.count("face in the image") == 3
