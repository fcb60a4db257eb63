"""CLIPER model, checkpoints and model specs on the tiny open_clip config (CPU, fast)."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
import open_clip  # a hard dependency: a broken install must fail here, not skip the module
import torch.nn.functional as F
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from cliper_batch.labels import CANONICAL_CLASSES, prompts_for  # noqa: E402
from cliper_batch.model import (  # noqa: E402
    CLIPER,
    CheckpointError,
    Scorer,
    load_checkpoint,
    model_id_of,
    read_checkpoint_header,
    save_checkpoint,
    score_clips,
    scores_from_descriptor_logits,
)
from cliper_batch.model import cliper as cliper_mod  # noqa: E402
from cliper_batch.model.checkpoint import CONFIG_KEY  # noqa: E402
from cliper_batch.model.archs import open_clip_registered  # noqa: E402
from cliper_batch.model.factory import load_model  # noqa: E402
from cliper_batch.model.spec import TINY_ARCH, ModelSpecError, inspect_model, parse_spec  # noqa: E402

open_clip_registered()  # Tiny-ViT-T-16, asked of open_clip by name below

S = 64  # Tiny-ViT-T-16 input size


@pytest.fixture(scope="module")
def tiny():
    return load_model(f"openclip:{TINY_ARCH}")


@pytest.fixture()
def crops():
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 4, S, S, 3), dtype=torch.uint8, generator=gen)


def _basis(i: int, d: int = 128) -> torch.Tensor:
    v = torch.zeros(d)
    v[i] = 1.0
    return v


def _hand_model(visual) -> CLIPER:
    """2 classes x 3 descriptors on basis vectors, so cosines are easy to compute by hand."""
    e = _basis
    desc = torch.stack([
        torch.stack([e(0), e(1), e(2)]),  # happy
        torch.stack([e(3), e(4), (e(0) + e(3)) / math.sqrt(2)]),  # sad
    ])
    return CLIPER(visual, desc, ("happy", "sad"), open_clip_cfg={"embed_dim": 128}, image_size=S,
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


# ------------------------------------------------------------------ scoring rule
def test_descriptor_aggregation_matches_hand_computed_values(tiny):
    m = _hand_model(tiny.model.visual)
    feats = torch.stack([0.6 * _basis(0) + 0.8 * _basis(3), _basis(1) * 3.0])  # 2nd row unnormalised on purpose
    logits = m.descriptor_logits(feats)
    expected = torch.tensor([
        [[60.0, 0.0, 0.0], [80.0, 0.0, (0.6 + 0.8) / math.sqrt(2) * 100]],
        [[0.0, 100.0, 0.0], [0.0, 0.0, 0.0]],
    ])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)

    s = scores_from_descriptor_logits(logits)
    class_logits = torch.tensor([[20.0, (80.0 + 98.99495) / 3], [100.0 / 3, 0.0]])
    torch.testing.assert_close(s.class_logits, class_logits, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(s.probs, class_logits.softmax(-1), atol=1e-5, rtol=1e-5)
    assert s.label_index.tolist() == [1, 0]
    assert s.descriptor.tolist() == [2, 1]  # best descriptor *within the winning class*
    torch.testing.assert_close(s.confidence, s.probs.max(-1).values)


def test_mean_rule_not_max_rule():
    # class 0: one strong descriptor (max 90, mean 30); class 1: uniformly good (max 50, mean 50)
    logits = torch.tensor([[[90.0, 0.0, 0.0], [50.0, 50.0, 50.0]]])
    s = scores_from_descriptor_logits(logits)
    assert s.label_index.item() == 1
    assert s.descriptor.item() == 0


def test_temporal_mean_pooling(tiny):
    m = tiny.model
    e0, e1 = _basis(0), _basis(1)
    feats = torch.stack([torch.stack([e0, e1]), torch.stack([e0, e0])])  # [B=2, T=2, D]
    pooled = m.pool_frames(feats)
    torch.testing.assert_close(pooled[0], (e0 + e1) / math.sqrt(2))
    torch.testing.assert_close(pooled[1], e0)
    masked = m.pool_frames(feats, valid=torch.tensor([[True, False], [False, True]]))
    torch.testing.assert_close(masked, torch.stack([e0, e0]))
    with pytest.raises(ValueError, match="at least one valid frame"):
        m.pool_frames(feats, valid=torch.tensor([[False, False], [True, True]]))


def test_forward_is_time_pooled_frame_scores(tiny, crops):
    m = tiny.model
    clips = m.preprocess_uint8(crops)  # [B,T,3,S,S]
    b, t = clips.shape[:2]
    with torch.no_grad():
        frames = F.normalize(m.visual(clips.reshape(b * t, 3, S, S)), dim=-1).view(b, t, -1)
        pooled = F.normalize(frames.mean(1), dim=-1)
        expected = torch.einsum("bd,ckd->bck", pooled, m.descriptors) / m.temperature
        got = m(clips)
    assert got.shape == (b, len(CANONICAL_CLASSES), 5)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_preprocess_uint8_matches_open_clip_transform(tiny, crops):
    from PIL import Image

    _, _, preprocess_val = open_clip.create_model_and_transforms(TINY_ARCH)
    x = tiny.model.preprocess_uint8(crops)
    assert x.shape == (3, 4, 3, S, S) and x.dtype == torch.float32 and x.is_contiguous()
    for b, t in [(0, 0), (1, 2), (2, 3)]:
        ref = preprocess_val(Image.fromarray(crops[b, t].numpy()))
        torch.testing.assert_close(x[b, t], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        tiny.model.preprocess_uint8(crops.float())
    with pytest.raises(ValueError, match=r"\[\.\.\., 64, 64, 3\]"):
        tiny.model.preprocess_uint8(crops[..., :32, :32, :])


def test_score_clips_end_to_end_and_with_encoder(tiny, crops):
    m = tiny.model
    s = score_clips(m, crops)
    with torch.no_grad():
        ref = scores_from_descriptor_logits(m(m.preprocess_uint8(crops)))
    torch.testing.assert_close(s.probs, ref.probs, atol=1e-5, rtol=1e-5)
    assert torch.equal(s.label_index, ref.label_index) and torch.equal(s.descriptor, ref.descriptor)
    torch.testing.assert_close(s.probs.sum(-1), torch.ones(3))
    assert s.descriptor.max() < m.descriptors_per_class

    calls = []

    def encoder(images):
        calls.append(images.shape)
        return m.visual(images) * 7.0  # scale must not matter: features are re-normalised

    s2 = Scorer(m, encoder)(crops)
    assert calls == [torch.Size([12, 3, S, S])]
    torch.testing.assert_close(s2.probs, s.probs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="encoder returned shape"):
        score_clips(m, crops, encoder=lambda x: x[:1].flatten(1))
    s_bf16 = score_clips(m, crops, autocast_dtype=torch.bfloat16)
    assert s_bf16.probs.dtype == torch.float32
    torch.testing.assert_close(s_bf16.probs.sum(-1), torch.ones(3))


def test_random_init_is_deterministic(tiny):
    again = load_model(f"openclip:{TINY_ARCH}")
    assert again.model_id == tiny.model_id
    assert torch.equal(again.model.descriptors, tiny.model.descriptors)


# -------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("where", ["local", "memory"])
def test_checkpoint_round_trip(tiny, crops, tmp_path, where):
    uri = str(tmp_path / "sub" / "m.safetensors") if where == "local" else f"memory://ckpt-{time.time_ns()}/m.safetensors"
    written = save_checkpoint(tiny.model, uri, extra={"note": "test", "epoch": 3})
    loaded = load_checkpoint(uri)
    assert torch.equal(score_clips(loaded, crops).probs, score_clips(tiny.model, crops).probs)
    assert model_id_of(loaded) == tiny.model_id
    assert loaded.classes == tiny.model.classes and loaded.image_size == S
    assert loaded.mean == tiny.model.mean and loaded.temporal == "mean"
    assert loaded.provenance["prompts"] == tiny.model.provenance["prompts"]

    via_spec = load_model(uri)
    assert via_spec.model_id == tiny.model_id and via_spec.kind == "checkpoint"
    header = read_checkpoint_header(written)
    assert header.model_id == tiny.model_id and header.config["extra"] == {"note": "test", "epoch": 3}
    assert header.config["open_clip_cfg"] == open_clip.get_model_config(TINY_ARCH)
    info = inspect_model(uri)
    assert (info.classes, info.descriptors_per_class, info.image_size, info.model_id) == (
        tiny.classes, 5, S, tiny.model_id)


def test_model_id_ignores_extra_and_tracks_weights(tiny, tmp_path):
    a = save_checkpoint(tiny.model, str(tmp_path / "a.safetensors"), extra={"x": 1})
    b = save_checkpoint(tiny.model, str(tmp_path / "b.safetensors"), extra={"x": 2})
    assert read_checkpoint_header(a).model_id == read_checkpoint_header(b).model_id == tiny.model_id
    other = load_checkpoint(a)
    with torch.no_grad():
        other.visual.proj.add_(1e-3)
    assert model_id_of(other) != tiny.model_id


def test_load_refuses_pickle_files(tiny, tmp_path):
    pt = tmp_path / "model.pt"
    torch.save(tiny.model.state_dict(), pt)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(str(pt))
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(pt.read_bytes())
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(str(disguised))
    with pytest.raises(ModelSpecError, match="pickle-based"):
        load_model(str(pt))


def test_load_refuses_corrupted_files(tiny, tmp_path):
    good = tmp_path / "good.safetensors"
    save_checkpoint(tiny.model, str(good))
    data = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(str(truncated))

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="header is not JSON"):
        load_checkpoint(str(garbage))

    flipped = bytearray(data)
    header_len = int.from_bytes(data[:8], "little")
    start = json.loads(data[8:8 + header_len])["visual.proj"]["data_offsets"][0]
    flipped[8 + header_len + start] ^= 0x01  # lowest mantissa bit of one weight: silent bit rot
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="does not match its stored model id"):
        load_checkpoint(str(bad))

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint("memory://nowhere/missing.safetensors")


def _rewrite(src, dst, edit_config=None, edit_tensors=None, drop_config=False):
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    if drop_config:
        meta.pop(CONFIG_KEY)
    if edit_config:
        cfg = json.loads(meta[CONFIG_KEY])
        edit_config(cfg)
        meta[CONFIG_KEY] = json.dumps(cfg)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return str(dst)


def test_load_refuses_bad_configs(tiny, tmp_path):
    good = tmp_path / "good.safetensors"
    save_checkpoint(tiny.model, str(good))

    no_cfg = _rewrite(good, tmp_path / "nocfg.safetensors", drop_config=True)
    with pytest.raises(CheckpointError, match="not a cliper-batch checkpoint"):
        load_checkpoint(no_cfg)

    def future(cfg):
        cfg["format_version"] = 99

    with pytest.raises(CheckpointError, match="unknown checkpoint format version 99"):
        load_checkpoint(_rewrite(good, tmp_path / "v99.safetensors", edit_config=future))

    def more_descriptors(cfg):
        cfg["descriptors_per_class"] = 6

    with pytest.raises(CheckpointError, match="tensor shape mismatch: descriptors"):
        load_checkpoint(_rewrite(good, tmp_path / "k6.safetensors", edit_config=more_descriptors))

    def no_arch(cfg):
        del cfg["open_clip_cfg"]

    with pytest.raises(CheckpointError, match="open_clip_cfg"):
        load_checkpoint(_rewrite(good, tmp_path / "noarch.safetensors", edit_config=no_arch))

    def unknown_temporal(cfg):
        cfg["temporal"] = "transformer-v9"

    with pytest.raises(CheckpointError, match="temporal module 'transformer-v9'"):
        load_checkpoint(_rewrite(good, tmp_path / "temporal.safetensors", edit_config=unknown_temporal))

    def drop_tensor(tensors):
        del tensors["visual.proj"]

    with pytest.raises(CheckpointError, match=r"missing tensors \['visual.proj'\]"):
        load_checkpoint(_rewrite(good, tmp_path / "missing_t.safetensors", edit_tensors=drop_tensor))

    with pytest.raises(CheckpointError, match="must end with '.safetensors'"):
        save_checkpoint(tiny.model, str(tmp_path / "x.pt"))


def test_temporal_hook_round_trips_through_checkpoints(tiny, tmp_path, monkeypatch, crops):
    class WeightedPool(torch.nn.Module):
        def __init__(self, dim, cfg):
            super().__init__()
            self.frame_weights = torch.nn.Parameter(torch.arange(1.0, cfg["frames"] + 1.0))

        def forward(self, feats, valid=None):
            w = self.frame_weights.softmax(0)[: feats.shape[1]]
            return (feats * w.view(1, -1, 1)).sum(1)

    monkeypatch.setitem(cliper_mod._TEMPORAL_BUILDERS, "weighted-test", lambda dim, cfg: WeightedPool(dim, cfg))
    base = tiny.model
    m = CLIPER(base.visual, base.descriptors, base.classes, open_clip_cfg=base.open_clip_cfg, image_size=S,
               mean=base.mean, std=base.std, temporal="weighted-test", temporal_cfg={"frames": 4}, arch=base.arch)
    with torch.no_grad():
        m.temporal_pool.frame_weights.copy_(torch.tensor([0.0, 3.0, 1.0, 2.0]))
    path = save_checkpoint(m, str(tmp_path / "w.safetensors"))
    loaded = load_checkpoint(path)
    assert loaded.temporal == "weighted-test" and loaded.temporal_cfg == {"frames": 4}
    assert torch.equal(loaded.temporal_pool.frame_weights, m.temporal_pool.frame_weights)
    assert torch.equal(score_clips(loaded, crops).probs, score_clips(m, crops).probs)
    assert model_id_of(loaded) != tiny.model_id
    assert not torch.equal(score_clips(loaded, crops).probs, score_clips(base, crops).probs)


# ------------------------------------------------------------------- zero-shot
def test_zero_shot_from_state_dict_file_uses_real_open_clip_loading(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(123)
        oc_model, _, _ = open_clip.create_model_and_transforms(TINY_ARCH)
    oc_model.eval()
    weights = tmp_path / "tiny_open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in oc_model.state_dict().items()}, str(weights))

    classes = ("neutral", "happy", "sad")
    loaded = load_model(f"openclip:{TINY_ARCH}@{weights}?classes={','.join(classes)}&k=3")
    assert loaded.classes == classes and loaded.kind == "openclip"
    assert loaded.model.descriptors.shape == (3, 3, 128)
    assert not hasattr(loaded.model, "transformer") and not hasattr(loaded.model.visual, "token_embedding")

    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    flat = [p for per_class in prompts_for(classes, per_class=3) for p in per_class]
    with torch.no_grad():
        expected = oc_model.encode_text(tokenizer(flat), normalize=True).view(3, 3, -1)
    torch.testing.assert_close(loaded.model.descriptors, expected, atol=1e-5, rtol=1e-5)
    for name, value in oc_model.visual.state_dict().items():
        assert torch.equal(loaded.model.visual.state_dict()[name], value), name

    # the same weights through an fsspec URL are copied to the cache dir first and give the same model
    import fsspec

    url = f"memory://weights-{time.time_ns()}/tiny_open_clip.safetensors"
    with fsspec.open(url, "wb") as f:
        f.write(weights.read_bytes())
    via_url = load_model(f"openclip:{TINY_ARCH}@{url}", classes=list(classes), descriptors_per_class=3,
                         cache_dir=str(tmp_path / "cache"))
    assert via_url.model_id == loaded.model_id
    assert len(list((tmp_path / "cache" / "pretrained").iterdir())) == 1


def test_pretrained_tag_offline_fails_fast_with_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(ModelSpecError, match=r"unreachable.*(HF_HUB_OFFLINE).*local or fsspec copy"):
        load_model("openclip:ViT-B-16@openai")
    assert time.monotonic() - t0 < 10


def test_pretrained_tag_offline_uses_hugging_face_cache(tmp_path, monkeypatch):
    """Offline with the tag's file in the HF cache: load it directly, with the tag's preprocessing."""
    import huggingface_hub

    with torch.random.fork_rng():
        torch.manual_seed(7)
        oc_model, _, _ = open_clip.create_model_and_transforms(TINY_ARCH)
    repo = tmp_path / "hub" / "models--cliper-test--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in oc_model.state_dict().items()}, str(snapshot / "open_clip_model.safetensors"))

    tag_cfg = {"url": "", "hf_hub": "cliper-test/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
               "interpolation": "bilinear", "resize_mode": "shortest"}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_ARCH, {"cachedtest": tag_cfg})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    loaded = load_model(f"openclip:{TINY_ARCH}@cachedtest")
    assert loaded.model.mean == (0.5, 0.5, 0.5) and loaded.model.std == (0.25, 0.25, 0.25)
    assert loaded.model.interpolation == "bilinear"
    for name, value in oc_model.visual.state_dict().items():
        assert torch.equal(loaded.model.visual.state_dict()[name], value), name


def test_pretrained_tag_without_network_fails_fast():
    import huggingface_hub

    from cliper_batch.model.pretrained import _host_reachable

    if _host_reachable(huggingface_hub.constants.ENDPOINT):
        pytest.skip("the model hub is reachable here; this test checks the offline path")
    t0 = time.monotonic()
    with pytest.raises(ModelSpecError, match="is unreachable"):
        load_model("openclip:ViT-B-16@openai")
    assert time.monotonic() - t0 < 15  # open_clip's own hub retries take ~45 s


# ---------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty model spec"),
        ("resnet", "not a .safetensors checkpoint and not an openclip: spec"),
        ("weights/model.pt", "pickle-based"),
        ("openclip:", "missing architecture"),
        ("openclip:No-Such-Arch", "unknown open_clip architecture"),
        (f"openclip:{TINY_ARCH}@", "empty pretrained"),
        (f"openclip:{TINY_ARCH}?bogus=1", "unknown query parameter 'bogus'"),
        (f"openclip:{TINY_ARCH}?k=0", "k must be >= 1"),
        (f"openclip:{TINY_ARCH}?k=two", "k must be an integer"),
        (f"openclip:{TINY_ARCH}?classes=Happy,sad", "bad classes"),
        (f"openclip:{TINY_ARCH}?k=3&k=4", "given twice"),
        ("m.safetensors?classes=a", "query parameters are only for openclip"),
    ],
)
def test_bad_specs_are_refused_with_accepted_forms(spec, message):
    with pytest.raises(ModelSpecError, match=message) as info:
        parse_spec(spec)
    assert "accepted model specs" in str(info.value)


def test_spec_parsing_and_pretrained_errors(tiny, tmp_path):
    p = parse_spec(f"openclip:{TINY_ARCH}@s3://bucket/w.safetensors?classes=happy,sad&k=2")
    assert (p.kind, p.arch, p.pretrained, p.classes, p.descriptors_per_class) == (
        "openclip", TINY_ARCH, "s3://bucket/w.safetensors", ("happy", "sad"), 2)
    with pytest.raises(ModelSpecError, match="given twice"):
        parse_spec(f"openclip:{TINY_ARCH}?k=3", descriptors_per_class=4)
    with pytest.raises(ModelSpecError, match="file not found"):
        load_model(f"openclip:{TINY_ARCH}@{tmp_path / 'nope.safetensors'}")
    with pytest.raises(ModelSpecError, match="neither a pretrained tag"):
        load_model("openclip:ViT-B-16@notatag")
    path = save_checkpoint(tiny.model, str(tmp_path / "m.safetensors"))
    with pytest.raises(ModelSpecError, match="checkpoint's classes"):
        load_model(path, classes=["happy", "sad"])
    info = inspect_model("openclip:ViT-B-16?k=2")
    assert (info.classes, info.descriptors_per_class, info.image_size, info.model_id) == (
        CANONICAL_CLASSES, 2, 224, None)


def test_model_package_imports_without_open_clip_side_effects():
    import subprocess
    import sys

    code = (
        "import sys; import cliper_batch.model as m; from cliper_batch.model import score_clips, CLIPER; "
        "assert 'open_clip' not in sys.modules, 'open_clip imported eagerly'; "
        "assert 'load_model' in m.__all__ and callable(m.__getattr__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_descriptors_are_normalised_buffer(tiny):
    d = tiny.model.descriptors
    assert "descriptors" in dict(tiny.model.named_buffers())
    np.testing.assert_allclose(d.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_score_images_equals_score_clips_after_preprocessing(tiny):
    """The fused worker's entry (normalised float images) gives score_clips' result on the same crops."""
    from cliper_batch.model.cliper import score_clips, score_images

    model = tiny.model
    g = torch.Generator().manual_seed(4)
    crops = torch.randint(0, 256, (3, 2, model.image_size, model.image_size, 3), generator=g, dtype=torch.uint8)
    a = score_clips(model, crops)
    images = model.preprocess_uint8(crops).reshape(3, 2, 3, model.image_size, model.image_size)
    b = score_images(model, images)
    assert torch.allclose(a.probs, b.probs, atol=1e-6) and torch.equal(a.descriptor, b.descriptor)
    with pytest.raises(ValueError, match=r"\[B, T, 3, S, S\]"):
        score_images(model, images[0])


# ------------------------------------------------- grey input, face margin, calibration (real-face models)
def _variant(tiny, **kwargs) -> CLIPER:
    m = tiny.model
    return CLIPER(m.visual, m.descriptors.clone(), m.classes, open_clip_cfg=m.open_clip_cfg, image_size=m.image_size,
                  mean=m.mean, std=m.std, temperature=m.temperature, arch=m.arch, **kwargs)


def test_luma_input_equals_the_training_greyscale_transform(tiny, crops):
    from torchvision.transforms import v2

    m = _variant(tiny, grey=True)
    images = m.preprocess_uint8(crops[0])  # [T, 3, S, S] normalised RGB
    got = m.input_adapter(images)
    chw = crops[0].movedim(-1, -3)
    grey = v2.Grayscale(num_output_channels=3)(v2.ToDtype(torch.float32, scale=True)(chw))
    want = v2.Normalize(mean=list(m.mean), std=list(m.std))(grey)
    assert torch.allclose(got, want, atol=1e-5)
    # the encoder of a grey model sees the grey image: RGB crops and their grey version score the same
    grey_u8 = (grey * 255).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
    a = m.encode_frames(m.preprocess_uint8(crops[0]))
    b = m.encode_frames(m.preprocess_uint8(grey_u8))
    assert torch.allclose(a, b, atol=2e-2)
    plain = _variant(tiny)
    assert not torch.allclose(plain.encode_frames(images), a, atol=1e-3)


def test_calibration_rescales_probabilities_not_labels(tiny, crops):
    plain, cal = _variant(tiny), _variant(tiny, calibration=2.5)
    s0, s1 = score_clips(plain, crops), score_clips(cal, crops)
    assert torch.equal(s0.label_index, s1.label_index) and torch.equal(s0.descriptor, s1.descriptor)
    assert torch.allclose(s1.probs, (s0.class_logits / 2.5).softmax(-1), atol=1e-6)
    assert not torch.allclose(s0.probs, s1.probs, atol=1e-4)
    with pytest.raises(ValueError, match="calibration"):
        _variant(tiny, calibration=0.0)
    with pytest.raises(ValueError, match="face_margin"):
        _variant(tiny, face_margin=5.0)


def test_preprocessing_settings_round_trip_and_enter_the_model_id(tiny, crops, tmp_path):
    plain = _variant(tiny)
    real = _variant(tiny, grey=True, face_margin=-0.05, calibration=1.7)
    save_checkpoint(plain, str(tmp_path / "plain.safetensors"))
    save_checkpoint(real, str(tmp_path / "real.safetensors"))
    h_plain = read_checkpoint_header(str(tmp_path / "plain.safetensors"))
    h_real = read_checkpoint_header(str(tmp_path / "real.safetensors"))
    # written only when set: a checkpoint without them keeps its config (and the id it always had)
    assert not {"grey", "face_margin", "calibration"} & set(h_plain.config)
    assert (h_real.config["grey"], h_real.face_margin, h_real.config["calibration"]) == (True, -0.05, 1.7)
    assert h_plain.face_margin is None and model_id_of(plain) != model_id_of(real)
    back = load_checkpoint(str(tmp_path / "real.safetensors"))
    assert (back.grey, back.face_margin, back.calibration) == (True, -0.05, 1.7)
    assert torch.allclose(score_clips(back, crops).probs, score_clips(real, crops).probs, atol=1e-6)
    assert inspect_model(str(tmp_path / "real.safetensors")).face_margin == -0.05


def test_compiled_encoder_applies_the_input_adapter(tiny, crops):
    from cliper_batch.model.backends import _encoder_of

    m = _variant(tiny, grey=True).eval()
    images = m.preprocess_uint8(crops[0])
    with torch.no_grad():
        assert torch.allclose(_encoder_of(m)(images), m.encode_frames(images), atol=1e-6)
        assert torch.allclose(_encoder_of(m, copy_weights=True)(images), m.encode_frames(images), atol=1e-6)


def test_face_tower_is_registered_for_open_clip_and_checkpoints(tmp_path):
    from cliper_batch.model.builder import create_open_clip

    oc = create_open_clip("FER-ResNet18-W32", None)
    assert oc.tower.image_size == 48 and oc.random_init
    x = torch.zeros(2, 3, 48, 48)
    assert oc.tower.visual(x).shape == (2, 128)
    n_params = sum(p.numel() for p in oc.tower.visual.parameters())
    assert 2.5e6 < n_params < 3.5e6  # the shipped model must stay <= 16 MB in float32


def test_test_time_flip_scores_a_crop_and_its_mirror_alike(tiny, crops, tmp_path):
    from cliper_batch.model.backends import _encoder_of

    m = _variant(tiny, flip=True).eval()
    images = m.preprocess_uint8(crops[0])
    a, b = m.encode_frames(images), m.encode_frames(images.flip(-1))
    assert torch.allclose(a, b, atol=1e-5)
    plain = _variant(tiny).eval()
    assert not torch.allclose(plain.encode_frames(images), plain.encode_frames(images.flip(-1)), atol=1e-3)
    with torch.no_grad():
        assert torch.allclose(_encoder_of(m)(images), a, atol=1e-6)
    save_checkpoint(m, str(tmp_path / "flip.safetensors"))
    assert load_checkpoint(str(tmp_path / "flip.safetensors")).flip is True
