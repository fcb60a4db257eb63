#!/usr/bin/env python3
"""Reproduce cliper_batch/faces/weights/mtcnn.safetensors from the facenet-pytorch 2.6.0 wheel.

Run once by a maintainer (not by CI, not by installs). The wheel carries the
three MTCNN nets as plain torch ``state_dict`` files (``facenet_pytorch/data/
pnet.pt``, ``rnet.pt``, ``onet.pt``); they are read with
``torch.load(weights_only=True)`` (no pickled code runs), checked against the
sha256 digests published in ``cliper_batch/faces/weights/NOTICE``, and written
as one safetensors file whose keys are ``pnet.*``, ``rnet.*`` and ``onet.*``.

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fn
    .venv/bin/python scripts/convert_mtcnn_weights.py /tmp/fn/facenet_pytorch-2.6.0-py3-none-any.whl

Then compare the printed sha256 of the output with ``MTCNN_SHA256`` in
``cliper_batch/faces/detectors/mtcnn/weights.py`` (they must be equal: the conversion is
deterministic) and with the NOTICE file.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import zipfile

import torch
from safetensors.torch import save

# sha256 of the members of facenet_pytorch-2.6.0-py3-none-any.whl (also in the NOTICE file).
SOURCE_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "cliper_batch", "faces", "weights", "mtcnn.safetensors")


def convert(wheel: str) -> bytes:
    """The safetensors bytes of the three nets in ``wheel`` (refuses any member whose digest differs)."""
    tensors: dict[str, torch.Tensor] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name, digest in SOURCE_SHA256.items():
            raw = zf.read(f"facenet_pytorch/data/{name}.pt")
            got = hashlib.sha256(raw).hexdigest()
            if got != digest:
                raise SystemExit(f"{name}.pt in {wheel} has sha256 {got}, expected {digest}: not facenet-pytorch 2.6.0")
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            for key, value in state.items():
                tensors[f"{name}.{key}"] = value.detach().contiguous().clone()
    metadata = {
        "source": "facenet-pytorch 2.6.0 (MIT, Tim Esler): facenet_pytorch/data/{pnet,rnet,onet}.pt",
        "model": "MTCNN P-Net/R-Net/O-Net (Zhang et al. 2016, MIT)",
    }
    return save(tensors, metadata=metadata)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", help="facenet_pytorch-2.6.0-py3-none-any.whl (from `pip download --no-deps facenet-pytorch==2.6.0`)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    data = convert(args.wheel)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as fh:
        fh.write(data)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
