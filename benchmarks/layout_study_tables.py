"""Markdown tables of a finished layout study, for the results pages: the two rankings against the
paper's (tau-b with its interval), per-size agreement, the generalization ranking along the
training-loss levels, capacity along training, and the objective-agreement table.

    python benchmarks/layout_study_tables.py STUDY_DIR_OR_RESULTS_FOLDER

Reads rankings.json and study.csv only (what a study leaves, or its committed copy).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd


def number(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.3f}"


def ranking_rows(ranks: dict) -> list[str]:
    rows = ["| reading | ours (best first; mean over seeds) | the paper | Kendall tau-b [95% interval] |",
            "|---|---|---|---|"]
    for name in ("generalization", "capacity"):
        r = ranks[name]
        order = " > ".join(f"{layout} {r['scores'][layout]:.3f}" for layout in r["order"])
        low, high = r["interval_95"]
        rows.append(f"| {name} | {order} | {r['paper']} | **{number(r['tau_b'], True)}** "
                    f"[{number(low, True)}, {number(high, True)}] |")
    return rows


def per_size_rows(ranks: dict) -> list[str]:
    sizes = list(ranks["generalization"]["per_size"])
    rows = ["| reading | " + " | ".join(sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for name in ("generalization", "capacity"):
        per = ranks[name]["per_size"]
        rows.append(f"| {name} | " + " | ".join(number(per.get(s), True) for s in sizes) + " |")
    return rows


def along_loss_rows(ranks: dict) -> list[str]:
    g = ranks["generalization"]
    layouts = list(g["scores"])
    rows = ["| training loss | tau-b vs the paper | runs without a reading | "
            + " | ".join(layouts) + " |", "|---" * (3 + len(layouts)) + "|"]
    for point in g.get("along_loss", []):
        rows.append(f"| {point['level']:g} | {number(point['tau_b'], True)} | {point['missing']} | "
                    + " | ".join(number(point["scores"].get(k)) for k in layouts) + " |")
    target = next(iter(g["matched_level"].values()))
    rows.append(f"| {target:g} (target) | {number(g['tau_b'], True)} | {g.get('missing', 0)} | "
                + " | ".join(number(g["scores"].get(k)) for k in layouts) + " |")
    return rows


def along_training_rows(ranks: dict, every: int = 8) -> list[str]:
    points = ranks["capacity"]["along_training"]
    picked = points[::every] + ([points[-1]] if (len(points) - 1) % every else [])
    return ["| step | " + " | ".join(str(p["step"]) for p in picked) + " |",
            "|---" * (len(picked) + 1) + "|",
            "| capacity tau-b | " + " | ".join(number(p["tau_b"], True) for p in picked) + " |"]


def agreement_rows(ranks: dict) -> list[str]:
    rows = ["| reading a trial can take | stands for | better | tau-b vs the fit protocol's | "
            "tau-b vs the paper | runs without a value |", "|---|---|---|---|---|---|"]
    for r in ranks.get("objective_agreement", []):
        name = r["reading"] + ("" if r.get("objective", True) else " (proxy)")
        rows.append(f"| {name} | {r['stands_for']} | {'higher' if r['higher_is_better'] else 'lower'}"
                    f" | {number(r['tau_b_vs_validated'], True)} | {number(r['tau_b_vs_paper'], True)}"
                    f" | {r['missing']} |")
    return rows


def gap_rows(table: pd.DataFrame, sizes: list[str]) -> list[str]:
    done = table[(table["status"] == "completed") & table["size"].isin(sizes)]
    means = done.groupby("layout")[["val_acc_at_matched_loss", "gap_at_matched_loss",
                                    "steps_trained"]].mean()
    rows = ["| layout | val acc at the target | val loss - train loss there | steps to the target |",
            "|---|---|---|---|"]
    for layout, r in means.iterrows():
        rows.append(f"| {layout} | {r.val_acc_at_matched_loss:.3f} | {r.gap_at_matched_loss:.3f} | "
                    f"{r.steps_trained:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    ranks = json.loads((args.folder / "rankings.json").read_text())
    table = pd.read_csv(args.folder / "study.csv")
    sections = [("Rankings", ranking_rows(ranks)), ("Per size", per_size_rows(ranks)),
                ("Generalization along the training-loss levels", along_loss_rows(ranks)),
                ("At the target, per layout (means over seeds and sizes)",
                 gap_rows(table, ranks["generalization"]["sizes"])),
                ("Capacity along training", along_training_rows(ranks)),
                ("Objective agreement", agreement_rows(ranks))]
    for title, rows in sections:
        print(f"### {title}\n\n" + "\n".join(rows) + "\n")
    missed = ranks["generalization"].get("not_reached") or []
    print(f"Runs that did not reach the target: {len(missed)}"
          + "".join(f"\n- {m['cell_id']}: {m['final_train_loss']:.3f} after {m['steps']} steps"
                    for m in missed))
    print(f"\nCells completed: {ranks['cells']['completed']} of {ranks['cells']['total']}; "
          f"wall time {ranks.get('wall_time_s')} s")


if __name__ == "__main__":
    main()
