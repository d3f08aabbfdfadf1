"""Stochastic depth (Huang et al. 2016) as DeiT and timm apply it: a residual branch is dropped for
whole samples while training, the kept ones scaled by 1/(1-p); the identity in eval mode. The rate
grows linearly over the network's blocks, from 0 at the first to `drop_path` at the last
(`drop_path_rates`)."""

from __future__ import annotations

import torch
from torch import nn


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Per-block drop rates, linear from 0 (first block) to `rate` (last block), as timm's
    `torch.linspace(0, drop_path_rate, depth)`."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {rate}")
    if blocks == 1:
        return [0.0]
    return [rate * i / (blocks - 1) for i in range(blocks)]


class DropPath(nn.Module):
    """Drops the residual branch of each sample with probability `rate` in training mode.

    (B, ...) -> (B, ...): every sample's branch is either 0 or itself / (1 - rate). The draws come
    from `generator` when one is set (the trainer sets its own, seeded one), else torch's global
    generator.
    """

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # one draw per sample
        mask = torch.rand(shape, device=x.device, generator=self.generator) < keep
        return x * (mask.to(x.dtype) / keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def drop_path_or_identity(rate: float) -> nn.Module:
    """A DropPath for a positive rate, else nn.Identity (a model built without stochastic depth
    has exactly the modules it had before the option existed)."""
    return DropPath(rate) if rate > 0 else nn.Identity()
