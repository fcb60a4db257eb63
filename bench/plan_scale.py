"""Plan scale: the real driver loop (``annotate``) on a real local Ray runtime, for 10^4-10^7 videos.

    .venv/bin/python -m bench.plan_scale [--sizes 10000 100000] [--done 0.1] [--cpus 2]

Per size, each night in a fresh process (so its peak RSS is its own): a local Ray runtime
(loopback, no dashboard, ``--cpus`` CPUs), a synthetic listing of N videos (no files: a
listing source that generates ``VideoRef`` s chunk by chunk, as :func:`cliper_batch.corpus.listing.iter_videos`
gives them), and fused workers that return at once (one ``ok`` outcome row per video, no
decoding, no model). Everything else is the run's: the output lock, recovery, the done set,
the streamed plan, the work list (spilled to the run's staging folder past
``worklist.IN_MEMORY`` videos, read back by Ray Data), the driver loop, the writer, the
retirement of superseded rows and the run record.

* ``--done F`` > 0: night 1 annotates the first F*N videos (an existing output), night 2
  lists all N and diffs them against it (F*N skipped as done, the rest annotated);
* ``--done 0``: one night, N new videos against an empty output;
* ``--done-set M`` (alone, no Ray): writes an output whose manifest holds M done videos
  (parts of 2 000, as the writer commits them) and reads its done set in a fresh process
  (:func:`cliper_batch.corpus.incremental.done_state`): time, size, peak RSS.

Reports wall time and the driver's peak RSS (``VmHWM``; sampled ``VmRSS`` gives the peak
per phase: before the run, after planning, during execution, the close) per night, and
the close's time (from the writer's accounting of unreported videos to ``annotate``'s return). Results:
``bench/results/plan_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

CLASSES = ("neutral", "happy", "sad")
# Scratch space (the outputs, Ray's session folder) outside /tmp: on the shared dev host other jobs clean
# /tmp/rt* and /tmp/cb* while a 10^6 run is still going. A short path: Ray's socket paths must fit 107 bytes.
SCRATCH = os.environ.get("PLAN_SCALE_TMP", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tmp"))
RAY_TMP = os.environ.get("PLAN_SCALE_RAY_TMP", "/work/.rtps")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """The process's ``VmRSS`` every ``period_s`` seconds; the max since the last :meth:`mark` per phase."""

    def __init__(self, period_s: float = 0.2):
        self.period_s, self.phase, self.peaks = period_s, "start", {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.period_s):
            self.sample()
            if time.monotonic() - last >= 60:  # a line a minute: a run that dies still says what it held
                last = time.monotonic()
                print(f"rss: phase {self.phase}, now {_status_kib('VmRSS') / 2**20:.3f} GiB, "
                      f"peak {_status_kib('VmHWM') / 2**20:.3f} GiB", file=sys.stderr, flush=True)

    def sample(self) -> None:
        rss = _status_kib("VmRSS") / 2**20
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def mark(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        self.sample()
        return {k: round(v, 3) for k, v in self.peaks.items()}


def synthetic_listing(n: int, chunk: int):
    """Chunks of ``VideoRef`` s for videos ``0 .. n-1`` (URIs in sorted order, fingerprints that never change)."""
    from cliper_batch.types import VideoRef
    from cliper_batch.uris import normalized_id

    for lo in range(0, n, chunk):
        refs = []
        for i in range(lo, min(n, lo + chunk)):
            uri = f"/synthetic/corpus/d{i // 10_000:05d}/v{i:09d}.mp4"
            refs.append(VideoRef(video_id=normalized_id(uri), uri=uri, size_bytes=1000, mtime=1.0e9, fingerprint=f"1000:{i}"))
        yield refs


class InstantStage:
    """A fused stage that returns at once: per video one ``ok`` outcome row with no segments (no decoding, no model).

    The rows are built column-wise, the outcome JSON around the block's own ref JSON (what the real
    stage's ``rows.outcome_row`` would encode), so the workers cost microseconds a video, not the driver's time.
    """

    def __init__(self, model_spec=None, config=None, device=None, num_threads=None, storage_options=None):
        from cliper_batch.types import VideoInfo

        self.info = json.dumps(vars(VideoInfo(2.0, 25.0, 64, 48, "h264")))

    def __call__(self, batch):
        from cliper_batch import rows

        refs = [str(r) for r in batch["ref"]]
        n = len(refs)
        block = {
            "row_kind": np.full(n, rows.VIDEO, dtype=object),
            "video_id": np.asarray(batch["video_id"], dtype=object),
            "video_uri": np.array([json.loads(r)["uri"] for r in refs], dtype=object),
            "track_id": np.zeros(n, dtype=np.int32),
            "segment_index": np.full(n, -1, dtype=np.int32),
            "start_s": np.zeros(n),
            "end_s": np.zeros(n),
            "outcome": np.array([f'{{"ref": {r}, "status": "ok", "info": {self.info}, "n_segments": 0, '
                                 f'"extra": {{"worker": "instant"}}}}' for r in refs], dtype=object),
            "probs": np.zeros((n, len(CLASSES)), dtype=np.float32),
            "descriptor": np.zeros(n, dtype=np.int16),
            **rows._no_faces(n),
        }
        yield block


def night(n: int, out: str, cpus: int) -> dict:
    """One annotate run over the synthetic videos ``0 .. n-1`` into ``out``, in this process."""
    sampler = RssSampler()
    t0 = time.perf_counter()
    import ray

    from cliper_batch.corpus.listing import CHUNK
    from cliper_batch.model.spec import ModelInfo
    from cliper_batch.pipeline import run as run_mod
    from cliper_batch.pipeline.executors import Stages
    from cliper_batch.types import AnnotateConfig, RunOptions

    tmp = tempfile.mkdtemp(prefix="rtps", dir=RAY_TMP)
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private loopback runtime
    ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=tmp, object_store_memory=400_000_000, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    ray_s = time.perf_counter() - t0
    sampler.mark("imports_and_ray_init")
    info = ModelInfo(spec="bench", kind="bench", classes=CLASSES, descriptors_per_class=1, image_size=64, model_id="bench")

    real_plan_chunks = run_mod.plan_chunks
    marks = {}

    def plan_chunks(*a, **kw):  # only to mark the end of planning for the RSS phases
        yield from real_plan_chunks(*a, **kw)
        marks["plan_s"] = time.perf_counter() - t1
        sampler.mark("execute")

    from cliper_batch.output.regroup import Regrouper

    real_finish = Regrouper.finish

    def finish(self, *a, **kw):  # only to mark the start of the close (unreported videos, commit, run record)
        marks["close_t"] = time.perf_counter()
        sampler.mark("close")
        return real_finish(self, *a, **kw)

    run_mod.plan_chunks = plan_chunks
    Regrouper.finish = finish
    sampler.mark("plan")
    t1 = time.perf_counter()
    summary = run_mod.annotate(
        "/synthetic/corpus", out, "bench", AnnotateConfig(device="cpu", faces="none"),
        options=RunOptions(worker="fused"), model_info=info, stages=Stages(fused=InstantStage),
        listing=synthetic_listing(n, CHUNK),
    )
    run_s = time.perf_counter() - t1
    Regrouper.finish = real_finish
    close_s = time.perf_counter() - marks.get("close_t", float("nan"))
    peaks = sampler.stop()
    hwm = _status_kib("VmHWM") / 2**20
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "listed": summary.listed, "annotated": summary.videos_total, "ok": summary.videos_ok,
        "failed": summary.videos_failed, "skipped_done": summary.skipped_done,
        "ray_init_s": round(ray_s, 1), "plan_s": round(marks.get("plan_s", float("nan")), 1),
        "run_s": round(run_s, 1), "close_s": round(close_s, 1), "peak_rss_gib": round(hwm, 3), "rss_peak_by_phase_gib": peaks,
    }


def write_done_output(out: str, n: int, per_part: int = 2_000) -> None:
    """An output whose manifest says the synthetic videos ``0 .. n-1`` are done (one finished run, parts of ``per_part``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cliper_batch.output import schema
    from cliper_batch.output import run_record
    from cliper_batch.uris import filesystem_for, join

    run_id = "20260101T000000Z-000001"
    folder = os.path.join(out, "videos", run_id)
    os.makedirs(folder)
    sch = schema.video_schema()
    for k, refs in enumerate(synthetic_listing(n, per_part)):
        m = len(refs)
        cols = {"video_id": [r.video_id for r in refs], "video_uri": [r.uri for r in refs], "kind": ["video"] * m,
                "size_bytes": [1000] * m, "fingerprint": [r.fingerprint for r in refs], "status": ["ok"] * m,
                "attempt": [1] * m, "duration_s": [2.0] * m, "n_segments": [0] * m, "n_tracks": [0] * m,
                "model_id": ["bench"] * m, "config_hash": ["c"] * m, "run_id": [run_id] * m}
        table = pa.table({f.name: pa.array(cols.get(f.name, [None] * m), f.type) for f in sch}, schema=sch)
        pq.write_table(table, os.path.join(folder, f"part-{k:05d}.parquet"))
    fs, root = filesystem_for(out)
    run_record.write_record(fs, root, run_id, {"run_id": run_id, "status": run_record.FINISHED})


def done_set(out: str) -> dict:
    """(In a fresh process) the done set of ``out``: time, rows, its size and the driver's peak RSS above the imports."""
    from cliper_batch.corpus.incremental import done_state

    base = _status_kib("VmRSS") / 2**20
    t0 = time.perf_counter()
    state = done_state(out, "bench", "c")
    return {"rows": state.df.height, "s": round(time.perf_counter() - t0, 1), "gib": round(state.df.estimated_size() / 2**30, 3),
            "imports_rss_gib": round(base, 3), "peak_rss_gib": round(_status_kib("VmHWM") / 2**20, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--done", type=float, default=0.0, help="fraction of the corpus annotated by a first night")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--done-set", type=int, help="only: the done set of an output of this many videos (no Ray)")
    p.add_argument("--night", nargs=2, metavar=("N", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--read-done-set", metavar="OUT", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.night:
        print(json.dumps(night(int(a.night[0]), a.night[1], a.cpus)))
        return 0
    if a.read_done_set:
        print(json.dumps(done_set(a.read_done_set)))
        return 0
    from bench.common import machine, write_result

    if a.done_set:
        os.makedirs(SCRATCH, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="cbdone", dir=SCRATCH)
        t0 = time.perf_counter()
        write_done_output(os.path.join(tmp, "out"), a.done_set)
        written = time.perf_counter() - t0
        r = subprocess.run([sys.executable, "-m", "bench.plan_scale", "--read-done-set", os.path.join(tmp, "out")],
                           capture_output=True, text=True, check=True)
        shutil.rmtree(tmp, ignore_errors=True)
        x = {**json.loads(r.stdout.strip().splitlines()[-1]), "write_s": round(written, 1), **machine()}
        print(f"done set of {x['rows']} videos: {x['s']} s, {x['gib']} GiB as a frame; peak RSS {x['peak_rss_gib']} GiB "
              f"(imports {x['imports_rss_gib']} GiB)")
        print("->", write_result(f"plan_scale_done_set_{a.done_set}", x))
        return 0

    res = {"done_fraction": a.done, "cpus": a.cpus, "load_avg_1m_at_start": os.getloadavg()[0], **machine()}
    for n in a.sizes:
        os.makedirs(SCRATCH, exist_ok=True)
        os.makedirs(RAY_TMP, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="cbplan", dir=SCRATCH)
        out = os.path.join(tmp, "out")
        nights = []
        m = int(n * a.done)
        for size in ([m] if m else []) + [n]:
            r = subprocess.run([sys.executable, "-m", "bench.plan_scale", "--cpus", str(a.cpus), "--night", str(size), out],
                               capture_output=True, text=True)
            if r.returncode:
                sys.stderr.write(r.stderr[-5000:])
                raise SystemExit(f"night of {size} videos failed (rc {r.returncode})")
            nights.append(json.loads(r.stdout.strip().splitlines()[-1]))
        shutil.rmtree(tmp, ignore_errors=True)
        res[str(n)] = {"n": n, "done": m, "nights": nights, "load_avg_1m_after": os.getloadavg()[0]}
        last = nights[-1]
        print(f"{n:>10} videos ({m} done before): plan {last['plan_s']} s, run {last['run_s']} s, close {last['close_s']} s (ray init {last['ray_init_s']} s), "
              f"driver peak RSS {last['peak_rss_gib']:.2f} GiB {json.dumps(last['rss_peak_by_phase_gib'])}; "
              f"annotated {last['annotated']} ok {last['ok']} skipped {last['skipped_done']}", flush=True)
    print("->", write_result("plan_scale", res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
