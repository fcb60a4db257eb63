"""The one ``cliper`` command: subcommands dispatch to each job's own command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cliper_batch.shell.command import SUBCOMMANDS, main
from cliper_batch.model.catalog import describe


def _cliper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cliper_batch.shell.command", *args], capture_output=True, text=True,
                          timeout=300)


def test_help_lists_every_subcommand_with_an_example():
    r = _cliper("--help")
    assert r.returncode == 0
    for name in ("annotate", "report", "overlay", "query", "compact", "train", "models"):
        assert f"  {name} " in r.stdout
    assert "cliper annotate --input" in r.stdout
    assert len(r.stdout.splitlines()) < 40  # fits a screen


def test_unknown_subcommand_is_a_usage_error(capsys):
    assert main(["annotat"]) == 2
    assert "unknown subcommand 'annotat'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_its_own_help(name):
    r = _cliper(name, "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout and "--help" in r.stdout


def test_models_describes_the_shipped_models_from_their_headers():
    demo = describe("builtin:demo")
    assert demo["model_id"].startswith("cliper-") and demo["image_size"] == 64 and not demo["grey"]
    r = _cliper("models", "builtin:demo", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["model_id"] == demo["model_id"]
    bad = _cliper("models", "builtin:nope")
    assert bad.returncode == 1 and "unknown built-in model 'nope'" in bad.stderr
