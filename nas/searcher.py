"""The budget-aware searcher: Ray Tune asks it for trials, an Optuna study (kept in the run
directory, `nas.study`) proposes them, and every candidate is priced before it may train.

`BudgetedOptunaSearch.suggest` asks the study for a candidate (define-by-run, through the search
space's `sample_architecture`), prices it with `evaluators.cost`, and only hands it to Tune if it
fits the FLOP/param/memory budget (memory: the trial's priced peak, `evaluators.memory`, kept
in the trial's `cost` as `memory`). A candidate over budget is told to Optuna at once as infeasible
(constraint values > 0 via `trial.set_constraint`, state PRUNED: it never trained), gets a
`rejected` record, and the searcher asks again (at most `max_attempts` times per suggestion).
A candidate already trained (same arch_id; training is seeded, so it would repeat the same
numbers) is not trained again either: rejected as a duplicate, told to Optuna with its twin's
values when those are known.

On completion it tells Optuna what really happened:
- the trial's final report (`final` = 1) of a run that finished its epochs -> COMPLETE;
- such a report where an objective has no value (val_acc_at_matched_loss of a run whose training
  loss never came down to the level it is read at) -> PRUNED: the trial trained its budget and is
  recorded as completed, but Optuna learns no made-up value and it is on no front;
- a trial that stopped before its final report (early stopping) -> PRUNED, never in the front;
- a trial that diverged or raised (reported by the trainable, or an error Ray saw) -> FAIL.

With `proposals` (`nas.proposals`; `sampler.multi_fidelity`, `sampler.proxy`), every trial's
readings at every epoch are passed on as they are reported, and before each ask the proposals may
enqueue a candidate in the study (from a TPE model fitted on the readings, screened by a zero-cost
proxy); the candidate then goes through the same budget and duplicate checks. A trial chosen by
the screen keeps its `proxy_score` and the scores of the candidates it was chosen from.

Everything it knows lives in the study and the records, so a new searcher over the same study
(`--resume`) carries on: it knows which architectures were trained, and hands out first the
trials an interruption cut short (`rerun`), under their old record ids.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from evaluators.cost import Budget, count_cost
from nas.proposals import Proposals
from nas.study import ARCH_ATTR, COST_ATTR, RECORD_ATTR, REJECTION_ATTR
from results.objectives import is_value
from results.run_directory import RunDirectory, new_record, now_iso
from search_spaces.architecture import Architecture
from search_spaces.space import SearchSpace, sample_architecture

logger = logging.getLogger(__name__)

FINAL_KEY = "final"        # 1.0 in a trial's last report after it trained its whole budget
DIVERGED_KEY = "diverged"  # 1.0 in that report when training diverged
FAILED_KEY = "failed"      # 1.0 in that report when the trial raised
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def trial_outcome(result: dict | None, objectives: Sequence[str],
                  error: bool = False) -> tuple[str, TrialState, list[float]]:
    """How a trial ended, as the record's status, what Optuna is told, and the objective values.
    The one rule both the searcher and the records callback apply:
    raised or diverged -> failed/diverged (FAIL); no final report -> pruned (early-stopped);
    an objective without a value (NaN: a level its run never reached) -> completed but unscored
    (PRUNED, no values); otherwise completed (COMPLETE, with its values)."""
    if error:
        return "failed", TrialState.FAIL, []
    if not result or not result.get(FINAL_KEY):
        return "pruned", TrialState.PRUNED, []
    if result.get(FAILED_KEY):
        return "failed", TrialState.FAIL, []
    if result.get(DIVERGED_KEY):
        return "diverged", TrialState.FAIL, []
    values = [result.get(m) for m in objectives]
    if not all(is_value(v) for v in values):
        return "completed", TrialState.PRUNED, []
    return "completed", TrialState.COMPLETE, [float(v) for v in values]


def unscored_reason(result: dict, objectives: Sequence[str]) -> str | None:
    """Why a completed trial has no value for some objective, in words; None when it has all."""
    missing = [name for name in objectives if not is_value(result.get(name))]
    if not missing:
        return None
    return (f"no value for {', '.join(missing)}: the run's training loss never came down to "
            "train.matched_loss, the level it is read at (train longer or raise the level)")


def make_sampler(name: str, seed: int, startup_trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in the config, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, startup_trials))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler.name: unknown sampler {name!r}")


@dataclass(frozen=True)
class Rerun:
    """A trial an interruption cut short: trained again from the start under its old record id."""

    record_id: str
    number: int  # its Optuna trial number


class BudgetedOptunaSearch(Searcher):
    """A Ray Tune searcher over a `SearchSpace` that never suggests an architecture over `budget`.

    study: the run's Optuna study (`nas.study`), with one direction per objective;
    objectives: [(metric, "min"|"max"), ...]; run_dir: the run (where rejected records go);
    epochs: each trial's budget (for the records); rerun: trials to hand out again first;
    sync_study: called after each batch of changes to the study (copies a mirrored journal);
    proposals: multi-fidelity proposals and/or a proxy screen (None: the study's sampler alone).
    """

    def __init__(self, space: SearchSpace, objectives: Sequence[tuple[str, str]],
                 study: optuna.Study, run_dir: str | RunDirectory, budget: Budget | None = None,
                 max_attempts: int = 50, epochs: int = 1, rerun: Sequence[Rerun] = (),
                 sync_study: Callable[[], None] | None = None,
                 proposals: Proposals | None = None):
        metrics = [name for name, _ in objectives]
        super().__init__(metric=metrics[0] if len(metrics) == 1 else None,
                         mode=objectives[0][1] if len(metrics) == 1 else None)
        self.space = space
        self.metrics = metrics
        self._study = study
        self.store = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
        self.sync_study = sync_study or (lambda: None)
        self.budget = budget
        self.max_attempts = max_attempts
        self.epochs = epochs
        self.max_concurrent = 0  # 0: no limit; Tune sets it through set_max_concurrency
        self.rerun = list(rerun)
        self.live: dict[str, optuna.trial.FrozenTrial] = {}  # Tune trial id -> its Optuna trial
        self.trained: dict[str, str] = {}  # arch_id -> record id of every accepted architecture
        self.values: dict[str, list[float]] = {}  # arch_id -> objective values told to Optuna
        self.accepted = 0
        self.proposals = proposals
        histories = {r["trial_id"]: r.get("history") or ()
                     for r in self.store.read_records()} if proposals is not None else {}
        for trial in study.get_trials(deepcopy=False):
            if RECORD_ATTR in trial.user_attrs:
                arch_id = Architecture.from_dict(trial.user_attrs[ARCH_ATTR]).arch_id
                self.trained[arch_id] = trial.user_attrs[RECORD_ATTR]
                self.accepted += 1
                if trial.state == TrialState.COMPLETE:
                    self.values[arch_id] = list(trial.values)
                for row in histories.get(trial.user_attrs[RECORD_ATTR], ()):  # a resumed search
                    self._observe(trial, row)

    @property
    def study(self) -> optuna.Study:
        return self._study

    # ---- Tune's searcher interface -----------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # the space and objectives are ours; Tune's param_space holds constants only

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Limit live trials here rather than in Tune's ConcurrencyLimiter."""
        self.max_concurrent = max_concurrent
        return True

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the state is the study (journal) and the records, both on disk."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed search builds a new searcher over the stored study."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        try:
            return self._suggest(trial_id)
        finally:
            self.sync_study()

    def _suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self.live:  # asked again for a trial we already gave out
            return self._config(self.live[trial_id])
        if self.max_concurrent and len(self.live) >= self.max_concurrent:
            return None
        if self.rerun:
            again = self.rerun.pop(0)
            trial = self._study.get_trials(deepcopy=False)[again.number]
            self.live[trial_id] = trial
            return self._config(trial)
        duplicates = 0
        for _ in range(self.max_attempts):
            if self.proposals is not None:
                self.proposals.propose(self._study, self._usable)
            ot_trial = self._study.ask()
            arch = sample_architecture(ot_trial, self.space)
            check = self.budget.check(arch) if self.budget is not None else None
            cost = _cost_dict(arch, check)
            ot_trial.set_user_attr(ARCH_ATTR, arch.to_dict())
            ot_trial.set_user_attr(COST_ATTR, cost)
            ot_trial.set_user_attr("layout", arch.layout)
            ot_trial.set_user_attr("params", cost["params"])
            ot_trial.set_user_attr("flops", cost["flops"])
            self._set_constraints(ot_trial, cost)
            twin = self.trained.get(arch.arch_id)
            if twin is not None:  # trained (or training) already: the same seed gives the same numbers
                self._reject(ot_trial, arch, cost, f"duplicate of trial {twin}",
                             values=self.values.get(arch.arch_id))
                duplicates += 1
                continue
            if check is None or check.fits:
                self._screened(ot_trial)
                ot_trial.set_user_attr(RECORD_ATTR, trial_id)
                ot_trial.set_user_attr("trial_id", trial_id)
                ot_trial.set_user_attr("position", self.accepted)
                self.accepted += 1
                self.trained[arch.arch_id] = trial_id
                self.live[trial_id] = self._study.get_trials(deepcopy=False)[ot_trial.number]
                return self._config(self.live[trial_id])
            self._reject(ot_trial, arch, cost, "; ".join(check.reasons))
        message = (f"no new architecture within budget after {self.max_attempts} candidates in a "
                   f"row ({duplicates} already trained, {self.max_attempts - duplicates} over "
                   "budget); ending the search (the space may be spent: widen it, or raise "
                   "budget.max_attempts or the budget)")
        logger.error(message)
        self.store.write_gave_up(message)
        return Searcher.FINISHED

    def _usable(self, arch: Architecture) -> bool:
        """Not trained yet and within budget: what the proposals may propose."""
        if arch.arch_id in self.trained:
            return False
        return self.budget is None or self.budget.check(arch).fits

    def _screened(self, ot_trial: optuna.Trial) -> None:
        """Keep on the trial how the proxy screen chose it: its score and the candidates'."""
        last = self.proposals.last if self.proposals is not None else None
        if last is not None and last[1] and last[0] == ot_trial.params:
            ot_trial.set_user_attr("proxy_score", max(last[1]))
            ot_trial.set_user_attr("proxy_screened", list(last[1]))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Optuna's intermediate values are single-objective only and early stopping is the
        # scheduler's job: the readings go to the multi-fidelity proposals, if any.
        trial = self.live.get(trial_id)
        if trial is not None and not (result.get(FAILED_KEY) or result.get(DIVERGED_KEY)):
            self._observe(trial, result)

    def _observe(self, trial: optuna.trial.FrozenTrial, row: dict) -> None:
        epoch = row.get("epoch")
        if self.proposals is None or not isinstance(epoch, (int, float)) or epoch < 1:
            return
        values = [float(row[m]) if is_value(row.get(m)) else math.nan for m in self.metrics]
        self.proposals.observe(trial.user_attrs[RECORD_ATTR], trial.params, trial.distributions,
                               int(epoch), values)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        if error and not self.store.storage.healthy():
            return  # it may have failed for want of the store: left running, resume trains it again
        _, state, values = trial_outcome(result, self.metrics, error)
        told = tell(self._study, trial.number, state, values)
        if state == TrialState.COMPLETE:
            self.values[Architecture.from_dict(trial.user_attrs[ARCH_ATTR]).arch_id] = values
        self.sync_study()
        self.store.update_record(trial.user_attrs[RECORD_ATTR], optuna_state=told.state.name)

    # ---- helpers ------------------------------------------------------------------------------
    def _config(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        attrs = trial.user_attrs
        return {"arch": attrs[ARCH_ATTR], "cost": attrs[COST_ATTR], "number": trial.number,
                "record_id": attrs[RECORD_ATTR], "position": attrs["position"]}

    def _set_constraints(self, ot_trial: optuna.Trial, cost: dict[str, int]) -> None:
        # Feasible when <= 0: relative excess over each limit (TPE and NSGA-II read these).
        if self.budget is None:
            return
        if self.budget.max_flops is not None:
            ot_trial.set_constraint("flops", cost["flops"] / self.budget.max_flops - 1.0)
        if self.budget.max_params is not None:
            ot_trial.set_constraint("params", cost["params"] / self.budget.max_params - 1.0)
        if self.budget.max_memory is not None and "memory" in cost:
            ot_trial.set_constraint("memory",
                                    cost["memory"]["peak_bytes"] / self.budget.max_memory - 1.0)

    def _reject(self, ot_trial: optuna.Trial, arch: Architecture, cost: dict[str, int],
                reason: str, values: list[float] | None = None) -> None:
        """Not trained. Over budget: infeasible, PRUNED. A duplicate: its twin's values when
        known (COMPLETE, so the sampler keeps the information), else PRUNED."""
        ot_trial.set_user_attr(REJECTION_ATTR, reason)
        if values is not None:
            self._study.tell(ot_trial, values[0] if len(values) == 1 else values)
        else:
            self._study.tell(ot_trial, state=TrialState.PRUNED)
        self.store.write_record(rejected_record(self._study.get_trials(deepcopy=False)[ot_trial.number],
                                                self.epochs))


def tell(study: optuna.Study, number: int, state: TrialState,
         values: Sequence[float]) -> optuna.trial.FrozenTrial:
    """Tell Optuna how trial `number` ended (once: a trial already finished keeps what it was
    told); returns the trial as stored."""
    stored = study.get_trials(deepcopy=False)[number]
    if stored.state in FINISHED_STATES:
        return stored
    if state == TrialState.COMPLETE:
        study.tell(number, values[0] if len(values) == 1 else list(values))
    else:
        study.tell(number, state=state)
    return study.get_trials(deepcopy=False)[number]


def rejected_record(trial: optuna.trial.FrozenTrial, epochs: int) -> dict[str, Any]:
    """The record of a candidate that was not trained, from what its Optuna trial holds."""
    arch = Architecture.from_dict(trial.user_attrs[ARCH_ATTR])
    return new_record(
        trial_id=f"rejected-{trial.number}", number=trial.number, status="rejected",
        architecture=arch.to_dict(), arch_id=arch.arch_id, layout=arch.layout,
        cost=trial.user_attrs[COST_ATTR], epochs_budget=epochs,
        rejection=trial.user_attrs.get(REJECTION_ATTR), optuna_state=trial.state.name,
        ended=now_iso())


def _cost_dict(arch: Architecture, check: Any) -> dict[str, Any]:
    """The trial's `cost`: params, FLOPs, the resolution they were priced at, and `memory`
    (`evaluators.memory.MemoryPrice.to_dict`) when the budget prices memory."""
    if check is None:
        cost, resolution = count_cost(arch), arch.resolution
    else:
        cost, resolution = check.cost, check.resolution
    out: dict[str, Any] = {"params": int(cost.params), "flops": int(cost.flops),
                           "resolution": int(resolution)}
    if check is not None and check.memory is not None:
        out["memory"] = check.memory.to_dict()
    return out
