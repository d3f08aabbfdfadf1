"""A run's best trials as plain text for the terminal (`hybrid-nas show`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from results.export import check_top, choose, metric_direction
from results.formatting import si
from results.pareto import objective_column
from results.run_directory import COMPLETED, STATUSES
from results.table import load_table, table_objectives


def format_best(run_dir: str | Path, top: int = 10, by: str | None = None,
                minimize: bool | None = None, every_trial: bool = False) -> str:
    """A status line, then the `top` completed trials by Pareto rank (or by metric `by`)."""
    check_top(top)
    table = load_table(run_dir)
    objectives = table_objectives(table)
    counts = table["status"].value_counts()
    state = "finished" if table.attrs.get("summary") is not None else "running or interrupted"
    lines = [f"{table.attrs['run_dir']}: {len(table)} trials ({state}): "
             + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in STATUSES),
             "objectives: " + ", ".join(f"{o.name} ({o.direction})" for o in objectives)]
    if table.attrs.get("unreadable"):
        lines.append(f"warning: {len(table.attrs['unreadable'])} unreadable trial record(s) skipped")
    if every_trial:
        rows, title = table.head(top), "trials in sampling order"
    elif by is not None:
        rows = choose(table, top=top, by=by, minimize=minimize)
        direction = ("min" if minimize else "max") if minimize is not None else metric_direction(table, by)
        title = f"top {len(rows)} by {by} ({'lower' if direction == 'min' else 'higher'} is better)"
    else:
        done = table[(table["status"] == COMPLETED) & table["pareto_rank"].notna()]
        keys = ["pareto_rank"] + [objective_column(done, objectives[0].name)] if len(done) else []
        ascending = [True, objectives[0].direction == "min"] if len(done) else []
        rows = done.sort_values(keys, ascending=ascending, kind="stable").head(top) if keys else done
        title = f"top {len(rows)} by Pareto rank (0 = on the front), then {objectives[0].name}"
    if not len(rows):
        lines.append("no completed trial yet")
        return "\n".join(lines)
    lines += [title, _format_rows(rows, by)]
    return "\n".join(lines)


def _format_rows(rows: pd.DataFrame, by: str | None) -> str:
    objective_columns = [c for c in rows.columns if c.startswith("obj_")]
    wanted = ["trial_id", "status", "layout", "depths", "widths", "params", "flops",
              *objective_columns, "val_acc", by, "pareto_rank", "wall_time_s"]
    columns = []
    for c in wanted:
        if c and c in rows.columns and c not in columns and f"obj_{c}" not in objective_columns:
            columns.append(c)
    view = rows[columns].copy()
    for c in ("params", "flops"):
        view[c] = view[c].map(si)
    view = view.rename(columns={c: c.removeprefix("obj_") for c in objective_columns})
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
