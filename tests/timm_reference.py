"""timm's DeiT and ConViT as reference implementations, for checking that our blocks compute
exactly what theirs compute with the same weights.

timm imports torchvision at import time (for transforms, data sets and a frozen BatchNorm that
these models never use), and no torchvision wheel imports beside torch 2.13.0. So before timm is
imported, `torchvision` and its submodules are stood in for by empty modules whose attributes are
inert classes: enough for timm's import-time references, never called by the models compared.
timm itself is installed without its dependencies (`pip install --no-deps timm`, see README).
"""

from __future__ import annotations

import enum
import importlib.abc
import importlib.machinery
import re
import sys
import types

import torch
from torch import nn


class _Inert:
    def __init__(self, *args, **kwargs) -> None:
        pass


class _InterpolationMode(enum.Enum):
    NEAREST, NEAREST_EXACT, BILINEAR, BICUBIC, BOX, HAMMING, LANCZOS = range(7)


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            value = _InterpolationMode if name == "InterpolationMode" else type(name, (_Inert,), {})
            setattr(module, name, value)
            return value

        module.__getattr__ = attribute
        return module

    def exec_module(self, module) -> None:
        pass


class _StandInFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, _StandInLoader(), is_package=True)
        return None


def import_timm():
    """timm, imported with torchvision stood in for; raises ImportError if timm is missing."""
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401  a real one, if it ever imports here
        except Exception:  # noqa: BLE001 - missing, or broken beside this torch
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
            sys.meta_path.insert(0, _StandInFinder())
    import timm

    return timm


def _copy(target: nn.Module, mapping: dict[str, torch.Tensor]) -> None:
    state = target.state_dict()
    assert set(mapping) == set(state), (sorted(set(state) - set(mapping)), sorted(set(mapping) - set(state)))
    with torch.no_grad():
        for name, value in mapping.items():
            assert state[name].shape == value.shape, (name, state[name].shape, value.shape)
            state[name].copy_(value)


def _block_mapping(prefix: str, ours: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One transformer block: timm's names -> ours (pos_proj's inputs reordered: timm feeds
    (dx, dy, d^2), we feed (d^2, dx, dy))."""
    out = {}
    renames = {"mlp.fc1": "ffn.fc1", "mlp.fc2": "ffn.fc2", "attn.gating_param": "attn.gating"}
    for name, value in state.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        for old, new in renames.items():
            rest = re.sub(rf"^{re.escape(old)}", new, rest)
        if rest == "attn.pos_proj.weight":
            value = value[:, [2, 0, 1]]
        out[ours + rest] = value
    return out


def transplant_convit(reference: nn.Module, model: nn.Module, local_blocks: int) -> None:
    """Copy timm ConViT weights into our `convit-*` preset (G stage, then A stage)."""
    state = reference.state_dict()
    depth = sum(1 for name in state if re.fullmatch(r"blocks\.\d+\.norm1\.weight", name))
    mapping = {"stem.proj.weight": state["patch_embed.proj.weight"],
               "stem.proj.bias": state["patch_embed.proj.bias"],
               "stages.0.pos_embed": state["pos_embed"],
               "stages.1.class_token": state["cls_token"],
               "head.norm.weight": state["norm.weight"], "head.norm.bias": state["norm.bias"],
               "head.fc.weight": state["head.weight"], "head.fc.bias": state["head.bias"]}
    for i in range(depth):
        stage, index = (0, i) if i < local_blocks else (1, i - local_blocks)
        mapping.update(_block_mapping(f"blocks.{i}.", f"stages.{stage}.blocks.{index}.", state))
    _copy(model, mapping)


def transplant_deit(reference: nn.Module, model: nn.Module) -> None:
    """Copy timm DeiT (VisionTransformer, or VisionTransformerDistilled with its distillation
    token and second head) weights into our `deit-*` preset. timm's position embedding also covers
    the prefix tokens; ours covers the patches, so each prefix token's position is folded into the
    token itself (the sum is what both models feed their first block)."""
    state = reference.state_dict()
    depth = sum(1 for name in state if re.fullmatch(r"blocks\.\d+\.norm1\.weight", name))
    pos = state["pos_embed"]
    prefix = 2 if "dist_token" in state else 1
    mapping = {"stem.proj.weight": state["patch_embed.proj.weight"],
               "stem.proj.bias": state["patch_embed.proj.bias"],
               "stages.0.pos_embed": pos[:, prefix:],
               "stages.0.class_token": state["cls_token"] + pos[:, :1],
               "head.norm.weight": state["norm.weight"], "head.norm.bias": state["norm.bias"],
               "head.fc.weight": state["head.weight"], "head.fc.bias": state["head.bias"]}
    if prefix == 2:
        mapping.update({"stages.0.distill_token": state["dist_token"] + pos[:, 1:2],
                        "head.fc_dist.weight": state["head_dist.weight"],
                        "head.fc_dist.bias": state["head_dist.bias"]})
    for i in range(depth):
        mapping.update(_block_mapping(f"blocks.{i}.", f"stages.0.blocks.{i}.", state))
    _copy(model, mapping)
