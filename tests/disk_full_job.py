"""The annotate job (``cliper_batch.shell.annotate_cli``) with its output's disk full from the Nth write call of its first commit on.

``python tests/disk_full_job.py N OUTPUT -- ARGS...``: every write to a file under ``OUTPUT`` (opening it for
writing, or moving a file there) raises ``OSError(ENOSPC)`` from the Nth one on, counted from the first write into
the output's ``_staging/`` (the first commit: 1 = its timelines file, 2 = moving it into place, 3 = its manifest
file, 4 = moving that; later ones: the next commits, retiring superseded rows, the run record). The lock file is
left alone (a full disk still lets a lock be removed). Used by tests/output/test_disk_full.py.
"""
import errno
import os
import sys

import fsspec.implementations.local as local


def install(first_failing: int, output: str) -> None:
    root = os.path.realpath(output)
    seen = {"armed": False, "n": 0}

    def check(path) -> None:
        p = os.path.realpath(str(path).removeprefix("file://"))
        if not p.startswith(root + os.sep) or os.path.basename(p).startswith("_lock"):
            return
        if not seen["armed"]:
            if f"{os.sep}_staging{os.sep}" not in p:
                return  # before the first commit (e.g. preflight's probe file)
            seen["armed"] = True
        seen["n"] += 1
        if seen["n"] >= first_failing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), p)

    real_open, real_mv = local.LocalFileSystem._open, local.LocalFileSystem.mv

    def _open(self, path, mode="rb", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check(path)
        return real_open(self, path, mode, *args, **kwargs)

    def mv(self, path1, path2, *args, **kwargs):
        check(path2)
        return real_mv(self, path1, path2, *args, **kwargs)

    local.LocalFileSystem._open, local.LocalFileSystem.mv = _open, mv


if __name__ == "__main__":
    n, output, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    install(int(n), output)
    from cliper_batch.shell.annotate_cli import run_process

    raise SystemExit(run_process(argv))
