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


class DistilledTokenHead(nn.Module):
    """DeiT's two heads: LayerNorm, then one Linear on the class token (token 0) and one on the
    distillation token (token 1).

    (B, N, C) -> (B, num_classes), the mean of the two heads' logits (DeiT's inference); while
    training with `distilled_training` set, the pair (class-head logits, distillation-head
    logits), each (B, num_classes), for a loss that gives each head its own target.
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = init_linear_(nn.Linear(dim, num_classes))
        self.fc_dist = init_linear_(nn.Linear(dim, num_classes))
        self.distilled_training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        tokens = self.norm(x[:, :2])  # (B, 2, C): class and distillation tokens
        logits, logits_dist = self.fc(tokens[:, 0]), self.fc_dist(tokens[:, 1])
        if self.distilled_training and self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2
