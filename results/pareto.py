"""Non-dominated sorting: Pareto ranks for any number of objectives, each minimised or maximised.

Rank 0 is the first front (no other point dominates it), rank 1 the front once rank 0 is removed,
and so on. A point dominates another when it is at least as good on every objective and strictly
better on one; identical points never dominate each other, so duplicates share a rank.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from results.objectives import as_objectives


def pareto_ranks(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Pareto rank of each row of `values` (n, k) under per-column directions ('min'/'max').

    Returns an int array of length n; 0 is the first front. NaN values are rejected.
    """
    points = np.asarray(values, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"values must be a 2-D array (n, k), got shape {points.shape}")
    if len(directions) != points.shape[1]:
        raise ValueError(f"got {len(directions)} directions for {points.shape[1]} objectives")
    for d in directions:
        if d not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {d!r}")
    if np.isnan(points).any():
        raise ValueError("values contain NaN; drop those rows before ranking")
    n, k = points.shape
    if n == 0:
        return np.zeros(0, dtype=int)
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    points = points * signs  # everything minimised from here on
    # Duplicates share a rank: rank the unique points, then map back.
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if k == 1:
        ranks = np.searchsorted(np.unique(unique[:, 0]), unique[:, 0])
    elif k == 2:
        ranks = _ranks_2d(unique)
    else:
        ranks = _ranks_sorted(unique)
    return ranks[inverse].astype(int)


def _ranks_2d(points: np.ndarray) -> np.ndarray:
    """O(n log n) for two minimised objectives over unique points.

    In lexicographic (x, y) order, every earlier point with y <= p.y dominates p. The smallest y of
    each front is non-decreasing with the front index, so p's rank is the number of fronts whose
    smallest y is <= p.y.
    """
    order = np.lexsort((points[:, 1], points[:, 0]))
    front_min_y: list[float] = []
    ranks = np.empty(len(points), dtype=int)
    for i in order:
        y = points[i, 1]
        rank = bisect.bisect_right(front_min_y, y)
        if rank == len(front_min_y):
            front_min_y.append(y)
        else:
            front_min_y[rank] = y
        ranks[i] = rank
    return ranks


def _ranks_sorted(points: np.ndarray) -> np.ndarray:
    """Any k, over unique points: in lexicographic order every dominator of p comes before p, and
    every earlier point that is <= p everywhere dominates it, so rank(p) = 1 + the largest rank of
    those (the longest dominance chain ending at p). O(n^2 k) time, O(n k) memory."""
    order = np.lexsort(points.T[::-1])
    ordered = points[order]
    ranks_ordered = np.zeros(len(points), dtype=int)
    for i in range(1, len(ordered)):
        dominators = (ordered[:i] <= ordered[i]).all(axis=1)
        if dominators.any():
            ranks_ordered[i] = ranks_ordered[:i][dominators].max() + 1
    ranks = np.empty(len(points), dtype=int)
    ranks[order] = ranks_ordered
    return ranks


def hypervolume(values: np.ndarray | Sequence[Sequence[float]], directions: Sequence[str],
                reference: Sequence[float]) -> float:
    """The volume dominated by the points of `values` (n, k) and bounded by `reference`, under
    per-column directions: the measure of the region every point of which is at least as bad as
    some point and at least as good as the reference on every objective. Points not better than
    the reference on every objective add nothing. Exact, by slicing along the last objective
    (fine for the fronts of a search: a few dozen points, two or three objectives)."""
    points = np.asarray(values, dtype=float).reshape(-1, len(directions))
    if np.isnan(points).any():
        raise ValueError("values contain NaN; drop those rows first")
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    ref = np.asarray(reference, dtype=float) * signs
    points = points * signs  # minimised from here on
    points = points[(points < ref).all(axis=1)]
    if len(points) == 0:
        return 0.0
    return float(_volume(points[pareto_ranks(points, ["min"] * len(ref)) == 0], ref))


def _volume(points: np.ndarray, ref: np.ndarray) -> float:
    """Dominated volume of minimised points, all strictly better than `ref`."""
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    order = np.argsort(points[:, -1], kind="stable")
    points, volume = points[order], 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else ref[-1]
        if upper > points[i, -1]:  # the slab where exactly points[:i+1] reach
            volume += (upper - points[i, -1]) * _volume(points[:i + 1, :-1], ref[:-1])
    return volume


def objective_column(table: pd.DataFrame, name: str) -> str:
    """The column holding objective `name`: the value the search used (`obj_<name>`) if recorded,
    else a metric or cost column of that name."""
    for column in (f"obj_{name}", name):
        if column in table.columns and table[column].notna().any():
            return column
    raise ValueError(f"objective {name!r}: no column 'obj_{name}' or '{name}' with values "
                     f"(columns: {sorted(map(str, table.columns))})")


def rank_trials(table: pd.DataFrame, objectives: Iterable) -> pd.Series:
    """Pareto rank per row of a results table; only completed trials with every objective
    present are ranked, the rest (pruned, failed, diverged, rejected, running) get NaN."""
    objectives = as_objectives(objectives)
    columns = [objective_column(table, o.name) for o in objectives]
    values = table[columns].apply(pd.to_numeric, errors="coerce")
    eligible = values.notna().all(axis=1)
    if "status" in table.columns:
        eligible &= table["status"] == "completed"
    ranks = pd.Series(np.nan, index=table.index, name="pareto_rank")
    if eligible.any():
        ranks[eligible] = pareto_ranks(values[eligible].to_numpy(float),
                                       [o.direction for o in objectives])
    return ranks


def pareto_front(table: pd.DataFrame, objectives: Iterable) -> pd.DataFrame:
    """Rows of `table` on the first front of `objectives` (completed trials only)."""
    return table[rank_trials(table, objectives) == 0]
