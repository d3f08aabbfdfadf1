"""The classifier on top of the last stage."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.blocks.ffn import init_linear_


class PoolHead(nn.Module):
    """Global average pooling -> LayerNorm -> Linear (CoAtNet). Accepts a feature map or tokens.

    (B, C, H, W) or (B, N, C) -> (B, num_classes)
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = init_linear_(nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3)) if x.dim() == 4 else x.mean(1)  # (B, C)
        return self.fc(self.norm(pooled))


class TokenHead(nn.Module):
    """LayerNorm -> Linear on the class token, token 0 (DeiT, ConViT). (B, N, C) -> (B, num_classes)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = init_linear_(nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x[:, 0]))
