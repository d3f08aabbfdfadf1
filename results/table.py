"""A run directory as one table: one row per trial, every choice, cost and metric a column.

`load_table(run_dir)` reads the run through `results.run_directory` (finished, running or
interrupted; a folder or a URI); an unreadable record among readable ones is skipped with a
warning and listed in `table.attrs["unreadable"]`. `save_table(run_dir)` writes the same table
beside the records as table.parquet and table.csv.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from results.objectives import Objective, as_objectives
from results.pareto import rank_trials
from results.run_directory import COMPLETED, STATUSES, Run, RunDirectory, read_run
from search_spaces.architecture import Architecture

STAGE_FIELDS = ("block", "depth", "width", "stride", "head_size", "expansion", "pos_embed", "qkv_bias")
# Columns a metric may not take (it is then prefixed `metric_`).
_FIXED = ("trial_id", "number", "status", "arch_id", "layout", "depths", "widths", "num_stages",
          "stem_kind", "stem_width", "stem_patch_size", "resolution", "in_channels", "num_classes",
          "head", "params", "flops", "epochs_done", "epochs_budget", "wall_time_s", "started",
          "ended", "error", "unscored", "rejection", "weights", "optuna_state", "pareto_rank")

__all__ = ["COMPLETED", "STATUSES", "load_table", "save_table", "table_objectives"]


def load_table(run_dir: str | Path | RunDirectory | Run) -> pd.DataFrame:
    """One row per trial, ordered by sampling number.

    Columns: trial_id, number, status, arch_id, layout, depths/widths ("2-3-5-2"), the choices
    (stem_*, resolution, head, s<i>_block/depth/width/stride/head_size/expansion/pos_embed),
    params, flops, every last-epoch metric under its own name (`metric_<name>` if the name is
    taken), `obj_<name>` per objective the search used, epochs, wall_time_s, started/ended,
    error, unscored, rejection, weights, optuna_state, and pareto_rank (completed trials only, else NaN).
    `table.attrs` holds the run's `objectives`, `run_dir`, `summary` and the `unreadable` records
    that were skipped."""
    run = run_dir if isinstance(run_dir, Run) else read_run(run_dir)
    rows = [_row(record, run.architecture(record)) for record in run.records]
    table = pd.DataFrame(rows, columns=_column_order(rows))
    if len(table):
        table = table.sort_values(["number", "trial_id"], na_position="last", kind="stable")
        table = table.reset_index(drop=True)
    table["pareto_rank"] = _safe_ranks(table, run.objectives)
    table.attrs.update(
        run_dir=str(run.path),
        run_name=run.name,
        objectives=[{"name": o.name, "direction": o.direction} for o in run.objectives],
        summary=run.summary,
        unreadable=[list(item) for item in run.unreadable],
    )
    return table


def save_table(run_dir: str | Path | RunDirectory,
               table: pd.DataFrame | None = None) -> tuple[Path | str, Path | str]:
    """Write RUN_DIR/table.parquet and RUN_DIR/table.csv (a folder or a URI); return both."""
    store = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    table = load_table(store) if table is None else table
    parquet = io.BytesIO()
    table.to_parquet(parquet, index=False)
    return (store.write_file("table.parquet", parquet.getvalue()),
            store.write_file("table.csv", table.to_csv(index=False)))


def table_objectives(table: pd.DataFrame) -> list[Objective]:
    """The run's objectives as recorded in `table.attrs` by load_table."""
    return as_objectives(table.attrs.get("objectives") or [])


def _safe_ranks(table: pd.DataFrame, objectives: tuple[Objective, ...]) -> pd.Series:
    if not len(table) or not objectives:
        return pd.Series(float("nan"), index=table.index)
    try:
        return rank_trials(table, objectives)
    except ValueError:  # no trial reported these objectives yet
        return pd.Series(float("nan"), index=table.index)


def _row(record: dict, arch: Architecture) -> dict[str, Any]:
    cost = record.get("cost") or {}
    row: dict[str, Any] = {
        "trial_id": str(record["trial_id"]),
        "number": _number(record.get("number")),
        "status": record["status"],
        "arch_id": record.get("arch_id") or arch.arch_id,
        "layout": record.get("layout") or arch.layout,
        "depths": "-".join(str(s.depth) for s in arch.stages),
        "widths": "-".join(str(s.width) for s in arch.stages),
        "num_stages": len(arch.stages),
        "stem_kind": arch.stem.kind,
        "stem_width": arch.stem.width,
        "stem_patch_size": arch.stem.patch_size if arch.stem.kind == "patch" else None,
        "resolution": arch.resolution,
        "in_channels": arch.in_channels,
        "num_classes": arch.num_classes,
        "head": arch.head,
    }
    for i, stage in enumerate(arch.stages, start=1):
        for field in STAGE_FIELDS:
            row[f"s{i}_{field}"] = getattr(stage, field)
    row["params"] = _number(cost.get("params"))
    row["flops"] = _number(cost.get("flops"))
    row["memory_priced_bytes"] = _number((cost.get("memory") or {}).get("peak_bytes"))
    row["failure_reason"] = record.get("failure_reason")
    for name, value in (record.get("metrics") or {}).items():
        taken = name in _FIXED or re.match(r"s\d+_", name) or name.startswith("obj_")
        row[f"metric_{name}" if taken else name] = _number(value)
    for name, value in (record.get("objectives") or {}).items():
        row[f"obj_{name}"] = _number(value)
    for key in ("epochs_done", "epochs_budget", "wall_time_s"):
        row[key] = _number(record.get(key))
    for key in ("started", "ended", "error", "unscored", "rejection", "weights", "optuna_state"):
        row[key] = record.get(key)
    return row


def _number(value: Any) -> float | int | None:
    """Numbers stay numbers; None, strings like 'NaN' and junk become NaN."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _column_order(rows: list[dict]) -> list[str]:
    """Identity and choices first, then cost, metrics, objectives and bookkeeping."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    head = ["trial_id", "number", "status", "arch_id", "layout", "depths", "widths", "num_stages",
            "stem_kind", "stem_width", "stem_patch_size", "resolution", "in_channels",
            "num_classes", "head"]
    max_stages = max((row["num_stages"] for row in rows), default=0)
    stages = [f"s{i}_{field}" for i in range(1, max_stages + 1) for field in STAGE_FIELDS]
    tail = ["epochs_done", "epochs_budget", "wall_time_s", "started", "ended", "error", "unscored",
            "rejection", "weights", "optuna_state"]
    metrics = [c for c in seen if c not in head and c not in stages and c not in tail
               and c not in ("params", "flops") and not c.startswith("obj_")]
    objectives = [c for c in seen if c.startswith("obj_")]
    return head + stages + ["params", "flops"] + metrics + objectives + tail
