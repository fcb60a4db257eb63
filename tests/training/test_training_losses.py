"""CLIPER's training objective: the losses against values worked out by hand on tiny tensors, and the METD
prompt learner that produces the descriptor embeddings (must reproduce open_clip's encode_text exactly)."""
from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from cliper_batch.model.archs import open_clip_registered
from cliper_batch.training.losses import (
    ZERO_COUNT_VALUE,
    cliper_loss,
    descriptor_weights,
    fine_grained_logits,
    margin_logits,
)
from cliper_batch.training.prompts import CLIPER_TEMPLATE, PromptError, PromptLearner, placeholder_positions

open_clip_registered()  # Tiny-ViT-T-16, asked of open_clip by name below

# B=4 samples, C=2 classes, K=2 descriptors per class: S[i][c][k]
S = torch.tensor(
    [
        [[1.0, 3.0], [2.0, 0.0]],  # y=0, best target descriptor j=1
        [[4.0, 0.0], [1.0, 1.0]],  # y=0, j=0
        [[0.0, 0.0], [1.0, 2.0]],  # y=1, j=1
        [[0.0, 2.0], [1.0, 3.0]],  # y=0, j=1
    ]
)
Y = torch.tensor([0, 0, 1, 0])


def ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], by hand."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_margin_logits_take_min_for_target_and_max_for_rivals():
    z = margin_logits(S, Y)
    # sample 0: target class 0 -> min(1, 3) = 1; rival class 1 -> max(2, 0) = 2
    # sample 1: min(4, 0) = 0; max(1, 1) = 1
    # sample 2: target class 1 -> rival class 0 max(0, 0) = 0; min(1, 2) = 1
    # sample 3: min(0, 2) = 0; max(1, 3) = 3
    assert z.tolist() == [[1.0, 2.0], [0.0, 1.0], [0.0, 1.0], [0.0, 3.0]]


def test_fine_grained_logits_order():
    f = fine_grained_logits(S, Y)
    # [max target descriptor] + rival descriptors
    assert f.tolist() == [[3.0, 2.0, 0.0], [4.0, 1.0, 1.0], [2.0, 0.0, 0.0], [2.0, 1.0, 3.0]]
    # C=3: rivals keep class order and descriptor order around the target
    s3 = torch.arange(12, dtype=torch.float32).view(1, 3, 4)  # [1, 3, 4]: class c holds 4c .. 4c+3
    assert fine_grained_logits(s3, torch.tensor([1])).tolist() == [[7.0, 0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0]]
    assert fine_grained_logits(s3, torch.tensor([0])).tolist() == [[3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]]


def test_alpha_by_hand():
    alpha = descriptor_weights(S, Y)
    # counts n[y, j] of the best target descriptor:
    #   class 0: samples 0 (j=1), 1 (j=0), 3 (j=1) -> n[0] = [1, 2]
    #   class 1: sample 2 (j=1)                    -> n[1] = [0, 1] -> [-1/99, 1]
    # class 0 row: sum = 3, 1/n = [1, 0.5], softmax = [e/(e+e^.5), e^.5/(e+e^.5)]
    sm0 = math.exp(1) / (math.exp(1) + math.exp(0.5))
    sm1 = math.exp(0.5) / (math.exp(1) + math.exp(0.5))
    a_j1 = 3 * sm1 / 2  # picked j=1 (chosen twice): 3 * 0.37754 / 2 = 0.56631
    a_j0 = 3 * sm0 / 1  # picked j=0 (chosen once):  3 * 0.62246 / 1 = 1.86738
    # class 1 row: [-1/99, 1], sum = 98/99, 1/n = [-99, 1], softmax[1] = e / (e^-99 + e)
    a_c1 = (ZERO_COUNT_VALUE + 1) * math.exp(1) / (math.exp(-99) + math.exp(1)) / 1
    expected = [a_j1, a_j0, a_c1, a_j1]
    assert alpha.tolist() == pytest.approx(expected, rel=1e-6)
    assert expected[1] == pytest.approx(1.8673779, rel=1e-6) and expected[0] == pytest.approx(0.5663110, rel=1e-6)
    assert a_c1 == pytest.approx(98 / 99, rel=1e-9)


def test_total_loss_by_hand():
    s = S.clone().requires_grad_(True)
    out = cliper_loss(s, Y)
    margin = [ce([1, 2], 0), ce([0, 1], 0), ce([0, 1], 1), ce([0, 3], 0)]
    # = [log(1+e), log(1+e), log(1+e^-1), log(1+e^3)]
    assert margin[0] == pytest.approx(math.log(1 + math.e))
    assert margin[3] == pytest.approx(math.log(1 + math.exp(3)))
    fine = [ce([3, 2, 0], 0), ce([4, 1, 1], 0), ce([2, 0, 0], 0), ce([2, 1, 3], 0)]
    alpha = descriptor_weights(S, Y).tolist()
    expected_margin = sum(margin) / 4
    expected_fine = sum(a * f for a, f in zip(alpha, fine)) / 4
    assert out.margin.item() == pytest.approx(expected_margin, rel=1e-6)
    assert out.fine.item() == pytest.approx(expected_fine, rel=1e-6)
    assert out.total.item() == pytest.approx(expected_margin + expected_fine, rel=1e-6)
    out.total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # margin term: sample 0's gradient reaches the target's *min* descriptor (s[0,0,0]) and the rival's max
    assert s.grad[0, 0, 0] < 0 and s.grad[0, 1, 0] > 0
    assert not out.alpha.requires_grad


def test_soft_targets():
    one_hot = torch.nn.functional.one_hot(Y, 2).float()
    hard, soft = cliper_loss(S, Y), cliper_loss(S, Y, soft_targets=one_hot)
    assert soft.total.item() == pytest.approx(hard.total.item(), rel=1e-6)
    # a 75/25 vote for sample 0: its terms are 0.75 * (terms as class 0) + 0.25 * (terms as class 1)
    p = one_hot.clone()
    p[0] = torch.tensor([0.75, 0.25])
    out = cliper_loss(S, Y, soft_targets=p)
    alpha = descriptor_weights(S, Y).tolist()  # from the hard labels
    m0 = 0.75 * ce([1, 2], 0) + 0.25 * ce([max(1, 3), min(2, 0)], 1)  # as class 1: z = [max(1,3), min(2,0)] = [3, 0]
    f0 = 0.75 * ce([3, 2, 0], 0) + 0.25 * ce([2, 1, 3], 0)  # as class 1: [max(2,0)=2, 1, 3]
    margins = [m0, ce([0, 1], 0), ce([0, 1], 1), ce([0, 3], 0)]
    fines = [f0, ce([4, 1, 1], 0), ce([2, 0, 0], 0), ce([2, 1, 3], 0)]
    expected = sum(margins) / 4 + sum(a * f for a, f in zip(alpha, fines)) / 4
    assert out.total.item() == pytest.approx(expected, rel=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[B, C, K\]"):
        cliper_loss(torch.zeros(4, 2), Y)
    with pytest.raises(ValueError, match="targets must lie"):
        cliper_loss(S, torch.tensor([0, 0, 2, 0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        cliper_loss(torch.zeros(2, 1, 3), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="soft targets"):
        cliper_loss(S, Y, soft_targets=torch.ones(4, 3) / 3)


# ------------------------------------------------------------------ METD prompt learner

ARCH = "Tiny-ViT-T-16"


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    return model, open_clip.get_tokenizer(ARCH)


def _word_vectors(model, tokenizer, sentence: str, positions: torch.Tensor) -> torch.Tensor:
    tokens = tokenizer([sentence])[0]
    return model.token_embedding(tokens[positions]).detach()


def test_learned_vectors_set_to_real_words_equal_encode_text(clip_and_tokenizer):
    model, tok = clip_and_tokenizer
    learner = PromptLearner(model, tok, n_prompts=3)
    assert learner.n_ctx == 4 and learner.positions.tolist() == [5, 6, 7, 8]  # 'an ID photo of X X X X.'
    sentences = [
        "an ID photo of a smiling young man.",
        "an ID photo of happy sad big face.",
        "an ID photo of man man face face.",
    ]
    with torch.no_grad():
        for i, s in enumerate(sentences):
            learner.ctx[i] = _word_vectors(model, tok, s, learner.positions)
        got = learner()
        want = F.normalize(model.encode_text(tok(sentences)), dim=-1)
    assert got.shape == (3, 128)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_custom_template_and_placeholder(clip_and_tokenizer):
    model, tok = clip_and_tokenizer
    learner = PromptLearner(model, tok, n_prompts=1, template="a face showing X X, photo.")
    assert learner.n_ctx == 2
    sentence = "a face showing big smile, photo."
    with torch.no_grad():
        learner.ctx[0] = _word_vectors(model, tok, sentence, learner.positions)
        torch.testing.assert_close(learner(), F.normalize(model.encode_text(tok([sentence])), dim=-1), rtol=0, atol=2e-6)


def test_only_ctx_gets_gradients(clip_and_tokenizer):
    model, tok = clip_and_tokenizer
    gen = torch.Generator().manual_seed(1)
    learner = PromptLearner(model, tok, n_prompts=4, generator=gen)
    assert learner.ctx.std().item() == pytest.approx(1e-3, rel=0.2)  # randn / 1000
    assert [n for n, p in learner.named_parameters() if p.requires_grad] == ["ctx"]
    out = learner()
    assert torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)
    out[:, 0].sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters())


def test_template_errors(clip_and_tokenizer):
    model, tok = clip_and_tokenizer
    with pytest.raises(PromptError, match="no placeholder"):
        placeholder_positions(tok, "an ID photo of a face.")
    with pytest.raises(PromptError, match="longer than the text context"):
        placeholder_positions(tok, CLIPER_TEMPLATE.replace("X X X X", " ".join(["X"] * 40)))
    with pytest.raises(PromptError, match="exactly one token"):
        placeholder_positions(tok, "a photo of qqqzzzxxyy.", placeholder="qqqzzzxxyy")


def test_center_descriptors_removes_the_shared_direction():
    from cliper_batch.training.model import center_descriptors

    g = torch.Generator().manual_seed(3)
    shared = torch.randn(16, generator=g) * 10
    raw = torch.nn.functional.normalize(shared + torch.randn(4, 3, 16, generator=g), dim=-1)
    means = torch.nn.functional.normalize(raw.mean(1), dim=-1)
    assert (means @ means.T - 2 * torch.eye(4)).max() > 0.95  # nearly one vector, as from a random text tower
    out = center_descriptors(raw)
    assert out.shape == raw.shape
    assert torch.allclose(out.norm(dim=-1), torch.ones(4, 3), atol=1e-5)
    # by hand: minus the mean over all 12 descriptors, re-normalised
    by_hand = raw - raw.reshape(12, 16).mean(0)
    assert torch.allclose(out, by_hand / by_hand.norm(dim=-1, keepdim=True), atol=1e-6)
    spread = torch.nn.functional.normalize(out.mean(1), dim=-1)
    assert (spread @ spread.T - 2 * torch.eye(4)).max() < 0.5
    with pytest.raises(ValueError, match=r"\[C, K, D\]"):
        center_descriptors(raw[0])
    with pytest.raises(ValueError, match="equals the mean"):
        center_descriptors(torch.ones(2, 2, 4))


def test_initial_context_random_and_class_shared():
    from cliper_batch.training.prompts import CLASS_INIT_STD, initial_context

    rnd = initial_context(6, 4, 8, "random", init_std=1e-3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rnd, torch.randn(6, 4, 8, generator=torch.Generator().manual_seed(1)) * 1e-3)
    cls = initial_context(6, 4, 8, "class", prompts_per_group=3, generator=torch.Generator().manual_seed(1)).reshape(6, -1)
    assert cls.shape == (6, 32)
    assert 0.5 * CLASS_INIT_STD < float(cls.std()) < 2 * CLASS_INIT_STD
    sims = F.normalize(cls, dim=-1) @ F.normalize(cls, dim=-1).T
    within = [sims[i, j] for i in range(6) for j in range(6) if i != j and i // 3 == j // 3]
    across = [sims[i, j] for i in range(6) for j in range(6) if i // 3 != j // 3]
    assert min(within) > 0.8 and max(abs(a) for a in across) < 0.6
    with pytest.raises(PromptError, match="multiple of prompts_per_group"):
        initial_context(7, 4, 8, "class", prompts_per_group=3)
    with pytest.raises(PromptError, match="ctx init must be one of"):
        initial_context(6, 4, 8, "zeros")
