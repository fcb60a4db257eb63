"""A run that cannot work fails before Ray starts: exit 2, one clear message, no rows written.

Real inputs throughout: the shipped demo checkpoint (and a truncated copy of it),
the packaged detector weights (and a corrupt copy), a synthetic corpus, real
unwritable locations. Only ``dali_available`` is replaced, to stand for a host
where nvidia.dali is not installed.
"""
from __future__ import annotations

import os
import shutil

import pytest

from cliper_batch.shell import annotate_cli as cli, preflight, ray_runtime
from cliper_batch.faces.detectors.mtcnn import weights as mtcnn_weights
from cliper_batch.decode.testvideos import VideoSpec, write_video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_MODEL = os.path.join(REPO, "models", "cliper-demo.safetensors")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_video(str(folder / "one.mp4"), VideoSpec(codec="h264", duration_s=1.0, width=64, height=64, seed=1))
    return str(folder)


def _run(capsys, *argv) -> tuple[int, str]:
    started = []
    init_ray = ray_runtime.start
    ray_runtime.start = lambda *a, **k: started.append(a)  # (a session-wide test Ray may already be running)
    try:
        rc = cli.main(list(argv))  # argparse refusals are returned as 2 too, not raised
    finally:
        ray_runtime.start = init_ray
    assert not started, "a refused run must not start Ray"
    return rc, capsys.readouterr().err


def _no_rows(output: str) -> bool:
    return not any(os.path.exists(os.path.join(output, t)) for t in ("videos", "timelines", "runs"))


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
        ("--segment-seconds", "-2", "argument --segment-seconds: must be a finite number > 0"),
        ("--segment-seconds", "nan", "argument --segment-seconds: must be a finite number > 0"),
        ("--frames-per-segment", "0", "argument --frames-per-segment: must be >= 1"),
        ("--video-timeout", "0", "argument --video-timeout: must be a finite number > 0"),
        ("--decode-workers", "-1", "argument --decode-workers: must be >= 1"),
        ("--score-workers", "0", "argument --score-workers: must be >= 1"),
        ("--videos-per-task", "0", "argument --videos-per-task: must be >= 1"),
        ("--gpu-fraction", "0", "argument --gpu-fraction: must be a finite number > 0"),
        ("--gpu-fraction", "1.5", "argument --gpu-fraction: must be in (0, 1]"),
        ("--limit", "0", "argument --limit: must be >= 1"),
        ("--commit-every", "0", "argument --commit-every: must be >= 1"),
        ("--batch-size", "many", "argument --batch-size: expected a whole number >= 1, got 'many'"),
        ("--log-level", "loud", "argument --log-level: invalid log level 'loud' (choose from DEBUG, INFO, WARNING"),
    ],
)
def test_nonsensical_option_values_are_refused_like_argparse_refuses(capsys, corpus, tmp_path, option, value, message):
    rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", DEMO_MODEL, option, value)
    assert rc == 2 and message in err, err
    assert _no_rows(str(tmp_path / "out"))


def test_truncated_checkpoint_fails_before_any_video(capsys, corpus, tmp_path):
    data = open(DEMO_MODEL, "rb").read()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) * 2 // 3])
    rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", str(bad))
    assert rc == 2
    assert "--model" in err and "truncated or corrupted safetensors file" in err, err
    assert _no_rows(str(tmp_path / "out"))


def test_missing_checkpoint_fails_before_any_video(capsys, corpus, tmp_path):
    rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", str(tmp_path / "nope.safetensors"))
    assert rc == 2 and "checkpoint not found" in err, err


def test_checkpoint_whose_tensors_do_not_fit_its_config_is_refused(tmp_path):
    """Header intact, one tensor renamed: caught from the header alone (no torch, no open_clip)."""
    import json
    import struct

    data = open(DEMO_MODEL, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header["renamed." + name] = header.pop(name)
    raw = json.dumps(header).encode()
    bad = tmp_path / "renamed.safetensors"
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(preflight.PreflightError, match="tensors do not match the stored config"):
        preflight.check_model(str(bad))


def _rewrite_header(tmp_path, name: str, edit) -> str:
    """A copy of the demo checkpoint whose safetensors header (a JSON dict) ``edit`` changed in place."""
    import json
    import struct

    data = open(DEMO_MODEL, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    bad = tmp_path / name
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return str(bad)


def test_header_layout_the_config_fixes_is_checked_without_building_the_model(tmp_path):
    """Descriptor matrix of the wrong shape, parameters for the parameter-free 'mean' pooling: refused from the header."""

    def wrong_descriptors(header):
        header["descriptors"]["shape"] = [7, 4, 160]  # same bytes, another [C, K, D]

    with pytest.raises(preflight.PreflightError, match=r"descriptors: file F32 \[7, 4, 160\] vs model F32 \[7, 5, 128\]"):
        preflight.check_model(_rewrite_header(tmp_path, "desc.safetensors", wrong_descriptors))

    def pooling_params(header):
        header["temporal_pool.weight"] = dict(header["descriptors"])

    with pytest.raises(preflight.PreflightError, match="'mean' pooling has no parameters"):
        preflight.check_model(_rewrite_header(tmp_path, "pool.safetensors", pooling_params))


def test_a_tower_tensor_renamed_inside_visual_is_caught_where_the_weights_load(tmp_path):
    """What only the rebuilt architecture knows (a tower tensor's exact name) is checked when the weights load,
    in the worker, and by ``check_checkpoint`` (meta-device skeleton) for callers with torch at hand."""
    from cliper_batch.model.checkpoint import CheckpointError, check_checkpoint, load_checkpoint

    def rename(header):
        name = next(k for k in header if k.startswith("visual."))
        header["visual.renamed"] = header.pop(name)

    bad = _rewrite_header(tmp_path, "renamed-in-tower.safetensors", rename)
    assert preflight.check_model(bad).model_id  # the header alone cannot tell
    with pytest.raises(CheckpointError, match="tensors do not match the stored config"):
        check_checkpoint(bad)
    with pytest.raises(CheckpointError, match="tensors do not match the stored config"):
        load_checkpoint(bad)


def test_unusable_detector_weights_fail_before_any_video(capsys, corpus, tmp_path, monkeypatch):
    corrupt = tmp_path / "mtcnn.safetensors"
    shutil.copy(mtcnn_weights.WEIGHTS_FILE, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    monkeypatch.setattr(mtcnn_weights, "WEIGHTS_FILE", str(corrupt))  # as if the installed package file were broken
    rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", DEMO_MODEL)
    assert rc == 2
    assert "--faces detect: face detector unavailable" in err and "reinstall cliper-batch" in err, err
    assert _no_rows(str(tmp_path / "out"))
    # --faces none does not need the detector
    assert preflight.check_run(corpus, str(tmp_path / "out2"), DEMO_MODEL, device="cpu", decoder="auto",
                               faces="none", local=True).device == "cpu"


def test_unwritable_output_fails_with_a_message_not_a_traceback(capsys, corpus, tmp_path):
    rc, err = _run(capsys, "--input", corpus, "--output", "/proc/cliper-out", "--model", DEMO_MODEL)
    assert rc == 2 and "--output /proc/cliper-out: cannot write there" in err, err
    assert "Traceback" not in err
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    rc, err = _run(capsys, "--input", corpus, "--output", str(blocker / "out"), "--model", DEMO_MODEL)
    assert rc == 2 and "cannot write there" in err, err


def test_unavailable_device_or_decoder_fails_before_any_video(capsys, corpus, tmp_path, monkeypatch):
    import torch

    if not torch.cuda.is_available():
        rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", DEMO_MODEL, "--device", "cuda")
        assert rc == 2 and "CUDA is not available" in err, err
    rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", DEMO_MODEL, "--device", "tpu")
    assert rc == 2 and "unknown device 'tpu'" in err, err
    from cliper_batch.decode import dali_backend

    monkeypatch.setattr(dali_backend, "dali_available", lambda: False)
    rc, err = _run(capsys, "--input", corpus, "--output", str(tmp_path / "out"), "--model", DEMO_MODEL, "--decoder", "dali")
    assert rc == 2 and "--decoder dali: nvidia.dali is not installed" in err, err
    assert _no_rows(str(tmp_path / "out"))


def test_on_a_cluster_only_the_device_spelling_is_checked_locally():
    assert preflight.check_device("cuda:1", local=False) == "cuda:1"  # the GPUs may be on the workers
    with pytest.raises(preflight.PreflightError, match="unknown device"):
        preflight.check_device("gpu", local=False)
