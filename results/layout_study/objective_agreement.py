"""Which readings a search trial can take within its own budget rank the layouts like the study's
validated readings (item 3 of the fit protocol: the search's objectives follow the study).

Each candidate is a column of the cell table (`results.layout_study.readings`) or a zero-cost
proxy (`proxy_<name>`, computed at initialisation), with the direction in which it is better and
the validated reading it stands for. Its score per layout is averaged over seeds, then over the
sizes a trial would read it at (the real sizes for generalization; the largest size for capacity,
the full real set for `fit_short` as well), and compared with the validated ranking and with the
paper's by Kendall's tau-b (ties allowed, as in `rankings.kendall_tau_b`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from results.layout_study.rankings import layout_scores, tau_against_paper, tau_between

GENERALIZATION, CAPACITY = "generalization", "capacity"
PROXY_PREFIX = "proxy_"


@dataclass(frozen=True)
class Candidate:
    """A reading a trial can take alone: its `column`, the validated reading it `stands_for`,
    `higher_is_better` (a gap is better small), and `objective`: whether a trial reports it as a
    metric a search can optimise (a zero-cost proxy is known before training: a filter, not an
    objective)."""

    column: str
    stands_for: str
    higher_is_better: bool = True
    objective: bool = True


def candidates(columns: Sequence[str]) -> list[Candidate]:
    """The candidates a cell table with these columns offers."""
    out = [Candidate(c, GENERALIZATION) for c in columns if c.startswith("short_val_acc_at_loss_")]
    out += [Candidate("val_acc_short", GENERALIZATION),
            Candidate("gap_short", GENERALIZATION, higher_is_better=False),
            Candidate("gap_acc_short", GENERALIZATION, higher_is_better=False),
            Candidate("fit_short", CAPACITY)]
    for column in columns:
        if column.startswith(PROXY_PREFIX):
            out += [Candidate(column, GENERALIZATION, objective=False),
                    Candidate(column, CAPACITY, objective=False)]
    return [c for c in out if c.column in columns]


def objective_agreement(table: pd.DataFrame, ranks: Mapping[str, Any]) -> dict[str, Any]:
    """What rankings.json holds under `objective_agreement` and `best_objectives`, from a cell
    table and the study's rankings (`results.layout_study.rankings.rankings`)."""
    rows = agreement_table(table, {GENERALIZATION: ranks[GENERALIZATION]["scores"],
                                   CAPACITY: ranks[CAPACITY]["scores"]},
                           ranks[CAPACITY]["real_sizes"], ranks[CAPACITY]["size"])
    return {"objective_agreement": rows, "best_objectives": best_readings(rows)}


def agreement_table(table: pd.DataFrame, validated: Mapping[str, Mapping[str, float]],
                    real_sizes: Sequence[str], largest: str) -> list[dict[str, Any]]:
    """One row per candidate: tau-b against the validated reading it stands for
    (`validated[stands_for]`: layout -> score) and against the paper, and how many completed cells
    have no value (e.g. never reached the level within the budget). Best-agreeing first within
    each validated reading."""
    done = table[table["status"] == "completed"]
    rows = []
    for candidate in candidates(list(table.columns)):
        sizes = list(real_sizes) if candidate.stands_for == GENERALIZATION else [largest]
        sign = 1.0 if candidate.higher_is_better else -1.0
        scores = {layout: sign * value
                  for layout, value in layout_scores(done, candidate.column, sizes).items()}
        rows.append({
            "reading": candidate.column, "stands_for": candidate.stands_for,
            "higher_is_better": candidate.higher_is_better, "objective": candidate.objective,
            "sizes": sizes,
            "scores": scores,
            "missing": int(done.loc[done["size"].isin(sizes), candidate.column].isna().sum()),
            "tau_b_vs_validated": tau_between(scores, validated[candidate.stands_for]),
            "tau_b_vs_paper": tau_against_paper(scores, candidate.stands_for)})
    order = {GENERALIZATION: 0, CAPACITY: 1}
    return sorted(rows, key=lambda r: (order[r["stands_for"]], -_finite(r["tau_b_vs_validated"]),
                                       r["missing"]))


def best_readings(rows: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """The best-agreeing objective (a proxy is not one) for each validated reading (ties: fewer
    missing values, then the table's order); None when no candidate has a finite tau-b."""
    best: dict[str, str | None] = {GENERALIZATION: None, CAPACITY: None}
    for row in rows:
        if (best[row["stands_for"]] is None and row["objective"]
                and math.isfinite(row["tau_b_vs_validated"])):
            best[row["stands_for"]] = row["reading"]
    return best


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf
