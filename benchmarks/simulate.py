"""Searches replayed on the ground-truth table (`benchmarks/ground_truth.py`): no training, no Ray.

A simulated search runs as a real one does, asynchronously on `workers` (2) slots: a proposer
(an Optuna sampler, through the same budget and duplicate rules as `nas.searcher`) hands out an
architecture when a slot is free; the trial "trains" epoch by epoch, each epoch taking the wall
time the table recorded for it; at the end of every epoch a scheduler sees the trial's readings
of that epoch and says whether it goes on (its real decision code: `nas.rungs.Rungs`, Ray Tune's
ASHA bracket, Syne Tune's MOASHA); a trial that ends is told to the proposer as COMPLETE (its
full-budget values), PRUNED (stopped early, or completed without a value for an objective:
`unscored`, as `nas.searcher.trial_outcome` rules) or FAIL (diverged). Compute is counted in
epochs trained, by every trial, stopped ones included. The same seed gives the same trials.

The table holds a sample of the space. A proposal that is not in it stands for its nearest
table architecture (same stage blocks first, then the nearest depths, widths and head sizes:
the 1-nearest-neighbour surrogate of Syne Tune's blackbox repository); its values are that
row's, and a second proposal of a row already trained is a duplicate, as in a real search.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from ground_truth import DATA_DIR, TableFiles, choices, table_search
from nas.proposals import Proposals
from nas.rungs import Rungs
from nas.searcher import make_sampler
from results.objectives import Objective
from results.pareto import hypervolume
from search_spaces.space import SearchSpace, sample_architecture

BLOCK_WEIGHT = 10.0  # a different block type outweighs any difference of sizes
TOLD = {"completed": "complete", "unscored": "pruned", "pruned": "pruned",
        "failed": "fail"}  # status -> what the proposer is told


@dataclass
class Table:
    """The ground truth as arrays, rows in the table's seeded order.

    readings: (n, epochs, k) objective values after each epoch (NaN past a divergence);
    epoch_times: (n, epochs) seconds; good_epochs: epochs each trained before it diverged
    (= epochs when it did not); final: (n, k) full-budget values, NaN for a failed row;
    features: (n, f) what the nearest-neighbour lookup compares; fits: arch_id -> bool for
    every architecture of the space (the budget check); space: the space the search samples;
    proxies: zero-cost proxy name -> (n,) scores (`benchmarks/table_proxies.py`), if computed.
    """

    objectives: list[Objective]
    epochs: int
    arch_ids: list[str]
    layouts: list[str]
    readings: np.ndarray
    epoch_times: np.ndarray
    good_epochs: np.ndarray
    final: np.ndarray
    features: np.ndarray
    fits: dict[str, bool]
    space: SearchSpace
    startup_trials: int = 4
    name: str = "digits"
    proxies: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {a: i for i, a in enumerate(self.arch_ids)}

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def completed(self) -> np.ndarray:
        """Rows whose full-budget values are all finite (the only ones that can be on a front)."""
        return np.isfinite(self.final).all(axis=1)

    def nearest(self, arch: Any) -> int:
        """The table row of an architecture, or the nearest one (ties: the earlier row)."""
        row = self._index.get(arch.arch_id)
        if row is not None:
            return row
        distance = np.abs(self.features - _features([choices(arch)])[0]).sum(axis=1)
        return int(np.argmin(distance))

    @classmethod
    def load(cls, data_dir: Path = DATA_DIR, name: str = "digits") -> "Table":
        """A committed table (`ground_truth.TABLES`), with its proxy scores when computed. The
        sampler's startup trials are the default search's (a table never sets a default)."""
        from nas.config import default_config

        config, space = table_search(name)
        files = TableFiles(name, Path(data_dir))
        table = pd.read_parquet(files.table)
        costs = pd.read_parquet(files.costs, columns=["arch_id", "fits"])
        out = cls.from_frame(table, dict(zip(costs["arch_id"], costs["fits"].astype(bool))),
                             list(config.objectives), config.epochs, space,
                             default_config().sampler.startup_trials)
        out.name = name
        proxies = files.out / f"{name}_proxies.parquet"
        if proxies.is_file():
            scores = pd.read_parquet(proxies).set_index("arch_id").reindex(out.arch_ids)
            out.proxies = {c: scores[c].to_numpy(float) for c in scores.columns}
        return out

    @classmethod
    def from_frame(cls, table: pd.DataFrame, fits: dict[str, bool], objectives: list[Objective],
                   epochs: int, space: SearchSpace, startup_trials: int = 4) -> "Table":
        """Arrays from the long table (one row per architecture and epoch)."""
        names = [o.name for o in objectives]
        per_arch = table.sort_values(["sample_index", "epoch"]).groupby("sample_index", sort=True)
        arch_ids, layouts, feats = [], [], []
        readings = np.full((per_arch.ngroups, epochs, len(names)), np.nan)
        times = np.zeros((per_arch.ngroups, epochs))
        good = np.zeros(per_arch.ngroups, dtype=int)
        for i, (_, rows) in enumerate(per_arch):
            first = rows.iloc[0]
            arch_ids.append(first["arch_id"])
            layouts.append(first["layout"])
            feats.append(first.to_dict())
            rows = rows[rows["epoch"].notna()]
            done = rows["epoch"].astype(int).to_numpy()
            readings[i, done - 1] = rows[names].to_numpy(float)
            times[i, done - 1] = rows["epoch_time_s"].to_numpy(float)
            good[i] = len(done)
            if good[i] < epochs:  # the diverging epoch cost about what the last good one did
                times[i, good[i]:] = times[i, good[i] - 1] if good[i] else 1.0
        final = readings[:, -1, :].copy()
        final[good < epochs] = np.nan
        final[~np.isfinite(final).all(axis=1)] = np.nan
        return cls(objectives, epochs, arch_ids, layouts, readings, times, good, final,
                   _features(feats), fits, space, startup_trials)


def _features(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per architecture: block types (T = 1, weighted) and sizes scaled to about [0, 1]."""
    stages = sum(1 for key in rows[0] if key.startswith("s") and key.endswith("_block"))
    out = []
    for row in rows:
        vector = [row["stem_width"] / 32.0]
        for i in range(1, stages + 1):
            vector += [BLOCK_WEIGHT * float(row[f"s{i}_block"] != "C"), row[f"s{i}_depth"] / 3.0,
                       row[f"s{i}_width"] / 128.0, row[f"s{i}_head_size"] / 32.0]
        out.append(vector)
    return np.asarray(out, dtype=float)


# ---- proposers: who picks the next architecture -----------------------------------------------

class Proposer(Protocol):
    def ask(self) -> tuple[Any, int] | None:
        """(handle, table row) of the next trial to train; None when the space is spent."""

    def tell(self, handle: Any, state: str, values: Sequence[float] | None) -> None:
        """How it ended: "complete" (with its values), "pruned" or "fail"."""


class OptunaProposer:
    """An Optuna sampler over the search space, by the real searcher's rules: a candidate over
    the budget is told PRUNED at no cost and another asked for; one whose table row was trained
    already is a duplicate (told its twin's values when known), at most `max_attempts` in a
    row. With `multi_fidelity` and/or `proxy`, the real search's proposals (`nas.proposals`)
    enqueue candidates first, fed every trial's readings after every epoch; the proxy scores
    are the table's (`Table.proxies`), looked up by table row."""

    def __init__(self, table: Table, sampler: str, seed: int, max_attempts: int = 50,
                 multi_fidelity: bool = False, min_points: int = 6, proxy: str | None = None,
                 candidates: int = 4):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.table = table
        self.study = optuna.create_study(
            directions=["maximize" if d == "max" else "minimize" for d in table.directions],
            sampler=make_sampler(sampler, seed, table.startup_trials))
        self.max_attempts = max_attempts
        self.trained: set[int] = set()
        self.values: dict[int, list[float]] = {}
        if proxy is not None and proxy not in table.proxies:
            raise ValueError(f"no {proxy!r} scores for table {table.name!r}: run "
                             f"benchmarks/table_proxies.py --table {table.name}")
        scorer = None if proxy is None else \
            (lambda arch, scores=table.proxies[proxy]: float(scores[table.nearest(arch)]))
        self.proposals = Proposals(table.space, table.directions, table.epochs, multi_fidelity,
                                   min_points, scorer, candidates, table.startup_trials, seed) \
            if multi_fidelity or proxy is not None else None

    def ask(self) -> tuple[Any, int] | None:
        for _ in range(self.max_attempts):
            if self.proposals is not None:
                self.proposals.propose(self.study, self._usable)
            trial = self.study.ask()
            arch = sample_architecture(trial, self.table.space)
            if not self.table.fits.get(arch.arch_id, False):
                self.study.tell(trial, state=TrialState.PRUNED)
                continue
            row = self.table.nearest(arch)
            if row in self.trained:
                known = self.values.get(row)
                if known is not None:
                    self.study.tell(trial, known if len(known) > 1 else known[0])
                else:
                    self.study.tell(trial, state=TrialState.PRUNED)
                continue
            self.trained.add(row)
            return (trial, row), row
        return None

    def _usable(self, arch: Any) -> bool:
        """Within budget and not trained yet (what the proposals may propose)."""
        return self.table.fits.get(arch.arch_id, False) and self.table.nearest(arch) not in self.trained

    def observe(self, handle: Any, epoch: int, values: Sequence[float]) -> None:
        """A trial's readings after an epoch (what the multi-fidelity model learns from)."""
        if self.proposals is not None:
            trial, _ = handle
            self.proposals.observe(str(trial.number), trial.params, trial.distributions, epoch,
                                   values)

    def tell(self, handle: Any, state: str, values: Sequence[float] | None) -> None:
        trial, row = handle
        if state == "complete":
            self.values[row] = list(values)
            self.study.tell(trial, list(values) if len(values) > 1 else values[0])
        else:
            self.study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)


# ---- schedulers: whether a trial goes on after an epoch -----------------------------------------

class Scheduler(Protocol):
    def add(self, key: str) -> None: ...

    def result(self, key: str, epoch: int, values: Sequence[float]) -> bool:
        """True: train on (never asked at the full budget)."""


class FullBudget:
    """No early stopping."""

    def add(self, key: str) -> None:
        pass

    def result(self, key: str, epoch: int, values: Sequence[float]) -> bool:
        return True


class OurMOASHA:
    """This project's multi-objective ASHA (`nas.rungs.Rungs.decide`, as `nas.moasha` calls it);
    `options`: the rungs' `placement`, `extrapolate`, ... (`nas.rungs.Rungs`)."""

    def __init__(self, table: Table, grace_period: int = 1, reduction_factor: float = 3.0,
                 **options: Any):
        self.rungs = Rungs(table.objectives, table.epochs, grace_period, reduction_factor,
                           **options)

    def add(self, key: str) -> None:
        pass

    def result(self, key: str, epoch: int, values: Sequence[float]) -> bool:
        decision = self.rungs.decide(key, epoch, values)
        return decision is None or decision.promote

    def observe(self, key: str, epoch: int, values: Sequence[float]) -> None:
        """A trial's readings at its full budget (what adaptive rungs learn from)."""
        self.rungs.record(key, epoch, values)


class RayASHA:
    """Ray Tune's ASHA on one objective: its bracket (`ray.tune.schedulers.async_hyperband`),
    driven as `ASHAScheduler(stop_last_trials=False)` drives it; no Ray runtime."""

    def __init__(self, table: Table, metric: str, grace_period: int = 1,
                 reduction_factor: float = 3.0):
        from ray.tune.schedulers.async_hyperband import _Bracket

        self.column = [o.name for o in table.objectives].index(metric)
        self.sign = 1.0 if table.objectives[self.column].direction == "max" else -1.0
        self.bracket = _Bracket(grace_period, table.epochs, reduction_factor, 0,
                                stop_last_trials=False)

    def add(self, key: str) -> None:
        pass

    def result(self, key: str, epoch: int, values: Sequence[float]) -> bool:
        action = self.bracket.on_result(SimpleNamespace(trial_id=key), epoch,
                                        self.sign * values[self.column])
        return action != "STOP"


class SyneTuneMOASHA:
    """Syne Tune's MOASHA (`syne_tune...multiobjective.moasha.MOASHA`, as shipped: non-dominated
    sorting with its epsilon-net), driven through its scheduler API: `on_trial_add`, then
    `on_trial_result` per epoch. It minimises every metric: maximised ones are negated; a NaN
    reading (not reached yet) is given as the worst value of that objective in the table."""

    def __init__(self, table: Table, grace_period: int = 1, reduction_factor: float = 3.0,
                 seed: int = 0):
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        self.names = [o.name for o in table.objectives]
        self.signs = [-1.0 if o.direction == "max" else 1.0 for o in table.objectives]
        finite = table.readings[np.isfinite(table.readings)].size
        self.worst = [np.nanmax(s * table.readings[:, :, j]) if finite else 0.0
                      for j, s in enumerate(self.signs)]
        self.scheduler = MOASHA(config_space={}, metrics=self.names, do_minimize=True,
                                time_attr="epoch", max_t=table.epochs, grace_period=grace_period,
                                reduction_factor=reduction_factor, random_seed=seed)
        self.trials: dict[str, Any] = {}

    def add(self, key: str) -> None:
        from datetime import datetime

        from syne_tune.backend.trial_status import Trial

        self.trials[key] = Trial(trial_id=len(self.trials), config={},
                                 creation_time=datetime(2026, 12, 1))
        self.scheduler.on_trial_add(self.trials[key])

    def result(self, key: str, epoch: int, values: Sequence[float]) -> bool:
        reported = {"epoch": epoch}
        for name, sign, worst, value in zip(self.names, self.signs, self.worst, values):
            reported[name] = sign * value if math.isfinite(value) else worst
        return self.scheduler.on_trial_result(self.trials[key], reported) != "STOP"


# ---- the search ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialRun:
    """One simulated trial: its table row, when it started and ended (seconds), the epochs it
    trained, how it ended, and the compute spent by the whole search when it ended."""

    key: str
    row: int
    start_s: float
    end_s: float
    epochs: int
    status: str  # completed | unscored | pruned | failed
    compute_at_end: int


@dataclass(frozen=True)
class SearchTrace:
    trials: tuple[TrialRun, ...]
    compute: int  # epochs trained in all
    wall_s: float

    def completed_rows(self, by_compute: float = math.inf) -> list[int]:
        """Rows of the trials that completed once `by_compute` epochs had been spent."""
        return [t.row for t in self.trials
                if t.status == "completed" and t.compute_at_end <= by_compute]


def simulate(table: Table, proposer: Proposer, scheduler: Scheduler, budget_epochs: int,
             workers: int = 2) -> SearchTrace:
    """Run one search until `budget_epochs` epochs have been trained (or the proposer gives up):
    free slots take new trials, epochs end in time order (ties: the lower slot), and the
    scheduler decides at the end of every epoch before the full budget."""
    events: list[tuple[float, int, int]] = []  # (time, slot, sequence)
    running: dict[int, dict[str, Any]] = {}
    runs: list[TrialRun] = []
    compute, now, count, sequence, spent = 0, 0.0, 0, 0, False

    def start(slot: int) -> None:
        nonlocal count, sequence, spent
        if spent or compute >= budget_epochs:
            return
        asked = proposer.ask()
        if asked is None:
            spent = True
            return
        handle, row = asked
        key = f"t{count:05d}"
        count += 1
        scheduler.add(key)
        running[slot] = {"key": key, "row": row, "handle": handle, "epoch": 0, "start": now}
        heapq.heappush(events, (now + table.epoch_times[row, 0], slot, sequence))
        sequence += 1

    def finish(slot: int, status: str, values: Sequence[float] | None) -> None:
        trial = running.pop(slot)
        proposer.tell(trial["handle"], TOLD[status], values)
        runs.append(TrialRun(trial["key"], trial["row"], trial["start"], now, trial["epoch"],
                             status, compute))

    for slot in range(workers):
        start(slot)
    while events and compute < budget_epochs:
        now, slot, _ = heapq.heappop(events)
        trial = running[slot]
        row = trial["row"]
        trial["epoch"] += 1
        epoch = trial["epoch"]
        compute += 1
        if epoch > table.good_epochs[row]:  # diverged in this epoch
            finish(slot, "failed", None)
            start(slot)
            continue
        readings = list(table.readings[row, epoch - 1])
        if hasattr(proposer, "observe"):
            proposer.observe(trial["handle"], epoch, readings)
        if epoch == table.epochs:  # a NaN objective: completed but unscored (told PRUNED)
            if hasattr(scheduler, "observe"):
                scheduler.observe(trial["key"], epoch, readings)
            values = table.final[row]
            ok = np.isfinite(values).all()
            finish(slot, "completed" if ok else "unscored", list(values) if ok else None)
        elif scheduler.result(trial["key"], epoch, readings):
            heapq.heappush(events, (now + table.epoch_times[row, epoch], slot, sequence))
            sequence += 1
            continue
        else:
            finish(slot, "pruned", None)
        start(slot)
    return SearchTrace(tuple(runs), compute, now)


# ---- hypervolume of what a search found ---------------------------------------------------------

@dataclass(frozen=True)
class Hypervolume:
    """Normalised hypervolume over the table: reference point one tenth of each objective's range
    beyond its worst full-budget value in the table; 1.0 = the table's true front."""

    directions: list[str]
    reference: np.ndarray
    best: float

    @classmethod
    def of_table(cls, table: Table) -> "Hypervolume":
        values = table.final[table.completed]
        lo, hi = values.min(axis=0), values.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        reference = np.array([l - 0.1 * s if d == "max" else h + 0.1 * s
                              for d, l, h, s in zip(table.directions, lo, hi, span)])
        best = hypervolume(values, table.directions, reference)
        return cls(table.directions, reference, best)

    def __call__(self, values: np.ndarray) -> float:
        values = np.asarray(values, dtype=float).reshape(-1, len(self.directions))
        values = values[np.isfinite(values).all(axis=1)]
        return hypervolume(values, self.directions, self.reference) / self.best if len(values) else 0.0


def hypervolume_curve(table: Table, trace: SearchTrace, measure: Hypervolume,
                      compute_points: Sequence[float]) -> np.ndarray:
    """Normalised hypervolume of the search's reported front (completed trials only, their true
    full-budget values) once each amount of compute had been spent."""
    return np.array([measure(table.final[trace.completed_rows(c)]) for c in compute_points])

