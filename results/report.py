"""One self-contained HTML report of a run: the figures of `results.figures` with plotly.js
embedded once, so the file opens offline; a header summarises the run.

`write_report(run_dir)` writes the page (and the run's table beside it). Each figure's JSON sits in
a `<script type="application/json" class="figure-data">` block that a short script draws.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import yaml

from results.figures import FIGURE_TITLES, build_figures
from results.formatting import count, fmt, si
from results.html_page import render_page
from results.run_directory import STATUSES, RunDirError, read_run
from results.table import load_table, save_table


def write_report(run_dir: str | Path, out: str | Path | None = None, png: bool = False) -> Path:
    """Write the HTML report (default RUN_DIR/report.html, or ./<run name>/report.html for a run
    at a URI) and the run's table beside it; with `png`, also one PNG per figure when an image
    exporter (kaleido) is installed."""
    run = read_run(run_dir)
    table = load_table(run)
    if not len(table):
        raise RunDirError(run.path, "no trial recorded yet, nothing to report")
    try:
        save_table(run.output_dir, table)
    except OSError as exc:  # a read-only run directory still gets its report elsewhere
        print(f"not saving the table beside the run: {exc}")
    out = Path(out) if out else run.output_dir / "report.html"
    figures = build_figures(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(table, figures, run.config), encoding="utf-8")
    if png:
        write_pngs(figures, out)
    return out


def write_pngs(figures: dict[str, go.Figure], out: Path) -> list[Path]:
    """One PNG per figure beside `out`; skipped (returns []) when no image exporter works here."""
    if importlib.util.find_spec("kaleido") is None:
        print("skipping PNGs: no image exporter (pip install kaleido)")
        return []
    written = []
    for name, fig in figures.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        try:
            fig.write_image(path, width=1100, height=650)
        except Exception as exc:  # kaleido present but unusable (e.g. no browser for it)
            print(f"skipping PNGs: the image exporter failed ({exc})")
            return written
        written.append(path)
    return written


# ---- page ------------------------------------------------------------------------------------

def render_html(table: pd.DataFrame, figures: dict[str, go.Figure], config: dict) -> str:
    """The page: a header with the run's summary, then each figure; plotly.js is inlined once."""
    return render_page(f"hybrid-nas report: {_run_name(table)}", _header(table, config),
                       {name: (fig.layout.title.text or FIGURE_TITLES.get(name, name), fig)
                        for name, fig in figures.items()})


def _header(table: pd.DataFrame, config: dict) -> str:
    run_dir = table.attrs.get("run_dir", "")
    summary = table.attrs.get("summary")
    counts = table["status"].value_counts()
    status_row = "".join(f"<td class='status-{s}'>{int(counts.get(s, 0))}</td>" for s in STATUSES)
    objectives = ", ".join(f"{o['name']} ({o['direction']})" for o in table.attrs.get("objectives", []))
    state = ("finished (summary.json present)" if summary is not None
             else "still running or interrupted (no summary.json yet)")
    out = [f"<h1>hybrid-nas report: {html.escape(_run_name(table))}</h1>",
           f"<p class='note'>{html.escape(run_dir)} · {state}</p>",
           "<table><tr>" + "".join(f"<th>{s}</th>" for s in STATUSES) + "<th>total</th></tr>"
           f"<tr>{status_row}<td>{len(table)}</td></tr></table>",
           f"<p><b>Objectives:</b> {html.escape(objectives) or 'none'}</p>"]
    budget = _budget_line(config)
    if budget:
        out.append(f"<p><b>Budget:</b> {html.escape(budget)}</p>")
    if summary:
        out.append(f"<p><b>Summary:</b> {html.escape(_summary_line(summary))}</p>")
    out.append(_problems(table))
    out.append(_front_table(table))
    out.append("<details><summary>search config (search.yaml)</summary><pre>"
               + html.escape(yaml.safe_dump(config, sort_keys=False)) + "</pre></details>")
    return "\n".join(out)


def _summary_line(summary: dict) -> str:
    """The scalar facts of summary.json (timing, trials trained, rejections by reason)."""
    labels = {"trained": "trained", "num_trials": "of requested", "wall_time_s": "wall time (s)",
              "ray_startup_s": "Ray start-up (s)", "ended": "ended"}
    parts = [f"{label} {fmt(summary[key])}" for key, label in labels.items()
             if key in summary and not isinstance(summary[key], (dict, list))]
    if summary.get("interrupted"):
        parts.append("interrupted")
    rejected_by = summary.get("rejected_by")
    if isinstance(rejected_by, dict) and rejected_by:
        parts.append("rejected by " + ", ".join(f"{k}: {fmt(v)}" for k, v in rejected_by.items()))
    return ", ".join(parts) if parts else "(no scalar fields)"


def _budget_line(config: dict) -> str:
    """Budget-like settings found anywhere in the search config (epochs, trial count, FLOP and
    parameter limits), as `key=value` pairs."""
    keys = ("num_trials", "trials", "num_samples", "epochs", "max_epochs", "max_flops",
            "max_params", "max_concurrent_trials", "resolution", "small_per_class")
    found = []

    def visit(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                name = f"{prefix}{key}"
                if key in keys and not isinstance(value, (dict, list)):
                    found.append(f"{name}={si(value) if 'flops' in key or 'params' in key else value}")
                elif isinstance(value, dict):
                    visit(value, f"{name}.")

    visit(config, "")
    return ", ".join(found)


def _problems(table: pd.DataFrame) -> str:
    out = []
    rejected = table.loc[table["status"] == "rejected", "rejection"].fillna("(no reason recorded)")
    if len(rejected):
        rows = "".join(f"<tr><td>{n}</td><td class='text'>{html.escape(str(reason))}</td></tr>"
                       for reason, n in rejected.value_counts().items())
        out.append(f"<details><summary>{count(len(rejected), 'candidate')} rejected before training "
                   "(never trained)</summary>"
                   f"<table><tr><th>count</th><th>reason</th></tr>{rows}</table></details>")
    broken = table[table["status"].isin(["failed", "diverged"])]
    if len(broken):
        rows = "".join(f"<tr><td class='text'>{html.escape(str(r.trial_id))}</td>"
                       f"<td class='text'>{html.escape(str(r.status))}</td><td class='text'>"
                       f"{html.escape(str(r.error or '').strip().splitlines()[-1:][0] if r.error else '')}"
                       f"</td></tr>" for r in broken.itertuples())
        out.append(f"<details><summary>{count(len(broken), 'trial')} failed or diverged</summary>"
                   f"<table><tr><th>trial</th><th>status</th><th>error</th></tr>{rows}</table>"
                   "</details>")
    unreadable = table.attrs.get("unreadable") or []
    if unreadable:
        rows = "".join(f"<li>{html.escape(p)}: {html.escape(r)}</li>" for p, r in unreadable)
        out.append(f"<p><b>{len(unreadable)} unreadable trial records skipped:</b></p><ul>{rows}</ul>")
    return "\n".join(out)


def _front_table(table: pd.DataFrame) -> str:
    front = table[table["pareto_rank"] == 0]
    if not len(front):
        return "<p class='note'>No completed trial on a Pareto front yet.</p>"
    objective_columns = [c for c in table.columns if c.startswith("obj_")]
    columns = ["trial_id", "layout", "depths", "widths", "params", "flops"] + objective_columns + [
        c for c in ("val_acc",) if c in table.columns and f"obj_{c}" not in objective_columns]
    head = "".join(f"<th>{html.escape(c.removeprefix('obj_'))}</th>" for c in columns)
    body = ""
    for _, row in front[columns].iterrows():
        cells = []
        for c in columns:
            value = row[c]
            text = si(value) if c in ("params", "flops") else fmt(value)
            cls = " class='text'" if isinstance(value, str) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return (f"<p><b>Pareto front of the search objectives</b> ({len(front)} trials):</p>"
            f"<table><tr>{head}</tr>{body}</table>")


def _run_name(table: pd.DataFrame) -> str:
    return table.attrs.get("run_name") or Path(table.attrs.get("run_dir", "")).name
