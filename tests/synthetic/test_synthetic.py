"""Tests for the procedural facial-expression corpus (cliper_batch.synthetic)."""
from __future__ import annotations

import hashlib
import os

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cliper_batch import synthetic as S
from cliper_batch.synthetic import person
from cliper_batch.labels import CANONICAL_CLASSES
from cliper_batch.uris import video_id_for

N_CLASSES = len(CANONICAL_CLASSES)
RES = 28  # side of the downscaled grey images the simple classifiers see


def _render_set(id_seed: int, n_ids: int, size: int = 112) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shot per (identity, class), drawn like write_image_dataset does: (grey, labels, rgb)."""
    grey, labels, rgb = [], [], []
    for i in range(n_ids):
        person = S.sample_identity(np.random.default_rng([id_seed, i]))
        for ci, label in enumerate(CANONICAL_CLASSES):
            rng = np.random.default_rng([id_seed, i, ci])
            shot = S.vary_shot(person, rng)
            intensity = 1.0 if label == "neutral" else float(rng.uniform(0.55, 1.0))
            img = S.render_face(label, shot, size, intensity=intensity, rng=rng)
            rgb.append(img)
            grey.append(np.asarray(Image.fromarray(img).convert("L"), np.float32))
            labels.append(ci)
    return np.stack(grey), np.array(labels), np.stack(rgb)


@pytest.fixture(scope="module")
def faces():
    """60 training identities and 20 held-out identities, every class once each."""
    train = _render_set(1000, 60)
    test = _render_set(2000, 20)
    return train, test


def _features(grey: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Crop ``box`` (fractions), downscale to RES x RES, standardise per image."""
    n, h, w = grey.shape
    x0, y0, x1, y1 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
    out = np.stack([np.asarray(Image.fromarray(g[y0:y1, x0:x1].astype(np.uint8)).resize((RES, RES), Image.Resampling.BOX), np.float32) for g in grey])
    out = out.reshape(n, -1)
    return (out - out.mean(1, keepdims=True)) / (out.std(1, keepdims=True) + 1e-6)


def _nearest_mean_accuracy(f_train, y_train, f_test, y_test) -> float:
    means = np.stack([f_train[y_train == c].mean(0) for c in range(N_CLASSES)])
    pred = ((f_test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y_test).mean())


FACE_BOX = (0.2, 0.18, 0.8, 0.85)  # the face interior in a crop (brows to chin)


# --------------------------------------------------------------------------- basic contract


def test_shapes_dtypes_and_labels():
    p = S.sample_identity(np.random.default_rng(0))
    for size in (64, 112):
        img = S.render_face("happy", p, size=size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert set(person._PROFILES) == set(CANONICAL_CLASSES)
    with pytest.raises(S.SyntheticError, match="unknown expression label 'contempt'"):
        S.render_face("contempt", p)
    with pytest.raises(S.SyntheticError, match="intensity"):
        S.render_face("happy", p, intensity=1.5)
    with pytest.raises(S.SyntheticError, match="size"):
        S.render_face("happy", p, size=8)


def test_deterministic_bytes():
    def run(seed: int) -> bytes:
        p = S.sample_identity(np.random.default_rng(seed))
        imgs = [S.render_face(c, p, rng=np.random.default_rng([seed, k])) for k, c in enumerate(CANONICAL_CLASSES)]
        scene = S.render_scene([("fear", p, 0.7, (10, 20, 70, 100))], 160, 120, np.random.default_rng(seed))
        return b"".join(i.tobytes() for i in imgs) + scene.tobytes()

    assert run(5) == run(5)
    assert run(5) != run(6)
    p = S.sample_identity(np.random.default_rng(3))
    assert S.render_face("sad", p).tobytes() == S.render_face("sad", p).tobytes()  # rng=None: seeded by params


def test_intensity_blends_from_neutral():
    p = S.sample_identity(np.random.default_rng(4))
    zero = S.render_face("surprise", p, intensity=0.0, rng=np.random.default_rng(1)).astype(int)
    neutral = S.render_face("neutral", p, rng=np.random.default_rng(1)).astype(int)
    half = S.render_face("surprise", p, intensity=0.5, rng=np.random.default_rng(1)).astype(int)
    full = S.render_face("surprise", p, intensity=1.0, rng=np.random.default_rng(1)).astype(int)
    assert np.abs(zero - neutral).mean() < 0.5  # intensity 0 is the neutral face
    d_half, d_full = np.abs(half - neutral).mean(), np.abs(full - neutral).mean()
    assert 0 < d_half < d_full


def test_render_scene_places_faces_in_boxes():
    rng = np.random.default_rng(7)
    p = S.sample_identity(rng)
    box = (100.0, 40.0, 160.0, 118.0)
    frame = S.render_scene([("happy", p, 1.0, box)], 320, 200, np.random.default_rng(8))
    assert frame.shape == (200, 320, 3) and frame.dtype == np.uint8
    # the same scene without the face differs only around the box (hair/neck/body reach a bit beyond it)
    empty = S.render_scene([], 320, 200, np.random.default_rng(8))
    diff = np.abs(frame.astype(int) - empty.astype(int)).sum(-1) > 40
    ys, xs = np.nonzero(diff)
    assert diff[40:118, 100:160].mean() > 0.5
    assert xs.min() > 100 - 60 and xs.max() < 160 + 60 and ys.min() > 40 - 40
    with pytest.raises(S.SyntheticError, match="face box"):
        S.render_scene([("happy", p, 1.0, (10, 10, 5, 20))], 64, 64, rng)


# --------------------------------------------------------------------------- separability


def test_nearest_class_mean_beats_chance_on_unseen_identities(faces):
    (g_tr, y_tr, _), (g_te, y_te, _) = faces
    acc = _nearest_mean_accuracy(_features(g_tr, FACE_BOX), y_tr, _features(g_te, FACE_BOX), y_te)
    assert acc >= 0.38, f"nearest-class-mean accuracy {acc:.2f} (chance {1 / N_CLASSES:.2f})"


def test_not_trivial_colour_or_pixel_statistics(faces):
    (g_tr, y_tr, rgb_tr), (g_te, y_te, rgb_te) = faces

    def stats(rgb, grey):
        flat = grey.reshape(len(grey), -1)
        return np.concatenate([rgb.reshape(len(rgb), -1, 3).mean(1), flat.std(1, keepdims=True), (flat > 200).mean(1, keepdims=True)], 1)

    s_tr, s_te = stats(rgb_tr, g_tr), stats(rgb_te, g_te)
    mu, sd = s_tr.mean(0), s_tr.std(0) + 1e-6
    colour_acc = _nearest_mean_accuracy((s_tr - mu) / sd, y_tr, (s_te - mu) / sd, y_te)
    assert colour_acc < 0.3, f"global colour statistics separate the classes too well ({colour_acc:.2f})"
    # no single pixel of the small grey image separates them either
    f_tr, f_te = _features(g_tr, (0, 0, 1, 1)), _features(g_te, (0, 0, 1, 1))
    best = max(_nearest_mean_accuracy(f_tr[:, [j]], y_tr, f_te[:, [j]], y_te) for j in range(f_tr.shape[1]))
    assert best < 0.35, f"a single pixel separates the classes ({best:.2f})"
    # and a class is not one fixed picture: same class, different people differ a lot
    for c in range(N_CLASSES):
        imgs = g_te[y_te == c]
        assert np.abs(imgs[0] - imgs[1]).mean() > 15


def _profile_rows(mean_img: np.ndarray, x_ranges, y0: float, y1: float) -> np.ndarray:
    """Mean intensity per row of ``mean_img`` over the given |x| ranges (face units), rows y0..y1 (face units)."""
    h, w = mean_img.shape
    cols = []
    for a, b in x_ranges:
        for sgn in (-1, 1):
            xa, xb = sorted((S.face_to_crop(sgn * a, 0)[0], S.face_to_crop(sgn * b, 0)[0]))
            cols.extend(range(int(xa * w), int(np.ceil(xb * w))))
    r0, r1 = int(S.face_to_crop(0, y0)[1] * h), int(np.ceil(S.face_to_crop(0, y1)[1] * h))
    return mean_img[r0:r1][:, cols].mean(1), r0


def test_class_means_differ_in_the_expected_regions(faces):
    """Paired (same people, different expression) t-maps show each difference where FACS puts it."""
    (g_tr, y_tr, _), _ = faces
    z = g_tr - g_tr.mean((1, 2), keepdims=True)
    z /= z.std((1, 2), keepdims=True)
    z = np.stack([np.asarray(Image.fromarray(a).resize((56, 56), Image.Resampling.BOX)) for a in z.astype(np.float32)])
    n_ids = len(z) // N_CLASSES
    assert (y_tr.reshape(n_ids, N_CLASSES) == np.arange(N_CLASSES)).all()  # identity-major order: pairs line up
    by_id = z.reshape(n_ids, N_CLASSES, *z.shape[1:])
    h, w = z.shape[1:]
    idx = {c: i for i, c in enumerate(CANONICAL_CLASSES)}

    def t2(a: str, b: str, region: str) -> float:
        """Mean squared paired t-statistic over a region (about 1 where the classes do not differ)."""
        d = by_id[:, idx[a]] - by_id[:, idx[b]]
        t = d.mean(0) ** 2 / (d.var(0, ddof=1) / n_ids + 1e-9)
        x0, y0, x1, y1 = S.CROP_REGIONS[region]
        return float(t[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())

    # happy vs sad is a mouth difference, anger vs surprise a brow difference; happy leaves the brows alone
    assert t2("happy", "sad", "mouth") > max(4.0, 3 * t2("happy", "sad", "nose"))
    assert t2("anger", "surprise", "brows") > max(5.0, 3 * t2("happy", "neutral", "brows"))
    assert t2("surprise", "neutral", "mouth") > 3 * t2("anger", "neutral", "mouth")  # open O vs pressed lips
    mean = {c: by_id[:, i].mean(0) for c, i in idx.items()}
    # signed: lip corners of happy sit higher than those of sad (darkest row next to the corners)
    rows_h, _ = _profile_rows(mean["happy"], [(0.22, 0.32)], 0.55, 1.05)
    rows_s, _ = _profile_rows(mean["sad"], [(0.22, 0.32)], 0.55, 1.05)
    assert rows_h.argmin() + 2 <= rows_s.argmin(), (rows_h.argmin(), rows_s.argmin())
    # signed: brows sit highest in surprise, lowest in anger (darkest row over the brow columns)
    brow_rows = {c: _profile_rows(mean[c], [(0.3, 0.55)], -0.55, -0.08)[0].argmin() for c in ("surprise", "neutral", "anger")}
    assert brow_rows["surprise"] < brow_rows["neutral"] < brow_rows["anger"], brow_rows


# --------------------------------------------------------------------------- datasets, videos, CLI


def _decode(path: str) -> tuple[list[np.ndarray], float]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


def test_image_dataset_is_deterministic_and_split_by_identity(tmp_path):
    a = S.write_image_dataset(str(tmp_path / "a"), n_per_class=12, seed=4, size=64)
    b = S.write_image_dataset(str(tmp_path / "b"), n_per_class=12, seed=4, size=64)
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.equals(tb)
    assert ta.num_rows == 12 * N_CLASSES
    assert set(ta.column("label").to_pylist()) == set(CANONICAL_CLASSES)
    split = dict(zip(ta.column("identity").to_pylist(), ta.column("split").to_pylist()))
    rows = ta.to_pylist()
    assert all(split[r["identity"]] == r["split"] for r in rows)  # one identity, one split
    assert {"train", "test"} == set(split.values())
    for r in rows[::7]:
        da = (tmp_path / "a" / r["path"]).read_bytes()
        assert hashlib.sha256(da).digest() == hashlib.sha256((tmp_path / "b" / r["path"]).read_bytes()).digest()
        img = np.asarray(Image.open(tmp_path / "a" / r["path"]))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    resolved = S.read_image_dataset(a)
    assert all(os.path.isfile(p) for p in resolved.column("path").to_pylist())
    with pytest.raises(S.SyntheticError, match="no such labels file"):
        S.read_image_dataset(str(tmp_path / "missing.parquet"))


def test_video_corpus_ground_truth_matches_videos(tmp_path):
    kw = dict(segment_seconds=1.0, size=(96, 80), fps=10.0, min_spans=2, max_spans=3)
    gt_path = S.write_video_corpus(str(tmp_path / "v"), n_videos=2, seed=9, **kw)
    gt = pq.read_table(gt_path).to_pylist()
    assert gt_path == str(tmp_path / "v" / "ground_truth.parquet")
    boxes = pq.read_table(str(tmp_path / "v" / "face_boxes.parquet")).to_pylist()
    uris = sorted({r["video_uri"] for r in gt})
    assert [os.path.splitext(u)[1] for u in uris] == [".mp4", ".webm"]
    for uri in uris:
        rows = sorted((r for r in gt if r["video_uri"] == uri), key=lambda r: r["segment_index"])
        assert all(r["video_id"] == video_id_for(uri) for r in rows)
        assert [r["segment_index"] for r in rows] == list(range(len(rows)))
        assert all(r["start_s"] == r["segment_index"] * 1.0 and r["end_s"] == r["start_s"] + 1.0 for r in rows)
        assert all(r["label"] in CANONICAL_CLASSES for r in rows)
        # spans are 1-2 segments and neighbouring spans differ, so no label repeats 3 times in a row
        labels = [r["label"] for r in rows]
        assert not any(labels[i] == labels[i + 1] == labels[i + 2] for i in range(len(labels) - 2))
        duration = rows[-1]["end_s"]
        frames, rate = _decode(uri)
        assert rate == pytest.approx(10.0)
        assert len(frames) == round(duration * 10.0)
        assert frames[0].shape == (80, 96, 3)
        assert len([b for b in boxes if b["video_uri"] == uri]) == len(frames)
    # same seed, same truth
    gt2 = pq.read_table(S.write_video_corpus(str(tmp_path / "w"), n_videos=2, seed=9, **kw)).to_pylist()
    strip = lambda rows: [(os.path.basename(r["video_uri"]), r["segment_index"], r["start_s"], r["end_s"], r["label"]) for r in rows]  # noqa: E731
    assert strip(gt) == strip(gt2)


def test_expression_video_follows_its_timeline(tmp_path):
    timeline = [(0.0, 1.0, "neutral"), (1.0, 2.0, "surprise"), (2.0, 3.0, "neutral")]
    video = S.write_expression_video(str(tmp_path / "t.mp4"), timeline, fps=10, size=(128, 128), seed=2, move=False, face_scale=0.6)
    assert video.n_frames == 30 and video.duration_s == 3.0 and video.timeline == tuple(timeline)
    frames, _ = _decode(video.uri)
    assert len(frames) == 30

    def lower_face(i: int) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in video.face_boxes[i])
        cy = (y0 + y1) // 2
        return frames[i][cy : y1, x0:x1].astype(np.float32)

    same = np.abs(lower_face(5) - lower_face(25)).mean()  # neutral vs neutral, 2 s apart
    changed = np.abs(lower_face(5) - lower_face(15)).mean()  # neutral vs surprise
    assert changed > 3 * same and changed > 5, (same, changed)


def test_bad_timelines_and_paths_are_rejected(tmp_path):
    path = str(tmp_path / "x.mp4")
    with pytest.raises(S.SyntheticError, match=r"x\.mp4.*starts at 1\.5s, expected 1\.0s"):
        S.write_expression_video(path, [(0, 1, "happy"), (1.5, 2, "sad")])
    with pytest.raises(S.SyntheticError, match=r"x\.mp4.*unknown label 'bored'"):
        S.write_expression_video(path, [(0, 1, "bored")])
    with pytest.raises(S.SyntheticError, match="empty timeline"):
        S.write_expression_video(path, [])
    with pytest.raises(S.SyntheticError, match=r"vp9 video needs one of the extensions"):
        S.write_expression_video(path, [(0, 1, "happy")], codec="vp9")
    with pytest.raises(S.SyntheticError, match="even"):
        S.write_expression_video(path, [(0, 1, "happy")], size=(65, 64))
    assert not os.path.exists(path)


def test_cli_tiny_corpus(tmp_path, capsys):
    out = tmp_path / "corpus"
    rc = S.main(["--out", str(out), "--videos", "1", "--seed", "3", "--images-per-class", "2", "--size", "64x48",
                 "--fps", "10", "--segment-seconds", "1", "--min-spans", "2", "--max-spans", "2"])
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "ground_truth.parquet"), str(out / "images" / "labels.parquet")]
    gt = pq.read_table(printed[0])
    assert 2 <= gt.num_rows <= 4
    frames, _ = _decode(gt.column("video_uri")[0].as_py())
    assert frames[0].shape == (48, 64, 3) and len(frames) == 10 * gt.num_rows
    labels = pq.read_table(printed[1])
    assert labels.num_rows == 2 * N_CLASSES
    with pytest.raises(SystemExit):
        S.main(["--out", str(out), "--size", "big"])
