"""The layout study's offline HTML report: the paper's Figure 2 redrawn from our runs (validation
accuracy against training loss, one panel per data size, the matched level marked), capacity per
layout against data size, how the agreement with the paper moves with size and along training,
and the two rankings side by side with the paper's; then the comparisons the study ran beside the
layouts (distillation from a convnet teacher, DeiT's claim; ConViT- against DeiT-style stacks,
ConViT's claim), each with its means over seeds and their intervals."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from results.formatting import fmt, si
from results.html_page import render_page
from results.layout_study.rankings import PAPER

COLOURS = dict(zip(("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "ViT_REL"), qualitative.D3))
FIGURE_TITLES = {
    "figure2": "Figure 2 redrawn: validation accuracy against training loss, per data size "
               "(dashed: the matched level)",
    "capacity": "Capacity (exp(-final training loss)) per layout against data size",
    "agreement": "Agreement with the paper (Kendall tau-b) per data size",
    "along_training": "Capacity ranking along training at the largest size (tau-b per evaluation)",
    "distillation": "Distillation: final validation accuracy without and with the convnet teacher "
                    "(mean over seeds, 95% interval)",
    "convit": "ConViT- against DeiT-style stacks: final validation accuracy per data size "
              "(mean over seeds, 95% interval)",
}


@dataclass(frozen=True)
class ProtocolCurves:
    """Another study's runs, for its Figure 2 beside this one's: its name, cell table (study.csv),
    curves (curves.csv) and data sizes in order."""

    name: str
    table: pd.DataFrame
    curves: pd.DataFrame
    sizes: Sequence[str]

    @classmethod
    def read(cls, folder: str | Path) -> "ProtocolCurves":
        """From a folder holding a study's study.csv and curves.csv (a study directory, or the
        copy committed with a result); the name from its study.yaml when there is one."""
        folder = Path(folder)
        missing = [f for f in ("study.csv", "curves.csv") if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: no {' or '.join(missing)} (a finished study's "
                                    "outputs are needed to draw its Figure 2)")
        table = pd.read_csv(folder / "study.csv")
        name = folder.name
        if (folder / "study.yaml").is_file():
            name = (yaml.safe_load((folder / "study.yaml").read_text()) or {}).get("name", name)
        return cls(name, table, pd.read_csv(folder / "curves.csv"),
                   list(dict.fromkeys(table["size"])))


def render_study_report(name: str, table: pd.DataFrame, curves: pd.DataFrame,
                        ranks: Mapping[str, Any], sizes: Sequence[str], protocol: str,
                        wall_time_s: float | None, beside: ProtocolCurves | None = None) -> str:
    """The report's HTML; `beside`: another protocol's Figure 2 drawn in a row under this one's."""
    rows = [ProtocolCurves(name, table, curves, sizes)] + ([beside] if beside else [])
    figures = {"figure2": figure2(rows), "capacity": _capacity(table, sizes),
               "agreement": _agreement(ranks, sizes),
               "along_training": _along_training(ranks["capacity"]["along_training"])}
    if ranks.get("distillation"):
        figures["distillation"] = _distillation_figure(ranks["distillation"])
    if ranks.get("convit"):
        figures["convit"] = _convit_figure(ranks["convit"])
    header = "\n".join([
        f"<h1>Layout study: {html.escape(name)}</h1>",
        "<p class='note'>CoAtNet section 2.2 reproduced on this machine: five layouts matched in "
        "parameters, trained on several data sizes with several seeds.</p>",
        _rankings_html(ranks), _fit_html(ranks), _architectures_html(table), _cheap_html(ranks),
        _objective_html(ranks),
        _distillation_html(ranks.get("distillation")), _convit_html(ranks.get("convit")),
        f"<details><summary>protocol (study.yaml)</summary><pre>{html.escape(protocol)}</pre>"
        "</details>",
        f"<p class='note'>{ranks['cells']['completed']} of {ranks['cells']['total']} cells "
        "completed" + (f"; wall time {wall_time_s:.0f} s" if wall_time_s else "") + ".</p>"])
    return render_page(f"hybrid-nas layout study: {name}", header,
                       {key: (FIGURE_TITLES[key], fig) for key, fig in figures.items()})


def _rankings_html(ranks: Mapping[str, Any]) -> str:
    rows = []
    for reading in ("generalization", "capacity"):
        r = ranks[reading]
        low, high = r["interval_95"]
        where = (f"mean over seeds {r['seeds']} and sizes {', '.join(r['sizes'])}"
                 if reading == "generalization" else f"at {r['size']}, mean over seeds {r['seeds']}")
        ours = " > ".join(f"{name} ({fmt(r['scores'][name])})" for name in r["order"])
        rows.append(f"<tr><td class='text'><b>{reading}</b><br><span class='note'>"
                    f"{html.escape(r['reading'])}, {html.escape(where)}</span></td>"
                    f"<td class='text'>{html.escape(ours)}</td>"
                    f"<td class='text'>{html.escape(PAPER[reading].text)}</td>"
                    f"<td>{fmt(r['tau_b'])}</td><td>[{fmt(low)}, {fmt(high)}]</td></tr>")
    return ("<h2>Rankings: ours beside the paper's</h2><table><tr><th>reading</th><th>ours "
            "(best first, score)</th><th>paper</th><th>Kendall tau-b</th><th>95% interval "
            "(seeds resampled)</th></tr>" + "".join(rows) + "</table>")


def _architectures_html(table: pd.DataFrame) -> str:
    first = table.drop_duplicates("layout").set_index("layout")
    rows = "".join(f"<tr><td class='text'>{html.escape(layout)}</td><td>{si(row.params)}</td>"
                   f"<td>{si(row.flops)}</td></tr>" for layout, row in first.iterrows())
    return ("<details><summary>The five layouts (parameters matched to C-C-T-T by S3's depth)"
            "</summary><table><tr><th>layout</th><th>params</th><th>FLOPs</th></tr>"
            f"{rows}</table></details>")


def _cheap_html(ranks: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='text'>{html.escape(name)}</td><td class='text'>{html.escape(c['stands_for'])}"
        f"</td><td>{fmt(c['tau_b_vs_validated'])}</td><td>{fmt(c['tau_b_vs_paper'])}</td>"
        f"<td>{c.get('missing', 0)}</td></tr>"
        for name, c in ranks["cheap_readings"].items())
    return ("<h2>Cheap readings a search trial can take alone</h2><p class='note'>A search trial "
            "has no other run to match its training loss with: it reads validation accuracy at a "
            "fixed level (val_acc_at_loss_L), and the fit after a short budget (fit_short). The "
            "default search uses the readings that rank the layouts most like the study's "
            "own.</p><table><tr><th>reading</th><th>stands for</th><th>tau-b vs the study's "
            "reading</th><th>tau-b vs the paper</th><th>runs that never reach it</th></tr>"
            f"{rows}</table>")


def _fit_html(ranks: Mapping[str, Any]) -> str:
    """The fit protocol's extras: where along the curves the ranking settles, and the runs that
    did not reach their target."""
    g = ranks["generalization"]
    if not g.get("along_loss") and not g.get("not_reached"):
        return ""
    rows = "".join(f"<tr><td>{fmt(p['level'])}</td><td>{fmt(p['tau_b'])}</td>"
                   f"<td>{p['missing']}</td></tr>" for p in g.get("along_loss", []))
    missed = "".join(f"<li>{html.escape(m['cell_id'])}: training loss {fmt(m['final_train_loss'])} "
                     f"after {m['steps']} steps (target {fmt(m['target_loss'])})</li>"
                     for m in g.get("not_reached", []))
    return ("<h2>Generalization along the training-loss levels</h2><p class='note'>Validation "
            "accuracy read where each run first reaches the level, averaged over seeds and the "
            "real sizes, ranked against the paper.</p><table><tr><th>training loss</th>"
            f"<th>tau-b vs the paper</th><th>runs that never reach it</th></tr>{rows}</table>"
            + (f"<p>Runs that did not reach their target within the cap (kept, with the loss "
               f"they reached):</p><ul>{missed}</ul>" if missed else ""))


def _objective_html(ranks: Mapping[str, Any]) -> str:
    """Item 3: which readings a trial can take alone rank like the study's validated readings."""
    rows = ranks.get("objective_agreement")
    if not rows:
        return ""
    body = "".join(
        f"<tr><td class='text'>{html.escape(r['reading'])}</td>"
        f"<td class='text'>{html.escape(r['stands_for'])}</td>"
        f"<td class='text'>{'higher' if r['higher_is_better'] else 'lower'}</td>"
        f"<td>{fmt(r['tau_b_vs_validated'])}</td><td>{fmt(r['tau_b_vs_paper'])}</td>"
        f"<td>{r['missing']}</td></tr>" for r in rows)
    best = ranks.get("best_objectives") or {}
    return ("<h2>Which readings a search trial can take agree with the study</h2>"
            "<p class='note'>Each candidate is read within a search trial's own short budget "
            "(the study's <code>cheap.steps</code>) or at initialisation (proxy_*). Best "
            f"agreeing: generalization {html.escape(str(best.get('generalization')))}, capacity "
            f"{html.escape(str(best.get('capacity')))}.</p><table><tr><th>reading</th>"
            "<th>stands for</th><th>better</th><th>tau-b vs the study's reading</th>"
            f"<th>tau-b vs the paper</th><th>runs without a value</th></tr>{body}</table>")


def _with_interval(reading: Mapping[str, Any], signed: bool = False) -> str:
    low, high = reading["interval_95"]
    number = "{:+.3f}" if signed else "{:.3f}"
    if not math.isfinite(reading["mean"]):
        return "n/a"
    return f"{number.format(reading['mean'])} [{number.format(low)}, {number.format(high)}]"


def _distillation_html(d: Mapping[str, Any] | None) -> str:
    if not d:
        return ""
    rows = "".join(
        f"<tr><td class='text'>{html.escape(layout)}</td>"
        f"<td>{_with_interval(r['val_acc']['plain'])}</td>"
        f"<td>{_with_interval(r['val_acc']['distilled'])}</td>"
        f"<td>{_with_interval(r['val_acc']['difference'], True)} ({r['val_acc']['verdict']})</td>"
        f"<td>{_with_interval(r['gap_to_teacher']['plain'], True)} &rarr; "
        f"{_with_interval(r['gap_to_teacher']['distilled'], True)}</td>"
        f"<td>{_with_interval(r['teacher_agreement']['plain'])}</td>"
        f"<td>{_with_interval(r['teacher_agreement']['distilled'])}</td>"
        f"<td>{_with_interval(r['teacher_agreement']['difference'], True)} "
        f"({r['teacher_agreement']['verdict']})</td>"
        f"<td>{_with_interval(r['teacher_relabelled'])}</td></tr>"
        for layout, r in d["layouts"].items())
    return (f"<h2>Distillation from a {html.escape(d['teacher'])} teacher (DeiT's claim)</h2>"
            "<p class='note'>DeiT: distillation from a convnet narrows attention's generalization "
            f"gap. At {html.escape(', '.join(d['sizes']))}, seeds {d['seeds']}: each layout "
            "trained without and with hard distillation, same training images, recipe and budget; "
            f"the teacher is the {html.escape(d['teacher'])} run without a teacher of the same seed, "
            f"trained at {html.escape(', '.join(d.get('teacher_sizes') or d['sizes']))} "
            f"(validation accuracy {_with_interval(d['teacher_val_acc'])}). Agreement: the share of "
            "validation images on which the student predicts the teacher's class. Relabelled: the "
            "share of the distilled run's training images (augmented, mixed) in its last period on "
            "which the teacher's class was not the label, what it could teach beyond the labels. "
            "Differences are "
            "distilled minus plain, paired by seed; 95% intervals from resampled seeds."
            f"{_recipes(d)}</p>"
            "<table><tr><th>student</th><th>val acc, plain</th><th>val acc, distilled</th>"
            "<th>difference</th><th>gap to the teacher</th><th>agreement, plain</th>"
            "<th>agreement, distilled</th><th>difference</th><th>relabelled</th></tr>" + rows +
            "</table>")


def _recipes(d: Mapping[str, Any]) -> str:
    """The students' recipe changes and, where it differs, the teacher's."""
    if d.get("recipe") is None:
        return ""

    def listed(recipe: Mapping[str, Any]) -> str:
        return ", ".join(f"{name} {{{listed(value)}}}" if isinstance(value, Mapping)
                         else f"{name} {value}" for name, value in recipe.items())

    def shown(recipe: Mapping[str, Any]) -> str:
        return html.escape(listed(recipe) or "the study's training")

    text = f" Students' recipe (both arms): {shown(d['recipe'])}."
    if d.get("teacher_recipe") != d["recipe"]:
        text += f" The teacher's own recipe: {shown(d['teacher_recipe'])}."
    return text


def _convit_html(c: Mapping[str, Any] | None) -> str:
    if not c:
        return ""
    rows = "".join(
        f"<tr><td class='text'>{html.escape(size)}</td><td>{_with_interval(r['DeiT'])}</td>"
        f"<td>{_with_interval(r['ConViT'])}</td>"
        f"<td>{_with_interval(r['difference'], True)} ({r['verdict']})</td></tr>"
        for size, r in c["per_size"].items())
    ahead = "yes" if c["convit_ahead_at_smallest"] else "no"
    shrinks = "yes" if c["difference_shrinks"] else "no"
    return ("<h2>ConViT- against DeiT-style stacks (ConViT's claim)</h2><p class='note'>ConViT: "
            "gated positional self-attention is far ahead of plain attention at small data sizes "
            "(47.8% against 34.8% top-1 with 5% of ImageNet), the difference shrinking with more "
            f"data. Stacks matched in parameters, seeds {c['seeds']}, final validation accuracy. "
            f"ConViT ahead at the smallest size (interval above 0): {ahead}; the difference "
            f"smaller at the largest size than at the smallest: {shrinks}.</p>"
            "<table><tr><th>data size</th><th>DeiT-style (A)</th><th>ConViT-style (G)</th>"
            "<th>ConViT - DeiT</th></tr>" + rows + "</table>")


def _error_bars(readings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    means = [r["mean"] for r in readings]
    return {"type": "data", "symmetric": False,
            "array": [r["interval_95"][1] - m for r, m in zip(readings, means)],
            "arrayminus": [m - r["interval_95"][0] for r, m in zip(readings, means)]}


def _distillation_figure(d: Mapping[str, Any]) -> go.Figure:
    """Per student, plain and distilled side by side: validation accuracy (left) and agreement
    with the teacher (right), means over seeds with their intervals."""
    readings = (("val_acc", "final validation accuracy"),
                ("teacher_agreement", "agreement with the teacher"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[title for _, title in readings])
    layouts = list(d["layouts"])
    colours = {"plain": qualitative.Plotly[0], "distilled": qualitative.Plotly[1]}
    for col, (reading, _) in enumerate(readings, start=1):
        for arm in ("plain", "distilled"):
            values = [d["layouts"][layout][reading][arm] for layout in layouts]
            fig.add_trace(go.Bar(x=layouts, y=[r["mean"] for r in values], name=arm,
                                 marker_color=colours[arm], showlegend=col == 1,
                                 error_y=_error_bars(values),
                                 meta={"role": "distillation", "arm": arm, "reading": reading}),
                          row=1, col=col)
        fig.update_yaxes(range=[0, 1], row=1, col=col)
    fig.update_layout(barmode="group")
    return fig


def _convit_figure(c: Mapping[str, Any]) -> go.Figure:
    fig = go.Figure()
    sizes = list(c["per_size"])
    for name in ("DeiT", "ConViT"):
        readings = [c["per_size"][size][name] for size in sizes]
        fig.add_trace(go.Scatter(x=sizes, y=[r["mean"] for r in readings], name=f"{name}-style",
                                 mode="lines+markers", error_y=_error_bars(readings),
                                 meta={"role": "convit", "stack": name}))
    fig.update_xaxes(title_text="training images per class")
    fig.update_yaxes(title_text="final validation accuracy", range=[0, 1])
    return fig


def figure2(protocols: Sequence[ProtocolCurves]) -> go.Figure:
    """One row of panels (one per data size) for each protocol."""
    columns = max(len(p.sizes) for p in protocols)
    titles = [f"{p.name}: {p.sizes[i]}" if i < len(p.sizes) else ""
              for p in protocols for i in range(columns)]
    fig = make_subplots(rows=len(protocols), cols=columns, subplot_titles=titles,
                        shared_yaxes=True, vertical_spacing=0.18)
    in_legend: set[str] = set()
    for row, p in enumerate(protocols, start=1):
        for col, size in enumerate(p.sizes, start=1):
            for (layout, seed), run in p.curves[p.curves["size"] == size].groupby(["layout", "seed"]):
                fig.add_trace(go.Scatter(
                    x=run["train_loss"], y=run["val_acc"], mode="lines+markers",
                    line={"color": COLOURS.get(layout), "width": 1.5}, marker={"size": 4},
                    name=layout, legendgroup=layout, showlegend=layout not in in_legend,
                    meta={"role": "curve", "protocol": p.name, "size": size, "layout": layout,
                          "seed": int(seed)},
                    hovertemplate=f"{layout} seed {seed}<br>train loss %{{x:.3f}}<br>"
                                  "val acc %{y:.3f}"),
                    row=row, col=col)
                in_legend.add(layout)
            level = p.table.loc[p.table["size"] == size, "matched_level"].max()
            if isinstance(level, float) and math.isfinite(level):
                fig.add_vline(x=level, line_dash="dash", line_color="#888", row=row, col=col)
            fig.update_xaxes(title_text="training loss", type="log", autorange="reversed",
                             row=row, col=col)
        fig.update_yaxes(title_text="validation accuracy", row=row, col=1)
    fig.update_layout(height=420 * len(protocols) + 40, legend={"orientation": "h", "y": -0.12})
    return fig


def _capacity(table: pd.DataFrame, sizes: Sequence[str]) -> go.Figure:
    fig = go.Figure()
    done = table[table["status"] == "completed"]
    for layout, frame in done.groupby("layout"):
        stats = frame.groupby("size").agg(x=("per_class", "mean"), y=("capacity", "mean"),
                                          sd=("capacity", "std")).reindex(sizes).dropna(subset=["y"])
        fig.add_trace(go.Scatter(
            x=stats["x"], y=stats["y"], error_y={"type": "data", "array": stats["sd"].fillna(0)},
            mode="lines+markers", name=layout, line={"color": COLOURS.get(layout)},
            meta={"role": "capacity", "layout": layout}, text=list(stats.index),
            hovertemplate=f"{layout}<br>%{{text}}<br>capacity %{{y:.3f}}"))
    fig.update_xaxes(title_text="training images per class", type="log")
    fig.update_yaxes(title_text="capacity = exp(-final training loss)")
    return fig


def _agreement(ranks: Mapping[str, Any], sizes: Sequence[str]) -> go.Figure:
    fig = go.Figure()
    for reading in ("generalization", "capacity"):
        per_size = ranks[reading]["per_size"]
        fig.add_trace(go.Bar(x=list(sizes), y=[per_size.get(s, np.nan) for s in sizes],
                             name=reading, meta={"role": "agreement", "reading": reading}))
    fig.update_yaxes(title_text="Kendall tau-b against the paper", range=[-1, 1])
    fig.update_layout(barmode="group")
    return fig


def _along_training(points: Sequence[Mapping[str, float]]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[p["step"] for p in points], y=[p["tau_b"] for p in points],
                               mode="lines+markers", meta={"role": "along_training"}))
    fig.update_xaxes(title_text="optimiser step")
    fig.update_yaxes(title_text="capacity tau-b against the paper", range=[-1, 1])
    return fig
