"""The budget-aware searcher: Ray Tune's OptunaSearch with a price check before every trial.

`BudgetedOptunaSearch.suggest` asks Optuna for a candidate (define-by-run, through the search
space's `sample_architecture`), prices it with `evaluators.cost`, and only hands it to Tune if it
fits the FLOP/param budget. A candidate over budget is told to Optuna at once as infeasible
(constraint values > 0 via `trial.set_constraint`, state PRUNED: it never trained), gets a
`rejected` record, and the searcher asks again (at most `max_attempts` times per suggestion).
A candidate already trained (same arch_id; training is seeded, so it would repeat the same
numbers) is not trained again either: rejected as a duplicate, told to Optuna with its twin's
values when those are known.

On completion it tells Optuna what really happened instead of OptunaSearch's default (which
tells every stopped trial's last result as COMPLETE):
- the trial's final report (`final` = 1) of a run that finished its epochs -> COMPLETE;
- a trial that stopped before its final report (ASHA) -> PRUNED, never in the Pareto front;
- a trial that diverged or raised (reported by the trainable, or an error Ray saw) -> FAIL.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from evaluators.cost import Budget
from results.run_directory import RunDirectory, TRIALS_DIR, new_record, now_iso
from search_spaces.architecture import Architecture
from search_spaces.space import SearchSpace, sample_architecture

logger = logging.getLogger(__name__)

FINAL_KEY = "final"        # 1.0 in a trial's last report after it trained its whole budget
DIVERGED_KEY = "diverged"  # 1.0 in that report when training diverged
FAILED_KEY = "failed"      # 1.0 in that report when the trial raised


def trial_outcome(result: dict | None, objectives: Sequence[str],
                  error: bool = False) -> tuple[str, TrialState, list[float]]:
    """How a trial ended, as the record's status, what Optuna is told, and the objective values.
    The one rule both the searcher and the records callback apply:
    raised or diverged -> failed/diverged (FAIL); no final report -> pruned (early-stopped);
    a non-finite objective -> failed (FAIL); otherwise completed (COMPLETE, with its values)."""
    if error:
        return "failed", TrialState.FAIL, []
    if not result or not result.get(FINAL_KEY):
        return "pruned", TrialState.PRUNED, []
    if result.get(FAILED_KEY):
        return "failed", TrialState.FAIL, []
    if result.get(DIVERGED_KEY):
        return "diverged", TrialState.FAIL, []
    values = [result.get(m) for m in objectives]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return "failed", TrialState.FAIL, []
    return "completed", TrialState.COMPLETE, [float(v) for v in values]


def sample_config(trial: optuna.trial.BaseTrial, space: SearchSpace) -> dict[str, Any]:
    """Define-by-run function for OptunaSearch: one architecture, as Tune config constants."""
    arch = sample_architecture(trial, space)
    return {"arch": arch.to_dict()}


def make_sampler(name: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in the config, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, startup_trials))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler.name: unknown sampler {name!r}")


class BudgetedOptunaSearch(OptunaSearch):
    """OptunaSearch over a `SearchSpace` that never suggests an architecture over `budget`.

    objectives: [(metric, "min"|"max"), ...]; run_dir: where rejected records and the Optuna
    state of each trial are written; epochs: each trial's budget (for the records).
    """

    def __init__(self, space: SearchSpace, objectives: Sequence[tuple[str, str]],
                 sampler: optuna.samplers.BaseSampler, run_dir: str,
                 budget: Budget | None = None, max_attempts: int = 50, epochs: int = 1):
        metrics = [name for name, _ in objectives]
        modes = [mode for _, mode in objectives]
        single = len(metrics) == 1
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        super().__init__(space=functools.partial(sample_config, space=space),
                         metric=metrics[0] if single else metrics,
                         mode=modes[0] if single else modes, sampler=sampler)
        self.budget = budget
        self.max_attempts = max_attempts
        self.run_dir = str(run_dir)
        self.store = RunDirectory(run_dir)
        self.epochs = epochs
        self.accepted = 0
        self.max_concurrent = 0  # 0: no limit; Tune sets it through set_max_concurrency
        self.live: set[str] = set()
        self.trained: dict[str, str] = {}  # arch_id -> trial_id of every suggested architecture
        self.values: dict[str, list[float]] = {}  # arch_id -> objective values told to Optuna

    # ---- suggestions -----------------------------------------------------------------------
    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Limit live trials here rather than in Tune's ConcurrencyLimiter, whose count of live
        trials is not saved with the experiment (after a resume it forgets restored trials and
        never passes their completion on)."""
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self._ot_trials:  # asked again for a trial we already priced
            return self._config(self._ot_trials[trial_id])
        if self.max_concurrent and len(self.live) >= self.max_concurrent:
            return None
        duplicates = 0
        for _ in range(self.max_attempts):
            ot_trial = self._ot_study.ask()
            params = self._suggest_from_define_by_run_func(self._space, ot_trial)
            arch = Architecture.from_dict(params["arch"])
            check = self.budget.check(arch) if self.budget is not None else None
            cost = _cost_dict(arch, check)
            ot_trial.set_user_attr("arch", arch.to_dict())
            ot_trial.set_user_attr("cost", cost)
            self._set_constraints(ot_trial, cost)
            twin = self.trained.get(arch.arch_id)
            if twin is not None:  # trained (or training) already: the same seed gives the same numbers
                self._reject(ot_trial, arch, cost, f"duplicate of trial {twin}",
                             values=self.values.get(arch.arch_id))
                duplicates += 1
                continue
            if check is None or check.fits:
                position = self.accepted
                self.accepted += 1
                ot_trial.set_user_attr("position", position)
                self._ot_trials[trial_id] = ot_trial
                self.live.add(trial_id)
                self.trained[arch.arch_id] = trial_id
                return self._config(ot_trial)
            self._reject(ot_trial, arch, cost, "; ".join(check.reasons))
        message = (f"no new architecture within budget after {self.max_attempts} candidates in a "
                   f"row ({duplicates} already trained, {self.max_attempts - duplicates} over "
                   "budget); ending the search (the space may be spent: widen it, or raise "
                   "budget.max_attempts or the budget)")
        logger.error(message)
        self.store.write_gave_up(message)
        return Searcher.FINISHED

    def _config(self, ot_trial: optuna.Trial) -> dict[str, Any]:
        attrs = ot_trial.user_attrs
        return {"arch": attrs["arch"], "cost": attrs["cost"], "number": ot_trial.number,
                "position": attrs["position"]}

    def _set_constraints(self, ot_trial: optuna.Trial, cost: dict[str, int]) -> None:
        # Feasible when <= 0: relative excess over each limit (TPE and NSGA-II read these).
        if self.budget is None:
            return
        if self.budget.max_flops is not None:
            ot_trial.set_constraint("flops", cost["flops"] / self.budget.max_flops - 1.0)
        if self.budget.max_params is not None:
            ot_trial.set_constraint("params", cost["params"] / self.budget.max_params - 1.0)

    def _reject(self, ot_trial: optuna.Trial, arch: Architecture, cost: dict[str, int],
                reason: str, values: list[float] | None = None) -> None:
        """Not trained. Over budget: infeasible, PRUNED. A duplicate: its twin's values when
        known (COMPLETE, so the sampler keeps the information), else PRUNED."""
        if values is not None:
            self._ot_study.tell(ot_trial, values[0] if len(values) == 1 else values)
        else:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self.store.write_record(new_record(
            trial_id=f"rejected-{ot_trial.number}", number=ot_trial.number, status="rejected",
            architecture=arch.to_dict(), arch_id=arch.arch_id, layout=arch.layout, cost=cost,
            epochs_budget=self.epochs, rejection=reason,
            optuna_state="COMPLETE" if values is not None else "PRUNED",
            ended=now_iso()))

    def restore(self, checkpoint_path: str) -> None:
        """Restore the saved state, then drop the records of candidates rejected after that save:
        the restored study hands out their trial numbers again, so those records would collide."""
        super().restore(checkpoint_path)
        known = len(self._ot_study.trials)
        trials_dir = Path(self.run_dir) / TRIALS_DIR
        for path in trials_dir.glob("rejected-*.json"):
            number = path.stem.removeprefix("rejected-")
            if number.isdigit() and int(number) >= known:
                path.unlink()

    # ---- outcomes --------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Nothing to tell mid-run: Optuna's intermediate values are single-objective only, and
        # early stopping is ASHA's job (the study's pruner is a NopPruner).
        return

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.live.discard(trial_id)
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        _, state, values = trial_outcome(result, metrics, error)
        try:
            if state == TrialState.COMPLETE:
                self._ot_study.tell(ot_trial, values[0] if len(values) == 1 else values)
                self.values[Architecture.from_dict(ot_trial.user_attrs["arch"]).arch_id] = values
            else:
                self._ot_study.tell(ot_trial, state=state)
        except Exception as exc:  # a trial told twice after a restore, for example
            logger.warning("could not tell Optuna trial %d: %s", ot_trial.number, exc)
        self._completed_trials.add(trial_id)
        told = self._ot_study.get_trials(deepcopy=False)[ot_trial.number].state
        self.store.update_record(trial_id, optuna_state=told.name)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


def _cost_dict(arch: Architecture, check: Any) -> dict[str, int]:
    if check is None:
        from evaluators.cost import count_cost
        cost, resolution = count_cost(arch), arch.resolution
    else:
        cost, resolution = check.cost, check.resolution
    return {"params": int(cost.params), "flops": int(cost.flops), "resolution": int(resolution)}
