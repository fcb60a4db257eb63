"""The layout follows the data flow, and every module has one import name (read from the sources, nothing run)."""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "cliper_batch"

# Data-flow order of the package's top-level modules: a module may import only from its own layer or the ones before.
LAYERS = [
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
]
# (importer, imported) pairs still allowed to reach up, and why. Each must still be in use (else delete it here).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

# Inside ``training/`` (names relative to ``cliper_batch.training``): a module imports only from the layers before
# its own, so modules of one layer never import each other (one adapter per dataset) and there is no import circle.
TRAINING_LAYERS = [
    ["datasets.base", "metrics", "losses", "prompts", "state"],  # the internal data form; leaf helpers
    ["datasets.rafdb", "datasets.affectnet", "datasets.ferplus", "datasets.fer2013",  # one module per dataset
     "datasets.dfew", "datasets.ferv39k", "datasets.mafw", "datasets.manifest", "model"],
    ["datasets.registry"],  # dataset specs, the kind -> loader registry
    ["datasets"],  # the package's public names
    ["clips", "evaluate", "face_framing", "framed_faces", "job_check"],  # samples -> tensors; the real-face model tools
    ["config"],  # TrainConfig
    ["loop"],  # the Ray Train worker
    ["train", "demo"],  # the driver and its command line; the demo recipe
    ["average"],  # checkpoint averaging: reuses the driver's options
]


def _python_files(root: str):
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # hidden folders (a virtualenv in bench/) are not ours
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def _imports(path: str, package: str) -> list[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved against ``package``)."""
    out = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.extend([mod] if node.module else [f"{mod}.{a.name}" for a in node.names])
    return out


def _module_of(path: str) -> tuple[str, str]:
    """(dotted module name, package its relative imports resolve against) of a file under the repo."""
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    if rel.endswith(".__init__"):
        rel = rel[: -len(".__init__")]
        return rel, rel
    return rel, rel.rsplit(".", 1)[0]


def _top(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def test_no_module_imports_one_above_it_in_the_data_flow():
    rank = {name: i for i, names in enumerate(LAYERS) for name in names}
    found, upward = [], set()
    for path in _python_files(os.path.join(REPO, PACKAGE)):
        module, package = _module_of(path)
        me = _top(module)
        if me is None:  # the package's __init__
            continue
        assert me in rank, f"{module}: add {me!r} to LAYERS (where does it sit in the data flow?)"
        for name in _imports(path, package):
            other = _top(name)
            if other is None or other == me:
                continue
            assert other in rank, f"{module} imports {name}: add {other!r} to LAYERS"
            if rank[other] > rank[me]:
                upward.add((me, other))
                if (me, other) not in ALLOWED_UPWARD:
                    found.append(f"{module} (layer {rank[me]}) imports {name} (layer {rank[other]})")
    assert not found, "\n".join(found)
    assert set(ALLOWED_UPWARD) <= upward, f"no longer needed, delete from ALLOWED_UPWARD: {set(ALLOWED_UPWARD) - upward}"


def test_training_modules_import_only_from_the_layers_before_their_own():
    rank = {name: i for i, names in enumerate(TRAINING_LAYERS) for name in names}
    prefix = f"{PACKAGE}.training."
    found = []
    for path in _python_files(os.path.join(REPO, "training")):
        module, package = _module_of(path)  # "training.datasets.base", "training.datasets"
        me = module.partition(".")[2]
        if not me:  # training/__init__.py
            continue
        assert me in rank, f"{module}: add {me!r} to TRAINING_LAYERS (where does it sit in the data flow?)"
        for name in _imports(path, f"{PACKAGE}.{package}"):
            if not name.startswith(prefix):
                continue
            other = name[len(prefix):]
            assert other in rank, f"{module} imports {name}: add it to TRAINING_LAYERS"
            if rank[other] >= rank[me]:
                found.append(f"{module} (layer {rank[me]}) imports {name} (layer {rank[other]})")
    assert not found, "\n".join(found)


def test_kernels_and_training_are_imported_by_one_name_only():
    """``kernels/`` and ``training/`` are ``cliper_batch.kernels`` / ``cliper_batch.training``, everywhere."""
    assert os.path.realpath(os.path.join(REPO, PACKAGE, "kernels")) == os.path.join(os.path.realpath(REPO), "kernels")
    assert os.path.realpath(os.path.join(REPO, PACKAGE, "training")) == os.path.join(os.path.realpath(REPO), "training")
    bad = []
    for top in (PACKAGE, "kernels", "training", "tests", "bench", "jobs"):
        for path in _python_files(os.path.join(REPO, top)):
            if top == PACKAGE and os.path.realpath(path) != path:  # the same files again, through the links
                continue
            module, package = _module_of(path)
            if top in ("kernels", "training"):
                package = f"{PACKAGE}.{package}"  # how they are imported
            for name in _imports(path, package):
                if name.split(".")[0] in ("kernels", "training"):
                    bad.append(f"{os.path.relpath(path, REPO)} imports {name}")
    assert not bad, "\n".join(bad)


def test_no_import_circle_between_modules():
    """No module imports, directly or through others, one that imports it back (lazy imports in functions count)."""
    graph: dict[str, set[str]] = {}
    files = [(p, PACKAGE) for p in _python_files(os.path.join(REPO, PACKAGE)) if os.path.realpath(p) == p]
    files += [(p, top) for top in ("kernels", "training") for p in _python_files(os.path.join(REPO, top))]
    for path, top in files:
        module, package = _module_of(path)
        if top != PACKAGE:  # kernels/, training/: imported as cliper_batch.kernels, cliper_batch.training
            module, package = f"{PACKAGE}.{module}", f"{PACKAGE}.{package}"
        graph[module] = set(_imports(path, package))
    for module, names in graph.items():
        # a name may be a module or a name inside one; a package's own submodules do not import it back
        graph[module] = {n if n in graph else n.rpartition(".")[0] for n in names} & set(graph)
        graph[module] = {n for n in graph[module] if n != module and not module.startswith(n + ".")}
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)
