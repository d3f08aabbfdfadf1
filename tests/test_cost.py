"""Cost accounting: attention matmuls counted, nothing silently dropped, cached, budgets explain."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from evaluators.cost import Budget, BudgetError, Cost, count_cost, count_model_cost, flop_analysis
from search_spaces.architecture import Architecture, ArchitectureError, Stage, Stem
from search_spaces.blocks import GPSABlock, RelTransformerBlock, ViTBlock
from search_spaces.model import build_model
from search_spaces.presets import get_preset

torch.set_num_threads(1)


class OnGrid(nn.Module):
    """One attention block on a fixed grid, so fvcore can trace it with a single tensor input."""

    def __init__(self, block: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.block, self.grid = block, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.grid)[0]


C, HEAD, GRID = 64, 16, (6, 6)
N = GRID[0] * GRID[1]
DENSE = 12 * N * C * C  # qkv 3NC^2 + proj NC^2 + FFN 8NC^2
NORMS = 2 * 5 * N * C  # fvcore: 5 per element for an affine LayerNorm
BLOCKS = {
    "T": lambda: RelTransformerBlock(C, C, HEAD, GRID),
    "A": lambda: ViTBlock(C, C, HEAD),
    "G": lambda: GPSABlock(C, C, HEAD),
}


@pytest.mark.parametrize("block", ["T", "A", "G"])
def test_attention_block_flops_include_attention_matmuls(block):
    model = OnGrid(BLOCKS[block](), GRID).eval()
    x = torch.randn(1, N, C)
    analysis = flop_analysis(model, x)
    total = analysis.total()
    assert not analysis.unsupported_ops()
    attention = 2 * N * N * C  # QK^T and AV
    # T and A go through SDPA; G mixes its content and positional maps first and multiplies V
    # once (ConViT), as two plain matmuls
    op = "matmul" if block == "G" else "scaled_dot_product_attention"
    assert analysis.by_operator()[op] == attention
    expected = DENSE + NORMS + attention
    if block == "G":  # plus the positional scores v_pos . r_ij: N^2 x 3 per head
        heads = C // HEAD
        expected += N * N * 3 * heads
    assert total == expected
    # and the whole-model path agrees
    assert count_model_cost(model, (1, N, C)) == Cost(sum(p.numel() for p in model.parameters()), expected)


def test_fvcore_alone_would_miss_the_attention():
    from fvcore.nn import FlopCountAnalysis  # after evaluators.cost, which quiets fvcore's import

    model = OnGrid(ViTBlock(C, C, HEAD), GRID).eval()
    plain = FlopCountAnalysis(model, torch.randn(1, N, C))
    plain.unsupported_ops_warnings(False)
    plain.total()
    assert "aten::scaled_dot_product_attention" in plain.unsupported_ops()
    assert count_model_cost(model, (1, N, C)).flops - plain.total() == 2 * N * N * C


SMALL = {
    **{name: get_preset(name, resolution=32, num_classes=10)
       for name in ("coatnet-0", "C-C-C-C", "C-T-T-T", "ViT_REL", "deit-ti", "convit-ti")},
    "mixed": Architecture(stem=Stem("patch", 24, 4), resolution=32, num_classes=10, stages=(
        Stage("T", 1, 32, head_size=16), Stage("C", 1, 48),
        Stage("G", 1, 48, stride=1, head_size=16, pos_embed=True),
        Stage("A", 1, 48, head_size=16, pos_embed=True))),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_no_op_is_silently_uncounted(name):
    arch = SMALL[name]
    model = build_model(arch).eval()
    for side in (arch.resolution, 2 * arch.resolution):  # also the resized-table/embedding path
        analysis = flop_analysis(model, torch.zeros(1, 3, side, side))
        assert analysis.total() > 0
        assert dict(analysis.unsupported_ops()) == {}, name
    from fvcore.nn import parameter_count  # after evaluators.cost, which quiets fvcore's import

    cost = count_cost(arch)
    assert cost.params == parameter_count(model)[""] == sum(p.numel() for p in model.parameters())


def test_count_is_eval_mode_with_grad_and_restores_mode():
    model = build_model(SMALL["mixed"])
    model.train()
    first = count_model_cost(model, (1, 3, 32, 32))
    assert model.training
    with torch.no_grad():
        assert count_model_cost(model, (1, 3, 32, 32)) == first
    assert count_cost(SMALL["mixed"]) == first
    # BatchNorm priced as at inference (2 per element), not training statistics (5 per element)
    bn = nn.Sequential(nn.BatchNorm2d(4))
    assert count_model_cost(bn, (1, 4, 8, 8)).flops == 2 * 4 * 8 * 8


def test_cost_is_cached_by_architecture_identity():
    arch = get_preset("deit-ti", resolution=32, num_classes=10)
    first = count_cost(arch)
    twin = Architecture.from_yaml(arch.to_yaml())  # a different object, the same arch_id
    hits = count_cost.cache_info().hits
    start = time.perf_counter()
    again = count_cost(twin)
    elapsed = time.perf_counter() - start
    assert again is first and count_cost.cache_info().hits == hits + 1
    assert elapsed < 1e-3
    assert count_cost(arch.replace(num_classes=11)).params == first.params + 192 + 1


def test_flops_grow_with_resolution_and_match_scaling():
    arch = get_preset("deit-ti", resolution=32, num_classes=10)
    small, large = count_cost(arch), count_cost(arch.replace(resolution=64))
    assert large.params > small.params  # the position embedding grows with the grid
    assert large.flops > 3 * small.flops


TINY = get_preset("deit-ti", resolution=32, num_classes=10)


def test_budget_fits_and_explains():
    cost = count_cost(TINY)
    assert Budget(max_flops=cost.flops, max_params=cost.params).check(TINY).fits
    check = Budget(max_flops=cost.flops - 1, max_params=cost.params - 1).check(TINY)
    assert not check.fits and not check and check.cost == cost and len(check.reasons) == 2
    assert check.reasons[0].startswith("FLOPs ") and " > budget " in check.reasons[0]
    assert check.reasons[1].startswith("params ")
    only_flops = Budget(max_flops=10**6).check(TINY)
    assert only_flops.reasons == (f"FLOPs {cost.flops / 1e6:.2f}M > budget 1.00M at 32x32",)


def test_budget_prices_at_its_resolution():
    budget = Budget(max_flops=10**12, resolution=64)
    check = budget.check(TINY)
    assert check.fits and check.resolution == 64
    assert check.cost == count_cost(TINY.replace(resolution=64)) != count_cost(TINY)
    with pytest.raises(ArchitectureError) as err:
        Budget(max_params=10**9, resolution=40).check(TINY)  # 40 is not a multiple of 16
    assert err.value.field == "resolution"


@pytest.mark.parametrize("kwargs,field", [
    ({}, "max_flops"),
    ({"resolution": 224}, "max_flops"),
    ({"max_flops": 0}, "max_flops"),
    ({"max_params": -5}, "max_params"),
    ({"max_flops": 1e9, "resolution": 0}, "resolution"),
    ({"max_params": "10M"}, "max_params"),
    ({"max_params": True}, "max_params"),
])
def test_bad_budgets_name_the_field(kwargs, field):
    with pytest.raises(BudgetError) as err:
        Budget(**kwargs)
    assert err.value.field == field and isinstance(err.value, ValueError)
    assert Budget(max_flops=1e9).max_flops == 10**9  # a whole float is accepted as an int
