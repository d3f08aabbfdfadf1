"""Our DeiT and ConViT presets against timm's implementations: the same weights give the same
logits (max abs difference < 1e-5), and the parameter counts are equal."""

from __future__ import annotations

import pytest
import torch

from search_spaces.model import build_model
from search_spaces.presets import get_preset
from timm_reference import import_timm, transplant_convit, transplant_deit

RESOLUTION, CLASSES = 64, 10


@pytest.fixture(scope="module")
def timm():
    try:
        return import_timm()
    except ImportError:
        if __import__("os").environ.get("CI"):
            raise  # CI installs timm (README's test command): the comparison must run there
        pytest.skip("timm is not installed (pip install --no-deps timm)")


def images() -> torch.Tensor:
    return torch.randn(3, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name, reference, local_blocks", [
    ("convit-ti", "convit_tiny", 10), ("convit-s", "convit_small", 10)])
def test_convit_computes_what_timm_computes(timm, name, reference, local_blocks):
    torch.manual_seed(0)
    theirs = timm.create_model(reference, pretrained=False, num_classes=CLASSES,
                               img_size=RESOLUTION).eval()
    with torch.no_grad():  # move every parameter off its initial value: nothing may hide
        for parameter in theirs.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ours = build_model(get_preset(name, resolution=RESOLUTION, num_classes=CLASSES)).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    transplant_convit(theirs, ours, local_blocks)
    x = images()
    with torch.no_grad():
        difference = (ours(x) - theirs(x)).abs().max().item()
    assert difference < 1e-5
    # and the gates we read are theirs
    gates = [torch.sigmoid(b.attn.gating_param).mean().item() for b in theirs.blocks[:local_blocks]]
    assert ours.gate_values() == pytest.approx(gates, abs=1e-7)


def test_deit_computes_what_timm_computes(timm):
    torch.manual_seed(0)
    theirs = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=CLASSES,
                               img_size=RESOLUTION).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ours = build_model(get_preset("deit-ti", resolution=RESOLUTION, num_classes=CLASSES)).eval()
    # timm's position embedding has one more row (the class token's), folded into our token
    assert sum(p.numel() for p in ours.parameters()) == \
        sum(p.numel() for p in theirs.parameters()) - theirs.embed_dim
    transplant_deit(theirs, ours)
    x = images()
    with torch.no_grad():
        difference = (ours(x) - theirs(x)).abs().max().item()
    assert difference < 1e-5


def test_deit_with_a_distillation_token_computes_what_timm_computes(timm):
    """DeiT's distilled model: class and distillation tokens, two heads; timm averages the heads
    in eval mode and returns both while distilled training is on, as ours does."""
    torch.manual_seed(0)
    theirs = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False,
                               num_classes=CLASSES, img_size=RESOLUTION).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    arch = get_preset("deit-ti", resolution=RESOLUTION, num_classes=CLASSES).replace(distill_token=True)
    ours = build_model(arch).eval()
    # timm's position embedding has two more rows (class and distillation tokens'), folded into ours
    assert sum(p.numel() for p in ours.parameters()) == \
        sum(p.numel() for p in theirs.parameters()) - 2 * theirs.embed_dim
    transplant_deit(theirs, ours)
    x = images()
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-5  # eval: the heads' mean
        theirs.set_distilled_training(True)
        ours.set_distilled_training(True)
        theirs.train(), ours.train()  # no dropout or drop path in either: deterministic
        for mine, reference in zip(ours(x), theirs(x)):
            assert (mine - reference).abs().max().item() < 1e-5
