"""``cliper models``: the shipped checkpoints and what any checkpoint says about itself, from its header alone.

No torch, no open_clip: the header of a ``.safetensors`` checkpoint holds the classes,
input size, preprocessing (grey input, face-crop margin), calibration, model id and
the training/evaluation record (:mod:`.checkpoint`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from .checkpoint import CheckpointError, read_checkpoint_header
from .spec import BUILTIN_MODELS, BUILTIN_PREFIX, DEFAULT_MODEL, ModelSpecError, parse_spec


def describe(spec: str) -> dict[str, Any]:
    """What the checkpoint a spec names says about itself (header only)."""
    parsed = parse_spec(spec)
    if parsed.kind != "checkpoint":
        raise ModelSpecError(f"{spec!r}: only checkpoints (builtin:NAME or .safetensors) can be described")
    h = read_checkpoint_header(parsed.uri)  # type: ignore[arg-type]
    cfg = h.config
    extra = cfg.get("extra") or {}
    evaluation = extra.get("evaluation") or {}
    size = os.path.getsize(parsed.uri) if parsed.uri and os.path.exists(parsed.uri) else None
    return {
        "spec": spec,
        "file": h.uri,
        "bytes": size,
        "model_id": h.model_id,
        "default": spec == DEFAULT_MODEL,
        "classes": list(h.classes),
        "descriptors_per_class": cfg["descriptors_per_class"],
        "image_size": h.image_size,
        "grey": bool(cfg.get("grey", False)),
        "face_margin": h.face_margin,
        "calibration": cfg.get("calibration", 1.0),
        "arch": cfg.get("arch"),
        "visual_gflops": round(h.visual_gflops, 4),
        "training": (extra.get("training") or {}).get("train_data"),
        "accuracy": evaluation.get("accuracy"),
        "mean_class_recall": evaluation.get("mean_class_recall"),
        "ece": evaluation.get("ece_after"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cliper models",
        description="List the shipped CLIPER checkpoints, or describe checkpoints (header only, nothing is loaded).",
        epilog="examples:\n  cliper models\n  cliper models builtin:fer2013 --json\n  cliper models ./my.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("specs", nargs="*", help="builtin:NAME or a .safetensors path/URL (default: every shipped model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    specs = a.specs or [BUILTIN_PREFIX + name for name in BUILTIN_MODELS]
    rows, failed = [], 0
    for spec in specs:
        try:
            rows.append(describe(spec))
        except (ModelSpecError, CheckpointError) as exc:
            failed += 1
            print(f"cliper models: {spec}: {exc}".splitlines()[0], file=sys.stderr)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = " (default)" if r["default"] else ""
            acc = "" if r["accuracy"] is None else f", test accuracy {r['accuracy']}, ECE {r['ece']}"
            print(f"{r['spec']}{mark}: {r['model_id']}, {len(r['classes'])} classes, {r['image_size']} px"
                  f"{', grey' if r['grey'] else ''}, margin {r['face_margin']}, data {r['training']}{acc}")
            print(f"    {r['file']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
