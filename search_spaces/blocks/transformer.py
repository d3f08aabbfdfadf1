"""The pre-norm Transformer block shared by `T`, `A` and `G`; they differ only in the attention.

Tokens are (B, P + H*W, C): P prefix tokens (the class token, only ever in `A` stages) followed by
the H x W patch grid in row-major order. Every attention module is called as `attn(x, grid)`.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.blocks.drop_path import drop_path_or_identity
from search_spaces.blocks.ffn import FeedForward, init_linear_
from search_spaces.blocks.grid import Grid, downsampled, map_to_tokens, tokens_to_map
from search_spaces.blocks.mbconv import downsample_pool


def pool_tokens(x: torch.Tensor, grid: Grid, pool: nn.Module) -> torch.Tensor:
    """Pool patch tokens on their 2-D grid: (B, H*W, C) -> (B, H'*W', C)."""
    return map_to_tokens(pool(tokens_to_map(x, grid)))


class TransformerBlock(nn.Module):
    """x <- shortcut(x) + Attention(Norm(x)); x <- x + FFN(Norm(x)).

    With stride 2 the block downsamples as CoAtNet A.1 does for `T`, and we do the same for `A`
    and `G`: x <- Proj(Pool(x)) + Attention(Pool(Norm(x))), 3x3 average pooling with stride 2 on
    both branches and a linear projection on the identity branch (also used, without pooling,
    when only the width changes). Downsampling needs a token sequence without prefix tokens.
    drop_path: stochastic depth of both residual branches (whole samples, training only).

    (B, P + H*W, dim_in), (H, W) -> (B, P + H'*W', dim_out), (H', W')
    """

    def __init__(self, dim_in: int, dim_out: int, attn: nn.Module, stride: int = 1,
                 expansion: int = 4, norm_eps: float = 1e-5, drop_path: float = 0.0):
        super().__init__()
        self.stride = stride
        self.norm1 = nn.LayerNorm(dim_in, eps=norm_eps)
        self.pool = downsample_pool() if stride == 2 else None
        # The identity branch's projection carries the residual stream into the new width, so it
        # keeps its scale (std 1/sqrt(dim_in), as the 1x1 conv of CoAtNet's downsampling does);
        # ViT's std 0.02 here would shrink the stream ~10x at every width change.
        self.shortcut = (init_linear_(nn.Linear(dim_in, dim_out), std=dim_in ** -0.5)
                         if dim_in != dim_out else nn.Identity())
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim_out, eps=norm_eps)
        self.ffn = FeedForward(dim_out, expansion)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        h = self.norm1(x)
        if self.pool is not None:
            if x.shape[1] != grid[0] * grid[1]:
                raise ValueError("a downsampling attention block cannot carry prefix (class) tokens")
            h, x = pool_tokens(h, grid, self.pool), pool_tokens(x, grid, self.pool)
            grid = downsampled(grid, self.stride)
        x = self.shortcut(x) + self.drop_path(self.attn(h, grid))
        x = x + self.drop_path(self.ffn(self.norm2(x)))
        return x, grid
