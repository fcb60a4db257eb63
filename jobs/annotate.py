"""Nightly corpus annotation job.

Locally (embedded Ray):   python jobs/annotate.py --input ./videos --output ./annotations --model MODEL
On a cluster:             ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/annotate.py ...
Run with --help for every option.
"""
import os
import sys

try:
    import cliper_batch  # noqa: F401  (installed, or shipped by --working-dir)
except ImportError:  # running from a plain checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cliper_batch.shell.annotate_cli import run_process

if __name__ == "__main__":
    raise SystemExit(run_process())
