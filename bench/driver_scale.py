"""Driver scale: listing -> incremental plan -> writer bookkeeping for 10^5 and 10^6 videos, no decoding.

    .venv/bin/python -m bench.driver_scale [--sizes 100000 1000000] [--changed 0.01]

Per size, in a fresh process (so peak RSS is that size's own):

* night 1: list a corpus folder of N empty ``.mp4`` files (100 subfolders; one
  recursive ``find``, as for a directory or bucket prefix), plan against an empty output,
  build the Ray Data items, feed the writer one scored segment and one outcome per
  video in batches of 256 (what the pipeline would send), close (commit parts);
* night 2: the same corpus with ``--changed`` of the files rewritten (new size):
  list, read the manifest state (N rows), plan (only the changed ones), feed and
  close them (which moves the superseded rows of night 1 to history/).

Reports driver time per stage (summed over both nights; the synthetic batches
are made outside the timed part), seconds and peak RSS per video, and the ratio between
sizes (linear growth = ratio of sizes). Results: bench/results/driver_scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import machine, write_result
from cliper_batch.incremental import manifest_state, plan_work
from cliper_batch.listing import list_videos
from cliper_batch.output.writer import OutputWriter
from cliper_batch import rows
from cliper_batch.pipeline.run import refs_table
from cliper_batch.types import VideoInfo

CLASSES = ("neutral", "happy", "sad")
BATCH = 256


def _batches(refs):
    """Scored batches as the pipeline sends them: per video one segment row, then its outcome row."""
    info_json = json.dumps(vars(VideoInfo(2.0, 25.0, 64, 48, "h264")))
    for lo in range(0, len(refs), BATCH):
        chunk = refs[lo : lo + BATCH]
        n = len(chunk)
        kinds = np.array([rows.SEGMENT, rows.VIDEO] * n, dtype=object)
        vids = np.array([r.video_id for r in chunk for _ in (0, 1)], dtype=object)
        uris = np.array([r.uri for r in chunk for _ in (0, 1)], dtype=object)
        # (the workers' encoding, done cheaply here: its cost is not the driver's)
        outcome = np.array(
            [x for r in chunk for x in ("", '{"ref": %s, "status": "ok", "info": %s, "n_segments": 1}' % (rows.encode_ref(r), info_json))],
            dtype=object,
        )
        b = {
            "row_kind": kinds, "video_id": vids, "video_uri": uris,
            "track_id": np.zeros(2 * n, np.int32), "segment_index": np.zeros(2 * n, np.int32),
            "start_s": np.zeros(2 * n), "end_s": np.full(2 * n, 2.0), "outcome": outcome,
            "probs": np.tile(np.array([[0.2, 0.7, 0.1]], np.float32), (2 * n, 1)), "descriptor": np.zeros(2 * n, np.int16),
        }
        b.update(rows._no_faces(2 * n))
        yield b


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def night(corpus: str, out: str, run_id: str) -> dict:
    t = {}
    t0 = time.perf_counter()
    refs = list_videos(corpus)
    t["list_s"], t["peak_gib_after_list"] = time.perf_counter() - t0, _peak_gib()
    t0 = time.perf_counter()
    state = manifest_state(out, "m", "c")
    plan = plan_work(refs, state)
    del state
    t["plan_s"], t["peak_gib_after_plan"] = time.perf_counter() - t0, _peak_gib()
    t0 = time.perf_counter()
    items = refs_table(plan.todo)  # what the Ray dataset is built from
    t["items_s"], t["peak_gib_after_items"] = time.perf_counter() - t0, _peak_gib()
    busy = 0.0  # driver time only: making the synthetic batches is the workers' part
    with OutputWriter(out, CLASSES, run_id=run_id, model_id="m", config_hash="c", expected=plan.todo) as w:
        for b in _batches(plan.todo):
            t0 = time.perf_counter()
            w.add_batch(b)
            busy += time.perf_counter() - t0
        t0 = time.perf_counter()
        t["peak_gib_after_feed"] = _peak_gib()
        stats = w.close()
        t["close_s"], t["peak_gib_after_close"] = time.perf_counter() - t0, _peak_gib()
    t["write_s"] = busy + t["close_s"]
    t.update(listed=len(refs), todo=len(plan.todo), done=plan.skipped_done, items=items.num_rows, videos_ok=stats.videos_ok,
             parts=stats.parts, rows_retired=w.retired.rows_moved if w.retired else {})
    return t


def one(n: int, changed: float) -> dict:
    baseline = _peak_gib()  # the driver's imports (ray, torch, polars): paid once, whatever the corpus
    tmp = tempfile.mkdtemp(prefix="cbdriver")
    corpus = os.path.join(tmp, "corpus")
    paths = [f"{corpus}/d{i % 100:02d}/v{i:08d}.mp4" for i in range(n)]
    for d in range(min(n, 100)):
        os.makedirs(f"{corpus}/d{d:02d}")
    for p in paths:  # empty files: the listing's cost is per entry, not per byte
        open(p, "wb").close()
    out = os.path.join(tmp, "out")
    first = night(corpus, out, "20260101T000000Z-000001")
    k = int(n * changed)
    for i in range(0, n, max(1, n // max(k, 1)))[:k]:
        with open(paths[i], "wb") as f:
            f.write(b"x")
    del paths
    second = night(corpus, out, "20260102T000000Z-000002")
    total = sum(v for x in (first, second) for k, v in x.items() if k in ("list_s", "plan_s", "items_s", "write_s"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "night1": first, "night2": second, "wall_s": total, "peak_rss_gib": peak / 2**30,
            "baseline_rss_gib": baseline, "s_per_video": total / n,
            "peak_rss_bytes_per_video": (peak / 2**30 - baseline) * 2**30 / n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.changed)))
        return 0
    res = {"changed_fraction": a.changed, "load_avg_1m_at_start": os.getloadavg()[0], **machine()}
    for n in a.sizes:
        r = subprocess.run([sys.executable, "-m", "bench.driver_scale", "--one", str(n), "--changed", str(a.changed)],
                           capture_output=True, text=True, check=True)
        res[str(n)] = json.loads(r.stdout.strip().splitlines()[-1])
        x = res[str(n)]
        print(f"{n:>9} videos: {x['wall_s']:.1f} s ({x['s_per_video'] * 1e6:.1f} us/video), peak RSS {x['peak_rss_gib']:.2f} GiB "
              f"(imports {x['baseline_rss_gib']:.2f} GiB + {x['peak_rss_bytes_per_video']:.0f} B/video); night1 {json.dumps({k: round(v, 1) for k, v in x['night1'].items() if k.endswith('_s')})}; "
              f"night2 {json.dumps({k: round(v, 1) for k, v in x['night2'].items() if k.endswith('_s')})}", flush=True)
    if len(a.sizes) >= 2:
        lo, hi = str(min(a.sizes)), str(max(a.sizes))
        res["time_ratio"] = res[hi]["wall_s"] / res[lo]["wall_s"]
        res["rss_ratio"] = res[hi]["peak_rss_gib"] / res[lo]["peak_rss_gib"]
        print(f"{hi}/{lo} videos: time x{res['time_ratio']:.1f}, peak RSS x{res['rss_ratio']:.1f} (sizes x{int(hi) / int(lo):.0f})")
    print("->", write_result("driver_scale", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
