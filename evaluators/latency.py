"""Measured inference latency: what one image costs in wall time on the device a model runs on,
the objective FLOPs only approximate (depthwise convs and attention differ a lot per FLOP)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], warmup: int = 3,
                    repeats: int = 10) -> float:
    """Median milliseconds of one eval-mode forward pass of a batch of `input_shape`, on the
    model's device. The model's train/eval mode is restored afterwards."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.ones(input_shape, device=device)  # not random: leave the trial's RNG alone
    was_training = model.training
    model.eval()
    try:
        times = []
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000.0 * statistics.median(times)
