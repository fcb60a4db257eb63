"""The `ray` marker's watch (tests/ray_marker.py): an unmarked test that starts a Ray node process fails; a marked one,
or one that starts other processes, passes. The "Ray node" is a copy of `sleep` named like a raylet (the watch goes by the
process name; here under another name the watch is told to look for, so that the watch of the test running this
one is not set off), so the check costs a second, not a Ray start."""
import os
import shutil

TESTS = os.path.dirname(os.path.abspath(__file__))

INNER = '''
import subprocess

import pytest

RAYLET = {raylet!r}


def test_unmarked_starts_a_raylet():
    subprocess.run([RAYLET, "0.5"], check=True)


@pytest.mark.ray
def test_marked_starts_a_raylet():
    subprocess.run([RAYLET, "0.5"], check=True)


def test_unmarked_starts_something_else():
    subprocess.run(["sleep", "0.5"], check=True)
'''


def test_an_unmarked_test_that_starts_a_ray_node_fails(pytester, tmp_path, monkeypatch):
    raylet = tmp_path / "fake-raylet"
    shutil.copy(shutil.which("sleep"), raylet)
    pytester.makepyfile(test_inner=INNER.format(raylet=str(raylet)))
    pytester.makeini("[pytest]\nmarkers =\n    ray: runs Ray\n")
    monkeypatch.setenv("RAY_MARKER_PROCESS_NAMES", "fake-raylet,fake-gcs")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-p", "ray_marker", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_unmarked_starts_a_raylet started Ray (a raylet or GCS process) but has no `ray` marker*"])
