"""The GPU benchmark's own image encoder: a ViT-B/16 architecture-equivalent to open_clip's visual tower (random weights), its FLOPs and the roofline."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.gpu.harness import BenchConfig


ISSUE_NOMINAL_FLOPS_PER_CROP = 35e9


H100_SXM_BF16_DENSE_TFLOPS = 989.0


ARCH_NOTE = (
    "random weights; architecture-equivalent to open_clip ViT-B-16 visual tower "
    "(conv patch embed, class token, ln_pre, 12 pre-LN blocks, ln_post on CLS, 768->512 projection)"
)


class _Block(nn.Module):
    """Pre-LN transformer block as in open_clip's ResidualAttentionBlock (GELU MLP, ratio 4)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # == nn.MultiheadAttention in_proj (with bias)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.out_proj(a.transpose(1, 2).reshape(b, t, c))
        return x + self.c_proj(self.gelu(self.c_fc(self.ln_2(x))))


class ClipVisionTower(nn.Module):
    """Plain-torch equivalent of open_clip's VisionTransformer (ViT-B-16 sizes by default)."""

    def __init__(self, image_size=224, patch_size=16, width=768, layers=12, heads=12, embed_dim=512):
        super().__init__()
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([_Block(width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid^2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_post(x[:, 0]) @ self.proj.to(x.dtype)


def build_encoder(cfg: BenchConfig, impl: str) -> tuple[nn.Module, str]:
    """The benchmark encoder (eval mode, no grads) and a name for the implementation used."""
    model: nn.Module | None = None
    name = ""
    if impl in ("auto", "timm"):
        try:
            import timm
            from timm.models.vision_transformer import VisionTransformer

            if cfg.smoke or (cfg.image_size, cfg.patch_size, cfg.width, cfg.layers, cfg.heads) != (224, 16, 768, 12, 12):
                model = VisionTransformer(
                    img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.width, depth=cfg.layers,
                    num_heads=cfg.heads, pre_norm=True, num_classes=cfg.embed_dim, global_pool="token",
                )
                name = f"timm {timm.__version__} VisionTransformer (CLIP layout, tiny)"
            else:
                model = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=cfg.embed_dim)
                name = f"timm {timm.__version__} vit_base_patch16_clip_224"
        except Exception as e:  # noqa: BLE001 - fall back to the plain-torch tower
            if impl == "timm":
                raise
            print(f"[bench] timm unavailable ({type(e).__name__}: {e}); using the plain-torch tower", flush=True)
    if model is None:
        model = ClipVisionTower(cfg.image_size, cfg.patch_size, cfg.width, cfg.layers, cfg.heads, cfg.embed_dim)
        name = "plain-torch ClipVisionTower"
    model.eval().requires_grad_(False)
    return model, name


def analytic_flops_per_crop(cfg: BenchConfig, mlp_ratio: float = 4.0) -> dict:
    """Matmul FLOPs (2 x MACs) of one forward pass; norms, softmax and adds are ignored (< 1%)."""
    grid = cfg.image_size // cfg.patch_size
    t, w = grid * grid + 1, cfg.width
    hidden = int(w * mlp_ratio)
    patch = grid * grid * (3 * cfg.patch_size**2) * w
    per_layer = t * w * 3 * w + 2 * t * t * w + t * w * w + 2 * t * w * hidden
    head = w * cfg.embed_dim
    macs = patch + cfg.layers * per_layer + head
    return {
        "flops": 2 * macs,
        "patch_embed": 2 * patch,
        "attention_scores_and_mix": 2 * cfg.layers * 2 * t * t * w,
        "linear_layers": 2 * cfg.layers * (per_layer - 2 * t * t * w),
        "projection": 2 * head,
        "tokens": t,
    }


def measured_flops_per_crop(model: nn.Module, cfg: BenchConfig) -> int:
    """FLOPs of one crop counted by torch's FlopCounterMode (math SDPA so attention is counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    m = copy.deepcopy(model).cpu().float()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.inference_mode():
        m(x)
    return int(fc.get_total_flops())


def peak_bf16_tflops(device_name: str) -> tuple[float | None, str]:
    """Dense bf16 tensor-core peak for known parts (vendor spec sheets, no sparsity)."""
    n = device_name.upper()
    if "H100" in n and "PCIE" in n:
        return 756.0, "H100 PCIe dense bf16"
    if "H100" in n and "NVL" in n:
        return 835.0, "H100 NVL dense bf16"
    if "H100" in n or "H200" in n or "GH200" in n or "H800" in n:
        return H100_SXM_BF16_DENSE_TFLOPS, "H100/H200 SXM dense bf16"
    if "A100" in n:
        return 312.0, "A100 dense bf16"
    if "L40S" in n:
        return 362.0, "L40S dense bf16"
    return None, f"unknown peak for {device_name!r}"
