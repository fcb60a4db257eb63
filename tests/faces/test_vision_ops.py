"""torchvision's roi_align / nms kernels loaded without importing torchvision (cliper_batch.faces.vision_ops)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cliper_batch.faces import vision_ops

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it prints one JSON line last."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def test_a_detector_finds_faces_without_importing_torchvision_or_dynamo():
    got = _python(
        "import json, sys, numpy as np\n"
        "from skimage import data\n"
        "from cliper_batch.faces import vision_ops\n"
        "from cliper_batch.faces.detectors.mtcnn.detector import FaceDetector\n"
        "faces = FaceDetector().detect(data.astronaut()[None])[0]\n"
        "print(json.dumps({'faces': len(faces), 'source': vision_ops._source,\n"
        "  'loaded': [m for m in ('torchvision', 'torch._dynamo') if m in sys.modules]}))\n"
    )
    assert got["faces"] == 1
    assert got["source"] == "library"
    assert got["loaded"] == []


def _rois(rng: np.random.Generator, n: int, frames: int, h: int, w: int) -> torch.Tensor:
    x0 = rng.uniform(-20, w, n)
    y0 = rng.uniform(-20, h, n)
    side = rng.uniform(1, 120, n)
    ids = rng.integers(0, frames, n)
    return torch.tensor(np.stack([ids, x0, y0, x0 + side, y0 + side * rng.uniform(0.7, 1.3, n)], 1), dtype=torch.float32)


def test_kernels_give_torchvision_ops_results_bit_for_bit():
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(7)
    images = torch.tensor(rng.uniform(0, 255, (3, 3, 90, 160)), dtype=torch.float32)
    rois = _rois(rng, 200, 3, 90, 160)  # boxes partly outside the frame, tiny and large
    for size in (24, 48):
        ours = vision_ops.roi_align(images, rois, size)
        theirs = tv_ops.roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        assert ours.shape == (200, 3, size, size)
        assert torch.equal(ours, theirs)
    boxes = rois[:, 1:].contiguous()
    scores = torch.tensor(rng.uniform(0, 1, 200), dtype=torch.float32)
    scores[10:20] = 0.5  # ties keep torchvision's order
    for threshold in (0.3, 0.5, 0.7):
        keep = vision_ops.nms(boxes, scores, threshold)
        assert torch.equal(keep, tv_ops.nms(boxes, scores, threshold))
        assert 0 < len(keep) < 200
    empty = vision_ops.nms(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long


def test_torchvision_imported_after_the_kernels_works_alongside():
    """A fused worker loads the kernels for its detector, then open_clip imports torchvision."""
    got = _python(
        "import json, torch\n"
        "from cliper_batch.faces import vision_ops\n"
        "first = vision_ops.load_kernels()\n"
        "boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]); scores = torch.tensor([.9, .8, .7])\n"
        "ours = vision_ops.nms(boxes, scores, 0.5).tolist()\n"
        "import torchvision, torchvision.ops\n"
        "theirs = torchvision.ops.nms(boxes, scores, 0.5).tolist()\n"
        "rois = torch.tensor([[0., 2, 2, 30, 30]]); img = torch.arange(3 * 40 * 40.).view(1, 3, 40, 40)\n"
        "same = torch.equal(torchvision.ops.roi_align(img, rois, (8, 8), aligned=True), vision_ops.roi_align(img, rois, 8))\n"
        "print(json.dumps({'first': first, 'again': vision_ops.load_kernels(), 'ours': ours, 'theirs': theirs,\n"
        "  'same': same, 'has_ops': torchvision.extension._has_ops()}))\n"
    )
    assert got["first"] == "library" and got["again"] == "present"
    assert got["ours"] == got["theirs"] == [0, 2]
    assert got["same"] and got["has_ops"]


def test_without_the_library_file_the_package_is_imported_and_says_why():
    got = _python(
        "import json, logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from cliper_batch.faces import vision_ops\n"
        "how = vision_ops.load_kernels(names=('_no_such_library',))\n"
        "import torch\n"
        "keep = vision_ops.nms(torch.tensor([[0., 0, 10, 10], [0, 0, 10, 10]]), torch.tensor([.9, .8]), 0.5).tolist()\n"
        "print(json.dumps({'how': how, 'keep': keep, 'torchvision': 'torchvision' in sys.modules}))\n"
    )
    assert got["how"] == "torchvision" and got["torchvision"]
    assert got["keep"] == [0]
    assert "importing torchvision for its kernels (no extension library _no_such_library in" in got["stderr"]


def test_find_library_takes_the_first_name_with_an_extension_suffix(tmp_path):
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert vision_ops.find_library(str(tmp_path)) is None
    (tmp_path / f"_C{suffix}").write_bytes(b"")
    assert vision_ops.find_library(str(tmp_path)) == str(tmp_path / f"_C{suffix}")
    (tmp_path / f"_C_stable{suffix}").write_bytes(b"")
    assert vision_ops.find_library(str(tmp_path)) == str(tmp_path / f"_C_stable{suffix}")
    (tmp_path / "_C_stable.txt").write_bytes(b"")
    assert vision_ops.find_library(str(tmp_path), names=("_C_stable",)) == str(tmp_path / f"_C_stable{suffix}")
