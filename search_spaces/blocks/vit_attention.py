"""`A`: plain multi-head self-attention (ViT/DeiT), LayerNorm eps 1e-6; qkv bias as DeiT (on) or
ConViT's plain-attention blocks (off)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.blocks.ffn import init_linear_
from search_spaces.blocks.transformer import TransformerBlock


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V over all tokens (class token included), via SDPA.

    (B, N, dim_in) -> (B, N, dim_out); heads = dim_out // head_size.
    """

    def __init__(self, dim_in: int, dim_out: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = init_linear_(nn.Linear(dim_in, 3 * dim_out, bias=qkv_bias))
        self.proj = init_linear_(nn.Linear(dim_out, dim_out))

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class ViTBlock(TransformerBlock):
    """`A` block: pre-norm plain attention + FFN (DeiT)."""

    def __init__(self, dim_in: int, dim_out: int, head_size: int, stride: int = 1,
                 expansion: int = 4, qkv_bias: bool = True, drop_path: float = 0.0):
        attn = Attention(dim_in, dim_out, dim_out // head_size, qkv_bias)
        super().__init__(dim_in, dim_out, attn, stride, expansion, norm_eps=1e-6, drop_path=drop_path)
