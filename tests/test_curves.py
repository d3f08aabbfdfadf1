"""Readings at a matched training loss, on hand-made curves."""

from __future__ import annotations

import math

import pytest

from evaluators.curves import common_level, value_at_loss


def test_reading_interpolates_between_the_points_around_the_first_crossing():
    losses = [2.0, 1.0, 0.4, 0.1]
    accs = [0.2, 0.5, 0.8, 0.9]
    # level 0.7 lies between 1.0 (acc 0.5) and 0.4 (acc 0.8): halfway -> 0.65
    assert value_at_loss(losses, accs, 0.7) == pytest.approx(0.65)
    assert value_at_loss(losses, accs, 1.0) == pytest.approx(0.5)  # exactly on a point
    assert value_at_loss(losses, accs, 0.1) == pytest.approx(0.9)


def test_first_point_below_the_level_is_its_own_reading():
    assert value_at_loss([0.3, 0.2], [0.7, 0.8], 0.5) == pytest.approx(0.7)


def test_a_curve_that_never_reaches_the_level_has_no_reading():
    assert math.isnan(value_at_loss([2.3, 1.9, 1.5], [0.1, 0.3, 0.4], 1.0))
    assert math.isnan(value_at_loss([], [], 1.0))


def test_the_first_crossing_counts_even_if_the_loss_rises_again():
    # reaches 0.5 between points 1 and 2 (acc 0.4 -> 0.6), rises, reaches it again later
    assert value_at_loss([1.0, 0.8, 0.2, 0.9, 0.3], [0.3, 0.4, 0.6, 0.5, 0.9], 0.5) == \
        pytest.approx(0.4 + (0.8 - 0.5) / (0.8 - 0.2) * 0.2)


def test_lengths_must_match():
    with pytest.raises(ValueError, match="3 losses but 2 values"):
        value_at_loss([1, 2, 3], [1, 2], 1.0)


def test_common_level_is_the_lowest_loss_every_run_reaches():
    assert common_level([0.05, 0.3, 0.12]) == 0.3
    assert math.isnan(common_level([0.1, math.nan]))
    assert math.isnan(common_level([]))
