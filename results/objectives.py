"""What a search optimises: objectives (a metric and a direction) and the natural direction of every
metric a trial reports.

This sits at the bottom of `results/` with the run-directory format: the search (`nas/`) reads
these definitions to validate configs and tell Optuna what is better, and the results code reads
them to rank and plot a run, without either importing the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

# Metrics a trial reports (evaluators.trial) plus the cheap ones the search adds, each with the
# direction that is better. Objectives and the scheduler metric must come from this table.
METRIC_DIRECTIONS = {
    "gap": "min", "gap_acc": "min", "fit_full": "max", "val_acc": "max", "val_loss": "min",
    "val_acc_at_matched_loss": "max", "gap_at_matched_loss": "min", "train_loss_full": "min", "train_acc_full": "max",
    "train_loss_small": "min", "val_acc_small": "max", "images_per_s": "max",
    "flops": "min", "params": "min", "latency_ms": "min",
}
DIRECTIONS = ("min", "max")


@dataclass(frozen=True)
class Objective:
    """One objective of a search: a metric name and whether smaller or larger is better."""

    name: str
    """The metric: any metric a trial reports (`val_acc`, `fit_full`, `latency_ms`, ...), or `flops`
    / `params`."""
    direction: str = "min"
    """`min` or `max`. In a search config it may be left out: each metric's natural direction is
    used."""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"objective {self.name!r}: direction must be 'min' or 'max', "
                             f"got {self.direction!r}")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "direction": self.direction}


def as_objectives(objectives: Iterable[Any]) -> list[Objective]:
    """Accept Objective, {name, direction} mappings, (name, direction) pairs or 'name:max' strings."""
    parsed = []
    for item in objectives:
        if isinstance(item, Objective):
            parsed.append(item)
        elif isinstance(item, dict):
            if "name" not in item:
                raise ValueError(f"objective {item!r}: missing 'name'")
            parsed.append(Objective(str(item["name"]), str(item.get("direction", "min"))))
        elif isinstance(item, str):
            name, _, direction = item.partition(":")
            parsed.append(Objective(name, direction or "min"))
        else:
            name, direction = item
            parsed.append(Objective(str(name), str(direction)))
    if not parsed:
        raise ValueError("at least one objective is required")
    return parsed


def natural_direction(name: str) -> str:
    """'min' or 'max' for a metric: from the table, else lower is better for losses and times,
    higher for everything else."""
    if name in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[name]
    return "min" if "loss" in name or name.endswith("_s") else "max"


def is_value(value: object) -> bool:
    """Whether a reading is a finite number (not None, a bool, NaN or inf): one Optuna can be
    told, and one a front or a best-of can rank."""
    if value is None or isinstance(value, (bool, str)):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
