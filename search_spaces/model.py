"""`build_model(arch)`: an `Architecture` in, an `nn.Module` out.

Layout: the stem gives a feature map (B, C, H, W). Convolution stages work on maps, attention
stages on tokens (B, P + H*W, C); the layout changes only where a stage of the other kind
starts. The runtime grid (H, W) travels with the tokens, so a model built at one resolution
runs at another (relative-bias tables and position embeddings are resized bilinearly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.architecture import Architecture, Stage
from search_spaces.blocks import (ConvStem, GatedPositionalAttention, GPSABlock, MBConv, PatchStem,
                                  PoolHead, RelTransformerBlock, TokenHead, ViTBlock)
from search_spaces.blocks.grid import Grid, downsampled, map_to_tokens, tokens_to_map

class ConvStage(nn.Module):
    """A stage of `C` blocks; the first applies the stride and the width change."""

    def __init__(self, stage: Stage, dim_in: int):
        super().__init__()
        self.blocks = nn.Sequential(*[
            MBConv(dim_in if i == 0 else stage.width, stage.width,
                   stride=stage.stride if i == 0 else 1, expansion=stage.expansion)
            for i in range(stage.depth)])

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        if x.dim() == 3:
            x = tokens_to_map(x, grid)
        x = self.blocks(x)  # (B, width, H', W')
        return x, (x.shape[-2], x.shape[-1])


class AttentionStage(nn.Module):
    """A stage of `T`, `A` or `G` blocks on tokens.

    Optionally adds a learned absolute position embedding to the incoming patch tokens
    (`Stage.pos_embed`) and prepends the class token (the first `A` stage of a `token` head).
    """

    def __init__(self, stage: Stage, dim_in: int, grid_in: Grid, add_class_token: bool = False):
        super().__init__()
        self.grid_in = grid_in
        self.pos_embed = None
        if stage.pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid_in[0] * grid_in[1], dim_in))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.class_token = None
        if add_class_token:
            self.class_token = nn.Parameter(torch.zeros(1, 1, dim_in))
            nn.init.trunc_normal_(self.class_token, std=0.02)
        attn_grid = downsampled(grid_in, stage.stride)
        blocks = []
        for i in range(stage.depth):
            d_in, stride = (dim_in, stage.stride) if i == 0 else (stage.width, 1)
            if stage.block == "T":
                blocks.append(RelTransformerBlock(d_in, stage.width, stage.head_size, attn_grid,
                                                  stride, stage.expansion, stage.qkv_bias))
            elif stage.block == "A":
                blocks.append(ViTBlock(d_in, stage.width, stage.head_size, stride, stage.expansion,
                                       stage.qkv_bias))
            elif stage.block == "G":
                blocks.append(GPSABlock(d_in, stage.width, stage.head_size, stride, stage.expansion))
            else:
                raise ValueError(f"not an attention block type: {stage.block!r}")
        self.blocks = nn.ModuleList(blocks)

    def position_embedding(self, grid: Grid) -> torch.Tensor:
        """(1, H*W, C) for the runtime grid, resized bilinearly from the built one if needed."""
        if tuple(grid) == self.grid_in:
            return self.pos_embed
        h, w = self.grid_in
        pos = tokens_to_map(self.pos_embed, (h, w))  # (1, C, h, w)
        pos = F.interpolate(pos, size=tuple(grid), mode="bilinear", align_corners=False)
        return map_to_tokens(pos)

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        if x.dim() == 4:
            x = map_to_tokens(x)  # (B, H*W, C)
        if self.pos_embed is not None:
            prefix = x.shape[1] - grid[0] * grid[1]
            patches = x[:, prefix:] + self.position_embedding(grid)
            x = torch.cat([x[:, :prefix], patches], dim=1) if prefix else patches
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + H*W, C)
        for block in self.blocks:
            x, grid = block(x, grid)
        return x, grid


class HybridNet(nn.Module):
    """Stem -> stages S1..Sn -> head. (B, in_channels, R, R) -> (B, num_classes)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        stem = arch.stem
        if stem.kind == "conv":
            self.stem = ConvStem(arch.in_channels, stem.width)
        else:
            self.stem = PatchStem(arch.in_channels, stem.width, stem.patch_size)
        side = arch.resolution // stem.stride
        grid, dim = (side, side), stem.width
        token_joins = (next(i for i, s in enumerate(arch.stages) if s.block == "A")
                       if arch.head == "token" else None)
        stages = []
        for i, stage in enumerate(arch.stages):
            if stage.block == "C":
                stages.append(ConvStage(stage, dim))
            else:
                stages.append(AttentionStage(stage, dim, grid, add_class_token=(i == token_joins)))
            grid, dim = downsampled(grid, stage.stride), stage.width
        self.stages = nn.ModuleList(stages)
        self.head = TokenHead(dim, arch.num_classes) if arch.head == "token" else PoolHead(dim, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem.width, R/s, R/s)
        grid = (x.shape[-2], x.shape[-1])
        for stage in self.stages:
            x, grid = stage(x, grid)
        return self.head(x)

    def gate_values(self) -> list[float]:
        """One value per `G` block, in order: the mean over heads of sigmoid(lambda_h)."""
        with torch.no_grad():
            return [float(m.gate().mean()) for m in self.modules()
                    if isinstance(m, GatedPositionalAttention)]


def build_model(arch: Architecture, device: str | torch.device | None = None) -> HybridNet:
    """The network `arch` describes, freshly initialised (on `device` if given)."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"build_model expects an Architecture, got {type(arch).__name__}")
    model = HybridNet(arch)
    return model.to(device) if device is not None else model
