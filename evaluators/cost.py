"""What a network costs: parameters and FLOPs (fvcore multiply-adds), and budgets on them (and
on a trial's memory, priced by `evaluators.memory`).

FLOPs are counted by fvcore's FlopCountAnalysis on one input of batch 1, in eval mode with grad
enabled. fvcore has no handler for `aten::scaled_dot_product_attention` and would count it as
zero; we register one (QK^T and AV). Elementwise ops (GELU, softmax, add, pooling, ...) count
zero by fvcore's convention; we declare them so fvcore does not warn about them.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from math import isfinite, prod
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore.nn scripts its focal loss at import: a deprecation warning
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis

from evaluators.memory import MemoryPrice, MemorySettings, format_bytes
from search_spaces.architecture import Architecture
from search_spaces.fields import FieldError
from search_spaces.model import build_model

# fvcore logs a warning per uncounted op and per uncalled module; ours are declared below.
logging.getLogger("fvcore.nn.jit_analysis").setLevel(logging.ERROR)

# Ops our blocks call that do no multiply-adds worth counting (elementwise by convention).
ELEMENTWISE_OPS = (
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::gelu", "aten::sigmoid", "aten::softmax", "aten::mean", "aten::sum", "aten::avg_pool2d",
    "aten::expand_as", "aten::repeat", "aten::pow",
    # constant index arithmetic traced when a grid is first seen (relative offsets)
    "aten::meshgrid", "aten::stack",
)


def _shape(value: Any) -> list[int]:
    return value.type().sizes()


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, ...):
    QK^T (B*h*N*M*d) plus AV (B*h*N*M*dv) multiply-adds; the additive mask and the scale are
    elementwise and count zero."""
    q, k, v = (_shape(x) for x in inputs[:3])
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    return prod(batch) * n * m * (d + dv)


EXTRA_HANDLES = {"aten::scaled_dot_product_attention": sdpa_flop_jit}


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-adds of one forward pass of one image."""

    params: int
    flops: int

    def __str__(self) -> str:
        return f"params {human(self.params)}, FLOPs {human(self.flops)}"


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def flop_analysis(model: nn.Module, inputs: torch.Tensor) -> FlopCountAnalysis:
    """fvcore's analysis with our handles: SDPA counted, elementwise ops declared zero, quiet."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**EXTRA_HANDLES)
    analysis.set_op_handle(**{op: None for op in ELEMENTWISE_OPS})
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def count_model_cost(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Cost of any module on one input of `input_shape` (batch 1 included, e.g. (1, 3, 224, 224))."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.enable_grad():
            flops = flop_analysis(model, torch.zeros(input_shape, device=device)).total()
    finally:
        model.train(was_training)
    return Cost(params=sum(p.numel() for p in model.parameters()), flops=int(flops))


@lru_cache(maxsize=None)
def count_cost(arch: Architecture) -> Cost:
    """Cost of `arch` at its own resolution, cached: equal architectures (the same arch_id) are
    priced once per process; a repeat costs a dict lookup (microseconds)."""
    with torch.random.fork_rng():  # pricing must not move the caller's random stream
        model = build_model(arch)
    return count_model_cost(model, (1, arch.in_channels, arch.resolution, arch.resolution))


class BudgetError(FieldError):
    """A malformed budget; `field` names the offending field."""

    prefix = "budget."


@dataclass(frozen=True)
class BudgetCheck:
    """Whether an architecture fits a budget, why not, and what it costs (at `resolution`);
    `memory`: its trial's memory when the budget prices memory."""

    fits: bool
    reasons: tuple[str, ...]
    cost: Cost
    resolution: int = 0
    memory: MemoryPrice | None = None

    def __bool__(self) -> bool:
        return self.fits


@dataclass(frozen=True)
class Budget:
    """Upper limits on FLOPs, parameters and/or a trial's peak memory in bytes, priced at
    `resolution` (the architecture's own resolution when None). At least one limit is required;
    limits must be positive. `memory`: how trials train (batch sizes, device kind): with it every
    check prices the trial's memory (and `max_memory` needs it)."""

    max_flops: int | None = None
    max_params: int | None = None
    resolution: int | None = None
    max_memory: int | None = None
    memory: MemorySettings | None = None

    def __post_init__(self) -> None:
        for name in ("max_flops", "max_params", "resolution", "max_memory"):
            value = getattr(self, name)
            if value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not isfinite(value) or value != int(value)):
                raise BudgetError(name, f"expected a whole number, got {value!r}")
            if value <= 0:
                raise BudgetError(name, f"must be positive, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.max_flops is None and self.max_params is None and self.max_memory is None \
                and self.memory is None:  # memory settings alone: memory priced, not limited
            raise BudgetError("max_flops", "a budget needs max_flops, max_params and/or max_memory")
        if self.max_memory is not None and self.memory is None:
            raise BudgetError("max_memory", "a memory budget needs the trials' memory settings "
                                            "(batch sizes, device kind) to price against")

    def price(self, arch: Architecture) -> Architecture:
        """The architecture as priced: at the budget's resolution if it states one."""
        if self.resolution is None or self.resolution == arch.resolution:
            return arch
        return arch.replace(resolution=self.resolution)

    def check(self, arch: Architecture) -> BudgetCheck:
        priced = self.price(arch)
        cost = count_cost(priced)
        reasons = []
        if self.max_flops is not None and cost.flops > self.max_flops:
            reasons.append(f"FLOPs {human(cost.flops)} > budget {human(self.max_flops)}"
                           f" at {priced.resolution}x{priced.resolution}")
        if self.max_params is not None and cost.params > self.max_params:
            reasons.append(f"params {human(cost.params)} > budget {human(self.max_params)}")
        memory = self.memory.price(priced) if self.memory is not None else None
        if self.max_memory is not None and memory.peak_bytes > self.max_memory:
            reasons.append(f"memory {format_bytes(memory.peak_bytes)} > budget "
                           f"{format_bytes(self.max_memory)} (training step "
                           f"{format_bytes(memory.train_step_bytes)} at batch {memory.batch_size}, "
                           f"{priced.resolution}x{priced.resolution}): lower train.batch_size or "
                           "trial.resolution, or raise budget.max_memory")
        return BudgetCheck(fits=not reasons, reasons=tuple(reasons), cost=cost,
                           resolution=priced.resolution, memory=memory)
