"""The HTML report as a person sees it: rendered by a real headless Chromium with no network.

Chromium (Debian's ``chromium``, installed by ``.ci/run``) runs in its own empty
network namespace (``unshare --net``) where that is allowed, else with an
unreachable proxy; either way its net log must show no request made by the page.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from PIL import Image

from annotated_people import annotated_people
from cliper_batch.output import query
from cliper_batch.report.__main__ import main as report_main
from cliper_batch.uris import video_id_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions"]


@pytest.fixture(scope="module")
def people(ray_runtime, tiny_checkpoint, tmp_path_factory):
    return annotated_people(tmp_path_factory.getbasetemp(), tiny_checkpoint)


def _offline_prefix() -> tuple[list[str], list[str]]:
    """(command prefix, extra flags) that keep Chromium off every network."""
    if shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0:
        return ["unshare", "--net"], []
    return [], ["--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


def chromium(html: str, tmp, *args: str) -> tuple[str, list[str]]:
    """Run headless Chromium on ``html`` offline; returns (stdout, URLs the page itself requested)."""
    prefix, flags = _offline_prefix()
    netlog = str(tmp / f"netlog{len(os.listdir(tmp))}.json")
    cmd = [*prefix, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *QUIET, *flags,
           f"--user-data-dir={tmp / 'chromium-profile'}", f"--log-net-log={netlog}", *args, "file://" + html]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(netlog) as fh:
        events = json.load(fh)["events"]
    # requests of the browser itself (update checks ...) carry initiator "not an origin"; the page's do not
    page = {e["params"].get("url", "?") for e in events
            if "initiator" in e.get("params", {}) and e["params"]["initiator"] != "not an origin"}
    return proc.stdout, sorted(u for u in page if not u.startswith(("file:", "data:")))


VOID = ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr")


class Dom(HTMLParser):
    """Just enough of the DOM: elements with their attributes and the text inside each video section."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict, str | None]] = []  # (tag, attrs, enclosing video id)
        self.video_text: dict[str, list[str]] = {}
        self.text: list[str] = []
        self._stack: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        current = self._stack[-1] if self._stack else None
        vid = a.get("data-video-id", current) if tag == "div" else current
        self.elements.append((tag, a, vid))
        if tag not in VOID:
            self._stack.append(vid)

    def handle_endtag(self, tag):
        if tag not in VOID and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        vid = self._stack[-1] if self._stack else None
        if vid:
            self.video_text.setdefault(vid, []).append(data)

    def find(self, tag, cls=None, video=None, **attrs):
        return [a for t, a, v in self.elements
                if t == tag and (cls is None or cls in a.get("class", "").split()) and (video is None or v == video)
                and all(a.get(k.replace("_", "-")) == val for k, val in attrs.items())]


def write_report(output: str, html: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cliper_batch.report", output, "--out", html, *extra],
                          capture_output=True, text=True, timeout=600)


@needs_chromium
def test_report_renders_offline_with_one_timeline_per_track(people, tmp_path):
    html = str(tmp_path / "report.html")
    proc = write_report(people.output, html)
    assert proc.returncode == 0, proc.stderr
    assert "report: wrote " + html in proc.stdout
    source = open(html, encoding="utf-8").read()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", source, re.I), "an external resource"

    dom_text, requested = chromium(html, tmp_path, "--dump-dom")
    assert requested == [], f"the page asked the network for {requested}"
    dom = Dom()
    dom.feed(dom_text)

    vid = query.scan_videos(people.output).filter(pl.col("video_uri") == people.video).collect().row(0, named=True)
    tracks = sorted(query.scan_timelines(people.output).filter(pl.col("video_id") == vid["video_id"])
                    .select("track_id").unique().collect()["track_id"].to_list())
    assert vid["n_tracks"] == len(tracks) == 3
    figures = dom.find("figure", "timeline", video=vid["video_id"])
    assert sorted(int(f["data-track-id"]) for f in figures) == tracks  # one timeline per face track
    assert len(dom.find("svg", video=vid["video_id"])) >= len(tracks)  # each one a rendered chart
    thumbs = dom.find("img", "thumb", video=vid["video_id"])
    assert len(thumbs) == len(tracks) and all(t["src"].startswith("data:image/jpeg;base64,") for t in thumbs)
    section = " ".join(dom.video_text[vid["video_id"]])
    assert "people.mp4" in section and all(f"track {t}" in section for t in tracks)

    text = " ".join(dom.text)
    assert "notes.mp4" in text and "ProbeError" in text  # the failed video, under its error type
    assert len(dom.find("tr", "failure-group", data_error_type="ProbeError")) == 1
    assert re.search(r"\b\d+ segment\(s\)", text), "the page's script did not run (segment search is empty)"
    assert len(dom.find("tr", "run")) == 1

    png = tmp_path / "shot.png"
    chromium(html, tmp_path, "--screenshot=" + str(png), "--window-size=1280,1600")
    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    assert img.shape[:2] == (1600, 1280)
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 50, "blank screenshot"


def test_report_bad_input_is_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main([str(empty), "--out", str(tmp_path / "r.html")]) == 2
    assert "no finished annotate run" in capsys.readouterr().err
    assert report_main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_names_an_unknown_video_and_keeps_going_without_a_moved_one(people, tmp_path, capsys):
    assert report_main([people.output, "--out", str(tmp_path / "r.html"), "--video", "0123456789abcdef"]) == 2
    assert "neither a video id nor a video annotated" in capsys.readouterr().err

    moved = tmp_path / "people.mp4"
    shutil.move(people.video, moved)
    try:
        # asked for by its new path: the report says which annotated video has that name
        assert report_main([people.output, "--out", str(tmp_path / "r.html"), "--video", str(moved)]) == 2
        err = capsys.readouterr().err
        assert "did it move since it was annotated?" in err and people.video in err
        # the whole report still comes out, saying why the thumbnails are missing
        assert report_main([people.output, "--out", str(tmp_path / "r.html"), "--video", people.video]) == 0
        page = (tmp_path / "r.html").read_text()
        assert "file not found" in page and "moved or changed since it was annotated?" in page
        assert 'class="thumb"' not in page and page.count('<figure class="timeline"') == 3
    finally:
        shutil.move(moved, people.video)


def test_report_detail_set_and_lists_stay_bounded(tmp_path):
    """Written Parquet (the engine is not the point): 300 videos, 14 of them real files that each win one label."""
    from bench.report import CLASSES, hero_videos, write_synthetic_output

    (tmp_path / "heroes").mkdir()
    heroes = hero_videos(str(tmp_path / "heroes"), 14)
    out = str(tmp_path / "out")
    made = write_synthetic_output(out, 300, heroes)
    html = tmp_path / "r.html"

    def sections(*args: str) -> list[str]:
        assert report_main([out, "--out", str(html), *args]) == 0
        page = html.read_text()
        return re.findall(r'<div class="video" id="v-([0-9a-f]{16})"', page)

    hero_ids = [video_id_for(h) for h in heroes]
    # default: each label's top video first (hero k wins label k % 7), round robin, up to --limit 12
    shown = sections("--table-rows", "50", "--segments-per-label", "20")
    assert shown == hero_ids[:7] + hero_ids[7:12]
    page = html.read_text()
    assert page.count('<figure class="timeline"') == 12 * 2 and page.count('class="thumb"') == 12 * 2
    assert "Showing 50 of 300 videos" in page and len(re.findall(r"<tr data-label=", page)) == 50
    seg_rows = json.loads(re.search(r'id="segments-data">(.*?)</script>', page, re.S).group(1))
    assert len(seg_rows) == 20 * len(CLASSES) and {r[5] for r in seg_rows} == set(CLASSES)
    fails = query.scan_videos(out).filter(pl.col("status") == "failed").group_by("error_type").len().collect()
    for et, n in fails.iter_rows():
        assert re.search(rf'data-error-type="{et}">\s*<td class="err mono">{et}</td><td class="n">{n}</td>', page)
    assert sum(fails["len"]) == made["failed"]

    assert sections("--limit", "3") == hero_ids[:3]
    assert sections("--video", heroes[5], "--video", hero_ids[2], "--video", heroes[5]) == [hero_ids[5], hero_ids[2]]
