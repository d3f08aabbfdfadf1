"""The report's figures, as plotly Figures over a results table (from `load_table`).

`build_figures(table)` returns them by name. Every trial-level trace carries
`meta={"role": "trials", "panel": ...}` and each point's trial_id in `customdata[0]` (parcoords:
`meta["trial_ids"]`), so a reader can count the points of each finished trial.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from results.formatting import fmt, si
from results.pareto import pareto_ranks
from results.run_directory import COMPLETED
from results.table import table_objectives

# Metrics shown in hover text when present, in this order.
HOVER_METRICS = ("val_acc", "val_acc_at_matched_loss", "fit_full", "gap", "gap_acc", "val_loss",
                 "train_loss_full", "images_per_s")
FIGURE_TITLES = {
    "pareto": "The search objectives (Pareto front marked)",
    "acc_vs_flops": "Validation accuracy vs FLOPs (front: high accuracy, few FLOPs)",
    "acc_vs_params": "Validation accuracy vs parameters (front: high accuracy, few parameters)",
    "by_layout": "Trials grouped by layout",
    "stage_choices": "Stage choices (one line per finished trial, coloured by validation accuracy)",
    "progress": "Search progress: best so far per trial number",
}
_PALETTE = qualitative.Plotly + qualitative.D3


def build_figures(table: pd.DataFrame) -> dict[str, go.Figure]:
    """The report's figures over the completed trials of `table` (from load_table)."""
    done = table[table["status"] == COMPLETED].reset_index(drop=True)
    colours = {layout: _PALETTE[i % len(_PALETTE)]
               for i, layout in enumerate(sorted(table["layout"].dropna().unique()))}
    hover = done.apply(_hover_text, axis=1) if len(done) else pd.Series(dtype=str)
    y, x = (_objective_axes(_objectives_or_empty(table)) + [("params", "min")])[:2]
    return {
        "pareto": _front_scatter(done, hover, colours, x=x, y=y,
                                 title=f"The search objectives: {y[0]} ({y[1]}) vs {x[0]} ({x[1]}), "
                                       "Pareto front marked"),
        "acc_vs_flops": _front_scatter(done, hover, colours, x=("flops", "min"),
                                       y=("val_acc", "max"), title=FIGURE_TITLES["acc_vs_flops"],
                                       log_x=True),
        "acc_vs_params": _front_scatter(done, hover, colours, x=("params", "min"),
                                        y=("val_acc", "max"), title=FIGURE_TITLES["acc_vs_params"],
                                        log_x=True),
        "by_layout": _by_layout(done, hover, colours),
        "stage_choices": _stage_choices(done),
        "progress": _progress(done, hover, _objectives_or_empty(table)),
    }


def _front_scatter(done: pd.DataFrame, hover: pd.Series, colours: dict, x: tuple[str, str],
                   y: tuple[str, str], title: str, log_x: bool = False) -> go.Figure:
    """Scatter of y vs x, one trace per layout, with the 2-D Pareto front drawn as a line and its
    members drawn as diamonds."""
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=_label(x[0]), yaxis_title=_label(y[0]),
                      legend_title="layout", hovermode="closest")
    if log_x:
        fig.update_xaxes(type="log")
    if not len(done):
        return _empty(fig, "no finished trial yet")
    missing = [c for c in (x[0], y[0]) if c not in done.columns]
    if missing:
        return _empty(fig, f"no {' or '.join(missing)} reported by any finished trial")
    values = done[[x[0], y[0]]].apply(pd.to_numeric, errors="coerce")
    ok = values.notna().all(axis=1).to_numpy()
    ranks = np.full(len(done), -1)
    if ok.any():
        ranks[ok] = pareto_ranks(values[ok].to_numpy(float), [x[1], y[1]])
    on_front = ranks == 0
    for layout, rows in done.groupby("layout", sort=True):
        idx = rows.index.to_numpy()
        fig.add_trace(go.Scatter(
            x=values.loc[idx, x[0]], y=values.loc[idx, y[0]], mode="markers", name=layout,
            marker=dict(color=colours.get(layout), size=np.where(on_front[idx], 14, 9),
                        symbol=np.where(on_front[idx], "diamond", "circle"),
                        line=dict(width=1, color="#333")),
            customdata=np.stack([rows["trial_id"], ranks[idx]], axis=1),
            text=hover[idx], hovertemplate="%{text}<br>2-D front rank %{customdata[1]}<extra></extra>",
            meta={"role": "trials", "panel": "main"}))
    front = values[on_front].sort_values(x[0])
    fig.add_trace(go.Scatter(
        x=front[x[0]], y=front[y[0]], mode="lines", name="Pareto front",
        line=dict(color="#222", dash="dash", shape="hv" if x[1] == "min" else "vh"),  # attainment
        hoverinfo="skip", meta={"role": "front", "panel": "main"}))
    return fig


def _by_layout(done: pd.DataFrame, hover: pd.Series, colours: dict) -> go.Figure:
    metrics = [m for m in ("val_acc", "gap") if m in done.columns]
    fig = make_subplots(rows=1, cols=max(len(metrics), 1),
                        subplot_titles=[_label(m) for m in metrics] or None)
    fig.update_layout(title=FIGURE_TITLES["by_layout"], showlegend=False)
    if not len(done):
        return _empty(fig, "no finished trial yet")
    if not metrics:
        return _empty(fig, "no val_acc or gap reported by any finished trial")
    for col, metric in enumerate(metrics, start=1):
        for layout, rows in done.groupby("layout", sort=True):
            idx = rows.index.to_numpy()
            fig.add_trace(go.Box(
                x=[layout] * len(rows), y=pd.to_numeric(rows[metric], errors="coerce"),
                name=layout, boxpoints="all", jitter=0.4, pointpos=0, hoveron="points",
                marker=dict(color=colours.get(layout), size=7), line=dict(color=colours.get(layout)),
                customdata=np.stack([rows["trial_id"]], axis=1), text=hover[idx],
                hovertemplate="%{text}<extra></extra>",
                meta={"role": "trials", "panel": metric}), row=1, col=col)
        fig.update_xaxes(title_text="layout", row=1, col=col)
    return fig


def _stage_choices(done: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=FIGURE_TITLES["stage_choices"])
    if not len(done):
        return _empty(fig, "no finished trial yet")
    dimensions = []
    stages = int(done["num_stages"].max())
    for i in range(1, stages + 1):
        blocks = done[f"s{i}_block"].fillna("-").astype(str)
        kinds = sorted(blocks.unique())
        dimensions.append(dict(label=f"S{i} block", values=blocks.map(kinds.index).to_numpy(),
                               tickvals=list(range(len(kinds))), ticktext=kinds))
        for field in ("depth", "width", "head_size", "expansion"):
            column = done[f"s{i}_{field}"]
            attention = done[f"s{i}_block"].isin(["T", "A", "G"])
            if field == "head_size":
                column = column.where(attention)  # meaningless for convolution stages
            if field in ("depth", "width") or column.nunique() > 1:
                dimensions.append(_integer_dimension(f"S{i} {field}", column))
    for column, label in (("stem_width", "stem width"), ("resolution", "resolution"),
                          ("params", "params"), ("flops", "FLOPs")):
        if column in ("params", "flops"):
            dimensions.append(dict(label=label, values=done[column].to_numpy(float)))
        elif done[column].nunique() > 1:
            dimensions.append(_integer_dimension(label, done[column]))
    colour = pd.to_numeric(done.get("val_acc", pd.Series(np.nan, index=done.index)), errors="coerce")
    if colour.notna().any():
        dimensions.append(dict(label="val acc", values=colour.to_numpy(float)))
    fig.add_trace(go.Parcoords(
        dimensions=dimensions,
        line=dict(color=colour.fillna(colour.min() if colour.notna().any() else 0).to_numpy(float),
                  colorscale="Viridis", showscale=True, colorbar=dict(title="val acc")),
        meta={"role": "trials", "panel": "main", "trial_ids": done["trial_id"].tolist()}))
    fig.update_layout(margin=dict(l=60, r=60, t=120, b=40))
    return fig


def _integer_dimension(label: str, column: pd.Series) -> dict:
    """A parcoords axis whose ticks are the values that occur (choices are a few integers)."""
    values = pd.to_numeric(column, errors="coerce")
    ticks = sorted(values.dropna().unique())
    dimension = dict(label=label, values=values.to_numpy(float))
    if len(ticks) <= 12:
        dimension.update(tickvals=[float(t) for t in ticks], ticktext=[str(int(t)) for t in ticks])
    return dimension


def _progress(done: pd.DataFrame, hover: pd.Series, objectives: list) -> go.Figure:
    """Each finished trial's value by sampling number, with the best so far as a step line."""
    panels = [("val_acc", "max")] + [(o.name, o.direction) for o in objectives if o.name != "val_acc"]
    panels = [(n, d) for n, d in panels if _column(done, n) is not None][:4]
    fig = make_subplots(rows=max(len(panels), 1), cols=1, shared_xaxes=True,
                        subplot_titles=[f"{_label(n)} ({'higher' if d == 'max' else 'lower'} is "
                                        f"better)" for n, d in panels] or None)
    fig.update_layout(title=FIGURE_TITLES["progress"], height=260 * max(len(panels), 1) + 120,
                      showlegend=False)
    if not panels or not len(done):
        return _empty(fig, "no finished trial yet")
    ordered = done.sort_values("number", kind="stable")
    for row, (name, direction) in enumerate(panels, start=1):
        values = pd.to_numeric(ordered[_column(ordered, name)], errors="coerce")
        best = values.cummax() if direction == "max" else values.cummin()
        fig.add_trace(go.Scatter(
            x=ordered["number"], y=values, mode="markers", name=name,
            marker=dict(color="#1f77b4", size=8), customdata=np.stack([ordered["trial_id"]], axis=1),
            text=hover[ordered.index], hovertemplate="%{text}<extra></extra>",
            meta={"role": "trials", "panel": name}), row=row, col=1)
        fig.add_trace(go.Scatter(
            x=ordered["number"], y=best, mode="lines", name=f"best {name}",
            line=dict(color="#d62728", shape="hv"), meta={"role": "best", "panel": name}),
            row=row, col=1)
    fig.update_xaxes(title_text="trial number (sampling order)", row=len(panels), col=1)
    return fig


def _objective_axes(objectives: list) -> list[tuple[str, str]]:
    """(metric, direction) of the run's objectives; the layout study's two readings when the run
    recorded none."""
    return ([(o.name, o.direction) for o in objectives]
            or [("val_acc_at_matched_loss", "max"), ("fit_full", "max")])


def _objectives_or_empty(table: pd.DataFrame) -> list:
    try:
        return table_objectives(table)
    except ValueError:
        return []


def _column(table: pd.DataFrame, name: str) -> str | None:
    for column in (name, f"obj_{name}"):
        if column in table.columns and pd.to_numeric(table[column], errors="coerce").notna().any():
            return column
    return None


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=16))
    return fig


def _label(name: str) -> str:
    return {"val_acc": "validation accuracy", "gap": "generalization gap (val - train loss, small data)",
            "fit_full": "fit of the full set (exp(-train loss))",
            "val_acc_at_matched_loss": "validation accuracy at matched training loss (small data)",
            "flops": "FLOPs (multiply-adds)",
            "params": "parameters"}.get(name, name)


def _hover_text(row: pd.Series) -> str:
    lines = [f"<b>{html.escape(str(row['layout']))}</b>  trial {html.escape(str(row['trial_id']))}"
             f" (#{fmt(row['number'])})",
             f"depths {row['depths']} · widths {row['widths']} · stem {row['stem_width']}",
             f"params {si(row['params'])} · FLOPs {si(row['flops'])}"]
    metrics = [f"{m} {fmt(row[m])}" for m in HOVER_METRICS if m in row.index and pd.notna(row[m])]
    for i in range(0, len(metrics), 3):
        lines.append(" · ".join(metrics[i:i + 3]))
    if pd.notna(row.get("pareto_rank")):
        lines.append(f"search Pareto rank {int(row['pareto_rank'])}")
    return "<br>".join(lines)
