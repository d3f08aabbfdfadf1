"""The feed-forward half of every Transformer block (T, A, G): Linear -> GELU -> Linear."""

from __future__ import annotations

import torch
from torch import nn


def init_linear_(layer: nn.Linear, std: float = 0.02) -> nn.Linear:
    """ViT's initialisation: truncated-normal weights, zero bias."""
    nn.init.trunc_normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class FeedForward(nn.Module):
    """Position-wise MLP with hidden width `dim * expansion`. (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        hidden = dim * expansion
        self.fc1 = init_linear_(nn.Linear(dim, hidden))
        self.act = nn.GELU()
        self.fc2 = init_linear_(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
