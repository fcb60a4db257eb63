#!/usr/bin/env python
"""Regroup ``cliper_batch``'s flat modules into packages that follow the data flow, and rewrite every reference.

    python scripts/dev/regroup_layout.py            # from the repository root; then run the tests
    python scripts/dev/regroup_layout.py --dry-run  # say what would move and which files would change

What it does, in order:

1. ``git mv`` each module of :data:`MOVES` that is still at its old place (a package it moves into
   is created, with the docstring of :data:`PACKAGE_DOCS`, if it is not there).
2. Rewrites every reference to a moved module in every text file under :data:`ROOTS` (files it has
   never seen included: it reads the tree, not a list):

   * dotted names anywhere (code, strings, comments, docs): ``cliper_batch.query`` ->
     ``cliper_batch.output.query``, so ``python -m cliper_batch.x``, entry points
     (``cliper_batch.cli:run_process``), ``mock.patch``/``monkeypatch`` targets and ``:mod:`` roles too;
   * file paths: ``cliper_batch/query.py`` -> ``cliper_batch/output/query.py``;
   * ``from cliper_batch[.pkg] import module[, ...]`` (the module keeps its local name:
     ``from cliper_batch.shell import annotate_cli as cli``), in code and in code held in strings;
   * relative imports, resolved against where the importing file *was* and rewritten for where it
     *is* (a moved file's own relative imports change even when their targets did not move).
3. Lists every package of ``cliper_batch/`` in ``pyproject.toml``'s ``[tool.setuptools] packages`` and
   writes :data:`LAYERS` into ``tests/test_layout.py``.

Re-runnable: a move already done is skipped, and a rewritten name no longer matches an old one, so a
second run changes nothing. On a tree where others added files meanwhile, their references to the old
names are rewritten too. One exception: an old module whose name is now a package (``crops.py`` ->
``crops/reference.py``) is only rewritten while the move is pending (afterwards ``cliper_batch.crops``
means the package); the script then lists any ``from cliper_batch import crops`` it still finds.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "cliper_batch"

# old module (relative to cliper_batch) -> new module. Whole modules only: the code is not changed.
MOVES: dict[str, str] = {
    # the corpus: what to annotate
    "listing": "corpus.listing",
    "incremental": "corpus.incremental",
    # decoding: facts, the segment plan, frames
    "probe": "decode.probe",
    "sampling": "decode.sampling",
    "images": "decode.images",
    "testvideos": "decode.testvideos",
    # crops: the torch reference, the primitives a worker picks, the DALI one (the Triton kernel: kernels/)
    "crops": "crops.reference",
    "crop_primitives": "crops.primitives",
    "dali_crops": "crops.dali",
    # faces: the detector's pinned weights file, beside the detector (faces/ no longer imports torch)
    "mtcnn_weights": "faces.detectors.mtcnn.weights",
    # the model: where and how it runs
    "compile": "model.backends",
    "devices": "model.devices",
    # the output: its schema, queries and compaction
    "schema": "output.schema",
    "query": "output.query",
    "compact": "output.compaction",
    # looking at results
    "overlay": "report.overlay",
    # the pipeline: its progress line; the scoring model (not an actor) by its name
    "progress": "pipeline.progress",
    "pipeline.model_actor": "pipeline.scoring_model",
    # the job's shell: command lines, checks before Ray starts, the Ray runtime
    "cli": "shell.annotate_cli",
    "command": "shell.command",
    "preflight": "shell.preflight",
    "ray_runtime": "shell.ray_runtime",
}

PACKAGE_DOCS: dict[str, str] = {
    "corpus": "The corpus: what to annotate (listing a directory, glob or manifest) and which of it this run does "
              "(incremental runs, the retry policy).",
    "crops": "Crops: boxes of frames resampled to the model's input. ``reference`` is the torch reference every "
             "other crop is checked against; ``primitives`` the crop a worker uses (torch, the Triton kernel of "
             "``cliper_batch.kernels``, or ``dali``) and the choice between them.",
    "shell": "The job's shell: the ``cliper`` command and its annotate command line, the checks run before Ray "
             "starts (``preflight``) and the job's own Ray runtime (``ray_runtime``).",
}

# Data-flow order of the top-level names of cliper_batch (written into tests/test_layout.py).
LAYERS_SOURCE = '''LAYERS = [
    ["types", "labels", "uris", "store_retries", "failures", "prefetch"],  # contracts and leaf helpers (prefetch: an iterator on a thread, one item ahead; store_retries: object-store retry settings and counts)
    ["rows"],  # the row contract between pipeline stages
    ["decode"],  # probe, segment plan, still images, decoders (+ the generated test videos the NVDEC self-test decodes)
    ["crops", "kernels"],  # the torch reference crop, the Triton kernel, the DALI crop, the primitive a worker picks
    ["faces"],  # detectors behind one protocol (MTCNN, its pinned weights file without torch), shot cuts, tracks, framing
    ["video_annotation"],  # the per-video algorithm
    ["model"],  # CLIPER, specs, checkpoints, scoring backends, which device
    ["output"],  # writer, current view, lock, recovery, run records, schema, queries, compaction
    ["corpus"],  # listing; incremental runs (reads the output's manifest)
    ["report"],  # reads the output, re-decodes videos for thumbnails and overlays
    ["pipeline"],  # Ray wiring: sizing, stages, executors, the progress line
    ["shell", "synthetic", "training"],  # command lines, preflight, the Ray runtime; test data; training
]'''

ROOTS = ("cliper_batch", "tests", "bench", "jobs", "training", "kernels", "scripts", "docs", "README.md",
         "pyproject.toml", "cluster.yaml")
TEXT_SUFFIXES = (".py", ".md", ".toml", ".sh", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".j2", ".json")
# top-level folders imported as cliper_batch.<name> (cliper_batch/<name> is a link to them)
LINKED = {"training": f"{PACKAGE}.training", "kernels": f"{PACKAGE}.kernels"}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- the tree


def module_path(dotted: str, root: str = REPO) -> str | None:
    """Path of module ``cliper_batch.<dotted>`` (a .py file or a package's __init__.py), or None."""
    base = os.path.join(root, PACKAGE, *dotted.split("."))
    if os.path.isfile(base + ".py"):
        return base + ".py"
    if os.path.isfile(os.path.join(base, "__init__.py")):
        return os.path.join(base, "__init__.py")
    return None


def text_files() -> list[str]:
    out = []
    for root in ROOTS:
        path = os.path.join(REPO, root)
        if os.path.isfile(path):
            out.append(path)
            continue
        for dirpath, dirs, files in os.walk(path):  # links to folders are not followed (cliper_batch/training)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
            for f in sorted(files):
                p = os.path.join(dirpath, f)
                if p == os.path.abspath(__file__):  # this script names the old modules on purpose
                    continue
                if f.endswith(TEXT_SUFFIXES) and not os.path.islink(p) and os.path.getsize(p) < 2_000_000:
                    out.append(p)
    return out


def module_of(path: str) -> tuple[str, bool] | None:
    """(dotted module name, is a package) of a .py file inside the package (or a linked folder), else None."""
    rel = os.path.relpath(path, REPO)
    parts = rel[:-3].split(os.sep)
    if parts[0] in LINKED:
        parts = LINKED[parts[0]].split(".") + parts[1:]
    elif parts[0] != PACKAGE:
        return None
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


# --------------------------------------------------------------------------- names


class Names:
    """The moves as full dotted names, and which of them apply (see the module docstring)."""

    def __init__(self, pending: set[str]):
        self.map: dict[str, str] = {}
        for old, new in MOVES.items():
            collides = module_path(old) is not None and old not in pending  # the old name is a live module now
            if collides:
                continue
            self.map[f"{PACKAGE}.{old}"] = f"{PACKAGE}.{new}"
        # longest first: a name is mapped by its longest moved prefix
        self.olds = sorted(self.map, key=len, reverse=True)
        alternatives = "|".join(re.escape(o[len(PACKAGE) + 1:]) for o in self.olds)
        self.dotted = re.compile(rf"(?<![\w.]){PACKAGE}\.({alternatives})(?![\w])") if self.olds else None
        paths = "|".join(re.escape(o[len(PACKAGE) + 1:].replace(".", "/")) for o in self.olds)
        self.paths = re.compile(rf"(?<![\w]){PACKAGE}/({paths})\.py(?![\w])") if self.olds else None

    def new(self, name: str) -> str:
        """``name`` (a module or a name inside one) after the moves."""
        for old in self.olds:
            if name == old or name.startswith(old + "."):
                return self.map[old] + name[len(old):]
        return name

    def is_moved_module(self, name: str) -> bool:
        return name in self.map


def rewrite_dotted(text: str, names: Names) -> str:
    if names.dotted is None:
        return text
    text = names.dotted.sub(lambda m: names.map[f"{PACKAGE}.{m.group(1)}"], text)
    return names.paths.sub(lambda m: names.map[f"{PACKAGE}.{m.group(1).replace('/', '.')}"].replace(".", "/") + ".py", text)


def _alias_targets(
    module: str, aliases: list[tuple[str, str | None]], names: Names, map_module: bool
) -> list[tuple[str, str, str | None]] | None:
    """For ``from module import a [as b], ...``: [(from-module, name, asname)] after the moves, or None if unchanged.

    ``map_module``: ``module`` itself may be an old name (a relative import); an absolute one was already
    rewritten as a dotted name, and mapping it again would move ``crops.reference`` into ``crops.reference.reference``.
    """
    out, changed = [], False
    for name, asname in aliases:
        full = f"{module}.{name}"
        if names.is_moved_module(full):
            target = names.map[full]
            parent, _, last = target.rpartition(".")
            out.append((parent, last, asname or (name if last != name else None)))
            changed = True
        else:
            new_module = names.new(module) if map_module else module
            changed |= new_module != module
            out.append((new_module, name, asname))
    return out if changed else None


def _statements(groups: list[tuple[str, str, str | None]], render_module) -> list[str]:
    by_module: dict[str, list[str]] = {}
    for module, name, asname in groups:
        by_module.setdefault(module, []).append(f"{name} as {asname}" if asname else name)
    return [f"from {render_module(m)} import {', '.join(items)}" for m, items in by_module.items()]


ABS_FROM = re.compile(
    rf"(?<![\w.])from\s+({PACKAGE}(?:\.\w+)*)\s+import\s+(\w+(?:\s+as\s+\w+)?(?:[ \t]*,[ \t]*\w+(?:\s+as\s+\w+)?)*)"
)


def rewrite_absolute_froms(text: str, names: Names) -> str:
    """``from cliper_batch[.x] import module, ...`` on one line (in code, in strings of code, in docs)."""

    def sub(m: re.Match) -> str:
        aliases = []
        for item in m.group(2).split(","):
            parts = item.split()
            aliases.append((parts[0], parts[2] if len(parts) == 3 else None))
        groups = _alias_targets(m.group(1), aliases, names, map_module=False)
        if groups is None:
            return m.group(0)
        return "; ".join(_statements(groups, lambda mod: mod))

    return ABS_FROM.sub(sub, text)


def _relative(from_package: str, target: str) -> str:
    """``target`` written relative to ``from_package`` (both dotted, inside the package)."""
    a, b = from_package.split("."), target.split(".")
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return "." * (len(a) - common + 1) + ".".join(b[common:])


def rewrite_imports(text: str, old_module: tuple[str, bool], new_module: tuple[str, bool], names: Names) -> str:
    """Rewrite the import statements of one .py file (relative ones, and multi-line absolute ones)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    old_pkg = old_module[0] if old_module[1] else old_module[0].rpartition(".")[0]
    new_pkg = new_module[0] if new_module[1] else new_module[0].rpartition(".")[0]
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits = []  # (start, end, replacement)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = old_pkg.split(".")
            if node.level - 1 > len(base) - 1:
                continue
            module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            if not module.startswith(PACKAGE):
                continue
            render = lambda m: _relative(new_pkg, m)  # noqa: E731
        elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
            module = node.module
            render = lambda m: m  # noqa: E731
        else:
            continue
        if any(a.name == "*" for a in node.names):
            continue
        groups = _alias_targets(module, [(a.name, a.asname) for a in node.names], names, map_module=bool(node.level))
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        source = text[start:end]
        if groups is None:
            if not node.level or old_pkg == new_pkg:
                continue
            groups = [(module, a.name, a.asname) for a in node.names]  # the file moved: same targets, new path
        modules = {g[0] for g in groups}
        if len(modules) == 1 and [(g[1], g[2]) for g in groups] == [(a.name, a.asname) for a in node.names]:
            # only the module changes: keep the rest of the statement as written (parentheses, comments)
            head = re.match(r"from\s+[.\w]+", source)
            edits.append((start, start + head.end(), f"from {render(modules.pop())}"))
            continue
        indent = " " * node.col_offset
        edits.append((start, end, ("\n" + indent).join(_statements(groups, render))))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


# --------------------------------------------------------------------------- the steps


def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=REPO, check=True)


def move_modules(dry_run: bool) -> tuple[set[str], dict[str, str]]:
    """``git mv`` what is still to move; (old names moved now, new path -> old path of every moved file)."""
    pending, moved_files = set(), {}
    for old, new in MOVES.items():
        src, dst = module_path(old), module_path(new)
        if dst:  # moved already (``crops`` is then the package the module moved into)
            if src and not src.endswith("__init__.py"):
                sys.exit(f"both {src} and {dst} exist: resolve by hand, then run again")
            continue
        if not src:
            log(f"  {old}: not found, nothing to move")
            continue
        if src.endswith("__init__.py"):
            sys.exit(f"{old} is a package: this script moves modules only")
        pending.add(old)
        target = os.path.join(REPO, PACKAGE, *new.split(".")) + ".py"
        log(f"  git mv {os.path.relpath(src, REPO)} {os.path.relpath(target, REPO)}")
        moved_files[target] = src
        if dry_run:
            continue
        make_packages(os.path.relpath(os.path.dirname(target), os.path.join(REPO, PACKAGE)).split(os.sep))
        git("mv", src, target)
    return pending, moved_files


def make_packages(parts: list[str]) -> None:
    for i in range(1, len(parts) + 1):
        folder = os.path.join(REPO, PACKAGE, *parts[:i])
        init = os.path.join(folder, "__init__.py")
        # (a module of the same name may still be there: it moves into the package in this run)
        os.makedirs(folder, exist_ok=True)
        if not os.path.isfile(init):
            doc = PACKAGE_DOCS.get(".".join(parts[:i]), f"{'.'.join(parts[:i])}.")
            with open(init, "w", encoding="utf-8") as fh:
                fh.write(f'"""{doc}"""\n')
            git("add", init)


def rewrite_tree(names: Names, moved_files: dict[str, str], dry_run: bool) -> list[str]:
    changed = []
    for path in text_files():
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
        new = rewrite_dotted(text, names)
        if path.endswith(".py"):
            now = module_of(path)
            if now is not None:
                was = module_of(moved_files[path]) if path in moved_files else now
                new = rewrite_imports(new, was, now, names)
            else:
                new = rewrite_imports(new, ("", False), ("", False), names)
        new = rewrite_absolute_froms(new, names)
        if new != text:
            changed.append(os.path.relpath(path, REPO))
            if not dry_run:
                with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
                    fh.write(new)
    return changed


def list_packages_in_pyproject(dry_run: bool) -> bool:
    path = os.path.join(REPO, "pyproject.toml")
    text = open(path, encoding="utf-8").read()
    m = re.search(r"(?ms)^packages = \[\n(.*?)^\]", text)
    if not m:
        log("  pyproject.toml: no [tool.setuptools] packages list found")
        return False
    listed = re.findall(r'^\s*"([\w.]+)"', m.group(1), re.M)
    found = []
    for dirpath, dirs, files in os.walk(os.path.join(REPO, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        if "__init__.py" in files:
            found.append(os.path.relpath(dirpath, REPO).replace(os.sep, "."))
    block = m.group(1)
    for pkg in found:
        if pkg in listed:
            continue
        parent = pkg.rpartition(".")[0]
        after = max((p for p in listed if p == parent or p.startswith(parent + ".")), key=listed.index, default=None)
        line = f'    "{pkg}",\n'
        if after is None:
            block += line
        else:
            at = re.search(rf'^\s*"{re.escape(after)}",[^\n]*\n', block, re.M)
            block = block[: at.end()] + line + block[at.end():]
        listed.insert(listed.index(after) + 1 if after else len(listed), pkg)
    if block == m.group(1):
        return False
    if not dry_run:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text[: m.start(1)] + block + text[m.end(1):])
    return True


def write_layers(dry_run: bool) -> bool:
    path = os.path.join(REPO, "tests", "test_layout.py")
    text = open(path, encoding="utf-8").read()
    tree = ast.parse(text)
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "LAYERS")
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[: node.lineno - 1])
    end = sum(len(line) for line in lines[: node.end_lineno])
    new = text[:start] + LAYERS_SOURCE + "\n" + text[end:]
    if new == text:
        return False
    if not dry_run:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return True


def leftovers(names: Names) -> list[str]:
    """``from cliper_batch import X`` where X was a module that is now a package of the same name."""
    collided = [old for old in MOVES if module_path(old) is not None and module_path(old).endswith("__init__.py")]
    found = []
    if not collided:
        return found
    pat = re.compile(rf"from\s+{PACKAGE}\s+import\s+[^\n]*\b({'|'.join(map(re.escape, collided))})\b")
    for path in text_files():
        if path.endswith(".py"):
            for i, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                if pat.search(line):
                    found.append(f"{os.path.relpath(path, REPO)}:{i}: {line.strip()}")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    args = ap.parse_args(argv)
    log("moves:")
    pending, moved_files = move_modules(args.dry_run)
    names = Names(pending)  # (a dry run reads the files where they are: a moved file's relative imports are not shown)
    log("rewriting references:")
    changed = rewrite_tree(names, moved_files, args.dry_run)
    for path in changed:
        log(f"  {path}")
    if list_packages_in_pyproject(args.dry_run):
        log("  pyproject.toml: packages listed")
    if write_layers(args.dry_run):
        log("  tests/test_layout.py: LAYERS")
    for line in leftovers(names):
        log(f"  check by hand (the module is a package now): {line}")
    log(f"{len(pending)} module(s) moved, {len(changed)} file(s) rewritten" + (" (dry run)" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
