"""Multi-objective asynchronous successive halving: the rungs of a search and the rule that decides,
when a trial reaches one, whether it trains on. The Ray Tune scheduler (`nas.moasha`) and the
search simulator (`benchmarks/simulate.py`) both decide through `Rungs.decide`; nothing here
needs Ray.

Rungs lie at grace_period * reduction_factor**k epochs, below the trial's full budget `max_t`
(a trial that gets there ends by itself and is judged only by the front). When a trial reports a
rung's epoch, its objective values join that rung's records and every trial recorded there is
put in promotion order:

1. non-dominated sorting on the search's own objectives, mixed directions
   (`results.pareto.pareto_ranks`): lower fronts first;
2. inside a front, larger crowding distance first (NSGA-II's, on values scaled by each
   objective's range at the rung). Chosen over Syne Tune's epsilon-net because it is
   scale-free, needs no seed objective or random draw, and admits a front's two extremes first:
   the trials that are best on one objective bound the front, and the hypervolume with them;
3. any tie left: better on the objectives in their listed order, then the smaller trial key.

The trial continues if it is among the first ceil(n / reduction_factor) of the n trials recorded
at the rung (so the first trial at a rung continues, as in ASHA). Decisions stand once taken: a
trial let through early is not stopped when better ones arrive later.

Missing readings. A reading may be NaN at a rung without the trial having failed: the default
search's `val_acc_at_matched_loss` is NaN until the small regime's training loss first reaches
the matched level. Such a value ranks below every finite value of that objective (not there yet
is worse than any reading), and the trial is still compared on its other objectives. A trial
with no finite value at all at a rung is never promoted. Failed and diverged trials end with
their final report and never reach a decision. A trial that trains its whole budget without a
value for some objective is `completed` but unscored (the record's `unscored` says why; Optuna
is told PRUNED; `nas.searcher.trial_outcome`), so it never enters a front either.

Learning from finished trials (options, both off by default; `nas.config.SchedulerConfig`):
- adaptive placement: the first rung moves to the earliest epoch whose readings rank the finished
  trials as their full-budget values do (Kendall tau-b >= `rank_threshold` on every objective),
  measured on the search's own trials as it runs, not fixed from one table;
- extrapolation: at a rung, trials are put in promotion order by their predicted full-budget
  values (a line per objective, fitted on the finished trials, from the reading and its last
  change) instead of their readings there.
Both need `min_completed` finished trials; until then the rungs act as configured.

The state is a function of the reported values only: `Rungs.from_records` rebuilds it from the
per-epoch `history` of a run's records, which is how a resumed search (a new Tune session)
continues, however its driver stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from results.objectives import Objective, as_objectives
from results.layout_study.rankings import kendall_tau_b
from results.pareto import pareto_ranks


PLACEMENTS = ("fixed", "adaptive")


@dataclass(frozen=True)
class RungDecision:
    """What happened to one trial at one rung: `rung` counts from 1 (the grace period)."""

    rung: int
    epoch: int
    promote: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "epoch": self.epoch,
                "action": "continue" if self.promote else "stop", "reason": self.reason}


def rung_epochs(max_t: int, grace_period: int, reduction_factor: float) -> tuple[int, ...]:
    """The epochs at which trials are judged: grace_period * reduction_factor**k below max_t
    (rounded up to whole epochs)."""
    if grace_period < 1:
        raise ValueError(f"grace_period must be >= 1, got {grace_period}")
    if not reduction_factor > 1:
        raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
    epochs, k = [], 0
    while True:
        epoch = math.ceil(grace_period * reduction_factor ** k - 1e-9)
        if epoch >= max_t:
            return tuple(epochs)
        if not epochs or epoch > epochs[-1]:
            epochs.append(epoch)
        k += 1


class Rungs:
    """The rungs of one search and what each has recorded: rung epoch -> {trial key: values}.

    objectives: the search's objectives (names and directions), in the order values are given;
    max_t: the trial's full budget in epochs; trial keys are any strings (record ids).
    placement: "fixed" (rungs at grace_period * reduction_factor**k) or "adaptive" (the first
    rung moves to where the search's own readings start to rank: `place_rungs`); extrapolate:
    rank trials at a rung by their predicted full-budget values (`extrapolate`) rather than
    their readings there. Both learn from the trials that finished their budget, and act once
    `min_completed` have.
    """

    def __init__(self, objectives: Iterable[Any], max_t: int, grace_period: int = 1,
                 reduction_factor: float = 3.0, placement: str = "fixed",
                 extrapolate: bool = False, min_completed: int = 5,
                 rank_threshold: float = 0.6):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.objectives: list[Objective] = as_objectives(objectives)
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.placement = placement
        self.extrapolate = extrapolate
        self.min_completed = min_completed
        self.rank_threshold = rank_threshold
        self.epochs = rung_epochs(max_t, grace_period, reduction_factor)
        self.recorded: dict[int, dict[str, tuple[float, ...]]] = {e: {} for e in self.epochs}
        self.curves: dict[str, dict[int, tuple[float, ...]]] = {}  # key -> epoch -> values
        self.final: dict[str, tuple[float, ...]] = {}  # key -> values at max_t

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def rung_of(self, epoch: int) -> int | None:
        """1-based rung number of an epoch, None if no rung lies there."""
        return self.epochs.index(epoch) + 1 if epoch in self.recorded else None

    def values_of(self, row: Mapping[str, Any]) -> tuple[float, ...]:
        """The objective values in a reported row (a missing one is NaN)."""
        return tuple(_float(row.get(name)) for name in self.names)

    def record(self, key: str, epoch: int, values: Sequence[float]) -> None:
        """Enter a trial's values at `epoch` without deciding: kept in its curve, at the rung of
        that epoch if any, and at the full budget as its final values (which may move adaptive
        rungs)."""
        values = tuple(_float(v) for v in values)
        self.curves.setdefault(key, {})[int(epoch)] = values
        if epoch in self.recorded:
            self.recorded[epoch][key] = values
        if epoch == self.max_t:
            self.final[key] = values
            if self.placement == "adaptive":
                self._move_rungs()

    def decide(self, key: str, epoch: int, values: Sequence[float]) -> RungDecision | None:
        """Record a trial's values at `epoch` and, at a rung, decide whether it continues;
        None when no rung lies at that epoch. A trial deciding again at the same rung (trained
        again after an interruption) replaces its earlier values."""
        self.record(key, epoch, values)
        rung = self.rung_of(epoch)
        if rung is None:
            return None
        at_rung = self.recorded[epoch]
        n = len(at_rung)
        allowed = max(1, math.ceil(n / self.reduction_factor - 1e-9))
        where = f"rung {rung} (epoch {epoch})"
        mine = at_rung[key]
        if not any(math.isfinite(v) for v in mine):
            shown = ", ".join(f"{name}={v}" for name, v in zip(self.names, mine))
            return RungDecision(rung, epoch, False,
                                f"{where}: no finite objective value ({shown}), never promoted")
        keys = list(at_rung)
        ranked = np.array([at_rung[k] for k in keys], dtype=float)
        predicted = self.predict(epoch, keys) if self.extrapolate else None
        if predicted is not None:
            ranked = predicted
            where += " by predicted full-budget values"
        order = promotion_order(ranked, [o.direction for o in self.objectives], keys)
        i = keys.index(key)
        place, front = order.places[i], order.fronts[i]
        text = f"{where}: front {front + 1} of {order.num_fronts}, place {place + 1} of {n}"
        in_front = order.front_sizes[front]
        if in_front > 1:
            text += (f" ({_ordinal(order.places_in_front[i] + 1)} of {in_front} in "
                     "its front by crowding distance)")
        text += f"; the top {allowed} may continue"
        return RungDecision(rung, epoch, bool(place < allowed), text)

    # ---- learning from the trials that finished -------------------------------------------
    def rank_agreement(self, epoch: int) -> float | None:
        """How well readings at `epoch` rank the finished trials as their full-budget values
        do: the smallest Kendall tau-b over the objectives; None with fewer than
        `min_completed` finished trials read there (finite on both)."""
        taus = []
        for j in range(len(self.objectives)):
            pairs = [(self.curves[k][epoch][j], final[j]) for k, final in self.final.items()
                     if epoch in self.curves.get(k, {})]
            pairs = [p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])]
            if len(pairs) < self.min_completed:
                return None
            a, b = np.array(pairs).T
            tau = kendall_tau_b(a, b)
            if not math.isfinite(tau):
                return None
            taus.append(tau)
        return min(taus)

    def place_rungs(self) -> tuple[int, ...]:
        """Adaptive placement: the first rung at the earliest epoch whose readings rank the
        finished trials with tau-b >= `rank_threshold` on every objective, the others
        reduction_factor apart above it; the configured rungs until that can be measured."""
        for epoch in range(1, self.max_t):
            agreement = self.rank_agreement(epoch)
            if agreement is not None and agreement >= self.rank_threshold:
                return rung_epochs(self.max_t, epoch, self.reduction_factor)
        return self.epochs

    def _move_rungs(self) -> None:
        epochs = self.place_rungs()
        if epochs == self.epochs:
            return
        self.epochs = epochs
        self.recorded = {e: {k: c[e] for k, c in self.curves.items() if e in c} for e in epochs}

    def predict(self, epoch: int, keys: Sequence[str]) -> np.ndarray | None:
        """Learning-curve extrapolation: each trial's full-budget values predicted from its
        reading at `epoch` and its last epoch's change (a least-squares line per objective over
        the finished trials); None until `min_completed` finished trials were read there."""
        out = np.full((len(keys), len(self.objectives)), np.nan)
        for j in range(len(self.objectives)):
            rows, targets = [], []
            for k, final in self.final.items():
                x = _curve_features(self.curves.get(k, {}), epoch, j)
                if x is not None and math.isfinite(final[j]):
                    rows.append(x)
                    targets.append(final[j])
            if len(rows) < self.min_completed:
                return None
            coef, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
            for i, k in enumerate(keys):
                x = _curve_features(self.curves.get(k, {}), epoch, j)
                out[i, j] = float(np.dot(x, coef)) if x is not None else np.nan
        return out

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], objectives: Iterable[Any],
                     max_t: int, grace_period: int = 1, reduction_factor: float = 3.0,
                     **options: Any) -> "Rungs":
        """The rungs as the records' per-epoch histories left them: every trained trial's
        reading at every epoch it reported (the state a killed driver had, whatever it was
        doing). `options`: `placement`, `extrapolate`, ... as for the constructor."""
        rungs = cls(objectives, max_t, grace_period, reduction_factor, **options)
        for record in records:
            for row in record.get("history") or ():
                epoch = row.get("epoch")
                if not (isinstance(epoch, (int, float)) and float(epoch).is_integer()):
                    continue
                if int(epoch) >= max_t and record.get("status") != "completed":
                    continue  # failed after its last epoch: no full-budget values to learn from
                rungs.record(str(record["trial_id"]), int(epoch), rungs.values_of(row))
        return rungs

    def state(self) -> dict[int, dict[str, tuple[float, ...]]]:
        """A copy of what each rung holds (for checks and messages)."""
        return {epoch: dict(at) for epoch, at in self.recorded.items()}


@dataclass(frozen=True)
class PromotionOrder:
    """For each row: its front (0 first), its place in the whole order, its place in its front;
    and the number of fronts and the size of each (unrankable rows: front = num_fronts)."""

    fronts: np.ndarray
    places: np.ndarray
    places_in_front: np.ndarray
    num_fronts: int
    front_sizes: dict[int, int]


def promotion_order(values: np.ndarray, directions: Sequence[str],
                    keys: Sequence[str]) -> PromotionOrder:
    """Order rows (n, k) for promotion: front, then crowding distance inside it, then the
    objectives in their order, then key (see the module docstring). Non-finite values rank
    below every finite value of their objective; rows with no finite value come last."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    finite = np.isfinite(values)
    rankable = finite.any(axis=1)
    fronts = np.full(n, -1, dtype=int)
    crowding = np.zeros(n)
    filled = fill_missing(values[rankable], directions)
    if rankable.any():
        fronts[rankable] = pareto_ranks(filled, directions)
        crowding[rankable] = _crowding(filled, fronts[rankable])
    num_fronts = int(fronts.max()) + 1 if rankable.any() else 0
    fronts[~rankable] = num_fronts
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    better_first = np.where(finite, values * signs, np.inf)
    order = sorted(range(n), key=lambda i: (fronts[i], -crowding[i], *better_first[i], keys[i]))
    places = np.empty(n, dtype=int)
    places[order] = np.arange(n)
    places_in_front = np.empty(n, dtype=int)
    seen: dict[int, int] = {}
    for i in order:
        places_in_front[i] = seen.get(int(fronts[i]), 0)
        seen[int(fronts[i])] = places_in_front[i] + 1
    return PromotionOrder(fronts, places, places_in_front, num_fronts, seen)


def fill_missing(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Non-finite values replaced by one range beyond the worst finite value of their column
    (the same stand-in for all of them: they tie, below every reading)."""
    filled = values.copy()
    for j, direction in enumerate(directions):
        column = values[:, j]
        ok = np.isfinite(column)
        if ok.all():
            continue
        if not ok.any():
            filled[:, j] = 0.0
            continue
        lo, hi = column[ok].min(), column[ok].max()
        span = hi - lo if hi > lo else 1.0
        filled[~ok, j] = lo - span if direction == "max" else hi + span
    return filled


def _crowding(values: np.ndarray, fronts: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within its front, on range-scaled values: the
    extremes of each objective get infinity, the others the summed gap between neighbours."""
    distance = np.zeros(len(values))
    spans = values.max(axis=0) - values.min(axis=0) if len(values) else np.zeros(0)
    for front in np.unique(fronts):
        members = np.flatnonzero(fronts == front)
        if len(members) <= 2:
            distance[members] = np.inf
            continue
        for j, span in enumerate(spans):
            if span <= 0 or np.ptp(values[members, j]) == 0:
                continue
            ordered = members[np.argsort(values[members, j], kind="stable")]
            distance[ordered[0]] = distance[ordered[-1]] = np.inf
            gaps = (values[ordered[2:], j] - values[ordered[:-2], j]) / span
            distance[ordered[1:-1]] += gaps
    return distance


def _curve_features(curve: Mapping[int, tuple[float, ...]], epoch: int,
                    j: int) -> np.ndarray | None:
    """(1, reading at epoch, change over the epoch before) of objective j; None when the
    reading is missing (a missing earlier reading: no change)."""
    now = curve.get(epoch, (math.nan,) * (j + 1))[j]
    if not math.isfinite(now):
        return None
    before = curve.get(epoch - 1, (math.nan,) * (j + 1))[j]
    return np.array([1.0, now, now - before if math.isfinite(before) else 0.0])


def _float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
