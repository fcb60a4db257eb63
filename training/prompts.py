"""METD prompt learner: C*K learnable descriptor prompts run through open_clip's frozen text tower.

CLIPER's multi-descriptor text prompts (METD) are ``C * K`` sentences built from
one template, ``an ID photo of X X X X.``: each sentence has its own ``M`` learnable
token vectors (``M`` = number of placeholder tokens, width of the text
transformer, initialised ``randn / 1000``) that replace the token embeddings at
the placeholder positions. The sentences then go through the frozen text tower
exactly as open_clip's ``CLIP.encode_text`` does (open_clip 3.3)::

    x = token_embedding(tokens).to(cast_dtype) + positional_embedding
    x = transformer(x, attn_mask=attn_mask)        # causal mask
    x = ln_final(x)
    x = text_global_pool(x, tokens, pool_type)      # 'argmax': the EOT position
    x = x @ text_projection                         # or text_projection(x) for a Linear

and the result is L2-normalised -> ``[C*K, D]`` descriptor embeddings. Only the
placeholder embeddings differ from ``encode_text(tokens)``: with the learned
vectors set to the token embeddings of real words, the output equals
``encode_text`` of the sentence with those words.

Supported text towers: open_clip's built-in ``CLIP`` text path and
``CustomTextCLIP`` with a ``TextTransformer`` (no CoCa class token, no padding
mask). Hugging Face text towers are refused with :class:`PromptError`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLIPER_TEMPLATE = "an ID photo of X X X X."
DEFAULT_PLACEHOLDER = "X"
INIT_STD = 1e-3  # CLIPER: torch.randn(...) / 1000
CTX_INITS = ("random", "class")
CLASS_INIT_STD = 0.02  # "class" init: open_clip's token-embedding init scale
CLASS_INIT_JITTER = 0.25  # "class" init: per-descriptor noise, relative to CLASS_INIT_STD


def initial_context(
    n_prompts: int, n_ctx: int, width: int, init: str = "random", *, prompts_per_group: int = 1,
    init_std: float = INIT_STD, generator: torch.Generator | None = None,
) -> Tensor:
    """Initial prompt vectors ``[n_prompts, n_ctx, width]``.

    * ``random`` (CLIPER): independent ``randn * init_std`` per prompt. With a
      pretrained text tower stage 1 turns these into class-coherent descriptors
      because the frozen image features already separate the expressions.
    * ``class``: the ``prompts_per_group`` prompts of one class (rows
      ``c*K .. c*K+K-1``) start from one shared random vector at the
      token-embedding scale plus a small per-descriptor jitter. For random-init
      towers (the demo model), where stage 1 has no meaningful image features to
      learn from: a class's descriptors then start together and the classes apart.
    """
    if init not in CTX_INITS:
        raise PromptError(f"ctx init must be one of {list(CTX_INITS)}, got {init!r}")
    if init == "random":
        return torch.randn(n_prompts, n_ctx, width, generator=generator) * float(init_std)
    k = int(prompts_per_group)
    if k < 1 or n_prompts % k:
        raise PromptError(f"'class' ctx init needs n_prompts ({n_prompts}) to be a multiple of prompts_per_group ({k})")
    shared = torch.randn(n_prompts // k, 1, n_ctx, width, generator=generator) * CLASS_INIT_STD
    jitter = torch.randn(n_prompts // k, k, n_ctx, width, generator=generator) * (CLASS_INIT_STD * CLASS_INIT_JITTER)
    return (shared + jitter).reshape(n_prompts, n_ctx, width)


class PromptError(ValueError):
    """A template, tokenizer or text tower the prompt learner cannot use (the message says why)."""


def _pool(x: Tensor, tokens: Tensor, pool_type: str, eos_id: int | None) -> Tensor:
    """open_clip's ``text_global_pool`` for the pool types of its CLIP text towers."""
    if pool_type == "argmax":  # EOT has the highest id in CLIP's vocabulary
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    if pool_type == "eos":
        if eos_id is None:
            raise PromptError("text pool type 'eos' needs the tokenizer's eos id")
        return x[torch.arange(x.shape[0], device=x.device), (tokens == eos_id).int().argmax(dim=-1)]
    if pool_type == "first":
        return x[:, 0]
    if pool_type == "last":
        return x[:, -1]
    raise PromptError(f"text pool type {pool_type!r} does not give one vector per sentence")


class FrozenTextEncoder(nn.Module):
    """open_clip's text path starting from token *embeddings* (so some of them can be learned).

    Holds references to the clip model's own text modules (no copies); all of
    them are frozen and kept in eval mode.
    """

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        src: Any = clip_model
        text = getattr(clip_model, "text", None)
        if text is not None:
            if not all(hasattr(text, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
                raise PromptError(
                    f"text tower {type(text).__name__} is not an open_clip TextTransformer "
                    "(Hugging Face text towers are not supported by the prompt learner)"
                )
            if getattr(text, "cls_emb", None) is not None:
                raise PromptError("text towers with a class token (CoCa) are not supported by the prompt learner")
            if getattr(text, "use_pad_mask", False):
                raise PromptError("text towers with a padding mask are not supported by the prompt learner")
            src = text
            pool_type, eos_id = text.pool_type, getattr(text, "eos_id", None)
        else:
            for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final"):
                if not hasattr(clip_model, attr):
                    raise PromptError(f"{type(clip_model).__name__} has no text tower attribute {attr!r}")
            pool_type = getattr(clip_model, "text_pool_type", "argmax")
            eos_id = getattr(clip_model, "text_eos_id", None)
        self.token_embedding: nn.Embedding = src.token_embedding
        self.positional_embedding: nn.Parameter = src.positional_embedding
        self.transformer: nn.Module = src.transformer
        self.ln_final: nn.Module = src.ln_final
        proj = getattr(src, "text_projection", None)
        if isinstance(proj, nn.Module):
            self.text_projection: nn.Module | None = proj
            self.projection_matrix: Tensor | None = None
        else:
            self.text_projection = None
            self.projection_matrix = proj  # nn.Parameter [width, D] or None
        mask = getattr(src, "attn_mask", None)
        self.register_buffer("attn_mask", None if mask is None else mask.detach().clone(), persistent=False)
        self.pool_type: str = pool_type
        self.eos_id: int | None = eos_id
        self.width: int = int(self.token_embedding.weight.shape[1])
        self.context_length: int = int(self.positional_embedding.shape[0])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        return super().train(False)  # frozen: always eval

    @property
    def output_dim(self) -> int:
        if self.text_projection is not None:
            return int(self.text_projection.out_features)  # type: ignore[attr-defined]
        if self.projection_matrix is not None:
            return int(self.projection_matrix.shape[1])
        return self.width

    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids ``[N, L]`` -> token embeddings ``[N, L, width]``."""
        return self.token_embedding(tokens)

    def forward(self, embeddings: Tensor, tokens: Tensor) -> Tensor:
        """Token embeddings ``[N, L, width]`` + their token ids ``[N, L]`` (for pooling) -> ``[N, D]`` (not normalised)."""
        if embeddings.ndim != 3 or embeddings.shape[1] != self.context_length:
            raise PromptError(
                f"embeddings must be [N, {self.context_length}, {self.width}], got {tuple(embeddings.shape)}"
            )
        get_cast = getattr(self.transformer, "get_cast_dtype", None)
        cast_dtype = get_cast() if callable(get_cast) else embeddings.dtype
        x = embeddings.to(cast_dtype)
        x = x + self.positional_embedding.to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = _pool(x, tokens, self.pool_type, self.eos_id)
        if self.text_projection is not None:
            x = self.text_projection(x)
        elif self.projection_matrix is not None:
            x = x @ self.projection_matrix
        return x


def placeholder_positions(tokenizer: Any, template: str, placeholder: str = DEFAULT_PLACEHOLDER) -> tuple[Tensor, Tensor]:
    """Tokenise ``template``; return ``(token ids [L], positions of the placeholder tokens [M])``.

    The placeholder must be one token of the tokenizer's vocabulary (``X`` is),
    the template must fit the context length, and at least one placeholder must occur.
    """
    encode = getattr(tokenizer, "encode", None)
    if not callable(encode):
        raise PromptError(f"tokenizer {type(tokenizer).__name__} has no encode(); use an open_clip SimpleTokenizer model")
    ph_ids = encode(placeholder)
    if len(ph_ids) != 1:
        raise PromptError(f"placeholder {placeholder!r} is {len(ph_ids)} tokens; it must be exactly one token")
    context = getattr(tokenizer, "context_length", None)
    n_body = len(encode(template))
    if context is not None and n_body + 2 > int(context):
        raise PromptError(
            f"template {template!r} is {n_body} tokens + start/end, longer than the text context ({context} tokens)"
        )
    tokens = tokenizer([template])[0].long()
    positions = (tokens == ph_ids[0]).nonzero().flatten()
    if positions.numel() == 0:
        raise PromptError(f"template {template!r} contains no placeholder token {placeholder!r}")
    return tokens, positions


class PromptLearner(nn.Module):
    """``n_prompts`` descriptor sentences with learnable placeholder vectors -> ``[n_prompts, D]`` (L2-normalised).

    ``ctx`` (``[n_prompts, M, width]``) is the only trainable parameter; the text
    tower is frozen. Row ``c * K + k`` is descriptor ``k`` of class ``c``.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer: Any,
        n_prompts: int,
        template: str = CLIPER_TEMPLATE,
        placeholder: str = DEFAULT_PLACEHOLDER,
        init_std: float = INIT_STD,
        generator: torch.Generator | None = None,
        *,
        init: str = "random",
        prompts_per_group: int = 1,
    ) -> None:
        super().__init__()
        if n_prompts < 1:
            raise PromptError(f"n_prompts must be >= 1, got {n_prompts}")
        self.text = FrozenTextEncoder(clip_model)
        tokens, positions = placeholder_positions(tokenizer, template, placeholder)
        if tokens.shape[0] != self.text.context_length:
            raise PromptError(
                f"tokenizer context {tokens.shape[0]} != text tower context {self.text.context_length}"
            )
        self.template = template
        self.placeholder = placeholder
        self.n_prompts = int(n_prompts)
        self.n_ctx = int(positions.numel())
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("positions", positions, persistent=False)
        device = self.text.token_embedding.weight.device
        ctx = initial_context(self.n_prompts, self.n_ctx, self.text.width, init,
                              prompts_per_group=prompts_per_group, init_std=init_std, generator=generator)
        self.ctx = nn.Parameter(ctx.to(device))

    def sentence_embeddings(self) -> Tensor:
        """``[n_prompts, L, width]``: the template's token embeddings with ``ctx`` at the placeholder positions."""
        tokens = self.tokens.to(self.ctx.device)
        base = self.text.embed(tokens.unsqueeze(0)).to(self.ctx.dtype)  # [1, L, W]
        x = base.expand(self.n_prompts, -1, -1).clone()
        x[:, self.positions.to(self.ctx.device)] = self.ctx
        return x

    def forward(self) -> Tensor:
        tokens = self.tokens.to(self.ctx.device).unsqueeze(0).expand(self.n_prompts, -1)
        feats = self.text(self.sentence_embeddings(), tokens)
        return F.normalize(feats.float(), dim=-1)

    def nearest_words(self, tokenizer: Any, topk: int = 5) -> list[list[list[str]]]:
        """For each prompt and learned vector, the ``topk`` vocabulary tokens nearest in embedding space
        (CLIPER prints these during stage 1 to see what the descriptors learned)."""
        decoder = getattr(tokenizer, "decoder", None)
        if decoder is None:
            raise PromptError(f"tokenizer {type(tokenizer).__name__} has no decoder table")
        with torch.no_grad():
            vocab = self.text.token_embedding.weight.float()
            flat = self.ctx.detach().float().reshape(-1, vocab.shape[1])
            idx = torch.cdist(flat, vocab).topk(topk, largest=False).indices.cpu().tolist()
        words = [[decoder.get(i, f"<{i}>") for i in row] for row in idx]
        return [words[p * self.n_ctx:(p + 1) * self.n_ctx] for p in range(self.n_prompts)]
