"""A healthy run is quiet: the default job on a small clean corpus prints no WARNING or ERROR line.

Run as a user runs it (``jobs/annotate.py``, embedded Ray, its own HOME), over a corpus large enough
that the run goes through Ray Data's actor pool (two fused actors on two cores), where Ray core used
to log ``E ... core_worker.cc: Actor with class name: 'MapWorker(...)' ... has constructor arguments in
the object store and max_restarts > 0`` for each actor (cliper_batch/pipeline/ray_data_args.py).
"""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NOISE = re.compile(
    r"\bWARNING\b|\bERROR\b|\bCRITICAL\b|Traceback|Warning:"  # Python logging, tracebacks, warnings.warn
    r"|^\s*(?:\(\w+ pid=\d+\)\s*)?\[[\d\- :,.]+ [EWF] \d+ \d+\]"  # Ray's C++ log lines at E/W/F (driver or workers)
    r"|core_worker\.cc|constructor arguments in the object store"
)


@pytest.mark.slow
def test_the_default_job_on_a_clean_corpus_prints_no_warning_or_error(tmp_path):
    from cliper_batch.synthetic import write_video_corpus

    corpus, out, home = tmp_path / "videos", tmp_path / "annotations", tmp_path / "home"
    home.mkdir()
    write_video_corpus(str(corpus), 2, seed=11, size=(160, 160), min_spans=2, max_spans=2)
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)  # as a user's shell: the job picks Ray's defaults itself
    env.update(HOME=str(home), PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    cmd = [sys.executable, os.path.join(REPO, "jobs", "annotate.py"), "--input", str(corpus), "--output", str(out),
           "--model", "builtin:demo"]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    assert "videos ok=2 failed=0 of 2" in text, text[-6000:]
    record = json.load(open(next((out / "runs").glob("*.json"))))
    assert record["executor"] == "ray_data", "the run did not go through Ray Data's actor pool: " + str(
        record["resources"])
    noisy = [line for line in text.splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy[:20])


def test_ray_datas_map_actors_get_small_constructor_arguments_by_value():
    import functools

    from cliper_batch.pipeline import ray_data_args

    class Operator:  # the shape of Ray Data 2.60's ActorPoolMapOperator that the wrapper relies on
        def __init__(self, transformer):
            self.data_context, self._map_transformer, self.puts = {"ctx": 1}, transformer, 0

        @functools.cached_property
        def _data_context_ref(self):
            self.puts += 1
            return ("ref", "ctx")

        @functools.cached_property
        def _map_transformer_ref(self):
            self.puts += 1
            return ("ref", "udf")

        def _start_actor(self):
            return self._data_context_ref, self._map_transformer_ref

    assert ray_data_args.wrap(Operator)
    small = Operator(transformer="a small UDF")
    assert small._start_actor() == ({"ctx": 1}, "a small UDF") and small.puts == 0
    assert small._data_context_ref == ("ref", "ctx")  # other users (task submission) still get the reference
    big = Operator(transformer=b"x" * 200_000)  # above Ray's inline limit: stays a reference
    assert big._start_actor() == ({"ctx": 1}, ("ref", "udf"))


def test_the_wrapper_fits_the_pinned_ray_data():
    from ray.data._internal.execution.operators.actor_pool_map_operator import ActorPoolMapOperator

    from cliper_batch.pipeline import ray_data_args

    assert ray_data_args.install()
    assert ActorPoolMapOperator._start_actor.__wrapped__ is not None
