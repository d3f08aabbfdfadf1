"""The readings of a layout study, cell by cell, taken off each run's curve.

Per data size, the matched training-loss level is the lowest loss every completed run of that size
reaches (`evaluators.curves.common_level`: the largest of the runs' lowest losses), and
- `val_acc_at_matched_loss`: validation accuracy where the run's curve first comes down to that
  level (interpolated linearly in training loss), the paper's generalization comparison;
- `gap_at_matched_loss`: validation loss minus training loss there;
- `capacity`: exp(-final training loss), the geometric-mean probability the trained model gives
  the true label of a training image; the paper's capacity reading at the largest (deformed) size,
  where the training set is far larger than what a model can memorise;
- `val_acc_at_loss_<level>`: validation accuracy where the whole curve first reaches a fixed
  level: where along Figure 2's curves the generalization ranking settles;
- the readings a search trial can take alone within its own short budget (`short_steps`), checked
  against the validated ones (`results.layout_study.objective_agreement`): `fit_short` =
  exp(-training loss), `val_acc_short`, `gap_short` (validation minus training loss),
  `gap_acc_short` (training minus validation accuracy), all at the measurement nearest
  `short_steps`, and `short_val_acc_at_loss_<level>`: the fixed-level reading on the curve up to
  that budget (NaN when the run does not reach the level within it).

The fit protocol (`target_loss` per size) trains each run until its training loss reaches the
size's target; there the matched level is the target itself, `reached_target` says whether the run
got there within its cap, and `steps_trained` how many steps it took.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from evaluators.curves import common_level, value_at_loss

CELL_COLUMNS = ["cell_id", "layout", "size", "deformed", "per_class", "train_images", "seed",
                "params", "flops", "steps", "status", "matched_level", "val_acc_at_matched_loss",
                "gap_at_matched_loss", "final_train_loss", "capacity", "final_val_acc",
                "heldout_loss", "heldout_acc", "target_loss", "reached_target", "steps_trained",
                "fit_short", "val_acc_short", "gap_short", "gap_acc_short", "wall_time_s"]


def fixed_level_column(level: float) -> str:
    return f"val_acc_at_loss_{level:g}"


def short_level_column(level: float) -> str:
    return f"short_val_acc_at_loss_{level:g}"


def curves_table(cells: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per evaluation of every cell: cell, layout, size, seed, step and the measurements."""
    rows = [{"cell_id": c["cell_id"], "layout": c["layout"], "size": c["size"], "seed": c["seed"],
             **point} for c in cells for point in c.get("curve") or []]
    columns = ["cell_id", "layout", "size", "seed", "step", "train_loss", "train_acc",
               "val_loss", "val_acc"]
    return pd.DataFrame(rows, columns=columns + [c for c in (rows[0] if rows else {})
                                                 if c not in columns])


def cell_table(cells: Sequence[Mapping[str, Any]], sizes: Sequence[str], num_classes: int,
               fixed_levels: Sequence[float], short_steps: int,
               targets: Mapping[str, float | None] | None = None) -> pd.DataFrame:
    """One row per cell (see the module docstring), sizes in the study's order; readings NaN for
    cells that did not complete. `targets`: each size's `target_loss` (the fit protocol), which
    is then its matched level."""
    targets = targets or {}
    levels = {}
    for size in sizes:
        if targets.get(size) is not None:
            levels[size] = float(targets[size])
            continue
        lowest = [min(p["train_loss"] for p in c["curve"]) for c in cells
                  if c["size"] == size and c["status"] == "completed" and c.get("curve")]
        levels[size] = common_level(lowest)
    rows = []
    for c in cells:
        curve = c.get("curve") or []
        done = c["status"] == "completed" and curve
        losses = [p["train_loss"] for p in curve]
        level = levels.get(c["size"], math.nan)
        row = {"cell_id": c["cell_id"], "layout": c["layout"], "size": c["size"],
               "deformed": bool(c.get("deformed")), "train_images": c.get("train_images"),
               "per_class": (c.get("train_images") or 0) / num_classes, "seed": c["seed"],
               "params": c.get("params"), "flops": c.get("flops"), "steps": c.get("steps"),
               "status": c["status"], "matched_level": level, "wall_time_s": c.get("wall_time_s")}
        heldout = c.get("heldout") or {}
        target = targets.get(c["size"])
        row.update(heldout_loss=heldout.get("loss", math.nan), heldout_acc=heldout.get("acc", math.nan),
                   target_loss=math.nan if target is None else float(target),
                   reached_target=(bool(c.get("reached_target")) if target is not None
                                   and c.get("reached_target") is not None else None),
                   steps_trained=curve[-1]["step"] if curve else math.nan)
        if done:
            accs = [p["val_acc"] for p in curve]
            short = min(curve, key=lambda p: abs(p["step"] - short_steps))
            budget = [p for p in curve if p["step"] <= short["step"]]
            row.update(
                val_acc_at_matched_loss=value_at_loss(losses, accs, level),
                gap_at_matched_loss=value_at_loss(losses, [p["val_loss"] for p in curve], level) - level,
                final_train_loss=losses[-1], capacity=math.exp(-losses[-1]),
                final_val_acc=curve[-1]["val_acc"], fit_short=math.exp(-short["train_loss"]),
                val_acc_short=short["val_acc"], gap_short=short["val_loss"] - short["train_loss"],
                gap_acc_short=short["train_acc"] - short["val_acc"],
                **{fixed_level_column(v): value_at_loss(losses, accs, v) for v in fixed_levels},
                **{short_level_column(v): value_at_loss([p["train_loss"] for p in budget],
                                                        [p["val_acc"] for p in budget], v)
                   for v in fixed_levels})
        rows.append(row)
    table = pd.DataFrame(rows, columns=CELL_COLUMNS + [fixed_level_column(v) for v in fixed_levels]
                         + [short_level_column(v) for v in fixed_levels])
    order = {size: i for i, size in enumerate(sizes)}
    table["_order"] = table["size"].map(order)
    return (table.sort_values(["_order", "layout", "seed"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))
