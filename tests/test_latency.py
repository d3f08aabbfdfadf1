"""Measured latency: real forward passes, ordered by the work they do, mode restored."""

import math

from torch import nn

from evaluators.latency import measure_latency
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.model import build_model


def test_latency_grows_with_the_work_and_restores_the_mode():
    small = build_model(Architecture(Stem("conv", 8), (Stage("C", 1, 8),), resolution=16,
                                     in_channels=1, num_classes=10))
    # ~300x the multiply-adds of `small` at 4x the side length
    large = build_model(Architecture(Stem("conv", 32), (Stage("C", 3, 64, stride=1),), resolution=64,
                                     in_channels=1, num_classes=10))
    large.train()
    fast = measure_latency(small, (1, 1, 16, 16), repeats=5)
    slow = measure_latency(large, (1, 1, 64, 64), repeats=5)
    assert math.isfinite(fast) and fast > 0
    assert slow > 3 * fast
    assert large.training  # eval only while measuring


def test_latency_of_a_model_without_parameters_runs_on_the_cpu():
    assert measure_latency(nn.Identity(), (1, 3, 8, 8), warmup=0, repeats=3) >= 0
