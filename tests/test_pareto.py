"""Pareto ranks against a brute-force definition of non-dominated sorting."""

import numpy as np
import pandas as pd
import pytest

from results.objectives import Objective, as_objectives
from results.pareto import pareto_front, pareto_ranks, rank_trials


def brute_force_ranks(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Peel fronts by the definition: a point is on the current front if no remaining point is at
    least as good everywhere and strictly better somewhere."""
    better_is_lower = np.array([d == "min" for d in directions])
    points = np.where(better_is_lower, values, -values)
    ranks = np.full(len(points), -1)
    remaining, rank = set(range(len(points))), 0
    while remaining:
        front = [i for i in remaining
                 if not any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i])
                            for j in remaining)]
        ranks[front] = rank
        remaining -= set(front)
        rank += 1
    return ranks


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_ranks_equal_brute_force_with_mixed_directions(k, kind):
    rng = np.random.default_rng(100 * k + len(kind))
    for case in range(40):
        n = int(rng.integers(1, 70))
        if kind == "ties":  # a coarse grid: many equal coordinates and exact duplicates
            values = rng.integers(0, 4, size=(n, k)).astype(float)
        else:
            values = rng.normal(size=(n, k))
        directions = list(rng.choice(["min", "max"], size=k))
        if case == 0:
            directions = ["min"] + ["max"] * (k - 1)  # always cover a mixed case
        got = pareto_ranks(values, directions)
        assert got.dtype.kind == "i"
        np.testing.assert_array_equal(got, brute_force_ranks(values, directions),
                                      err_msg=f"n={n} directions={directions}")


def test_duplicates_share_a_rank_and_ranks_are_contiguous():
    values = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [0.5, 3.0]])
    ranks = pareto_ranks(values, ["min", "min"])
    assert ranks[0] == ranks[1] == 0 and ranks[3] == 0 and ranks[2] == 1


def test_direction_flips_the_front():
    values = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert pareto_ranks(values, ["min", "min"]).tolist() == [0, 1]
    assert pareto_ranks(values, ["max", "max"]).tolist() == [1, 0]
    assert pareto_ranks(values, ["min", "max"]).tolist() == [0, 0]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        pareto_ranks(np.array([[1.0, np.nan]]), ["min", "min"])
    with pytest.raises(ValueError, match="direction"):
        pareto_ranks(np.zeros((2, 2)), ["min", "up"])
    with pytest.raises(ValueError, match="2 directions for 3"):
        pareto_ranks(np.zeros((2, 3)), ["min", "max"])
    with pytest.raises(ValueError, match="direction"):
        as_objectives([{"name": "gap", "direction": "lowest"}])


def test_objectives_parse_from_every_accepted_form():
    parsed = as_objectives([Objective("a", "max"), {"name": "b"}, ("c", "max"), "d:max"])
    assert parsed == [Objective("a", "max"), Objective("b", "min"), Objective("c", "max"),
                      Objective("d", "max")]


def test_only_completed_trials_rank():
    rng = np.random.default_rng(7)
    n = 40
    table = pd.DataFrame({
        "trial_id": [f"t{i}" for i in range(n)],
        "status": rng.choice(["completed", "completed", "pruned", "failed", "running"], size=n),
        "obj_gap": rng.uniform(0, 1, n), "obj_fit_full": rng.uniform(0, 1, n)})
    # Non-completed trials with unbeatable values: they must neither rank nor push others down.
    others = table["status"] != "completed"
    table.loc[others, ["obj_gap", "obj_fit_full"]] = [-5.0, 5.0]
    objectives = [{"name": "gap", "direction": "min"}, {"name": "fit_full", "direction": "max"}]
    ranks = rank_trials(table, objectives)
    assert ranks[others].isna().all()
    done = ~others
    expected = brute_force_ranks(table.loc[done, ["obj_gap", "obj_fit_full"]].to_numpy(),
                                 ["min", "max"])
    np.testing.assert_array_equal(ranks[done].to_numpy(int), expected)
    front = pareto_front(table, objectives)
    assert set(front["trial_id"]) == set(table.loc[done].loc[expected == 0, "trial_id"])


def test_falls_back_to_metric_columns_and_skips_missing_values():
    table = pd.DataFrame({"status": ["completed"] * 3, "val_acc": [0.9, np.nan, 0.8],
                          "flops": [10.0, 1.0, 5.0]})
    ranks = rank_trials(table, [("val_acc", "max"), ("flops", "min")])
    assert np.isnan(ranks[1]) and ranks[0] == 0 and ranks[2] == 0
    with pytest.raises(ValueError, match="latency"):
        rank_trials(table, [("latency", "min")])
