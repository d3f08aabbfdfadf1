"""`T`: Transformer with 2-D relative position bias added before the softmax (CoAtNet)."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.blocks.ffn import init_linear_
from search_spaces.blocks.transformer import TransformerBlock


@lru_cache(maxsize=64)
def relative_index(height: int, width: int) -> torch.Tensor:
    """(H*W, H*W) index into a flattened (2H-1) x (2W-1) table: entry [i, j] is offset i - j."""
    # Built outside inference mode: a cached inference tensor would break every later backward.
    with torch.inference_mode(False), torch.no_grad():
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        coords = torch.stack([ys.flatten(), xs.flatten()], dim=1)  # (N, 2)
        d = coords[:, None, :] - coords[None, :, :]  # (N, N, 2), in [-(H-1), H-1] x [-(W-1), W-1]
        return (d[..., 0] + height - 1) * (2 * width - 1) + (d[..., 1] + width - 1)


class RelativeAttention(nn.Module):
    """softmax(Q K^T / sqrt(d) + P[i - j]) V with one trainable (2H-1) x (2W-1) table P per head.

    The bias depends only on the offset between two positions (translation equivariance). It
    goes to SDPA as an additive float mask. On a grid other than the one it was built for, the
    table is resized bilinearly (corners aligned: the largest offsets map onto each other).

    (B, H*W, dim_in), (H, W) -> (B, H*W, dim_out); heads = dim_out // head_size.
    """

    def __init__(self, dim_in: int, dim_out: int, heads: int, grid: tuple[int, int],
                 qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.grid = tuple(grid)
        self.qkv = init_linear_(nn.Linear(dim_in, 3 * dim_out, bias=qkv_bias))
        self.proj = init_linear_(nn.Linear(dim_out, dim_out))
        h, w = self.grid
        self.bias_table = nn.Parameter(torch.zeros(heads, 2 * h - 1, 2 * w - 1))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_index(h, w).clone(), persistent=False)

    def relative_bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """The (heads, N, N) bias for an H x W grid."""
        grid = tuple(int(g) for g in grid)
        if grid == self.grid:
            table, index = self.bias_table, self.bias_index
        else:
            size = (2 * grid[0] - 1, 2 * grid[1] - 1)
            table = F.interpolate(self.bias_table.unsqueeze(0), size=size, mode="bilinear",
                                  align_corners=True).squeeze(0)
            index = relative_index(*grid).to(table.device)
        return table.flatten(1)[:, index]  # (heads, N, N)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d)
        bias = self.relative_bias(grid).unsqueeze(0).to(q.dtype)  # (1, h, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class RelTransformerBlock(TransformerBlock):
    """`T` block: pre-norm relative attention + FFN; `grid` is the attention grid (after stride)."""

    def __init__(self, dim_in: int, dim_out: int, head_size: int, grid: tuple[int, int],
                 stride: int = 1, expansion: int = 4, qkv_bias: bool = True, drop_path: float = 0.0):
        attn = RelativeAttention(dim_in, dim_out, dim_out // head_size, grid, qkv_bias)
        super().__init__(dim_in, dim_out, attn, stride, expansion, norm_eps=1e-5, drop_path=drop_path)
