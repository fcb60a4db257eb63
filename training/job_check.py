"""A checkpoint's accuracy through the whole engine: ``cliper annotate --faces none`` over a labelled image split.

``training/evaluate.py`` scores a split with the engine's crop and scoring
functions in one process; this check runs what a user runs - the job's own
command line, listing, image decoding, Ray workers, calibration, Parquet
output - over the split's images (linked into class folders under a temp
directory, never copied into the repository) and reads the accuracy back
from the Parquet. The two must agree (the model card's number holds for the
engine): ``--expect ACC --tolerance 0.01`` exits 1 when they do not.

    python -m cliper_batch.training.job_check --data fer2013:/data/fer2013 --split test \\
        --model models/cliper-fer2013.safetensors --expect 0.6233 --json docs/models/fer2013-job-check.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

__all__ = ["agrees", "job_accuracy", "main"]


def _link_split(samples, folder: str) -> dict[str, str]:
    """Symlink each sample as ``<folder>/<label>/<n>_<name>``; returns {linked path: label}."""
    truth: dict[str, str] = {}
    for i, s in enumerate(samples):
        cdir = os.path.join(folder, s.label)
        os.makedirs(cdir, exist_ok=True)
        dst = os.path.join(cdir, f"{i:06d}_{os.path.basename(s.path)}")
        os.symlink(os.path.abspath(s.path), dst)
        truth[os.path.realpath(dst)] = s.label
    return truth


def job_accuracy(data: str, split: str, model: str, workdir: str, extra_args: Sequence[str] = ()) -> dict:
    """Run the job over ``split`` of ``data`` with ``model`` and ``--faces none``; the accuracy read from its Parquet."""
    import polars as pl

    from .datasets.registry import load_dataset

    labeled = load_dataset(data, split)
    corpus, out = os.path.join(workdir, "images"), os.path.join(workdir, "out")
    truth = _link_split(labeled.samples, corpus)
    cmd = [sys.executable, "-m", "cliper_batch.shell.command", "annotate", "--input", corpus, "--output", out,
           "--model", model, "--faces", "none", *extra_args]
    t0 = time.perf_counter()
    job = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if job.returncode != 0:
        raise RuntimeError(f"the job failed (exit {job.returncode}):\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")
    rows = pl.read_parquet(os.path.join(out, "timelines", "**", "*.parquet"))
    videos = pl.read_parquet(os.path.join(out, "videos", "**", "*.parquet"))
    by_path = {}
    for uri, label in rows.select("video_uri", "label").iter_rows():
        path = os.path.realpath(uri.removeprefix("file://"))
        if path in by_path:
            raise RuntimeError(f"{uri}: more than one row for one image with --faces none")
        by_path[path] = label
    missing = [p for p in truth if p not in by_path]
    correct = sum(by_path.get(p) == label for p, label in truth.items())
    return {
        "images": len(truth),
        "rows": len(by_path),
        "missing": len(missing),
        "failed": int((videos["status"] != "ok").sum()),
        "accuracy": round(correct / len(truth), 4),
        "model_id": rows["model_id"].unique().to_list(),
        "wall_s": round(wall, 1),
        "command": " ".join(cmd[1:]),
    }


def agrees(report: dict, expect: float, tolerance: float = 0.01) -> bool:
    """Whether the job reproduced ``expect`` within ``tolerance``, with no image missing or failed."""
    return abs(report["accuracy"] - expect) <= tolerance and report["missing"] == 0 and report["failed"] == 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cliper_batch.training.job_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset spec of labelled images, e.g. fer2013:/data/fer2013")
    p.add_argument("--split", default="test")
    p.add_argument("--model", required=True, help="checkpoint to run the job with")
    p.add_argument("--expect", type=float, default=None, help="the accuracy the job must reproduce (the card's)")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--workdir", default=None, help="keep the linked images and the job's output here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cliper-job-check-") as tmp:
        report = job_accuracy(args.data, args.split, args.model, args.workdir or tmp)
    report.update({"data": args.data.split(":", 1)[0], "split": args.split})
    ok = True
    if args.expect is not None:
        report["expected"] = args.expect
        report["difference"] = round(report["accuracy"] - args.expect, 4)
        ok = agrees(report, args.expect, args.tolerance)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
            fh.write("\n")
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
