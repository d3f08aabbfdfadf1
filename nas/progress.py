"""Progress while a search runs (one compact line per trial event) and its summary at the end.

Both read the trial records, so they show exactly what the run directory holds:

    [  63s] 4/8 trained: 2 completed, 1 pruned, 1 failed | 2 running | 3 rejected | best val_acc 0.961 (C-C-T-T)
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Sequence, TextIO

from ray import tune

from results.objectives import is_value
from results.pareto import pareto_ranks
from results.run_directory import FINISHED, STATUSES, RunDirError, RunDirectory, now_iso

BEST_METRIC = "val_acc"


def counts(recs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Number of records per status (every status present, zero if none)."""
    found = Counter(r.get("status") for r in recs)
    return {status: found.get(status, 0) for status in STATUSES}


def best(recs: Sequence[dict[str, Any]], metric: str, direction: str = "max",
         statuses: Sequence[str] = ("completed",)) -> dict[str, Any] | None:
    """The record with the best final `metric` among `statuses` (None if there is none)."""
    sign = 1.0 if direction == "max" else -1.0
    scored = [(sign * float(r["metrics"][metric]), r) for r in recs
              if r.get("status") in statuses and is_value(r.get("metrics", {}).get(metric))]
    return max(scored, key=lambda x: x[0])[1] if scored else None


def pareto_front(recs: Sequence[dict[str, Any]], objectives: Sequence[dict[str, str]]) -> list[str]:
    """trial_ids of the completed trials no other completed trial dominates."""
    eligible = [r for r in recs if r.get("status") == "completed"
                and all(is_value(r.get("objectives", {}).get(o["name"])) for o in objectives)]
    if not eligible:
        return []
    values = [[float(r["objectives"][o["name"]]) for o in objectives] for r in eligible]
    ranks = pareto_ranks(values, [o["direction"] for o in objectives])
    return [r["trial_id"] for r, rank in zip(eligible, ranks) if rank == 0]


def progress_line(recs: Sequence[dict[str, Any]], num_trials: int, elapsed_s: float) -> str:
    c = counts(recs)
    trained = sum(c[s] for s in FINISHED)
    line = (f"[{elapsed_s:5.0f}s] {trained}/{num_trials} trained: {c['completed']} completed, "
            f"{c['pruned']} pruned, {c['failed'] + c['diverged']} failed | {c['running']} running"
            f" | {c['rejected']} rejected")
    top = best(recs, BEST_METRIC)
    if top is not None:
        line += f" | best {BEST_METRIC} {top['metrics'][BEST_METRIC]:.3f} ({top['layout']})"
    return line


class ProgressCallback(tune.Callback):
    """Prints a progress line whenever a trial starts or ends."""

    def __init__(self, store: RunDirectory, num_trials: int, stream: TextIO | None = None):
        self.store = store
        self.num_trials = num_trials
        self.stream = stream
        self._t0 = time.time()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None}

    def setup(self, **info: Any) -> None:
        self._t0 = time.time()  # time of this session

    def _print(self, trial: Any, event: str) -> None:
        from nas.tracking import record_id_of
        try:
            recs = self.store.read_records()
        except (RunDirError, OSError):  # a corrupt run, or a store out of reach: no line this time
            return
        record_id = record_id_of(trial)
        line = progress_line(recs, self.num_trials, time.time() - self._t0)
        mine = next((r for r in recs if r["trial_id"] == record_id), None)
        if mine is not None:
            event = f"{mine['layout']} {mine['status'] if event == 'ended' else event}"
            if mine["status"] in ("failed", "diverged") and mine.get("error"):
                event += f": {mine['error'].splitlines()[0][:120]}"
        print(f"{line}   <- {record_id} {event}", file=self.stream or sys.stdout, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(trial, "started")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(trial, "ended")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(trial, "failed")


def summarize(run_dir: str | RunDirectory, objectives: Sequence[dict[str, str]], num_trials: int,
              wall_time_s: float, ray_startup_s: float | None, interrupted: bool) -> dict[str, Any]:
    """Counts, rejection reasons, best trials and the Pareto front, from the records."""
    store = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    recs = store.read_records()
    c = counts(recs)
    reasons: Counter[str] = Counter()
    for r in recs:
        if r["status"] == "rejected" and r.get("rejection"):
            for part in str(r["rejection"]).split("; "):
                reasons[part.split(" ", 1)[0]] += 1
    best_by = {}
    for o in list(objectives) + [{"name": BEST_METRIC, "direction": "max"}]:
        top = best(recs, o["name"], o["direction"])
        if top is not None:
            best_by[o["name"]] = {"trial_id": top["trial_id"], "layout": top["layout"],
                                  "arch_id": top["arch_id"], "value": top["metrics"][o["name"]]}
    trained = sum(c[s] for s in FINISHED)
    return {
        "run_dir": str(store.root),
        "interrupted": interrupted,
        "num_trials": num_trials,
        "trained": trained,
        "counts": c,
        "unscored": sum(1 for r in recs if r.get("status") == "completed" and r.get("unscored")),
        "rejected_by": dict(reasons),
        "objectives": list(objectives),
        "best": best_by,
        "pareto_front": pareto_front(recs, objectives),
        "wall_time_s": round(wall_time_s, 2),
        "ray_startup_s": None if ray_startup_s is None else round(ray_startup_s, 2),
        "ended": now_iso(),
    }


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"run: {summary['run_dir']}" + ("  (INTERRUPTED: resume with "
                                        f"`hybrid-nas search --resume {summary['run_dir']}`)"
                                        if summary["interrupted"] else ""),
        f"trials: {summary['trained']}/{summary['num_trials']} trained "
        f"({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed, "
        f"{c['diverged']} diverged); {c['rejected']} candidates rejected before training"
        + (f"; {summary['unscored']} completed without a value for every objective (on no front:"
           " their training loss never came down to train.matched_loss)"
           if summary.get("unscored") else "")
        + (f" ({', '.join(f'{k}: {v}' for k, v in summary['rejected_by'].items())})"
           if summary["rejected_by"] else ""),
        f"wall time: {summary['wall_time_s']:.1f}s"
        + (f" (Ray start-up {summary['ray_startup_s']:.1f}s)" if summary["ray_startup_s"] else ""),
    ]
    for name, b in summary["best"].items():
        lines.append(f"best {name}: {b['value']:.4g}  trial {b['trial_id']} {b['layout']} "
                     f"({b['arch_id']})")
    lines.append(f"Pareto front ({', '.join(o['name'] + ' ' + o['direction'] for o in summary['objectives'])}): "
                 f"{len(summary['pareto_front'])} trial(s) {', '.join(summary['pareto_front'])}")
    return "\n".join(lines)

