"""One real annotate run shared by the report and overlay tests: a two-person video with a cut, and a broken file.

``people.mp4`` is the two-face, one-cut clip of ``test_faces_e2e`` (tracks 1 and 2,
then track 3 after the cut); ``notes.mp4`` is text and fails to probe. Both go
through the real annotate job (embedded Ray, MTCNN faces, a tiny random-weight
CLIPER). The output is made once per test session and reused by every module
that asks (a test that changes the corpus must restore it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cliper_batch.shell.annotate_cli import main as annotate_main
from two_scene import write_two_scene_video


@dataclass(frozen=True)
class AnnotatedPeople:
    output: str
    corpus: str
    video: str  # people.mp4, annotated OK with 3 face tracks
    broken: str  # notes.mp4, failed


def annotated_people(base: Path, checkpoint: str) -> AnnotatedPeople:
    root = base / "annotated_people"
    corpus, out = root / "corpus", root / "out"
    made = AnnotatedPeople(str(out), str(corpus), str(corpus / "people.mp4"), str(corpus / "notes.mp4"))
    if (out / "runs").is_dir():
        return made
    corpus.mkdir(parents=True, exist_ok=True)
    write_two_scene_video(made.video)
    with open(made.broken, "w") as fh:
        fh.write("this is a text file, not a video\n" * 20)
    rc = annotate_main(["--input", str(corpus), "--output", str(out), "--model", checkpoint, "--faces", "detect",
                        "--segment-seconds", "1", "--frames-per-segment", "4", "--batch-size", "4"])
    assert rc == 0 and os.listdir(out / "runs")
    return made
