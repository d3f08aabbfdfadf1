"""Named architectures from the papers, as a table of configs (timm style), at any input size.

`get_preset("coatnet-0")` is CoAtNet-0 at 224x224 for 1000 classes; pass `resolution`,
`num_classes`, `in_channels` for another input or task. A resolution the total stride cannot
divide raises ArchitectureError (field `resolution`).
"""

from __future__ import annotations

import torch

from search_spaces.architecture import Architecture, Stage, Stem

# CoAtNet (Table 3): stem width, blocks per stage, channels per stage; kernel 3, head size 32,
# expansion 4, SE 0.25. Layout C-C-T-T.
_COATNET: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "coatnet-0": (64, (2, 3, 5, 2), (96, 192, 384, 768)),
    "coatnet-1": (64, (2, 6, 14, 2), (96, 192, 384, 768)),
    "coatnet-2": (128, (2, 6, 14, 2), (128, 256, 512, 1024)),
    "coatnet-3": (192, (2, 6, 14, 2), (192, 384, 768, 1536)),
    "coatnet-4": (192, (2, 12, 28, 2), (192, 384, 768, 1536)),
}

# The layout study (CoAtNet section 2.2) at CoAtNet-0's size: CoAtNet-0's stem, widths and S1, S2,
# S4 depths; only S3's depth moves so every variant lands within 3% of CoAtNet-0's parameters
# (C-C-T-T *is* CoAtNet-0). MBConv blocks are cheaper than T blocks at the same width (about 1.5M
# vs 1.8M at 384, 5.9M vs 7.1M at 768), so the convolution-heavy layouts get a deeper S3.
_LAYOUT_STUDY: dict[str, tuple[str, tuple[int, ...]]] = {
    "C-C-C-C": ("CCCC", (2, 3, 8, 2)),
    "C-C-C-T": ("CCCT", (2, 3, 6, 2)),
    "C-C-T-T": ("CCTT", (2, 3, 5, 2)),
    "C-T-T-T": ("CTTT", (2, 3, 5, 2)),
}
_STUDY_STEM, _STUDY_WIDTHS = 64, (96, 192, 384, 768)

# ViT_REL: a 16x16 patch stem and L relative-attention T blocks at one width, stride 1.
# 13 blocks of width 384 (12 heads of 32) match CoAtNet-0's parameter count.
_VIT_REL = {"ViT_REL": (13, 384)}

# DeiT: 16x16 patches, 12 plain-attention blocks, head size 64, class token, position embedding.
_DEIT = {"deit-ti": 192, "deit-s": 384, "deit-b": 768}

# ConViT: DeiT's skeleton, the first 10 blocks GPSA, head size 48 (4 / 9 / 16 heads); the class
# token joins at the 2 plain blocks, which have no qkv bias (unlike DeiT's); position embedding on
# the patches (the G stage).
_CONVIT = {"convit-ti": 4, "convit-s": 9, "convit-b": 16}

PRESET_NAMES: tuple[str, ...] = (*_COATNET, *_LAYOUT_STUDY, *_VIT_REL, *_DEIT, *_CONVIT)


def get_preset(name: str, resolution: int = 224, num_classes: int = 1000,
               in_channels: int = 3) -> Architecture:
    """The named architecture for the given input size and class count."""
    io = dict(resolution=resolution, num_classes=num_classes, in_channels=in_channels)
    if name in _COATNET:
        stem, depths, widths = _COATNET[name]
        return _hybrid("CCTT", stem, depths, widths, **io)
    if name in _LAYOUT_STUDY:
        layout, depths = _LAYOUT_STUDY[name]
        return _hybrid(layout, _STUDY_STEM, depths, _STUDY_WIDTHS, **io)
    if name in _VIT_REL:
        depth, width = _VIT_REL[name]
        return _vit_rel(depth, width, 16, 32, **io)
    if name in _DEIT:
        width = _DEIT[name]
        return Architecture(
            stem=Stem("patch", width, 16),
            stages=(Stage("A", 12, width, stride=1, head_size=64, pos_embed=True),),
            head="token", **io)
    if name in _CONVIT:
        width = 48 * _CONVIT[name]
        return Architecture(
            stem=Stem("patch", width, 16),
            stages=(Stage("G", 10, width, stride=1, head_size=48, pos_embed=True),
                    Stage("A", 2, width, stride=1, head_size=48, qkv_bias=False)),
            head="token", **io)
    raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESET_NAMES)})")


def _hybrid(layout: str, stem: int, depths: tuple[int, ...], widths: tuple[int, ...],
            head_size: int = 32, s1_stride: int = 2, **io: int) -> Architecture:
    """A CoAtNet-style network: conv stem (stride 2), then S1 (stride `s1_stride`) and S2..S4
    with stride 2 each."""
    stages = tuple(Stage(block, depth, width, stride=s1_stride if i == 0 else 2,
                         head_size=head_size, expansion=4)
                   for i, (block, depth, width) in enumerate(zip(layout, depths, widths)))
    return Architecture(stem=Stem("conv", stem), stages=stages, **io)


def _vit_rel(depth: int, width: int, patch: int, head_size: int, **io: int) -> Architecture:
    return Architecture(stem=Stem("patch", width, patch),
                        stages=(Stage("T", depth, width, stride=1, head_size=head_size),), **io)


LAYOUT_STUDY = (*_LAYOUT_STUDY, *_VIT_REL)  # the five layouts of CoAtNet's study (Section 2.2)


def layout_study(resolution: int = 224, in_channels: int = 3, num_classes: int = 1000,
                 width_scale: float = 1.0, head_size: int = 32, s1_stride: int = 2
                 ) -> dict[str, Architecture]:
    """The five layouts of CoAtNet's study, scaled to a task, matched in parameters the way the
    paper matches them: CoAtNet-0's stem, widths and S1/S2/S4 depths (widths times
    `width_scale`, attention heads of `head_size` channels), C-C-T-T as the reference, and for
    every other layout only S3's depth (ViT_REL: its number of blocks) chosen to come nearest
    C-C-T-T's parameter count. ViT_REL's patches make the grid of S3 (16x16 at the paper's
    strides). `s1_stride=1` keeps one more halving of the input for small images (32x32: S3 is
    then a 4x4 grid, as the patch-8 ViT_REL's). At 224x224 and scale 1 these are the presets."""
    io = dict(resolution=resolution, num_classes=num_classes, in_channels=in_channels)
    widths = tuple(max(1, round(w * width_scale)) for w in (_STUDY_STEM, *_STUDY_WIDTHS))
    stem, stage_widths = widths[0], widths[1:]
    patch = 2 * s1_stride * 4  # the stride at S3: stem 2, S1, S2 2, S3 2

    def build(name: str, s3_depth: int) -> Architecture:
        if name == "ViT_REL":
            return _vit_rel(s3_depth, stage_widths[2], patch, head_size, **io)
        layout, depths = _LAYOUT_STUDY[name]
        depths = (*depths[:2], s3_depth, depths[3])
        return _hybrid(layout, stem, depths, stage_widths, head_size, s1_stride, **io)

    reference = build("C-C-T-T", _LAYOUT_STUDY["C-C-T-T"][1][2])
    target = _parameters(reference)
    out = {}
    for name in LAYOUT_STUDY:
        if name == "C-C-T-T":
            out[name] = reference
            continue
        one, two = _parameters(build(name, 1)), _parameters(build(name, 2))
        per_block = two - one  # every S3 block after the first is the same: params are linear
        depth = max(1, round(1 + (target - one) / per_block))
        out[name] = build(name, depth)
    return out


VIT_STUDY = ("DeiT", "ConViT")  # ConViT's sample-efficiency comparison (ConViT section 4.1)


def vit_study(resolution: int = 224, in_channels: int = 3, num_classes: int = 1000,
              width: int = 192, depth: int = 12, local_blocks: int = 10, head_size: int = 48,
              patch_size: int = 16) -> dict[str, Architecture]:
    """A DeiT-style and a ConViT-style stack scaled to a task, matched in parameters as the papers
    match them: the same patch stem, width, depth and heads. ConViT's first `local_blocks` blocks
    are gated positional self-attention (`G`, with the position embedding), the rest plain
    attention without qkv bias where the class token joins; DeiT's are all plain attention (`A`)
    with qkv bias and the position embedding. The two differ only in the attention's small
    parameters (qkv biases against ConViT's gates and positional projections): within 1% at
    ConViT-Ti's size (5.72M against 5.71M at these defaults, 4 heads of 48)."""
    if not 0 < local_blocks < depth:
        raise ValueError(f"local_blocks must be in [1, depth - 1], got {local_blocks} of {depth}")
    io = dict(resolution=resolution, num_classes=num_classes, in_channels=in_channels)
    stem = Stem("patch", width, patch_size)
    deit = Architecture(stem, (Stage("A", depth, width, stride=1, head_size=head_size, pos_embed=True),),
                        head="token", **io)
    convit = Architecture(stem, (Stage("G", local_blocks, width, stride=1, head_size=head_size,
                                       pos_embed=True),
                                 Stage("A", depth - local_blocks, width, stride=1, head_size=head_size,
                                       qkv_bias=False)), head="token", **io)
    return {"DeiT": deit, "ConViT": convit}


def _parameters(arch: Architecture) -> int:
    from search_spaces.model import build_model  # models only when the study asks for them

    with torch.random.fork_rng():  # building initialises weights: leave the caller's RNG alone
        return sum(p.numel() for p in build_model(arch).parameters())
