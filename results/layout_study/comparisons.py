"""The two comparisons beside the layouts, read off their cells' final evaluations.

- Distillation (DeiT's claim: distillation from a convnet narrows attention's generalization gap):
  per layout, final validation accuracy without and with distillation, their paired difference
  (same seed: same training images, initial weights, batch order and budget), the accuracy gap to
  the teacher (teacher's accuracy minus the student's) both ways, and `teacher_agreement`: the
  share of validation images on which the student's final prediction is the teacher's (the plain
  run of the teacher layout with the same seed), both ways; and the distilled runs'
  `teacher_relabelled` in their last evaluation period: the share of training images (as augmented
  and mixed) on which the teacher's class was not the label, all the teacher could teach beyond
  the labels.
- ConViT (ConViT's claim: gated positional attention ahead of plain attention at small sizes, the
  difference shrinking with more data): per size, final validation accuracy of the DeiT- and the
  ConViT-style stack and their paired difference (same seed).
Every mean over seeds comes with a 95% percentile interval from resampling the seeds (bootstrap).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

COMPARISON_COLUMNS = ["cell_id", "comparison", "layout", "arm", "size", "train_images", "seed",
                      "params", "flops", "steps", "status", "final_train_loss", "final_val_loss",
                      "final_val_acc", "teacher_cell", "teacher_agreement", "teacher_relabelled",
                      "wall_time_s"]
DEIT, CONVIT = "DeiT", "ConViT"


def comparison_table(cells: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per comparison cell; `teacher_agreement` for every distillation cell whose run and
    whose seed's teacher completed (the plain arm's too: with the teacher it was never shown)."""
    cells = [c for c in cells if c.get("comparison") in ("distillation", "convit")]
    teachers = {(c["size"], c["seed"]): c["teacher_cell"] for c in cells if c.get("teacher_cell")}
    predictions = {c["cell_id"]: np.array(c["val_predictions"].split(","), dtype=np.int64)
                   for c in cells if c.get("val_predictions") and c["status"] == "completed"}
    rows = []
    for c in cells:
        last = (c.get("curve") or [{}])[-1] if c["status"] == "completed" else {}
        distilled = c["comparison"] == "distillation"
        teacher = teachers.get((c["size"], c["seed"])) if distilled else None
        agreement = math.nan
        if c["cell_id"] in predictions and teacher in predictions:
            agreement = float((predictions[c["cell_id"]] == predictions[teacher]).mean())
        rows.append({"cell_id": c["cell_id"], "comparison": c["comparison"], "layout": c["layout"],
                     "arm": c.get("arm"), "size": c["size"], "train_images": c.get("train_images"),
                     "seed": c["seed"], "params": c.get("params"), "flops": c.get("flops"),
                     "steps": c.get("steps"), "status": c["status"],
                     "final_train_loss": last.get("train_loss", math.nan),
                     "final_val_loss": last.get("val_loss", math.nan),
                     "final_val_acc": last.get("val_acc", math.nan), "teacher_cell": teacher,
                     "teacher_agreement": agreement,
                     "teacher_relabelled": last.get("teacher_relabelled", math.nan),
                     "wall_time_s": c.get("wall_time_s")})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def mean_interval(values: Sequence[float], resamples: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    """{mean, interval_95, seeds}: the mean of per-seed values and the 2.5/97.5 percentiles of the
    means of seeds resampled with replacement (NaN values left out; all NaN if none is left)."""
    values = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(values):
        return {"mean": math.nan, "interval_95": [math.nan, math.nan], "seeds": 0}
    means = rng.choice(values, size=(resamples, len(values))).mean(axis=1)
    return {"mean": float(values.mean()),
            "interval_95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "seeds": int(len(values))}


def verdict(difference: Mapping[str, Any]) -> str:
    """`higher` / `lower` when the difference's interval excludes 0, else `unclear`."""
    low, high = difference["interval_95"]
    if math.isfinite(low) and low > 0:
        return "higher"
    if math.isfinite(high) and high < 0:
        return "lower"
    return "unclear"


def _paired(frame: pd.DataFrame, column: str, key: str, first: str, second: str) -> list[float]:
    """Per seed, `column` of the `second` row minus that of the `first` (rows told apart by
    `key`)."""
    wide = frame.pivot_table(index="seed", columns=key, values=column, aggfunc="first")
    if first not in wide or second not in wide:
        return []
    return (wide[second] - wide[first]).dropna().tolist()


def distillation_readings(table: pd.DataFrame, teacher: str, resamples: int = 2000,
                          seed: int = 0) -> dict[str, Any]:
    """Per student layout: accuracy and agreement with the teacher, plain and distilled, their
    paired differences, and the accuracy gap to the teacher (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows = table[(table["comparison"] == "distillation") & (table["status"] == "completed")]
    teacher_ids = set(table.loc[table["comparison"] == "distillation", "teacher_cell"].dropna())
    teacher_runs = rows[rows["cell_id"].isin(teacher_ids)]
    teacher_acc = teacher_runs.set_index("seed")["final_val_acc"]
    sizes = sorted(rows.loc[rows["arm"] == "distilled", "size"].unique().tolist())
    rows = rows[rows["size"].isin(sizes)]  # the students' size (a teacher may train at another)
    out = {"teacher": teacher, "sizes": sizes,
           "teacher_sizes": sorted(teacher_runs["size"].unique().tolist()),
           "seeds": sorted(rows["seed"].unique().tolist()),
           "teacher_val_acc": mean_interval(teacher_acc.tolist(), resamples, rng), "layouts": {}}
    students = sorted(rows.loc[rows["arm"] == "distilled", "layout"].unique())
    for layout in students:
        runs = rows[rows["layout"] == layout]
        reading: dict[str, Any] = {}
        for column, name in (("final_val_acc", "val_acc"),
                             ("teacher_agreement", "teacher_agreement")):
            reading[name] = {arm: mean_interval(runs.loc[runs["arm"] == arm, column].tolist(),
                                                resamples, rng) for arm in ("plain", "distilled")}
            reading[name]["difference"] = mean_interval(
                _paired(runs, column, "arm", "plain", "distilled"), resamples, rng)
            reading[name]["verdict"] = verdict(reading[name]["difference"])
        accuracy = {arm: runs[runs["arm"] == arm].set_index("seed")["final_val_acc"]
                    for arm in ("plain", "distilled")}
        gap = {arm: (teacher_acc - values).dropna() for arm, values in accuracy.items()}
        reading["gap_to_teacher"] = {arm: mean_interval(values.tolist(), resamples, rng)
                                     for arm, values in gap.items()}
        reading["teacher_relabelled"] = mean_interval(
            runs.loc[runs["arm"] == "distilled", "teacher_relabelled"].tolist(), resamples, rng)
        out["layouts"][layout] = reading
    return out


def convit_readings(table: pd.DataFrame, sizes: Sequence[str], resamples: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """Per size (in `sizes`' order, smallest data first): final validation accuracy of the DeiT-
    and ConViT-style stacks and ConViT minus DeiT, paired by seed; whether ConViT is ahead at the
    smallest size (the difference's interval above 0) and whether the difference shrinks from the
    smallest to the largest size."""
    rng = np.random.default_rng(seed)
    rows = table[(table["comparison"] == "convit") & (table["status"] == "completed")]
    per_size = {}
    for size in sizes:
        runs = rows[rows["size"] == size]
        reading = {name: mean_interval(runs.loc[runs["layout"] == name, "final_val_acc"].tolist(),
                                       resamples, rng) for name in (DEIT, CONVIT)}
        reading["difference"] = mean_interval(
            _paired(runs, "final_val_acc", "layout", DEIT, CONVIT), resamples, rng)
        reading["verdict"] = verdict(reading["difference"])
        per_size[size] = reading
    differences = [per_size[s]["difference"]["mean"] for s in sizes]
    return {"sizes": list(sizes), "seeds": sorted(rows["seed"].unique().tolist()),
            "per_size": per_size,
            "convit_ahead_at_smallest": bool(sizes) and per_size[sizes[0]]["verdict"] == "higher",
            "difference_shrinks": len(sizes) > 1 and all(math.isfinite(d) for d in differences)
                                  and differences[-1] < differences[0]}


def comparison_readings(table: pd.DataFrame, teacher: str | None,
                        convit_sizes: Sequence[str] | None, resamples: int = 2000) -> dict[str, Any]:
    """What rankings.json holds for the comparisons the study ran (None for one it did not)."""
    return {"distillation": None if teacher is None else
            distillation_readings(table, teacher, resamples),
            "convit": None if convit_sizes is None else
            convit_readings(table, convit_sizes, resamples)}
