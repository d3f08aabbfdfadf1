"""One module per block type: C (MBConv), T (relative attention), A (ViT), G (GPSA), plus stems and heads."""

from search_spaces.blocks.drop_path import DropPath
from search_spaces.blocks.gpsa import GatedPositionalAttention, GPSABlock
from search_spaces.blocks.head import DistilledTokenHead, PoolHead, TokenHead
from search_spaces.blocks.mbconv import MBConv, SqueezeExcite
from search_spaces.blocks.relative_attention import RelativeAttention, RelTransformerBlock
from search_spaces.blocks.stem import ConvStem, PatchStem
from search_spaces.blocks.transformer import TransformerBlock
from search_spaces.blocks.vit_attention import Attention, ViTBlock

__all__ = [
    "Attention", "ConvStem", "DistilledTokenHead", "DropPath", "GatedPositionalAttention",
    "GPSABlock", "MBConv", "PatchStem", "PoolHead", "RelativeAttention", "RelTransformerBlock",
    "SqueezeExcite", "TokenHead", "TransformerBlock", "ViTBlock",
]
