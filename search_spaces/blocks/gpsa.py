"""`G`: gated positional self-attention (ConViT), with the locality initialisation."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

from search_spaces.blocks.ffn import init_linear_
from search_spaces.blocks.transformer import TransformerBlock


@lru_cache(maxsize=64)
def relative_positions(height: int, width: int) -> torch.Tensor:
    """r_ij = (|d|^2, d_x, d_y) for the offset d = position_j - position_i: (H*W, H*W, 3)."""
    # Built outside inference mode: a cached inference tensor would break every later backward.
    with torch.inference_mode(False), torch.no_grad():
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        dx = xs.flatten()[None, :] - xs.flatten()[:, None]
        dy = ys.flatten()[None, :] - ys.flatten()[:, None]
        return torch.stack([dx ** 2 + dy ** 2, dx, dy], dim=-1).float()


def head_offsets(heads: int) -> list[tuple[float, float]]:
    """Locality centres: head h sits on one offset of a k x k grid, k = ceil(sqrt(heads)),
    centred on 0 as in ConViT (9 heads: -1..1 in both axes; 4 heads: +-0.5; 16: -1.5..1.5)."""
    k = math.ceil(math.sqrt(heads))
    centre = (k - 1) / 2
    return [(h % k - centre, h // k - centre) for h in range(heads)]


class GatedPositionalAttention(nn.Module):
    """A_h = (1 - sigmoid(lambda_h)) softmax(Q K^T / sqrt(d)) + sigmoid(lambda_h) softmax(v_pos_h . r_ij),
    rows renormalised to sum 1, then one A_h V: what ConViT computes (and what fvcore counts: one
    QK^T and one AV matmul, like plain attention). Locality init: v_pos_h = -alpha (1, -2 dx_h,
    -2 dy_h) (a softmax peaked at the head's offset), lambda_h = 1, the value projection the
    identity.

    (B, H*W, dim_in), (H, W) -> (B, H*W, dim_out); heads = dim_out // head_size.
    """

    def __init__(self, dim_in: int, dim_out: int, heads: int, locality_strength: float = 1.0):
        super().__init__()
        self.heads = heads
        self.scale = (dim_out // heads) ** -0.5
        self.qk = init_linear_(nn.Linear(dim_in, 2 * dim_out, bias=False))
        self.v = nn.Linear(dim_in, dim_out, bias=False)
        self.proj = init_linear_(nn.Linear(dim_out, dim_out))
        self.pos_proj = nn.Linear(3, heads)
        self.gating = nn.Parameter(torch.ones(heads))  # lambda_h
        self.locality_init_(locality_strength)

    @torch.no_grad()
    def locality_init_(self, alpha: float) -> None:
        """Start as a convolution: each head attends around its own offset."""
        nn.init.eye_(self.v.weight)
        weight = torch.tensor([[-1.0, 2.0 * dx, 2.0 * dy] for dx, dy in head_offsets(self.heads)])
        self.pos_proj.weight.copy_(alpha * weight)
        self.pos_proj.bias.zero_()
        self.gating.fill_(1.0)

    def gate(self) -> torch.Tensor:
        """sigmoid(lambda_h) per head: 1 = purely positional (convolution-like), 0 = content."""
        return torch.sigmoid(self.gating)

    def positional_attention(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        r = relative_positions(int(grid[0]), int(grid[1])).to(device, self.pos_proj.weight.dtype)  # (N, N, 3)
        return self.pos_proj(r).permute(2, 0, 1).softmax(dim=-1)  # (h, N, N)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        q, k = self.qk(x).reshape(b, n, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # 2 x (B, h, N, d)
        v = self.v(x).reshape(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        content = (torch.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, h, N, N)
        positional = self.positional_attention(grid, x.device).to(content.dtype)  # (h, N, N)
        g = self.gate().view(1, -1, 1, 1).to(content.dtype)
        attn = (1 - g) * content + g * positional
        attn = attn / attn.sum(dim=-1, keepdim=True)  # exact sums of 1 up to rounding, as ConViT
        out = torch.matmul(attn, v)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class GPSABlock(TransformerBlock):
    """`G` block: pre-norm gated positional self-attention + FFN (ConViT)."""

    def __init__(self, dim_in: int, dim_out: int, head_size: int, stride: int = 1,
                 expansion: int = 4, locality_strength: float = 1.0, drop_path: float = 0.0):
        attn = GatedPositionalAttention(dim_in, dim_out, dim_out // head_size, locality_strength)
        super().__init__(dim_in, dim_out, attn, stride, expansion, norm_eps=1e-6, drop_path=drop_path)
