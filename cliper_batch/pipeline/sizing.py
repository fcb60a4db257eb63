"""How many actors of each stage a run starts, and what each one holds: a pure policy (:func:`size_workers`) of
the cluster's CPUs and GPUs, the corpus size and the model's cost, and its reading of the running cluster
(:func:`plan_resources`). docs/operations.md, "How many actors", says what it picks and why."""
from __future__ import annotations

from dataclasses import dataclass

import ray

from ..types import WORKERS


# CPU-only runs: a model at most this many GFLOPs per crop (``ModelInfo.visual_gflops``, estimated
# from the checkpoint header) is "light": one core scores a crop in no more time than it takes to
# decode that crop's frames with --faces none, so a separate scoring actor would sit idle while a
# core is missing from decoding and face detection. Measured on the 2-core dev host
# (docs/benchmarks.md, "CPU worker sizing"; CPU ms of one core per crop): decode 2.0-3.5 (--faces
# none), decode + MTCNN on every sampled frame 47; Tiny-ViT-T-16 0.017 GFLOPs, 0.4-0.5 ms; the demo
# model 0.007 GFLOPs, ~2 ms; ViT-B/16 33.9 GFLOPs, 396-411 ms (~85 GFLOP/s: at that rate 0.1 GFLOPs is
# ~1.2 ms; small models run several times below it per FLOP). Every real CLIP tower is far above
# (ViT-B/32 ~9 GFLOPs), every test/demo tower far below.
LIGHT_MODEL_GFLOPS = 0.1


@dataclass(frozen=True)
class Resources:
    """How many actors of each stage to run, and what each one holds.

    ``worker='staged'``: ``decode_workers`` DecodeStage actors feed
    ``score_workers`` ScoreStage actors. ``worker='fused'``: ``score_workers``
    FusedStage actors do everything (``decode_workers`` is 0); the ``score_*``
    resources are those of one fused actor, and each Ray task takes
    ``videos_per_task`` videos. ``why`` says in words why this layout was chosen.
    """

    decode_workers: int
    score_workers: int
    score_num_gpus: float
    score_num_cpus: float
    score_threads: int
    device: str
    worker: str = "staged"
    videos_per_task: int = 8
    why: str = ""
    # Where staged decode actors decode and detect faces: always the host. They hold no GPU share
    # (num_gpus=0), so on CUDA each one would open an unaccounted CUDA context (NVDEC, the detector)
    # on GPU 0 beside the scorers; the GPU layout that decodes and detects on the device is the fused one.
    decode_device: str = "cpu"


def resolve_worker(worker: str, device_kind: str, model_gflops: float | None = None) -> str:
    """``auto`` -> ``fused`` on CUDA (crops never leave the GPU) and on CPU for a light model
    (``model_gflops <= LIGHT_MODEL_GFLOPS``), ``staged`` on CPU otherwise (or when the cost is
    unknown); explicit choices are kept."""
    if worker not in WORKERS:
        raise ValueError(f"worker must be one of {'|'.join(WORKERS)}, got {worker!r}")
    if worker == "auto":
        if device_kind == "cuda":
            return "fused"
        return "fused" if model_gflops is not None and model_gflops <= LIGHT_MODEL_GFLOPS else "staged"
    return worker


def size_workers(
    *,
    cpus: int,
    gpus: int,
    use_gpu: bool,
    node_cpus: int | None = None,
    videos: int | None = None,
    model_gflops: float | None = None,
    decode_workers: int | None = None,
    score_workers: int | None = None,
    worker: str = "auto",
    gpu_fraction: float = 1.0,
    videos_per_task: int = 8,
) -> Resources:
    """The worker layout for a cluster of ``cpus`` CPUs (``node_cpus`` on its largest node) and ``gpus``
    GPUs, ``videos`` to annotate and a model of ``model_gflops`` per crop (a pure function).

    GPU, fused: ``gpus / gpu_fraction`` actors (``--score-workers`` overrides),
    each holding ``gpu_fraction`` of a GPU and one CPU. GPU, staged: one
    scoring actor per GPU, decoders on the remaining CPUs.

    CPU only (a laptop), light model (``auto`` resolves to fused): one fused
    actor per video up to one per core (``min(cpus, videos)``), torch threads
    ``node_cpus // actors``: one video uses every core for face detection and
    scoring, two videos on two cores run one core each. CPU only, heavy model
    or unknown cost (staged): one scoring actor whose torch threads use the
    node's cores, fed by decoders on the logical CPUs left (at least one).
    Explicit ``--worker``, ``--decode-workers`` and ``--score-workers`` always win
    (``auto`` with ``--decode-workers`` means staged: only staged has decoders).

    Fused tasks take at most ``videos_per_task`` videos, fewer when the corpus is
    small so every actor gets work: on GPU ``ceil(videos / actors)``; on CPU
    ``videos // (4 x actors)`` (at least 1) so uneven videos still balance.
    """
    if not (0.0 < gpu_fraction <= 1.0):
        raise ValueError(f"gpu_fraction must be in (0, 1], got {gpu_fraction}")
    cpus = max(1, int(cpus))
    node_cpus = max(1, int(node_cpus or cpus))
    n_videos = max(1, int(videos or 1))
    cost = "unknown" if model_gflops is None else f"{model_gflops:.3g}"
    if worker == "auto" and decode_workers is not None:
        worker, auto_why = "staged", "--decode-workers given (only the staged layout has decoders)"
    else:
        auto_why = ""
    chosen = resolve_worker(worker, "cuda" if use_gpu else "cpu", model_gflops)
    if worker != "auto":
        why = auto_why or f"--worker {worker}"
    elif use_gpu:
        why = "auto on CUDA: fused keeps frames and crops on the GPU"
    elif chosen == "fused":
        why = (f"auto on CPU: model {cost} GFLOPs/crop <= {LIGHT_MODEL_GFLOPS} (light): "
               f"each actor decodes, detects and scores its own videos")
    else:
        why = (f"auto on CPU: model {cost} GFLOPs/crop (heavy or unknown; light is <= {LIGHT_MODEL_GFLOPS}): "
               f"one scorer with all threads fed by decoders")
    if chosen == "fused":
        if use_gpu:
            n = score_workers or max(1, int(gpus / gpu_fraction + 1e-9))
            per_task = max(1, min(videos_per_task, -(-n_videos // n)))
            return Resources(0, n, float(gpu_fraction), 1.0, 1, "cuda", "fused", per_task, why)
        n = score_workers or min(cpus, n_videos)
        per_task = max(1, min(videos_per_task, n_videos // (4 * n)))
        return Resources(0, n, 0.0, 1.0, max(1, node_cpus // n), "cpu", "fused", per_task, why)
    if use_gpu:
        n_score = score_workers or gpus
        n_decode = decode_workers or max(1, cpus - n_score)
        return Resources(n_decode, n_score, 1.0, 1.0, 1, "cuda", "staged", videos_per_task, why)
    n_score = score_workers or 1
    n_decode = decode_workers or max(1, cpus - n_score)
    return Resources(n_decode, n_score, 0.0, 1.0, max(1, node_cpus // n_score), "cpu", "staged", videos_per_task, why)


def plan_resources(
    device_pref: str,
    decode_workers: int | None,
    score_workers: int | None,
    worker: str = "auto",
    gpu_fraction: float = 1.0,
    *,
    videos: int | None = None,
    model_gflops: float | None = None,
    videos_per_task: int = 8,
) -> Resources:
    """:func:`size_workers` for the running Ray cluster (its CPUs, GPUs and largest node)."""
    res = ray.cluster_resources()
    cpus = int(res.get("CPU", 1))
    gpus = int(res.get("GPU", 0))
    use_gpu = device_pref.startswith("cuda") or (device_pref == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise RuntimeError(f"--device {device_pref} asked for CUDA but the Ray cluster has no GPUs")
    return size_workers(
        cpus=cpus, gpus=gpus, use_gpu=use_gpu, node_cpus=_largest_node_cpus(cpus), videos=videos,
        model_gflops=model_gflops, decode_workers=decode_workers, score_workers=score_workers, worker=worker,
        gpu_fraction=gpu_fraction, videos_per_task=videos_per_task,
    )


def _largest_node_cpus(cluster_cpus: int) -> int:
    """CPUs of the largest alive node (a torch thread count cannot span nodes); the cluster total if unknown."""
    try:
        per_node = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    except Exception:  # an old or partial GCS answer: fall back to the total
        per_node = []
    return max(per_node, default=0) or cluster_cpus


__all__ = ["LIGHT_MODEL_GFLOPS", "Resources", "plan_resources", "resolve_worker", "size_workers"]
