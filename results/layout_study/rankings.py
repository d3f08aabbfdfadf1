"""Rank the five layouts by a study's readings and compare with the CoAtNet paper's rankings.

- Generalization: each layout's `val_acc_at_matched_loss`, averaged over seeds and over the real
  (not deformed) data sizes: the paper reads generalization on its smaller data set (ImageNet-1K).
- Capacity: each layout's `capacity` averaged over seeds at each size; the headline is the largest
  size (the deformed set), as the paper reads capacity on JFT. How the agreement moves with data
  size, and along training at the largest size, is reported beside it.
Agreement is Kendall's tau-b between our scores and the paper's ranks (ties count as the paper
writes them), with a 95% interval from resampling seeds (bootstrap: for every layout and size,
seeds drawn with replacement from those that completed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PaperRanking:
    """A ranking as the paper states it: `text` verbatim, `rank` per layout (1 = best; layouts the
    paper calls about equal share the mean of their places)."""

    text: str
    rank: Mapping[str, float]


PAPER = {
    "generalization": PaperRanking("C-C-C-C ~ C-C-C-T >= C-C-T-T > C-T-T-T >> ViT_REL",
                                   {"C-C-C-C": 1.5, "C-C-C-T": 1.5, "C-C-T-T": 3.0,
                                    "C-T-T-T": 4.0, "ViT_REL": 5.0}),
    "capacity": PaperRanking("C-C-T-T ~ C-T-T-T > ViT_REL > C-C-C-T > C-C-C-C",
                             {"C-C-T-T": 1.5, "C-T-T-T": 1.5, "ViT_REL": 3.0, "C-C-C-T": 4.0,
                              "C-C-C-C": 5.0}),
}


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (ties in either allowed): (concordant - discordant) /
    sqrt((pairs not tied in x) * (pairs not tied in y)). NaN when either list is all ties."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} scores against {len(y)}")
    concordant = discordant = untied_x = untied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            untied_x += dx != 0
            untied_y += dy != 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    if not untied_x or not untied_y:
        return math.nan
    return float((concordant - discordant) / math.sqrt(untied_x * untied_y))


def tau_against_paper(scores: Mapping[str, float], reading: str) -> float:
    """tau-b of our scores (higher is better) against the paper's ranks, over the layouts both have."""
    layouts = [name for name, value in scores.items()
               if name in PAPER[reading].rank and math.isfinite(value)]
    return kendall_tau_b([scores[name] for name in layouts],
                         [-PAPER[reading].rank[name] for name in layouts])


def layout_scores(table: pd.DataFrame, reading: str, sizes: Sequence[str]) -> dict[str, float]:
    """Each layout's mean `reading`: over seeds within each size, then over `sizes`."""
    rows = table[table["size"].isin(sizes)]
    per_size = rows.groupby(["layout", "size"])[reading].mean()
    return {layout: float(per_size[layout].mean()) for layout in sorted(rows["layout"].unique())}


def bootstrap_tau(table: pd.DataFrame, reading: str, sizes: Sequence[str], paper: str,
                  resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of tau-b when each (layout, size) cell's seeds are resampled."""
    rng = np.random.default_rng(seed)
    groups = {key: frame[reading].dropna().to_numpy()
              for key, frame in table[table["size"].isin(sizes)].groupby(["layout", "size"])}
    layouts = sorted({layout for layout, _ in groups})
    taus = []
    for _ in range(resamples):
        scores = {}
        for layout in layouts:
            means = [rng.choice(values, size=len(values)).mean()
                     for (name, _), values in groups.items() if name == layout and len(values)]
            scores[layout] = float(np.mean(means)) if means else math.nan
        taus.append(tau_against_paper(scores, paper))
    taus = np.array([t for t in taus if math.isfinite(t)])
    if not len(taus):
        return math.nan, math.nan
    return float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))


def _ranking(scores: Mapping[str, float], reading: str) -> dict[str, Any]:
    order = sorted((name for name in scores if math.isfinite(scores[name])),
                   key=lambda name: -scores[name])
    return {"scores": dict(scores), "order": order, "tau_b": tau_against_paper(scores, reading),
            "paper": PAPER[reading].text, "paper_rank": dict(PAPER[reading].rank)}


def rankings(table: pd.DataFrame, curves: pd.DataFrame, sizes: Sequence[str],
             resamples: int = 2000) -> dict[str, Any]:
    """What rankings.json holds: both rankings with tau-b and its interval, per size, capacity
    along training at the largest size, and how the cheap readings rank against the validated."""
    done = table[table["status"] == "completed"]
    real = [s for s in sizes if not done.loc[done["size"] == s, "deformed"].any()]
    by_images = done.groupby("size")["train_images"].max()
    largest = max(sizes, key=lambda s: by_images.get(s, -1))
    seeds = sorted(done["seed"].unique().tolist())

    generalization = _ranking(layout_scores(done, "val_acc_at_matched_loss", real), "generalization")
    generalization.update(
        reading="val_acc_at_matched_loss", sizes=real, seeds=seeds,
        interval_95=bootstrap_tau(done, "val_acc_at_matched_loss", real, "generalization", resamples),
        per_size={s: tau_against_paper(layout_scores(done, "val_acc_at_matched_loss", [s]),
                                       "generalization") for s in sizes},
        matched_level={s: float(done.loc[done["size"] == s, "matched_level"].max()) for s in sizes},
        missing=int(done.loc[done["size"].isin(real), "val_acc_at_matched_loss"].isna().sum()),
        not_reached=_not_reached(done),
        along_loss=_along_loss(done, real))
    capacity = _ranking(layout_scores(done, "capacity", [largest]), "capacity")
    capacity.update(
        reading="capacity", size=largest, real_sizes=real, seeds=seeds,
        interval_95=bootstrap_tau(done, "capacity", [largest], "capacity", resamples),
        per_size={s: tau_against_paper(layout_scores(done, "capacity", [s]), "capacity")
                  for s in sizes},
        along_training=_capacity_along_training(curves[curves["size"] == largest]))
    cheap = {}
    for column in [c for c in table.columns if c.startswith("val_acc_at_loss_")]:
        scores = layout_scores(done, column, real)
        cheap[column] = {
            "stands_for": "val_acc_at_matched_loss", "scores": scores,
            "missing": int(done.loc[done["size"].isin(real), column].isna().sum()),
            "tau_b_vs_validated": tau_between(scores, generalization["scores"]),
            "tau_b_vs_paper": tau_against_paper(scores, "generalization")}
    cheap_capacity = layout_scores(done, "fit_short", [largest])
    cheap.update({
        "fit_short": {
            "stands_for": "capacity", "scores": cheap_capacity,
            "tau_b_vs_validated": tau_between(cheap_capacity, capacity["scores"]),
            "tau_b_vs_paper": tau_against_paper(cheap_capacity, "capacity")},
    })
    return {"generalization": generalization, "capacity": capacity, "cheap_readings": cheap,
            "cells": {"completed": int(len(done)), "total": int(len(table))}}


def _not_reached(done: pd.DataFrame) -> list[dict[str, Any]]:
    """The fit protocol's runs that did not reach their target within the cap, with the loss they
    reached: recorded, never dropped."""
    if "reached_target" not in done:
        return []
    missed = done[done["reached_target"].eq(False)]
    return [{"cell_id": r.cell_id, "target_loss": float(r.target_loss),
             "final_train_loss": float(r.final_train_loss), "steps": int(r.steps_trained)}
            for r in missed.itertuples()]


def _along_loss(done: pd.DataFrame, real: Sequence[str]) -> list[dict[str, Any]]:
    """Where along Figure 2's curves the generalization ranking settles: tau-b against the paper
    of the validation accuracy read at each fixed training-loss level (high to low), averaged over
    seeds and the real sizes, with how many runs never reached the level."""
    out = []
    columns = [c for c in done.columns if c.startswith("val_acc_at_loss_")]
    for column in sorted(columns, key=lambda c: -float(c.rsplit("_", 1)[1])):
        scores = layout_scores(done, column, real)
        out.append({"level": float(column.rsplit("_", 1)[1]),
                    "tau_b": tau_against_paper(scores, "generalization"),
                    "missing": int(done.loc[done["size"].isin(real), column].isna().sum()),
                    "scores": scores})
    return out


def tau_between(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """tau-b of two layout -> score maps over the layouts both have a finite score for."""
    names = [n for n in a if n in b and math.isfinite(a[n]) and math.isfinite(b[n])]
    return kendall_tau_b([a[n] for n in names], [b[n] for n in names])


def _capacity_along_training(curves: pd.DataFrame) -> list[dict[str, float]]:
    """tau-b of exp(-training loss) against the paper's capacity ranking at every evaluation step
    (mean over seeds): does the ranking settle, or is it still convergence speed?"""
    out = []
    for step, frame in curves.groupby("step"):
        scores = {layout: float(np.exp(-group["train_loss"]).mean())
                  for layout, group in frame.groupby("layout")}
        out.append({"step": int(step), "tau_b": tau_against_paper(scores, "capacity")})
    return out
