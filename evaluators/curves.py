"""Readings taken off a training curve at a matched training loss: the CoAtNet paper compares the
generalization of layouts by their evaluation accuracy *at the same training loss* (its Figure 2
plots one against the other), because a raw gap rewards networks that never fit.

A curve is the sequence of (training loss, value) pairs measured after each evaluation of one run.
`value_at_loss` reads the value where the curve first reaches a training-loss level, interpolating
linearly in training loss between the two measurements around that crossing; a curve that never
gets down to the level has no reading (NaN).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def value_at_loss(train_losses: Sequence[float], values: Sequence[float], level: float) -> float:
    """The value at the first point where training loss comes down to `level`.

    Between the last measurement above the level and the first at or below it, the value is
    interpolated linearly in training loss; if the very first measurement is already at or below
    the level, its value is the reading. NaN when no measurement reaches the level (or the level
    or the values there are not finite).
    """
    if len(train_losses) != len(values):
        raise ValueError(f"{len(train_losses)} losses but {len(values)} values")
    if not math.isfinite(level):
        return math.nan
    for i, loss in enumerate(train_losses):
        if not math.isfinite(loss) or loss > level:
            continue
        if i == 0 or not math.isfinite(train_losses[i - 1]):
            return float(values[i])
        above, below = train_losses[i - 1], loss
        weight = (above - level) / (above - below) if above > below else 1.0
        return float(values[i - 1] + weight * (values[i] - values[i - 1]))
    return math.nan


def common_level(lowest_losses: Iterable[float]) -> float:
    """The lowest training loss every run reaches: the largest of the runs' lowest losses (NaN if
    a run has none). Comparing at this level gives every run a reading."""
    lowest = list(lowest_losses)
    if not lowest or not all(math.isfinite(v) for v in lowest):
        return math.nan
    return max(lowest)
