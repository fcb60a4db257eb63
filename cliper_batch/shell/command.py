"""``cliper``: one command, one subcommand per job (``cliper annotate``, ``cliper report``, ...).

Each subcommand is the module's own command line (its ``main(argv)``), imported only when
named, so ``cliper --help`` and ``cliper models`` start in a fraction of a second.
``cliper-annotate``, ``jobs/annotate.py`` and the ``python -m`` forms keep working.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

# name -> (module, function, one line)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "annotate": ("cliper_batch.shell.annotate_cli", "run_process", "annotate videos and images with expression timelines (Parquet)"),
    "report": ("cliper_batch.report.__main__", "main", "an offline HTML report of an annotation output"),
    "overlay": ("cliper_batch.report.overlay", "main", "a video re-encoded with each face track's box and label"),
    "query": ("cliper_batch.output.query", "main", "summaries of an annotation output (Polars)"),
    "compact": ("cliper_batch.output.compaction", "main", "merge an output's small Parquet parts"),
    "train": ("cliper_batch.training.train", "main", "train a CLIPER on Ray Train"),
    "models": ("cliper_batch.model.catalog", "main", "list the shipped models; describe a checkpoint"),
}

USAGE = """usage: cliper SUBCOMMAND [ARGS...]     (cliper SUBCOMMAND --help for its options)

subcommands:
{table}

examples:
  cliper annotate --input ./videos --output ./annotations     # the shipped real-face model
  cliper report ./annotations --out report.html
  cliper models
"""


def usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    return USAGE.format(table="\n".join(f"  {n.ljust(width)}  {s[2]}" for n, s in SUBCOMMANDS.items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"cliper: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = SUBCOMMANDS[name]
    fn = getattr(importlib.import_module(module), function)
    sys.argv[0] = f"cliper {name}"  # argparse's prog in usage lines
    return int(fn(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
