"""A run directory as one table: one row per trial, every choice, cost and metric a column.

`load_table(run_dir)` reads search.yaml and trials/*.json (the format nas/records.py writes, read
with its reader); it works on a finished, running or interrupted run. One unreadable record among
readable ones is skipped with a warning and listed in `table.attrs["unreadable"]`. `save_table(run_dir)` writes the same
table beside the records as table.parquet and table.csv.
"""

from __future__ import annotations

import json
import re
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from nas import records as run_format
from results.pareto import Objective, as_objectives, rank_trials
from search_spaces.architecture import Architecture, ArchitectureError

STATUSES = run_format.STATUSES
COMPLETED = "completed"  # the only status that ranks (trained its whole budget)
STAGE_FIELDS = ("block", "depth", "width", "stride", "head_size", "expansion", "pos_embed")
_REQUIRED = ("trial_id", "status", "architecture")
# Columns a metric may not take (it is then prefixed `metric_`).
_FIXED = ("trial_id", "number", "status", "arch_id", "layout", "depths", "widths", "num_stages",
          "stem_kind", "stem_width", "stem_patch_size", "resolution", "in_channels", "num_classes",
          "head", "params", "flops", "epochs_done", "epochs_budget", "wall_time_s", "started",
          "ended", "error", "rejection", "weights", "optuna_state", "pareto_rank")


class RunDirectoryError(run_format.RunDirError):
    """A missing, foreign or unreadable run directory; `path` names the offending file or folder."""

    def __init__(self, path: Path | str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class UnreadableRecordWarning(UserWarning):
    """A trial record that could not be read was skipped (the table says how many)."""


@dataclass(frozen=True)
class Run:
    """The raw contents of a run directory; each record also carries `_arch`, its parsed
    Architecture."""

    path: Path
    config: dict
    objectives: tuple[Objective, ...]
    records: tuple[dict, ...]
    summary: dict | None  # None while the run is going or after an interruption
    unreadable: tuple[tuple[str, str], ...]  # (record path, reason), skipped with a warning


def read_run(run_dir: str | Path) -> Run:
    """Read search.yaml, summary.json and every trial record; raise RunDirectoryError on a missing or
    foreign directory. An unreadable record among readable ones is skipped with a warning."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(path, "no such run directory")
    config_path, trials_dir = path / run_format.CONFIG_FILE, path / run_format.TRIALS_DIR
    if not config_path.is_file():
        what = "no search.yaml" + ("" if trials_dir.is_dir() else " and no trials/")
        raise RunDirectoryError(path, f"not a hybrid-nas run directory ({what})")
    config = _read_config(config_path)
    objectives = _read_objectives(config, config_path)
    records, unreadable = [], []
    files = sorted(trials_dir.glob("*.json")) if trials_dir.is_dir() else []
    for file in files:
        if file.name.startswith("."):
            continue  # an in-flight temporary of an atomic write
        try:
            records.append(_read_record(path, file))
        except ValueError as exc:
            unreadable.append((str(file), str(exc)))
            warnings.warn(f"skipping unreadable trial record {file}: {exc}",
                          UnreadableRecordWarning, stacklevel=2)
    if unreadable and not records:
        first, reason = unreadable[0]
        raise RunDirectoryError(first, f"no readable trial record ({len(unreadable)} unreadable; "
                                       f"first: {reason})")
    summary = None
    summary_path = path / run_format.SUMMARY_FILE
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            warnings.warn(f"ignoring unreadable {summary_path}: {exc}",
                          UnreadableRecordWarning, stacklevel=2)
    return Run(path, config, tuple(objectives), tuple(records), summary, tuple(unreadable))


def _read_config(config_path: Path) -> dict:
    try:
        config = yaml.safe_load(config_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunDirectoryError(config_path, f"not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise RunDirectoryError(config_path, "expected a mapping (the resolved search config)")
    return config


def _read_objectives(config: dict, config_path: Path) -> list[Objective]:
    if "objectives" not in config:
        raise RunDirectoryError(config_path, "no 'objectives' list")
    try:
        return as_objectives(config["objectives"])
    except (ValueError, TypeError) as exc:
        raise RunDirectoryError(config_path, f"objectives: {exc}") from None


def _read_record(run_dir: Path, file: Path) -> dict:
    """One record through nas.records' reader, then checked for what the table needs."""
    try:
        record = run_format.read_record(run_dir, file.stem)
    except run_format.RunDirError as exc:  # its message starts with the path
        raise ValueError(str(exc).removeprefix(f"{file}: ")) from None
    if record is None:
        raise ValueError("removed while being read")
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    if record["status"] not in STATUSES:
        raise ValueError(f"unknown status {record['status']!r} (known: {list(STATUSES)})")
    try:
        record["_arch"] = Architecture.from_dict(record["architecture"])
    except ArchitectureError as exc:
        raise ValueError(f"architecture: {exc}") from None
    return record


def load_table(run_dir: str | Path | Run) -> pd.DataFrame:
    """One row per trial, ordered by sampling number.

    Columns: trial_id, number, status, arch_id, layout, depths/widths ("2-3-5-2"), the choices
    (stem_*, resolution, head, s<i>_block/depth/width/stride/head_size/expansion/pos_embed),
    params, flops, every last-epoch metric under its own name (`metric_<name>` if the name is
    taken), `obj_<name>` per objective the search used, epochs, wall_time_s, started/ended,
    error, rejection, weights, optuna_state, and pareto_rank (completed trials only, else NaN).
    `table.attrs` holds the run's `objectives`, `run_dir`, `summary` and the `unreadable` records
    that were skipped."""
    run = run_dir if isinstance(run_dir, Run) else read_run(run_dir)
    rows = [_row(record) for record in run.records]
    table = pd.DataFrame(rows, columns=_column_order(rows))
    if len(table):
        table = table.sort_values(["number", "trial_id"], na_position="last", kind="stable")
        table = table.reset_index(drop=True)
    table["pareto_rank"] = _safe_ranks(table, run.objectives)
    table.attrs.update(
        run_dir=str(run.path),
        objectives=[{"name": o.name, "direction": o.direction} for o in run.objectives],
        summary=run.summary,
        unreadable=[list(item) for item in run.unreadable],
    )
    return table


def save_table(run_dir: str | Path, table: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """Write RUN_DIR/table.parquet and RUN_DIR/table.csv; return both paths."""
    path = Path(run_dir)
    table = load_table(path) if table is None else table
    parquet, csv = path / "table.parquet", path / "table.csv"
    table.to_parquet(parquet, index=False)
    table.to_csv(csv, index=False)
    return parquet, csv


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


def _row(record: dict) -> dict[str, Any]:
    arch: Architecture = record["_arch"]
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
    for name, value in (record.get("metrics") or {}).items():
        taken = name in _FIXED or re.match(r"s\d+_", name) or name.startswith("obj_")
        row[f"metric_{name}" if taken else name] = _number(value)
    for name, value in (record.get("objectives") or {}).items():
        row[f"obj_{name}"] = _number(value)
    for key in ("epochs_done", "epochs_budget", "wall_time_s"):
        row[key] = _number(record.get(key))
    for key in ("started", "ended", "error", "rejection", "weights", "optuna_state"):
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
    tail = ["epochs_done", "epochs_budget", "wall_time_s", "started", "ended", "error",
            "rejection", "weights", "optuna_state"]
    metrics = [c for c in seen if c not in head and c not in stages and c not in tail
               and c not in ("params", "flops") and not c.startswith("obj_")]
    objectives = [c for c in seen if c.startswith("obj_")]
    return head + stages + ["params", "flops"] + metrics + objectives + tail
