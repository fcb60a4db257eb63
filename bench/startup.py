"""Where a whole `annotate` process spends its time and CPU before and while it decodes: start-up profile.

    .venv/bin/python -m bench.startup [--seconds 60]

Runs the default job (``jobs/annotate.py``, embedded Ray, CPU) once on the laptop
benchmark video (``bench.common.write_two_face_cut_video``) and samples every process
it starts (every 0.1 s): when each one appeared after launch and the CPU seconds it
used, grouped as driver / Ray system processes / Ray internal actors / decode actor /
scoring actor. Then the driver's imports alone (``python -X importtime``), the
heaviest top-level packages by cumulative import time. CPU seconds are robust to
other load on a shared host; "appeared at" is wall time and is not.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench.common import machine, write_result, write_two_face_cut_video

GROUPS = [  # (group, regex on the command line), first match wins
    ("decode actor", r"MapBatches\(DecodeStage\)|FusedStage"),
    ("scoring actor", r"MapBatches\(ScoreStage\)"),
    ("driver", r"jobs/annotate\.py"),
    ("ray internal actors", r"^ray::"),
    ("ray system processes", r"ray"),
]


def _group(cmdline: str) -> str:
    for name, rx in GROUPS:
        if re.search(rx, cmdline):
            return name
    return "other"


def profile_run(video_dir: str, out: str, model: str) -> dict:
    t0 = time.time()
    p = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "jobs", "annotate.py"), "--input", video_dir, "--output", out, "--model", model],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    seen: dict[tuple[int, float], tuple[str, float, float]] = {}
    me = psutil.Process()
    while p.poll() is None:
        for q in me.children(recursive=True):
            try:
                with q.oneshot():
                    c = q.cpu_times()
                    seen[(q.pid, q.create_time())] = (" ".join(q.cmdline()), c.user + c.system, q.create_time() - t0)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        time.sleep(0.1)
    wall = time.time() - t0
    err = p.stderr.read()
    if p.returncode != 0:
        raise SystemExit(f"annotate failed ({p.returncode}):\n{err[-3000:]}")
    groups: dict[str, dict] = collections.defaultdict(lambda: {"cpu_s": 0.0, "processes": 0, "first_at_s": None})
    for name, cpu, start in seen.values():
        g = groups[_group(name)]
        g["cpu_s"] += cpu
        g["processes"] += 1
        g["first_at_s"] = start if g["first_at_s"] is None else min(g["first_at_s"], start)
    m = re.search(r"execution finished in ([0-9.]+) seconds", err)
    processes = sorted(
        ({"cmd": name[:120], "group": _group(name), "cpu_s": round(cpu, 2), "at_s": round(start, 1)}
         for name, cpu, start in seen.values()),
        key=lambda p: -p["cpu_s"],
    )
    return {
        "wall_s": wall,
        "cpu_s": sum(v[1] for v in seen.values()),
        "dataset_execution_s": float(m.group(1)) if m else None,
        "groups": dict(groups),
        "processes": processes,
    }


def driver_imports(top: int = 12) -> list[tuple[str, float]]:
    """Cumulative import seconds of the driver's heaviest top-level packages (cliper_batch.cli + what main imports)."""
    code = (
        "import cliper_batch.cli\n"
        "from cliper_batch.preflight import check_run\n"
        "from cliper_batch.pipeline.run import annotate, describe_model\n"
        "from cliper_batch.model.spec import ModelSpecError\n"
        "import ray, ray.data\n"
    )
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    best: dict[str, float] = {}
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            us, name = int(m.group(1)), m.group(3)
            root = name.split(".")[0]
            best[root] = max(best.get(root, 0.0), us / 1e6)
    return sorted(best.items(), key=lambda kv: -kv[1])[:top]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--model", default=os.path.join(ROOT, "models", "cliper-demo.safetensors"))
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="cbstartup")
    videos = os.path.join(tmp, "videos")
    os.makedirs(videos)
    write_two_face_cut_video(os.path.join(videos, "two_faces_cut.mp4"), seconds=a.seconds)
    run = profile_run(videos, os.path.join(tmp, "out"), a.model)
    print(f"whole process: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} CPU s; Ray Data execution {run['dataset_execution_s']} s")
    for name, g in sorted(run["groups"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        print(f"  {name:22s} {g['cpu_s']:6.1f} CPU s  {g['processes']:2d} process(es), first at +{g['first_at_s']:.1f} s")
    for proc in run["processes"]:
        print(f"    {proc['cpu_s']:6.2f} CPU s  +{proc['at_s']:5.1f} s  {proc['group']:20s} {proc['cmd'][:80]}")
    imports = driver_imports()
    print("driver imports (cumulative s, overlapping):", ", ".join(f"{k} {v:.1f}" for k, v in imports))
    print("->", write_result("startup", {"run": run, "driver_imports_s": dict(imports), "load_avg": os.getloadavg(), **machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
