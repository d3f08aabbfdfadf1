"""Blocks and the model builder: every block type builds, runs, learns; the position machinery is right."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.blocks import GatedPositionalAttention, RelativeAttention
from search_spaces.blocks.gpsa import head_offsets
from search_spaces.model import build_model

torch.set_num_threads(1)


def tiny(block: str, resolution: int = 32) -> Architecture:
    """A ~50-100k-parameter network made of one block type, downsampling inside the stages.

    `A` is DeiT-like (patch stem, position embedding, class token, so no downsampling)."""
    if block == "A":
        stages = (Stage("A", 2, 32, stride=1, head_size=16, pos_embed=True),
                  Stage("A", 1, 32, stride=1, head_size=16))
        return Architecture(stem=Stem("patch", 16, patch_size=4), stages=stages,
                            resolution=resolution, num_classes=10, head="token")
    stages = (Stage(block, 2, 32, stride=2, head_size=16, pos_embed=block == "G"),
              Stage(block, 1, 64, stride=2, head_size=16))
    return Architecture(stem=Stem("conv", 16), stages=stages, resolution=resolution, num_classes=10)


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("block", ["C", "T", "A", "G"])
def test_block_builds_runs_forward_backward(block, resolution):
    torch.manual_seed(0)
    model = build_model(tiny(block, resolution))
    x = torch.randn(2, 3, resolution, resolution)
    logits = model(x)
    assert logits.shape == (2, 10)
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    # The bias of GPSA's positional scores shifts a whole softmax row by one constant, which a
    # softmax ignores: its gradient is zero up to rounding (as in ConViT itself).
    shift_invariant = [n for n, _ in model.named_parameters() if n.endswith("attn.pos_proj.bias")]
    missing = [n for n, p in model.named_parameters()
               if n not in shift_invariant and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"
    for name in shift_invariant:
        assert model.get_parameter(name).grad.abs().max() < 1e-6, name


@pytest.mark.parametrize("block", ["C", "T", "A", "G"])
def test_loss_falls_on_a_fixed_batch(block):
    torch.manual_seed(0)
    model = build_model(tiny(block))
    # a learnable batch: the class is the channel carrying a positive offset
    y = torch.arange(16) % 3
    x = 0.5 * torch.randn(16, 3, 32, 32)
    x[torch.arange(16), y] += 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.85 * losses[0], losses


MIXED = [
    # (stem, stages, head): attention before convolution, downsampling A and G, patch stems
    (Stem("patch", 24, 4), (Stage("T", 1, 32, stride=2, head_size=16), Stage("C", 1, 48),
                            Stage("G", 1, 48, stride=1, head_size=16)), "pool"),
    (Stem("conv", 16), (Stage("G", 1, 32, stride=2, head_size=8, pos_embed=True),
                        Stage("A", 2, 32, stride=2, head_size=8, pos_embed=True),
                        Stage("C", 1, 64)), "pool"),
    (Stem("conv", 16), (Stage("C", 1, 16), Stage("T", 1, 32, head_size=16),
                        Stage("A", 1, 64, stride=1, head_size=16, pos_embed=True),
                        Stage("A", 1, 32, stride=1, head_size=8)), "token"),
    (Stem("patch", 32, 8), (Stage("A", 2, 32, stride=1, head_size=16, expansion=2),), "pool"),
]


@pytest.mark.parametrize("stem,stages,head", MIXED)
def test_any_legal_mix_builds_and_runs_at_two_resolutions(stem, stages, head):
    arch = Architecture(stem=stem, stages=stages, resolution=32, num_classes=5, head=head,
                        in_channels=1)
    model = build_model(arch)
    for side in (32, 64, 40):  # built at 32, also run at 64 and at 40 (odd sides after strides)
        out = model(torch.randn(2, 1, side, side))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()


def test_relative_attention_matches_explicit_softmax_with_bias():
    torch.manual_seed(0)
    attn = RelativeAttention(16, 16, heads=2, grid=(3, 4))
    with torch.no_grad():
        attn.bias_table.normal_()
    x = torch.randn(2, 12, 16)
    q, k, v = attn.qkv(x).reshape(2, 12, 3, 2, 8).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(8)
    # explicit bias: P[h, dy + H - 1, dx + W - 1] for the offset (query - key)
    bias = torch.empty(2, 12, 12)
    for i in range(12):
        for j in range(12):
            dy, dx = i // 4 - j // 4, i % 4 - j % 4
            bias[:, i, j] = attn.bias_table[:, dy + 2, dx + 3]
    expected = attn.proj(((logits + bias).softmax(-1) @ v).transpose(1, 2).reshape(2, 12, 16))
    torch.testing.assert_close(attn(x, (3, 4)), expected, atol=1e-5, rtol=1e-5)


def test_relative_bias_table_resizes_for_another_grid():
    torch.manual_seed(0)
    attn = RelativeAttention(16, 16, heads=2, grid=(4, 4))  # table 7x7
    with torch.no_grad():
        attn.bias_table.normal_()
    bias = attn.relative_bias((8, 8))  # table resized to 15x15
    assert bias.shape == (2, 64, 64)
    # offset 0 (the diagonal) maps onto the table centre, the largest offsets onto its corners
    torch.testing.assert_close(bias.diagonal(dim1=1, dim2=2), attn.bias_table[:, 3, 3, None].expand(2, 64))
    torch.testing.assert_close(bias[:, 63, 0], attn.bias_table[:, 6, 6])
    torch.testing.assert_close(bias[:, 0, 63], attn.bias_table[:, 0, 0])
    # built at 32, run at 64: the whole T model works and the table gets gradients
    model = build_model(tiny("T", 32))
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    tables = [m.bias_table for m in model.modules() if isinstance(m, RelativeAttention)]
    assert tables and all(t.grad is not None and t.grad.abs().sum() > 0 for t in tables)


def test_gate_values_readable_and_in_open_unit_interval():
    model = build_model(tiny("G"))
    gates = model.gate_values()
    assert len(gates) == 3  # one per G block
    assert all(0 < g < 1 for g in gates)
    assert gates[0] == pytest.approx(1 / (1 + math.exp(-1)))  # lambda starts at 1
    first = next(m for m in model.modules() if isinstance(m, GatedPositionalAttention))
    with torch.no_grad():
        first.gating.copy_(torch.tensor([-3.0, 3.0]))  # two heads
    assert model.gate_values()[0] == pytest.approx(0.5)
    assert build_model(tiny("T")).gate_values() == []


def test_gpsa_locality_init_attends_at_each_heads_offset():
    attn = GatedPositionalAttention(36, 36, heads=9)
    pos = attn.positional_attention((7, 7), torch.device("cpu"))  # (9, 49, 49)
    query = 3 * 7 + 3  # the centre patch
    for h, (dx, dy) in enumerate(head_offsets(9)):
        key = int(pos[h, query].argmax())
        assert (key % 7 - 3, key // 7 - 3) == (dx, dy)
    assert sorted(head_offsets(9)) == [(x, y) for x in (-1, 0, 1) for y in (-1, 0, 1)]
    for heads in (4, 16):  # even grids are centred too (ConViT): offsets sum to zero
        offsets = torch.tensor(head_offsets(heads))
        assert offsets.sum(0).tolist() == [0.0, 0.0] and len(set(head_offsets(heads))) == heads
    torch.testing.assert_close(pos.sum(-1), torch.ones(9, 49))
    torch.testing.assert_close(attn.v.weight, torch.eye(36))


def test_position_embedding_and_class_token():
    arch = tiny("A", 32)
    model = build_model(arch)
    stage = model.stages[0]
    assert stage.pos_embed.shape == (1, 8 * 8, 16) and stage.class_token.shape == (1, 1, 16)
    assert model.stages[1].class_token is None and model.stages[1].pos_embed is None
    resized = stage.position_embedding((16, 16))
    assert resized.shape == (1, 16 * 16, 16)
    torch.testing.assert_close(stage.position_embedding((8, 8)), stage.pos_embed)
    # the class token is token 0 and the head reads it: changing it changes the logits
    x = torch.randn(1, 3, 32, 32)
    before = model(x)
    with torch.no_grad():
        stage.class_token.add_(1.0)
    assert not torch.allclose(model(x), before)


@pytest.mark.parametrize("block", ["T", "G"])
def test_a_grid_first_seen_in_inference_mode_still_trains(block):
    # Grid tensors are cached per process; one made under inference_mode must not poison backward.
    model = build_model(tiny(block))
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, 48, 48))  # a grid no earlier test built
    model.train()
    model(torch.randn(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("block", ["T", "A", "G"])
def test_a_width_change_keeps_the_residual_streams_scale(block):
    # The projection on the identity branch carries every earlier stage's signal into the new
    # width: at ViT's std 0.02 it shrank the stream ~10x per width change, and a C-T-T-T at small
    # width stayed at chance. Its output must keep the input's scale.
    from search_spaces.blocks import GPSABlock, RelTransformerBlock, ViTBlock

    torch.manual_seed(0)
    make = {"T": lambda: RelTransformerBlock(48, 96, 16, (4, 4)),
            "A": lambda: ViTBlock(48, 96, 16), "G": lambda: GPSABlock(48, 96, 16)}[block]
    shortcut = make().shortcut
    x = torch.randn(8, 16, 48)
    ratio = float(shortcut(x).detach().std() / x.std())
    assert 0.5 < ratio < 2.0, ratio
