"""The user's install: a wheel of this checkout in a fresh venv runs the default job from any folder.

Slow (a fresh venv resolves torch, Ray, DALI, ... from the configured index;
minutes, most of it unpacking wheels). Steps, as a new user would:

1. ``pip wheel --no-deps`` builds the project (isolated build: the
   ``[build-system]`` of pyproject.toml, which must build without warnings
   about our own metadata);
2. a fresh ``python -m venv`` installs that wheel, dependencies from the index;
3. from a folder outside the checkout, with its own empty ``HOME`` (no
   ``~/.ray/auth_token`` yet): render a synthetic corpus, run the default
   ``cliper-annotate`` (``--faces detect``, the packaged MTCNN weights) with
   the shipped demo model, and score it against the ground truth the way the
   demo does: every video ok, segment accuracy >= 0.95;
4. run again now that Ray has written the token: nothing to do, exit 0;
5. a truncated checkpoint, then a broken detector weights file in the installed
   package: exit 2 before any video, with the message, no rows written.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import pytest

# a fresh venv unpacks ~7 GB of wheels: more than the suite's 900 s per-test limit on a loaded host
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_MODEL = os.path.join(REPO, "models", "cliper-demo.safetensors")


def _run(cmd, *, env=None, cwd=None, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _base_python() -> str:
    """The interpreter this test venv was made from (a venv of a venv would inherit nothing, but be explicit)."""
    return getattr(sys, "_base_executable", None) or sys.executable


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, timings) of a fresh venv holding the wheel built from this checkout."""
    root = tmp_path_factory.mktemp("install")
    timings = {}
    t0 = time.perf_counter()
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(root / "wheels"), REPO])
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    timings["wheel_s"] = time.perf_counter() - t0
    for box in ("SetuptoolsDeprecationWarning", "BuildBackendWarning"):  # licence table, data folders not packages
        assert box not in build.stdout + build.stderr, build.stderr[-3000:]
    (wheel,) = glob.glob(str(root / "wheels" / "cliper_batch-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "cliper_batch/faces/weights/mtcnn.safetensors" in names and "cliper_batch/faces/weights/NOTICE" in names
    # the shipped checkpoints travel inside the package: the default real-face model and the demo's
    assert {"cliper_batch/models/cliper-fer2013.safetensors", "cliper_batch/models/cliper-demo.safetensors"} <= set(names)

    t0 = time.perf_counter()
    venv = root / "venv"
    made = _run([_base_python(), "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr[-3000:]
    pip = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", wheel])
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    timings["venv_install_s"] = time.perf_counter() - t0
    print(f"install timings: {timings}")
    yield venv / "bin", timings
    import shutil

    shutil.rmtree(venv, ignore_errors=True)  # ~7 GB (torch, CUDA libs): never left behind in pytest's temp dirs


def _user_env(home) -> dict:
    """A user's shell: no RAY_* from the test session, its own HOME, nothing from this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    return env


def _no_rows(output) -> bool:
    return not any(os.path.exists(os.path.join(output, t)) for t in ("videos", "timelines", "runs"))


def test_wheel_in_a_fresh_venv_runs_the_default_job_from_any_folder(installed, tmp_path):
    bin_dir, _ = installed
    py = str(bin_dir / "python")
    home = tmp_path / "home"
    work = tmp_path / "elsewhere"  # outside the checkout
    home.mkdir()
    work.mkdir()
    env = _user_env(home)
    found = _run([py, "-c", "import cliper_batch, os; print(os.path.dirname(cliper_batch.__file__))"], env=env, cwd=work)
    assert found.returncode == 0 and "site-packages" in found.stdout and REPO not in found.stdout, found.stdout + found.stderr

    synth = _run([py, "-m", "cliper_batch.synthetic", "--out", "videos", "--videos", "2", "--seed", "7"], env=env, cwd=work)
    assert synth.returncode == 0, synth.stderr[-3000:]

    # 3. the default annotate command; no ~/.ray/auth_token yet: the embedded Ray makes one
    assert not (home / ".ray" / "auth_token").exists()
    t0 = time.perf_counter()
    job = _run([str(bin_dir / "cliper-annotate"), "--input", "videos", "--output", "out", "--model", DEMO_MODEL],
               env=env, cwd=work)
    wall = time.perf_counter() - t0
    log = job.stdout[-4000:] + job.stderr[-6000:]
    assert job.returncode == 0, log
    assert "videos ok=2 failed=0 of 2" in job.stdout, log
    assert "progress: 2/2 videos (100%)" in job.stderr, log
    for noise in ("Deprecat", "Progress bars disabled", "Token authentication is enabled", "Traceback"):
        assert noise not in job.stderr, noise + "\n" + log
    assert (home / ".ray" / "auth_token").exists()
    print(f"annotate wall {wall:.1f} s")

    score = _run([py, "-m", "cliper_batch.training.demo", "score", "--output", "out",
                  "--ground-truth", "videos/ground_truth.parquet", "--min-accuracy", "0.95"], env=env, cwd=work)
    assert score.returncode == 0, score.stdout + score.stderr
    result = json.loads(score.stdout)
    assert result["accuracy"] >= 0.95 and result["coverage"] == 1.0, result

    # 4. again, now with a token in ~/.ray: the embedded Ray still starts; nothing left to do
    again = _run([str(bin_dir / "cliper-annotate"), "--input", "videos", "--output", "out", "--model", DEMO_MODEL],
                 env=env, cwd=work)
    assert again.returncode == 0 and "nothing to do: 2 listed, 2 already done" in again.stdout, (
        again.stdout[-3000:] + again.stderr[-3000:]
    )

    # 5a. a truncated checkpoint: exit 2 before any video
    data = open(DEMO_MODEL, "rb").read()
    (work / "cut.safetensors").write_bytes(data[: len(data) // 2])
    cut = _run([str(bin_dir / "cliper-annotate"), "--input", "videos", "--output", "out2", "--model", "cut.safetensors"],
               env=env, cwd=work)
    assert cut.returncode == 2 and "truncated or corrupted safetensors file" in cut.stderr, cut.stderr[-3000:]
    assert _no_rows(work / "out2")

    # 5b. the installed detector weights broken (a damaged install): exit 2 before any video
    weights = os.path.join(found.stdout.strip(), "faces", "weights", "mtcnn.safetensors")
    raw = open(weights, "rb").read()
    with open(weights, "wb") as fh:
        fh.write(raw[:4096])
    try:
        broken = _run([str(bin_dir / "cliper-annotate"), "--input", "videos", "--output", "out3", "--model", DEMO_MODEL],
                      env=env, cwd=work)
    finally:  # the venv is shared by this module's tests: put the install back as it was
        with open(weights, "wb") as fh:
            fh.write(raw)
    assert broken.returncode == 2, broken.stderr[-3000:]
    assert "face detector unavailable" in broken.stderr and "reinstall cliper-batch" in broken.stderr, broken.stderr[-3000:]
    assert _no_rows(work / "out3")


def test_wheel_runs_the_real_face_default_without_a_model_option(installed, tmp_path):
    """No --model: the packaged real-face model annotates a real smiling face (a video made from a public-domain photo)."""
    from realfaces import write_astronaut_video

    bin_dir, _ = installed
    home, work = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    (work / "videos").mkdir(parents=True)
    write_astronaut_video(str(work / "videos" / "astronaut.mp4"))
    env = _user_env(home)
    models = _run([str(bin_dir / "cliper"), "models"], env=env, cwd=work)
    assert models.returncode == 0 and "builtin:fer2013 (default)" in models.stdout, models.stdout + models.stderr
    job = _run([str(bin_dir / "cliper"), "annotate", "--input", "videos", "--output", "out"], env=env, cwd=work)
    log = job.stdout[-3000:] + job.stderr[-3000:]
    assert job.returncode == 0 and "videos ok=1 failed=0 of 1" in job.stdout, log
    labels = _run([str(bin_dir / "python"), "-c",
                   "import polars as pl; t = pl.read_parquet('out/timelines/**/*.parquet'); "
                   "print((t['label'] == 'happy').mean(), t['model_id'].unique().to_list())"], env=env, cwd=work)
    assert labels.returncode == 0, labels.stderr[-2000:]
    share = float(labels.stdout.split()[0])
    assert share >= 0.75, labels.stdout
