"""Trial memory priced before training (evaluators.memory): checked against real steps measured in
fresh processes, on every block type at two resolutions; sizes in words."""

from __future__ import annotations


import pytest
import torch

from evaluators.memory import (EVAL_FLOOR_BYTES, MiB, RUNTIME_BYTES, format_bytes,
                               measure_in_fresh_process, parse_bytes, price_memory)
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.fields import FieldError

BATCH, EVAL_CHUNK = 32, 128


def architectures(resolution: int) -> dict[str, Architecture]:
    """Small networks of each block type (C, T, A, G) and a mix, 3 channels, 10 classes."""
    io = dict(resolution=resolution, in_channels=3, num_classes=10)
    return {
        "C": Architecture(Stem("conv", 16), (Stage("C", 2, 24, stride=1), Stage("C", 1, 48)), **io),
        "T": Architecture(Stem("patch", 32, 4), (Stage("T", 2, 64, stride=1, head_size=16),), **io),
        "A": Architecture(Stem("patch", 48, 4), (Stage("A", 2, 48, stride=1, head_size=16,
                                                       pos_embed=True),), head="token", **io),
        "G": Architecture(Stem("patch", 48, 4), (Stage("G", 2, 48, stride=1, head_size=16,
                                                       pos_embed=True),
                                                 Stage("A", 1, 48, stride=1, head_size=16,
                                                       qkv_bias=False)), head="token", **io),
        "C-T": Architecture(Stem("conv", 16), (Stage("C", 1, 24, stride=1),
                                               Stage("T", 2, 48, head_size=16)), **io),
    }


# Tolerance: the trace counts tensor storages only. A real CPU process also holds allocator slack
# (glibc's arenas for the many small tensors), oneDNN's reorder buffers and per-shape kernel
# caches; and a freed storage may come back to the kernel a little later than the trace frees it.
# Measured on this machine, 2026-12-03: within 8% at 224 px and within 27 MiB at 32 px (where the
# transients are tens of MiB). So: within 15% of the measured peak, plus 48 MiB.
RELATIVE, ABSOLUTE = 0.15, 48 * MiB


@pytest.mark.slow  # 20 fresh processes: about 3 minutes on 2 busy cores
@pytest.mark.parametrize("resolution", [32, 96])
def test_priced_memory_matches_a_real_step(resolution):
    for name, arch in architectures(resolution).items():
        price = price_memory(arch, BATCH, EVAL_CHUNK, "cpu")
        for term in ("train_step_bytes", "eval_chunk_bytes"):
            priced, actual = getattr(price, term), measure_in_fresh_process(arch, BATCH, price.eval_chunk, term)
            assert abs(priced - actual) <= RELATIVE * actual + ABSOLUTE, (
                f"{name} at {resolution} px: {term} priced {format_bytes(priced)}, "
                f"measured {format_bytes(actual)}")


def test_state_is_both_models_with_gradients_and_adamw_moments():
    arch = architectures(32)["C-T"]
    from search_spaces.model import build_model

    model = build_model(arch)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    price = price_memory(arch, BATCH, EVAL_CHUNK, "cpu")
    steps = 4 * len(list(model.parameters()))  # AdamW's step count: a float32 scalar per tensor
    # weights, gradients, exp_avg, exp_avg_sq, step; buffers
    assert price.state_bytes == 2 * (4 * params + steps + buffers)
    assert price.runtime_bytes == RUNTIME_BYTES["cpu"]
    assert price.peak_bytes == (price.runtime_bytes + price.state_bytes
                                + max(price.train_step_bytes, price.eval_chunk_bytes))


def test_memory_grows_with_batch_and_resolution_and_is_cached():
    small = architectures(32)["C"]
    assert price_memory(small, 64, 128).train_step_bytes > price_memory(small, 32, 128).train_step_bytes
    large = small.replace(resolution=64)
    assert price_memory(large, 32, 128).train_step_bytes > price_memory(small, 32, 128).train_step_bytes
    assert price_memory(small, 32, 128) is price_memory(small, 32, 128)


def test_evaluation_chunk_follows_memory():
    # at 32 px 512 images fit the floor: the chunk is the configured one
    small = price_memory(architectures(32)["C"], BATCH, 512)
    assert small.eval_chunk == 512 and small.eval_chunk_bytes <= EVAL_FLOOR_BYTES
    # at 192 px 512 images would hold far more than a training step: the chunk shrinks to fit it
    arch = architectures(192)["C"]
    price = price_memory(arch, BATCH, 512)
    assert BATCH <= price.eval_chunk < 512
    assert price.eval_chunk_bytes <= max(price.train_step_bytes, EVAL_FLOOR_BYTES)
    bigger = price_memory(arch, BATCH, price.eval_chunk + 1)  # one more image would not fit
    assert bigger.eval_chunk == price.eval_chunk


def test_pricing_leaves_the_random_stream_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    price_memory(architectures(32)["A"], 8, 16)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("text, size", [("4GiB", 4 * 2 ** 30), ("512 MiB", 512 * 2 ** 20),
                                        ("8G", 8 * 10 ** 9), ("1.5GiB", 3 * 2 ** 29),
                                        (1024, 1024), ("100", 100)])
def test_sizes_in_words(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("bad", ["4 gigs", "GiB", "-1GiB", 0, -5, 1.5, True, "", None, [4]])
def test_malformed_sizes_name_the_field(bad):
    with pytest.raises(FieldError, match="budget.max_memory"):
        parse_bytes(bad, "budget.max_memory")


def test_pricing_twice_and_then_training_the_same_grid():
    """Blocks cache constant tensors per grid (`gpsa.relative_positions`, `relative_attention.
    relative_index`). A grid first met while pricing must not leave a fake tensor in those caches:
    neither a second pricing (another fake mode) nor real training may receive it."""
    from search_spaces.blocks.gpsa import relative_positions
    from search_spaces.model import build_model

    arch = architectures(40)["G"]  # a 10x10 grid no other test uses
    relative_positions.cache_clear()
    first = price_memory(arch, 4, 8)
    price_memory.cache_clear()
    assert price_memory(arch, 4, 8) == first  # a new trace, a new fake mode
    cached = relative_positions(10, 10)
    assert type(cached) is torch.Tensor and cached.sum().item() > 0  # real, with real values
    loss = build_model(arch)(torch.randn(2, 3, 40, 40)).sum()
    loss.backward()
    assert torch.isfinite(loss)
