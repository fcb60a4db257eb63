"""The fused (GPU-resident) worker: same Parquet as the staged pipeline, errors as data, batches across videos.

CPU only here: the fused path runs on the CPU device with the torch crop
reference and PyAV frames. What needs CUDA (Triton crops, DALI NVDEC frames
kept on the GPU) is checked by the tests marked ``needs_cuda``, skipped here.
"""
import json
import os

import numpy as np
import polars as pl
import pytest
import torch

from cliper_batch.output import query
from cliper_batch.shell.annotate_cli import main as annotate_main
from cliper_batch.decode.select import cuda_available
from cliper_batch.faces.cuts import ShotCutDetector
from cliper_batch import rows
from cliper_batch.crops.primitives import select_crop_backend
from cliper_batch.faces.cuts import subsample_for_cuts
from cliper_batch.pipeline.fused_stage import FusedStage
from cliper_batch.pipeline.sizing import plan_resources, resolve_worker
from cliper_batch.synthetic import write_expression_video
from cliper_batch.types import AnnotateConfig, VideoRef
from cliper_batch.uris import normalize_uri

SEG, T = 0.5, 4
needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU (Triton crop kernel, DALI NVDEC device frames)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two faces videos (H.264 .mp4, VP9 .webm; 2 s, 10 fps, 160x120) and a file that is not a video."""
    d = tmp_path_factory.mktemp("fused_corpus")
    write_expression_video(str(d / "a.mp4"), [(0, 1, "happy"), (1, 2, "sad")], codec="h264", fps=10, size=(160, 120), seed=1)
    write_expression_video(str(d / "b.webm"), [(0, 1, "surprise"), (1, 2, "neutral")], codec="vp9", fps=10, size=(160, 120), seed=2)
    (d / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return d


def refs_for(*paths) -> dict[str, np.ndarray]:
    refs = [VideoRef(video_id=os.path.basename(str(p)), uri=normalize_uri(str(p))) for p in paths]
    return {"ref": np.array([rows.encode_ref(r) for r in refs], dtype=object)}


def config(faces: str, **kw) -> AnnotateConfig:
    base = dict(segment_seconds=SEG, frames_per_segment=T, faces=faces, batch_size=3, device="cpu", decoder="pyav")
    return AnnotateConfig(**{**base, **kw})


def outcomes(blocks) -> dict[str, dict]:
    return {str(b["video_id"][i]): json.loads(b["outcome"][i]) for b in blocks for i in np.flatnonzero(b["row_kind"] == rows.VIDEO)}


# --------------------------------------------------------------------------- (a) + (b) on the real Ray runtime


@pytest.fixture(scope="module")
def parity_inputs(corpus, bad_input_zoo, tmp_path_factory):
    """A manifest of the faces videos (H.264, VP9), the non-video, and every file of the nightly bad-input zoo."""
    zoo, zoo_expected = bad_input_zoo
    expected = {str(corpus / "a.mp4"): ("ok", None), str(corpus / "b.webm"): ("ok", None),
                str(corpus / "broken.mp4"): ("failed", "ProbeError")}
    expected.update({str(zoo / rel): want for rel, want in zoo_expected.items()})
    manifest = tmp_path_factory.mktemp("parity") / "videos.txt"
    manifest.write_text("".join(f"{path}\n" for path in expected))
    return manifest, expected


@pytest.mark.parametrize("faces", ["none", "detect"])
def test_fused_gives_the_staged_parquet(ray_runtime, parity_inputs, tiny_checkpoint, tmp_path, faces):
    manifest, expected = parity_inputs
    args = ["--input", str(manifest), "--model", tiny_checkpoint, "--device", "cpu", "--faces", faces,
            "--segment-seconds", str(SEG), "--frames-per-segment", str(T), "--batch-size", "3", "--decoder", "pyav"]
    out = {w: str(tmp_path / w) for w in ("staged", "fused")}
    for worker, path in out.items():
        assert annotate_main([*args, "--output", path, "--worker", worker]) == 0
    # the same fused actor alone, driven without Ray Data (a short run on one actor): the very same Parquet
    single = str(tmp_path / "single")
    assert annotate_main([*args, "--output", single, "--worker", "fused", "--score-workers", "1"]) == 0

    record = json.loads(next((tmp_path / "fused" / "runs").glob("*.json")).read_text())
    assert record["resources"]["worker"] == "fused" and record["options"]["worker"] == "fused"
    assert record["resources"]["score_workers"] == 2 and record["executor"] == "ray_data"
    single_record = json.loads(next((tmp_path / "single" / "runs").glob("*.json")).read_text())
    assert single_record["resources"]["score_workers"] == 1 and single_record["executor"] == "single_actor"
    assert json.loads(next((tmp_path / "staged" / "runs").glob("*.json")).read_text())["resources"]["worker"] == "staged"
    same = ["video_id", "video_uri", "status", "error_type", "error", "error_class", "n_segments", "n_tracks", "decoder",
            "duration_s", "fps", "width", "height", "codec", "rotation", "model_id", "config_hash"]
    assert (query.scan_videos(single).collect().select(same).sort("video_id")
            .equals(query.scan_videos(out["fused"]).collect().select(same).sort("video_id")))
    tl_key = ["video_id", "track_id", "segment_index"]
    single_tl = query.scan_timelines(single).collect().drop("run_id").sort(tl_key)
    fused_tl = query.scan_timelines(out["fused"]).collect().drop("run_id").sort(tl_key)
    assert single_tl.height > 0 and single_tl.equals(fused_tl)

    # every bad input is a failed row of the same kind, with the same message, in both layouts; the rest complete
    v = {w: query.scan_videos(p).collect().sort("video_uri") for w, p in out.items()}
    for w in out:
        got = {u: (s, e) for u, s, e in v[w].select("video_uri", "status", "error_type").iter_rows()}
        assert got == expected, w
    cols = ["video_uri", "status", "error_type", "error", "n_segments", "n_tracks", "decoder",
            "duration_s", "fps", "width", "height", "codec", "rotation"]
    assert v["fused"].select(cols).equals(v["staged"].select(cols))
    failed = v["fused"].filter(pl.col("status") == "failed")
    assert failed.height == sum(s == "failed" for s, _ in expected.values()) and failed["error"].is_not_null().all()

    key = ["video_uri", "track_id", "segment_index"]
    a = query.scan_timelines(out["staged"]).collect().sort(key)
    b = query.scan_timelines(out["fused"]).collect().sort(key)
    ok_videos = {u for u, (s, _) in expected.items() if s == "ok"}
    timeline_videos = set(a["video_uri"].unique())
    # none: every ok video has rows; detect: the zoo's test patterns hold no faces, so only the faces videos do
    assert timeline_videos == ok_videos if faces == "none" else timeline_videos <= ok_videos
    faces_videos = [u for u in expected if u.endswith(("/a.mp4", "/b.webm"))]
    n_segments = 2 * int(2.0 / SEG)
    assert a.filter(pl.col("video_uri").is_in(faces_videos)).height >= n_segments  # detect: a face track per segment
    assert a.height == b.height
    assert a.select(key, "start_s", "end_s").equals(b.select(key, "start_s", "end_s"))
    assert a["label"].to_list() == b["label"].to_list()
    p_cols = [c for c in a.columns if c.startswith("p_")]
    # none: the same pixels (centre square of the same decoded frames); detect: the fused crop skips the
    # staged path's uint8 rounding of the resized crop, so scores move slightly
    atol = 1e-5 if faces == "none" else 2e-3
    np.testing.assert_allclose(b.select(p_cols).to_numpy(), a.select(p_cols).to_numpy(), atol=atol)
    if faces == "detect":
        face_cols = ["face_x0", "face_y0", "face_x1", "face_y1", "face_score", "frames_with_face"]
        assert a.select(face_cols).equals(b.select(face_cols))
        assert b.filter(pl.col("frames_with_face").is_null()).height == 0
    else:
        assert set(b["track_id"].to_list()) == {0}


# --------------------------------------------------------------------------- (b), (c) calling the class directly


def test_batches_span_videos_and_outcomes_follow_their_clips(corpus, tiny_checkpoint):
    stage = FusedStage(tiny_checkpoint, config("none"), device="cpu")
    assert stage.crop_backend == "torch" and "CUDA" in stage.crop_backend_reason
    blocks = list(stage(refs_for(corpus / "a.mp4", corpus / "b.webm")))
    per_video = int(2.0 / SEG)
    # 2 x 4 clips in batches of 3: full batches first, the partial one flushed at the end of the block
    assert stage.batch_sizes == [3, 3, 2]
    assert [len(b.video_ids) for b in stage.batches] == [1, 2, 1]  # the middle batch holds clips of both videos
    assert [len(b["row_kind"]) for b in blocks] == [3, 4, 3]  # + an outcome row once its video is fully scored
    seen: dict[str, int] = {}
    for b in blocks:
        for kind, vid in zip(b["row_kind"], b["video_id"]):
            if kind == rows.SEGMENT:
                seen[vid] = seen.get(vid, 0) + 1
            else:
                assert seen.get(vid) == per_video, "an outcome row left before all of its video's clips"
    o = outcomes(blocks)
    assert {k: (v["status"], v["n_segments"], v["extra"]["worker"]) for k, v in o.items()} == {
        "a.mp4": ("ok", per_video, "fused"), "b.webm": ("ok", per_video, "fused")}
    seg = np.concatenate([b["probs"][b["row_kind"] == rows.SEGMENT] for b in blocks])
    np.testing.assert_allclose(seg.sum(1), 1.0, atol=1e-5)
    assert all(str(x) == "eager@cpu" for b in blocks for x in b["score_backend"])


def test_bad_videos_are_rows_and_the_block_goes_on(corpus, truncated_vp9_video, tiny_checkpoint):
    truncated, _ = truncated_vp9_video  # probes fine, frames after ~40% missing: fails mid-video
    # one segment per decode chunk and room in the batch: the truncated video has a clip queued when it fails
    cfg = config("none", segment_seconds=1.0, decode_chunk_segments=1, batch_size=8)
    stage = FusedStage(tiny_checkpoint, cfg, device="cpu")
    blocks = list(stage(refs_for(corpus / "a.mp4", corpus / "broken.mp4", truncated, corpus / "b.webm")))
    o = outcomes(blocks)
    assert {k: (v["status"], v["error_type"]) for k, v in o.items()} == {
        "a.mp4": ("ok", None), "broken.mp4": ("failed", "ProbeError"),
        "truncated.webm": ("failed", "DecodeError"), "b.webm": ("ok", None)}
    assert "truncated.webm" in o["truncated.webm"]["error"]
    seg_videos = [v for b in blocks for k, v in zip(b["row_kind"], b["video_id"]) if k == rows.SEGMENT]
    assert sorted(set(seg_videos)) == ["a.mp4", "b.webm"]  # the truncated video's queued clips were dropped unscored
    assert seg_videos.count("a.mp4") == seg_videos.count("b.webm") == 2

    # per-video timeout, as in DecodeStage: every video is a VideoTimeout row, nothing is scored
    slow = FusedStage(tiny_checkpoint, config("none", video_timeout_s=1e-6), device="cpu")
    o = outcomes(list(slow(refs_for(corpus / "a.mp4", corpus / "b.webm"))))
    assert {v["error_type"] for v in o.values()} == {"VideoTimeout"} and slow.batch_sizes == []


# --------------------------------------------------------------------------- (d) crop backend, resources


def test_crop_backend_choice():
    assert select_crop_backend("cpu").name == "torch"
    assert select_crop_backend(torch.device("cpu"), triton_available=True, dali_installed=True).name == "torch"
    assert select_crop_backend("cuda:0", triton_available=True, dali_installed=True).name == "triton"
    dali = select_crop_backend("cuda", triton_available=False, dali_installed=True)
    assert dali.name == "dali" and "not importable" in dali.reason and "DALI" in dali.reason
    neither = select_crop_backend("cuda", triton_available=False, dali_installed=False)
    assert neither.name == "torch" and "neither" in neither.reason


def test_a_scoring_error_leaves_nothing_queued_for_the_next_block(corpus, tiny_checkpoint):
    """A failed model call (e.g. CUDA OOM) fails its block; the next block must not emit the failed block's pieces."""
    stage = FusedStage(tiny_checkpoint, config("none"), device="cpu")  # batch 3, 4 clips per video
    real = stage.scorer.scored_block
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (injected once)")
        return real(*args, **kwargs)

    stage.scorer.scored_block = fails_once
    with pytest.raises(RuntimeError, match="injected once"):
        list(stage(refs_for(corpus / "a.mp4")))  # fails at its first full batch, one clip and the outcome still queued
    blocks = list(stage(refs_for(corpus / "b.webm")))
    videos = [str(v) for b in blocks for v in b["video_id"]]
    assert set(videos) == {"b.webm"}, videos
    assert videos.count("b.webm") == int(2.0 / SEG) + 1  # its clips and its outcome row, nothing else
    assert outcomes(blocks)["b.webm"]["status"] == "ok"


@pytest.mark.skipif(not __import__("cliper_batch.decode.dali_backend", fromlist=["x"]).dali_available(),
                    reason="nvidia.dali not installed")
def test_dali_crop_primitive_scores_like_the_torch_crops(corpus, tiny_checkpoint):
    """The DALI crop primitive behind the shared algorithm (its CPU operators here): same scores as the torch crops."""
    from cliper_batch.crops.primitives import CropBackendChoice

    refs = refs_for(corpus / "a.mp4", corpus / "b.webm")
    by = {}
    for name in ("torch", "dali"):
        stage = FusedStage(tiny_checkpoint, config("none"), device="cpu", crop_backend=CropBackendChoice(name, "test"))
        blocks = list(stage(refs))
        assert {v["status"] for v in outcomes(blocks).values()} == {"ok"}
        assert {v["extra"]["crop_backend"] for v in outcomes(blocks).values()} == {name}
        by[name] = np.concatenate([b["probs"][b["row_kind"] == rows.SEGMENT] for b in blocks])
    # centre squares lie inside the frame, where DALI's crops equal the reference to < 1e-4
    np.testing.assert_allclose(by["dali"], by["torch"], atol=1e-4)


def test_worker_layout_and_resources(ray_runtime, monkeypatch):
    assert resolve_worker("auto", "cuda") == "fused" and resolve_worker("auto", "cpu") == "staged"
    assert resolve_worker("staged", "cuda") == "staged"
    with pytest.raises(ValueError, match="worker must be"):
        resolve_worker("both", "cpu")
    assert plan_resources("cpu", None, None, "auto").worker == "staged"  # model cost unknown: staged
    # on this cluster's CPUs: a light model runs fused, one actor per video up to one per CPU; a heavy one staged
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    light = plan_resources("cpu", None, None, "auto", videos=6, model_gflops=0.01)
    assert (light.worker, light.score_workers, light.score_threads) == ("fused", min(cpus, 6), max(1, cpus // min(cpus, 6)))
    heavy = plan_resources("cpu", None, None, "auto", videos=6, model_gflops=34.0)
    assert (heavy.worker, heavy.score_workers, heavy.decode_workers) == ("staged", 1, max(1, cpus - 1))
    fused_cpu = plan_resources("cpu", None, None, "fused")
    assert (fused_cpu.worker, fused_cpu.decode_workers, fused_cpu.score_workers, fused_cpu.score_num_gpus) == ("fused", 0, 1, 0.0)
    with pytest.raises(RuntimeError, match="no GPUs"):
        plan_resources("cuda", None, None, "auto")
    # the GPU sizing rule, for a cluster this host cannot be: 4 GPUs, half a GPU per fused actor
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 32.0, "GPU": 4.0})
    r = plan_resources("auto", None, None, "auto", gpu_fraction=0.5)
    assert (r.worker, r.device, r.score_workers, r.score_num_gpus, r.decode_workers) == ("fused", "cuda", 8, 0.5, 0)
    assert plan_resources("auto", None, None, "staged").worker == "staged"


def test_subsampling_for_cuts_keeps_cuts_and_scores():
    """Subsampling before the host copy leaves the cut detector's input unchanged, for any frame size."""
    rng = np.random.default_rng(0)
    for h, w in ((360, 640), (720, 1280), (120, 160), (1080, 1920)):
        # two "shots" of pixel-level noise (so subsampling matters): reddish frames 0-2, bluish frames 3-5
        colour = np.array([(200, 40, 30)] * 3 + [(30, 60, 200)] * 3, dtype=np.int16)[:, None, None, :]
        frames = torch.from_numpy((colour + rng.integers(0, 50, (6, h, w, 3), dtype=np.int16)).astype(np.uint8))
        full, sub = ShotCutDetector(), ShotCutDetector()
        assert full.update(frames) == sub.update(subsample_for_cuts(frames)) == [3]
        np.testing.assert_allclose(full.scores, sub.scores, atol=1e-6)


def test_dali_frame_tensors_match_host_frames(rotated_vp9_video):
    """The tensor path of the DALI decoder (here its CPU decoder) gives the same upright frames as iter_frames."""
    from cliper_batch.decode.dali_backend import DaliDecoder, dali_available
    from cliper_batch.decode.probe import probe

    if not dali_available():
        pytest.skip("nvidia.dali is not installed")
    path, _ = rotated_vp9_video
    info = probe(path)
    assert info.rotation == 270
    ts = [0.0, 0.2, 0.2, 0.5]
    dec = DaliDecoder("cpu", max_chunk_frames=2)
    host = list(dec.iter_frames(path, info, ts, size=(48, 64)))
    tensors = list(dec.iter_frame_tensors(path, info, ts, size=(48, 64)))
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == (64, 48, 3) for t in tensors)
    for a, b in zip(host, tensors, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


# --------------------------------------------------------------------------- GPU only


# CPU parity tolerance (test_fused_gives_the_staged_parquet, --faces none) and its fp16 widening: the CUDA worker
# scores under fp16 autocast (compile.select_dtype), whose 10-bit mantissa gives ~1e-3 relative error per matmul;
# through the tiny tower's layers that moves 7-class softmax probabilities by up to ~1e-2.
CPU_PARITY_ATOL = 1e-5
FP16_ATOL = 1e-2


@pytest.mark.gpu
@needs_cuda
def test_fused_on_cuda_scores_like_the_cpu_staged_run(ray_runtime, corpus, tiny_checkpoint, tmp_path):
    """Fused worker on CUDA (NVDEC frames on the device, Triton crops, fp16): every video ok, CPU-staged scores."""
    args = ["--model", tiny_checkpoint, "--faces", "none", "--segment-seconds", str(SEG),
            "--frames-per-segment", str(T), "--batch-size", "3"]
    staged = str(tmp_path / "staged")
    assert annotate_main(["--input", str(corpus / "a.mp4"), "--output", staged, "--device", "cpu", "--worker", "staged",
                          "--decoder", "pyav", *args]) == 0
    assert annotate_main(["--input", str(corpus / "b.webm"), "--output", staged, "--device", "cpu", "--worker", "staged",
                          "--decoder", "pyav", *args]) == 0
    stage = FusedStage(tiny_checkpoint, config("none", device="cuda", decoder="auto"), device="cuda")
    assert stage.crop_backend == "triton", stage.crop_backend_reason
    blocks = list(stage(refs_for(corpus / "a.mp4", corpus / "b.webm")))
    o = outcomes(blocks)
    assert {k: v["status"] for k, v in o.items()} == {"a.mp4": "ok", "b.webm": "ok"}, o
    assert {v["extra"]["decoder"] for v in o.values()} == {"dali-gpu"}
    ref = query.scan_timelines(staged).collect()
    p_cols = sorted(c for c in ref.columns if c.startswith("p_"))
    for vid in ("a.mp4", "b.webm"):
        want = ref.filter(pl.col("video_uri").str.ends_with("/" + vid)).sort("segment_index").select(p_cols).to_numpy()
        got = np.concatenate([b["probs"][(b["row_kind"] == rows.SEGMENT) & (b["video_id"] == vid)] for b in blocks])
        assert got.shape == want.shape == (int(2.0 / SEG), len(p_cols))
        np.testing.assert_allclose(got, want, atol=FP16_ATOL)
    assert FP16_ATOL >= CPU_PARITY_ATOL  # widened for fp16 only


@pytest.mark.gpu
@needs_cuda
def test_nvdec_device_frames_are_the_frames_displayed_at_each_time(h264_video, vfr_video, video_dir):
    """DALI NVDEC frames kept on the GPU: frame codes vs frame_indices (H.264 with B-frames) and vs VFR start times."""
    from cliper_batch.decode.dali_backend import DaliDecoder
    from cliper_batch.decode.probe import probe
    from cliper_batch.decode.sampling import frame_indices
    from cliper_batch.decode.testvideos import read_frame_code
    from conftest import write_vfr_video

    dec = DaliDecoder("gpu", device_id=0)
    path, spec = h264_video
    info = probe(path)
    ts = [0.0, 0.04, 0.08, 0.5, 1.0, 1.96, 2.0, 3.96]
    frames = list(dec.iter_frame_tensors(path, info, ts))
    assert all(f.is_cuda for f in frames)
    assert [read_frame_code(f.cpu().numpy()) for f in frames] == frame_indices(ts, info.fps, spec.n_frames)
    _, vfr_spec, starts = vfr_video
    vfr_h264 = os.path.join(video_dir, "vfr_h264_fused.mp4")
    write_vfr_video(vfr_h264, "libx264", [round(t * 1000) for t in starts], vfr_spec)
    info = probe(vfr_h264)
    ts = [t + 0.001 for t in starts[::3]]
    want = [max(i for i, s in enumerate(starts) if s <= t) for t in ts]
    assert [read_frame_code(f.cpu().numpy()) for f in dec.iter_frame_tensors(vfr_h264, info, ts)] == want


def test_a_model_actor_freezes_its_start_up_heap_and_nothing_else_does(ray_runtime, tiny_checkpoint):
    """The model actor's worker ``gc.freeze()``s what building the model loaded (so its exit is quick);
    a driver (this test process) and a plain Ray task are left alone."""
    import gc

    import ray

    from cliper_batch.pipeline.scoring_model import ScoringModel, freeze_actor_heap

    before = gc.get_freeze_count()
    assert freeze_actor_heap() is False and gc.get_freeze_count() == before

    @ray.remote(num_cpus=0)
    class Holder:
        def __init__(self, spec):
            self.scorer = ScoringModel(spec, "cpu", num_threads=1)

        def frozen(self) -> int:
            return gc.get_freeze_count()

    @ray.remote(num_cpus=0)
    def in_a_task() -> tuple[bool, int]:
        return freeze_actor_heap(), gc.get_freeze_count()

    holder = Holder.remote(tiny_checkpoint)
    try:
        assert ray.get(holder.frozen.remote(), timeout=300) > 10_000  # torch, open_clip and the model
    finally:
        ray.kill(holder)
    assert ray.get(in_a_task.remote(), timeout=300) == (False, 0)


def test_fused_crops_are_inference_tensors_and_fp16_only_for_triton_into_an_eager_fp16_encoder(corpus, tiny_checkpoint):
    """Issue 24, item 7: the compiled encoder's wrapper clones normal tensors; the fused crops and batches are
    inference tensors (no clone per batch). fp16 crops: only Triton on CUDA feeding the eager fp16 path."""
    from cliper_batch.pipeline.fused_stage import crop_dtype_for

    stage = FusedStage(tiny_checkpoint, config("none"), device="cpu")
    assert stage.crop_dtype == torch.float32
    frames = torch.zeros((2, 40, 40, 3), dtype=torch.uint8)
    crops = stage.annotator.prims.crop(frames, torch.tensor([[0.0, 0, 0, 40, 40], [1.0, 5, 5, 30, 30]]))
    assert crops.is_inference() and crops.dtype == torch.float32
    seen = []
    real = stage.scorer.scored_block
    stage.scorer.scored_block = lambda block, is_seg, clips, t: seen.append(clips) or real(block, is_seg, clips, t)
    list(stage(refs_for(corpus / "a.mp4")))
    assert seen and all(c.is_inference() for c in seen if c is not None)
    cuda = torch.device("cuda:0")
    assert crop_dtype_for(cuda, torch.float16, "eager", "triton") == torch.float16
    assert crop_dtype_for(cuda, torch.float16, "torch.compile", "triton") == torch.float32
    assert crop_dtype_for(cuda, torch.float16, "eager", "torch") == torch.float32
    assert crop_dtype_for(cuda, None, "eager", "triton") == torch.float32
    assert crop_dtype_for(torch.device("cpu"), torch.float16, "eager", "triton") == torch.float32
