"""Where a whole `annotate` process spends its time and CPU, from launch to exit: start-up profile.

    .venv/bin/python -m bench.startup [--seconds 60] [--repeats 1] [--baseline DIR] [--workload moving --videos 8]

Runs the default job (``jobs/annotate.py``, embedded Ray, CPU) on the laptop benchmark
video (``bench.common.write_two_face_cut_video``), or with ``--workload moving`` on
``--videos`` videos of ``bench.vs_fer``'s moving-faces corpus, and samples every process it starts
(every 0.1 s): when each one appeared after launch and the CPU seconds it used, grouped
as driver / Ray system processes / Ray internal actors / fused or decode actor / scoring
actor. It also times the driver's own output lines as they arrive, which splits the
whole process into phases:

* ``start-up``: launch -> the plan's log line (imports, preflight checks, ``ray.init``, listing, plan);
* ``plan -> dataset``: worker layout and Ray Data's plan, up to "Starting execution" (a short
  run on one actor, driven without Ray Data: up to its "driven without Ray Data" line);
* ``dataset``: the execution (actors created, the video decoded, faces found, scored), up to
  Ray Data's "execution finished" or the driver's "100%" progress line, whichever comes first;
* ``commit``: the writer's last commit and the run record, up to the summary line;
* ``exit``: the summary line -> process exit (Ray's shutdown, the interpreter's exit).

Each run also records how many of the host's cores were busy, per 0.5 s (``/proc/stat``,
host-wide, so other load shows too): a phase at ~1 core on an idle 2-core host is a serial
chain (one process's imports, a fixed sleep in Ray's start-up) with a core left over.

The run record's ``stage_seconds`` say where the workers' time went inside the
``dataset`` phase (decode, detect, crop: worker seconds; score: the model's busy seconds;
write: the driver's commits).

Then the driver's imports alone (``python -X importtime``), the heaviest top-level
packages by cumulative import time. CPU seconds are robust to other load on a shared
host; wall times are not, so ``--baseline DIR`` (another checkout of this repository,
e.g. ``git worktree add /tmp/base REV``) runs that tree's job and this one alternately
(baseline, this, baseline, this, ...) with the same interpreter, and reports both.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench.common import machine, write_moving_faces_corpus, write_result, write_two_face_cut_video

GROUPS = [  # (group, regex on the command line), first match wins
    ("fused or decode actor", r"MapBatches\(DecodeStage\)|FusedStage"),
    ("scoring actor", r"MapBatches\(ScoreStage\)"),
    ("driver", r"jobs/annotate\.py"),
    ("ray internal actors", r"^ray::"),
    ("ray system processes", r"ray"),
]

# The driver's output lines that mark phase boundaries (first match of each), in order.
MARKS = [
    ("planned", re.compile(r"cliper_batch\.pipeline\.run: run \S+: \d+ listed")),
    # Ray Data's execution, or a short run's single actor (pipeline/single_actor.py: no Ray Data lines)
    ("dataset_started", re.compile(r"Starting execution of Dataset|driven without Ray Data")),
    ("dataset_finished", re.compile(r"execution finished in|progress: (\d+)/\1 videos \(100%\)")),
    ("summary", re.compile(r"^run \S+: ")),
]
PHASES = [  # (name, from mark, to mark)
    ("start-up", "launch", "planned"),
    ("plan -> dataset", "planned", "dataset_started"),
    ("dataset", "dataset_started", "dataset_finished"),
    ("commit", "dataset_finished", "summary"),
    ("exit", "summary", "exit"),
]


def _group(cmdline: str) -> str:
    for name, rx in GROUPS:
        if re.search(rx, cmdline):
            return name
    return "other"


def _read_lines(stream, t0: float, marks: dict, lines: list) -> None:
    for line in stream:
        now = time.time() - t0
        lines.append(line)
        for name, rx in MARKS:
            if name not in marks and rx.search(line):
                marks[name] = now


def _host_jiffies() -> tuple[int, int] | None:
    """(all, idle + iowait) CPU jiffies of the whole host since boot (``/proc/stat``); None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]


def busy_cores_timeline(samples: list[tuple[float, tuple[int, int] | None]], bucket_s: float = 0.5) -> list[list[float]]:
    """``[[t, cores busy], ...]`` per ``bucket_s`` from ``(seconds after launch, _host_jiffies())`` samples.

    Cores busy = host CPUs x the busy share of the jiffies between two samples: 2.0 on
    this 2-core host when both cores worked, 0.0 when the whole host waited.
    """
    cpus = psutil.cpu_count() or 1
    buckets: dict[float, list[float]] = collections.defaultdict(list)
    for (_, a), (t, b) in zip(samples, samples[1:]):
        if a is None or b is None or b[0] <= a[0]:
            continue
        busy = 1.0 - (b[1] - a[1]) / (b[0] - a[0])
        buckets[int(t / bucket_s) * bucket_s].append(cpus * busy)
    return [[round(t, 1), round(statistics.mean(v), 2)] for t, v in sorted(buckets.items())]


def profile_run(video_dir: str, out: str, model: str, tree: str = ROOT) -> dict:
    """Run ``tree``'s default job once as a whole process; its phases, wall and CPU by process group."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # always the tree's own package, also for this tree: an editable install elsewhere (the main
    # checkout's .venv) would otherwise win over a worktree's code
    env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    me = psutil.Process()
    before = {q.pid for q in me.children(recursive=True)}  # the bench's own (e.g. the corpus renderer's resource tracker)
    t0 = time.time()
    p = subprocess.Popen(
        [sys.executable, os.path.join(tree, "jobs", "annotate.py"), "--input", video_dir, "--output", out, "--model", model],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tree,
    )
    marks: dict[str, float] = {"launch": 0.0}
    lines: list[str] = []
    readers = [threading.Thread(target=_read_lines, args=(s, t0, marks, lines), daemon=True) for s in (p.stdout, p.stderr)]
    for r in readers:
        r.start()
    seen: dict[tuple[int, float], tuple[str, float, float]] = {}
    host = [(0.0, _host_jiffies())]
    while p.poll() is None:
        for q in me.children(recursive=True):
            if q.pid in before:
                continue
            try:
                with q.oneshot():
                    c = q.cpu_times()
                    seen[(q.pid, q.create_time())] = (" ".join(q.cmdline()), c.user + c.system, q.create_time() - t0)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        time.sleep(0.1)
        host.append((time.time() - t0, _host_jiffies()))
    marks["exit"] = time.time() - t0
    for r in readers:
        r.join(timeout=10)
    text = "".join(lines)
    if p.returncode != 0:
        raise SystemExit(f"annotate failed ({p.returncode}):\n{text[-3000:]}")
    left = still_running({k: v[0] for k, v in seen.items()})
    groups: dict[str, dict] = collections.defaultdict(lambda: {"cpu_s": 0.0, "processes": 0, "first_at_s": None})
    for name, cpu, start in seen.values():
        g = groups[_group(name)]
        g["cpu_s"] += cpu
        g["processes"] += 1
        g["first_at_s"] = start if g["first_at_s"] is None else min(g["first_at_s"], start)
    m = re.search(r"execution finished in ([0-9.]+) seconds", text)
    records = sorted(glob.glob(os.path.join(out, "runs", "*.json")))
    stage_seconds = json.load(open(records[-1])).get("stage_seconds") if records else None
    processes = sorted(
        ({"cmd": name[:120], "group": _group(name), "cpu_s": round(cpu, 2), "at_s": round(start, 1)}
         for name, cpu, start in seen.values()),
        key=lambda p: -p["cpu_s"],
    )
    phases = {name: marks[b] - marks[a] for name, a, b in PHASES if a in marks and b in marks}
    return {
        "tree": tree,
        "wall_s": marks["exit"],
        "cpu_s": sum(v[1] for v in seen.values()),
        "dataset_execution_s": float(m.group(1)) if m else None,
        "marks_s": marks,
        "phases_s": phases,
        "groups": dict(groups),
        "processes": processes,
        "stage_seconds": stage_seconds,  # the run record's: worker seconds of decode / detect / crop, model busy, commits
        "left_alive": left,  # processes of the run still alive after the driver exited (should be none)
        "busy_cores": busy_cores_timeline(host),  # the whole host's, so other users' load shows too
    }


def still_running(seen: dict[tuple[int, float], str]) -> list[str]:
    """Which of ``{(pid, create_time): cmdline}`` still run now (same pid and start time, not a zombie), as "pid cmdline"."""
    alive = []
    for (pid, created), cmd in seen.items():
        try:
            q = psutil.Process(pid)
            if q.create_time() == created and q.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {cmd[:100]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def driver_imports(top: int = 12) -> list[tuple[str, float]]:
    """Cumulative import seconds of the driver's heaviest top-level packages (cliper_batch.shell.annotate_cli + what main imports)."""
    code = (
        "import cliper_batch.shell.annotate_cli\n"
        "from cliper_batch.shell.preflight import check_run\n"
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


def _print_run(label: str, run: dict, verbose: bool) -> None:
    phases = ", ".join(f"{k} {v:.1f}" for k, v in run["phases_s"].items())
    print(f"{label}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} CPU s; phases (s): {phases}"
          f"{'; LEFT ALIVE: ' + str(run['left_alive']) if run['left_alive'] else ''}")
    for name, g in sorted(run["groups"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        print(f"  {name:22s} {g['cpu_s']:6.1f} CPU s  {g['processes']:2d} process(es), first at +{g['first_at_s']:.1f} s")
    if run.get("stage_seconds"):
        print("  run record stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in run["stage_seconds"].items()))
    if run.get("busy_cores"):
        print("  busy cores per 0.5 s (host-wide): " + " ".join(f"{t:g}:{c:.1f}" for t, c in run["busy_cores"]))
    if verbose:
        for proc in run["processes"]:
            print(f"    {proc['cpu_s']:6.2f} CPU s  +{proc['at_s']:5.1f} s  {proc['group']:20s} {proc['cmd'][:80]}")


def summarize(runs: list[dict]) -> dict:
    """Medians over runs of one tree: wall, CPU, each phase and each group's CPU."""
    med = statistics.median
    return {
        "runs": len(runs),
        "wall_s": med(r["wall_s"] for r in runs),
        "cpu_s": med(r["cpu_s"] for r in runs),
        "phases_s": {name: med(r["phases_s"].get(name, float("nan")) for r in runs) for name, _, _ in PHASES},
        "groups_cpu_s": {
            g: med(r["groups"].get(g, {}).get("cpu_s", 0.0) for r in runs) for g in {g for r in runs for g in r["groups"]}
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--model", default=os.path.join(ROOT, "models", "cliper-demo.safetensors"))
    p.add_argument("--repeats", type=int, default=1, help="runs of each tree (default 1)")
    p.add_argument("--baseline", default=None, help="another checkout of this repository to run alternately with this one")
    p.add_argument("--workload", choices=("laptop", "moving"), default="laptop",
                   help="laptop: the two-face laptop video (faces drift slowly); moving: --videos videos of "
                        "bench.vs_fer's corpus (faces drift, zoom, roll and turn every frame; seeds 0..)")
    p.add_argument("--videos", type=int, default=1, help="videos of the moving workload (default 1)")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="cbstartup")
    videos = os.path.join(tmp, "videos")
    os.makedirs(videos)
    if a.workload == "moving":
        write_moving_faces_corpus(videos, n=a.videos, seconds=a.seconds)
    else:
        write_two_face_cut_video(os.path.join(videos, "two_faces_cut.mp4"), seconds=a.seconds)
    trees = ([("baseline", os.path.abspath(a.baseline))] if a.baseline else []) + [("this", ROOT)]
    runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for k in range(a.repeats):
        for label, tree in trees:
            run = profile_run(videos, os.path.join(tmp, f"out-{label}-{k}"), a.model, tree)
            run["load_avg"] = os.getloadavg()
            _print_run(f"{label} #{k + 1}", run, verbose=a.repeats == 1)
            runs[label].append(run)
    summary = {label: summarize(rs) for label, rs in runs.items()}
    for label, s in summary.items():
        phases = ", ".join(f"{k} {v:.2f}" for k, v in s["phases_s"].items())
        print(f"median of {s['runs']}, {label}: {s['wall_s']:.2f} s wall, {s['cpu_s']:.1f} CPU s; phases (s): {phases}")
    imports = driver_imports()
    print("driver imports (cumulative s, overlapping):", ", ".join(f"{k} {v:.1f}" for k, v in imports))
    result = {"runs": runs, "summary": summary, "driver_imports_s": dict(imports), "load_avg": os.getloadavg(), **machine()}
    if a.baseline is None:  # the single-tree result keeps its old shape
        result["run"] = runs["this"][-1]
    print("->", write_result("startup", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
