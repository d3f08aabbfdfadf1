"""S0: the stem that turns an image into the first feature map."""

from __future__ import annotations

import torch
from torch import nn


class ConvStem(nn.Module):
    """CoAtNet's stem: two 3x3 convs, the first with stride 2, BatchNorm + GELU between.

    (B, in_channels, R, R) -> (B, width, R/2, R/2)
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=1, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.norm1(self.conv1(x))))


class PatchStem(nn.Module):
    """ViT's stem: non-overlapping PxP patches, each projected linearly (a PxP conv, stride P).

    (B, in_channels, R, R) -> (B, width, R/P, R/P)
    """

    def __init__(self, in_channels: int, width: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
