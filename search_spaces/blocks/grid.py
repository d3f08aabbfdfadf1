"""Moving between feature maps (B, C, H, W) and patch tokens (B, H*W, C), and the grid a stride
leaves. Tokens are in row-major order of the H x W grid."""

from __future__ import annotations

import torch

Grid = tuple[int, int]


def tokens_to_map(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid[0], grid[1])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def downsampled(grid: Grid, stride: int) -> Grid:
    """The grid after a stride: rounded up, as 3x3/pad-1 pooling and strided 1x1 convs do."""
    return ((grid[0] + stride - 1) // stride, (grid[1] + stride - 1) // stride) if stride > 1 else tuple(grid)
