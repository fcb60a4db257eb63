"""The small open_clip architectures of ``configs/`` (e.g. ``Tiny-ViT-T-16``), registered with open_clip explicitly.

Whoever asks open_clip about an architecture by name calls :func:`open_clip_registered` first
(the builder, the zero-shot model's tokenizer, a spec's input size); importing a module
changes nothing global.
"""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def open_clip_registered():
    """open_clip, with the architectures of ``configs/`` registered (several seconds on first import)."""
    import open_clip

    names = [p.stem for p in CONFIG_DIR.glob("*.json")]
    if names and not all(n in open_clip.list_models() for n in names):
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


__all__ = ["CONFIG_DIR", "open_clip_registered"]
