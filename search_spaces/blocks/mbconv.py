"""`C`: MBConv with squeeze-excitation, pre-norm BatchNorm, GELU (CoAtNet appendix A.1)."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.blocks.drop_path import drop_path_or_identity


class SqueezeExcite(nn.Module):
    """Channel gating: x * sigmoid(W2 GELU(W1 mean_hw(x))). (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.GELU()
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


def downsample_pool() -> nn.Module:
    """The pooling of CoAtNet's downsampling blocks: 3x3 average pooling, stride 2 (halves even sides)."""
    return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)


class MBConv(nn.Module):
    """Inverted bottleneck: x <- shortcut(x) + Proj(SE(DW(Expand(BN(x))))).

    The hidden width is `dim_out * expansion`; the squeeze-excitation squeezes to
    `dim_in * se_ratio` channels (EfficientNet's convention). Downsampling (stride 2) follows
    CoAtNet A.1: x <- Proj(Pool(x)) + Conv(DepthConv(Conv(Norm(x), stride=2))), with the stride on
    the first 1x1 conv. That is the variant whose FLOPs CoAtNet's Table 4 reports (Table 9 puts it
    on the depthwise conv instead, which costs about 10% more at the same parameter count).
    drop_path: stochastic depth of the residual branch (whole samples, training only).

    (B, dim_in, H, W) -> (B, dim_out, H/stride, W/stride)
    """

    def __init__(self, dim_in: int, dim_out: int, stride: int = 1, expansion: int = 4,
                 se_ratio: float = 0.25, drop_path: float = 0.0):
        super().__init__()
        hidden = dim_out * expansion
        self.norm = nn.BatchNorm2d(dim_in)
        self.expand = nn.Conv2d(dim_in, hidden, 1, stride=stride, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.GELU()
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.norm2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.GELU()
        self.se = SqueezeExcite(hidden, max(1, int(dim_in * se_ratio)))
        self.project = nn.Conv2d(hidden, dim_out, 1, bias=True)
        # identity branch: Pool then 1x1 Proj when the shape changes
        self.pool = downsample_pool() if stride == 2 else nn.Identity()
        self.shortcut = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.norm(x))  # (B, hidden, H/s, W/s)
        y = self.act1(self.norm1(y))
        y = self.act2(self.norm2(self.depthwise(y)))
        y = self.project(self.se(y))  # (B, dim_out, H/s, W/s)
        return self.shortcut(self.pool(x)) + self.drop_path(y)
