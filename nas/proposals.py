"""Smarter proposals, made before the search's own sampler is asked and handed to it through the
study (`Study.enqueue_trial`), so that the study, the budget check and the records see nothing
different. Two ideas, each optional (`sampler.multi_fidelity`, `sampler.proxy`):

- **Learning from every fidelity** (BOHB's idea, Falkner et al. 2018, for a multi-objective
  search). Under successive halving most trials stop at a rung, so a sampler that learns from
  finished trials alone (Optuna's TPE sees them as COMPLETE; stopped ones are PRUNED, without
  values) has little to learn from until late. Here every trained trial's objective values are
  kept at each epoch it reached; a proposal comes from a throwaway multi-objective TPE fitted on
  the readings at the latest epoch that at least `min_points` trials reached.
- **A zero-cost proxy screen** (`evaluators.proxy_score`). Of `candidates` proposals (the
  model's, or random ones while there is no model yet), the one with the best proxy score is
  proposed. Screened-out candidates never enter the study: they were never the search's trials.
  No peer screens candidates this way inside a multi-objective, multi-fidelity search.

A draw the search cannot use (trained already, over budget) is told to the throwaway model as
worse than every reading, and so is each candidate drawn, so the next draw differs (fitted on a
few points, TPE would otherwise draw its best point again and again). A reading not there yet
(NaN: `val_acc_at_matched_loss` before the training loss reaches its level) is given one range
below the worst reading of its objective, as the rungs rank it (`nas.rungs.fill_missing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial

from nas.rungs import fill_missing
from search_spaces.architecture import Architecture
from search_spaces.space import SearchSpace, sample_architecture


@dataclass(frozen=True)
class Reading:
    """One trial's objective values at one epoch, with the choices that made the trial."""

    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    values: tuple[float, ...]


class Proposals:
    """Proposes the search's next trial from its readings and/or a proxy screen.

    directions: "min"/"max" per objective; epochs: the trial's budget (readings are kept at
    every epoch: rungs may move as the search runs, `nas.rungs`); multi_fidelity: propose from a
    model of the readings; min_points: readings an epoch needs before its model proposes;
    scorer: a zero-cost proxy score of an architecture (higher is better), None: no screen;
    candidates: proposals screened per trial; startup: without the multi-fidelity model, the
    trials proposed at random and screened before the study's sampler takes over (its startup
    trials; with the model: until the model has enough readings); seed: seeds the throwaway
    samplers (each proposal offsets it).
    """

    def __init__(self, space: SearchSpace, directions: Sequence[str], epochs: int,
                 multi_fidelity: bool = True, min_points: int = 6,
                 scorer: Callable[[Architecture], float] | None = None, candidates: int = 4,
                 startup: int = 4, seed: int = 0):
        if min_points < 2:
            raise ValueError(f"min_points must be >= 2, got {min_points}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.space = space
        self.directions = list(directions)
        self.multi_fidelity = multi_fidelity
        self.min_points = min_points
        self.scorer = scorer
        self.candidates = candidates if scorer is not None else 1
        self.startup = startup
        self.seed = seed
        self.proposed = 0
        self.readings: dict[int, dict[str, Reading]] = {e: {} for e in range(1, epochs + 1)}
        self.last: tuple[dict[str, Any], list[float]] | None = None  # last enqueued, its screen

    def observe(self, key: str, params: dict[str, Any],
                distributions: dict[str, BaseDistribution], epoch: int,
                values: Sequence[float]) -> None:
        """A trial's values at `epoch` (kept when at least one is finite)."""
        at = self.readings.get(int(epoch))
        values = tuple(float(v) for v in values)
        if at is None or not any(math.isfinite(v) for v in values):
            return
        at[key] = Reading(dict(params), dict(distributions), values)

    def fidelity(self) -> int | None:
        """The latest epoch with at least `min_points` readings; None if none has (or the
        multi-fidelity model is off)."""
        if not self.multi_fidelity:
            return None
        rich = [e for e, at in self.readings.items() if len(at) >= self.min_points]
        return max(rich) if rich else None

    def propose(self, study: optuna.Study,
                usable: Callable[[Architecture], bool] = lambda arch: True,
                tries: int = 20) -> dict[str, Any] | None:
        """Enqueue in `study` the next trial's choices and return them; None (nothing enqueued:
        the study's sampler proposes) when there is neither a model nor a screen to apply, or no
        usable draw came in `tries`."""
        epoch = self.fidelity()
        if epoch is None and (self.scorer is None
                              or (not self.multi_fidelity and self.proposed >= self.startup)):
            return None
        draw, worst = self._model(epoch) if epoch is not None else (self._random(), None)
        self.proposed += 1
        picked: list[tuple[dict[str, Any], Architecture]] = []
        for _ in range(tries):
            trial = draw.ask()
            arch = sample_architecture(trial, self.space)
            if usable(arch) and all(a.arch_id != arch.arch_id for _, a in picked):
                picked.append((dict(trial.params), arch))
            if worst is None:  # a random draw: nothing to learn
                draw.tell(trial, state=TrialState.PRUNED)
            else:
                draw.tell(trial, worst)
            if len(picked) == self.candidates:
                break
        if not picked:
            return None
        scores = [self.scorer(a) for _, a in picked] if self.scorer is not None else []
        best = int(np.argmax([s if math.isfinite(s) else -math.inf for s in scores])) \
            if scores else 0
        study.enqueue_trial(picked[best][0], skip_if_exists=False)
        self.last = (picked[best][0], scores)
        return picked[best][0]

    def _model(self, epoch: int) -> tuple[optuna.Study, list[float]]:
        """A throwaway TPE study fitted on the readings at `epoch`, and the values it is told for
        a draw (worse than every reading)."""
        readings = list(self.readings[epoch].values())
        values = fill_missing(np.array([r.values for r in readings], dtype=float),
                              self.directions)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        model = optuna.create_study(
            directions=["maximize" if d == "max" else "minimize" for d in self.directions],
            sampler=optuna.samplers.TPESampler(seed=self.seed * 100_003 + self.proposed,
                                               n_startup_trials=0))
        model.add_trials([create_trial(params=r.params, distributions=r.distributions,
                                       values=list(v), state=TrialState.COMPLETE)
                          for r, v in zip(readings, values)])
        span = np.ptp(values, axis=0)
        worst = [float(values[:, j].min() - span[j] - 1.0 if d == "max"
                       else values[:, j].max() + span[j] + 1.0)
                 for j, d in enumerate(self.directions)]
        return model, worst

    def _random(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(sampler=optuna.samplers.RandomSampler(
            seed=self.seed * 100_003 + self.proposed))
