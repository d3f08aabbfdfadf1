"""`build_model(arch)`: an `Architecture` in, an `nn.Module` out.

Layout: the stem gives a feature map (B, C, H, W). Convolution stages work on maps, attention
stages on tokens (B, P + H*W, C); the layout changes only where a stage of the other kind
starts. The runtime grid (H, W) travels with the tokens, so a model built at one resolution
runs at another (relative-bias tables and position embeddings are resized bilinearly).

Stochastic depth (`drop_path`) is a property of the built model, not of the architecture: its rate
grows linearly over all blocks of the network, in order, as in DeiT and timm; the default 0 builds
no DropPath module at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.architecture import Architecture, Stage
from search_spaces.blocks import (ConvStem, DistilledTokenHead, DropPath, GatedPositionalAttention,
                                  GPSABlock, MBConv, PatchStem, PoolHead, RelTransformerBlock,
                                  TokenHead, ViTBlock)
from search_spaces.blocks.drop_path import drop_path_rates
from search_spaces.blocks.grid import Grid, downsampled, map_to_tokens, tokens_to_map


class ConvStage(nn.Module):
    """A stage of `C` blocks; the first applies the stride and the width change. `drop_path`:
    one stochastic-depth rate per block (None: none)."""

    def __init__(self, stage: Stage, dim_in: int, drop_path: list[float] | None = None):
        super().__init__()
        rates = drop_path or [0.0] * stage.depth
        self.blocks = nn.Sequential(*[
            MBConv(dim_in if i == 0 else stage.width, stage.width,
                   stride=stage.stride if i == 0 else 1, expansion=stage.expansion,
                   drop_path=rates[i])
            for i in range(stage.depth)])

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        if x.dim() == 3:
            x = tokens_to_map(x, grid)
        x = self.blocks(x)  # (B, width, H', W')
        return x, (x.shape[-2], x.shape[-1])


class AttentionStage(nn.Module):
    """A stage of `T`, `A` or `G` blocks on tokens.

    Optionally adds a learned absolute position embedding to the incoming patch tokens
    (`Stage.pos_embed`) and prepends the class token (the first `A` stage of a `token` head) and,
    after it, DeiT's distillation token. `drop_path`: one stochastic-depth rate per block.
    """

    def __init__(self, stage: Stage, dim_in: int, grid_in: Grid, add_class_token: bool = False,
                 add_distill_token: bool = False, drop_path: list[float] | None = None):
        super().__init__()
        rates = drop_path or [0.0] * stage.depth
        self.grid_in = grid_in
        self.pos_embed = None
        if stage.pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid_in[0] * grid_in[1], dim_in))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.class_token = None
        if add_class_token:
            self.class_token = nn.Parameter(torch.zeros(1, 1, dim_in))
            nn.init.trunc_normal_(self.class_token, std=0.02)
        self.distill_token = None
        if add_distill_token:
            self.distill_token = nn.Parameter(torch.zeros(1, 1, dim_in))
            nn.init.trunc_normal_(self.distill_token, std=0.02)
        attn_grid = downsampled(grid_in, stage.stride)
        blocks = []
        for i in range(stage.depth):
            d_in, stride = (dim_in, stage.stride) if i == 0 else (stage.width, 1)
            if stage.block == "T":
                blocks.append(RelTransformerBlock(d_in, stage.width, stage.head_size, attn_grid,
                                                  stride, stage.expansion, stage.qkv_bias, rates[i]))
            elif stage.block == "A":
                blocks.append(ViTBlock(d_in, stage.width, stage.head_size, stride, stage.expansion,
                                       stage.qkv_bias, drop_path=rates[i]))
            elif stage.block == "G":
                blocks.append(GPSABlock(d_in, stage.width, stage.head_size, stride, stage.expansion,
                                        drop_path=rates[i]))
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
            prefix = [t for t in (self.class_token, self.distill_token) if t is not None]
            # (B, P + H*W, C): class token, [distillation token,] patches
            x = torch.cat([token.expand(x.shape[0], -1, -1) for token in prefix] + [x], dim=1)
        for block in self.blocks:
            x, grid = block(x, grid)
        return x, grid


class HybridNet(nn.Module):
    """Stem -> stages S1..Sn -> head. (B, in_channels, R, R) -> (B, num_classes).

    With `arch.distill_token` the head is DeiT's pair of heads: their mean, except while training
    after `set_distilled_training(True)`, when the forward gives (class logits, distillation
    logits). `drop_path`: the stochastic-depth rate of the last block (0 at the first, linear in
    between).
    """

    def __init__(self, arch: Architecture, drop_path: float = 0.0):
        super().__init__()
        self.arch = arch
        rates = drop_path_rates(drop_path, sum(stage.depth for stage in arch.stages))
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
            stage_rates, rates = rates[:stage.depth], rates[stage.depth:]
            if stage.block == "C":
                stages.append(ConvStage(stage, dim, stage_rates))
            else:
                joins = i == token_joins
                stages.append(AttentionStage(stage, dim, grid, add_class_token=joins,
                                             add_distill_token=joins and arch.distill_token,
                                             drop_path=stage_rates))
            grid, dim = downsampled(grid, stage.stride), stage.width
        self.stages = nn.ModuleList(stages)
        if arch.distill_token:
            self.head = DistilledTokenHead(dim, arch.num_classes)
        elif arch.head == "token":
            self.head = TokenHead(dim, arch.num_classes)
        else:
            self.head = PoolHead(dim, arch.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem.width, R/s, R/s)
        grid = (x.shape[-2], x.shape[-1])
        for stage in self.stages:
            x, grid = stage(x, grid)
        return self.head(x)

    @property
    def has_distillation_head(self) -> bool:
        """Whether the model has DeiT's second head (a distillation token)."""
        return isinstance(self.head, DistilledTokenHead)

    def set_distilled_training(self, enabled: bool) -> None:
        """Make the training-mode forward give both heads' logits (models with a distillation
        token; no effect on others, which distil through their single head)."""
        if self.has_distillation_head:
            self.head.distilled_training = enabled

    def set_drop_path_generator(self, generator: torch.Generator | None) -> None:
        """Draw every stochastic-depth mask from `generator` (the trainer's, seeded)."""
        for module in self.modules():
            if isinstance(module, DropPath):
                module.generator = generator

    def gate_values(self) -> list[float]:
        """One value per `G` block, in order: the mean over heads of sigmoid(lambda_h)."""
        with torch.no_grad():
            return [float(m.gate().mean()) for m in self.modules()
                    if isinstance(m, GatedPositionalAttention)]


def build_model(arch: Architecture, device: str | torch.device | None = None,
                drop_path: float = 0.0) -> HybridNet:
    """The network `arch` describes, freshly initialised (on `device` if given), with stochastic
    depth up to `drop_path` on its last block (training only; the same weights and arch_id)."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"build_model expects an Architecture, got {type(arch).__name__}")
    model = HybridNet(arch, drop_path)
    return model.to(device) if device is not None else model
